"""The contract is in the repository: every `docs/rules.md#section` the code, the tests and
the docs cite names a heading of docs/rules.md, and nothing cites the old COPY_RULES.md,
which a clone does not have.

A citation is how a reader goes from a line of code to the rule it keeps; one that points
at a renamed or missing heading sends them nowhere without a sound, so it is checked
here, as GitHub builds a heading's anchor.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
CONTRACT = ROOT / "docs" / "rules.md"
SOURCES = ("accounts", "brokers", "copier", "core", "devkit", "tests", "docs")
SUFFIXES = {".py", ".md", ".html", ".txt", ".toml", ".cfg"}
CITATION = re.compile(r"(?:docs/)?rules\.md#([a-z0-9-]+)")
# Being reworded on another branch of issue 20 (structured notes); the lead points them at
# docs/rules.md after the merge and empties this set.


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors() -> set[str]:
    text = re.sub(r"```.*?```", "", CONTRACT.read_text(), flags=re.S)
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def files() -> list[Path]:
    found = [ROOT / "README.md"]
    for top in SOURCES:
        found += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return [p for p in found if p != Path(__file__)]


def test_the_anchor_rule_is_githubs():
    assert anchor("Joining, settings and crashes") == "joining-settings-and-crashes"
    assert anchor("Off, exits only, active") == "off-exits-only-active"


def test_every_citation_names_a_section_of_the_contract():
    known = anchors()
    assert {"failed-exit-queue", "sync-divergence-guard", "orders-in-flight",
            "scenario-replay"} <= known
    broken = [f"{p.relative_to(ROOT)}: #{m.group(1)}"
              for p in files() for m in CITATION.finditer(p.read_text(errors="replace"))
              if m.group(1) not in known]
    assert broken == []


def test_nothing_cites_a_contract_outside_the_repository():
    old = sorted(str(p.relative_to(ROOT)) for p in files()
                 if "COPY_RULES" in p.read_text(errors="replace"))
    assert old == []
