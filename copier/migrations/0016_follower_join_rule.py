"""The join rule in the database (docs/rules.md#joining-settings-and-crashes): no save order can undo it.

A follower's start (`start_event_id`) only ever moves forward; one moved to another group,
or given another account, starts after the newest leader event; every follower of a group
given another leader does too. A row saved from a copy loaded before (the admin's inline
form saving a follower after its group's save moved the start) keeps the newer start.
"""

from django.db import migrations

WATERMARK = "(SELECT COALESCE(MAX(id), 0) FROM copier_leaderevent)"

FORWARD = f"""
CREATE FUNCTION copier_follower_join() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.group_id IS DISTINCT FROM OLD.group_id
            OR NEW.account_id IS DISTINCT FROM OLD.account_id THEN
        NEW.start_event_id := GREATEST(NEW.start_event_id, {WATERMARK});
    END IF;
    NEW.start_event_id := GREATEST(NEW.start_event_id, OLD.start_event_id);
    RETURN NEW;
END $$;
CREATE TRIGGER copier_follower_join BEFORE UPDATE ON copier_follower
    FOR EACH ROW EXECUTE FUNCTION copier_follower_join();

CREATE FUNCTION copier_copygroup_leader_join() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE copier_follower SET start_event_id = GREATEST(start_event_id, {WATERMARK})
        WHERE group_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER copier_copygroup_leader_join AFTER UPDATE OF leader_id ON copier_copygroup
    FOR EACH ROW WHEN (OLD.leader_id IS DISTINCT FROM NEW.leader_id)
    EXECUTE FUNCTION copier_copygroup_leader_join();
"""

BACKWARD = """
DROP TRIGGER copier_copygroup_leader_join ON copier_copygroup;
DROP FUNCTION copier_copygroup_leader_join();
DROP TRIGGER copier_follower_join ON copier_follower;
DROP FUNCTION copier_follower_join();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("copier", "0015_venue_numbers_64bit"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
