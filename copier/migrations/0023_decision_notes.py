"""A decision's notes as data (rules.Note as JSON) instead of "; "-joined text.

A decision recorded before keeps its text whole, as one note of the kind `legacy_text`:
no text is split or parsed here, so an old decision reads exactly as it did.
"""

from django.db import migrations, models


def detail_to_notes(apps, schema_editor):
    Decision = apps.get_model("copier", "Decision")
    rows = Decision.objects.exclude(detail="").only("pk", "detail")
    for decision in rows.iterator(chunk_size=2000):
        decision.notes = [{"kind": "legacy_text", "text": decision.detail}]
        decision.save(update_fields=["notes"])


def notes_to_detail(apps, schema_editor):
    """Back: the legacy text restored; notes written since have no text to go back to
    (the code before put them in words itself), their rows keep an empty detail."""
    Decision = apps.get_model("copier", "Decision")
    for decision in Decision.objects.exclude(notes=[]).only("pk", "notes").iterator():
        decision.detail = "; ".join(n["text"] for n in decision.notes
                                    if n.get("kind") == "legacy_text")
        decision.save(update_fields=["detail"])


class Migration(migrations.Migration):
    dependencies = [("copier", "0022_second_factor_devices")]

    operations = [
        migrations.AddField(model_name="decision", name="notes",
                            field=models.JSONField(blank=True, default=list)),
        migrations.RunPython(detail_to_notes, notes_to_detail),
        migrations.RemoveField(model_name="decision", name="detail"),
    ]
