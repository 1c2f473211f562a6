"""No dead code: vulture at 60 % over the product, the kit and the tests ([tool.vulture] in
pyproject.toml) reports nothing that devkit/vulture_allow.py does not explain.

Code nothing calls is code nobody reads the consequences of; a name Django, Celery, a
template, a library or pytest reaches by name looks the same to vulture, so the whitelist
says who reaches it. The second test keeps that list honest: an entry vulture would not
report without it hides the day its name does go dead.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["vulture"]
ALLOW = "devkit/vulture_allow.py"
FOUND = 3  # vulture's exit status when it reports something


def _vulture(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "vulture", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert not done.stderr, done.stderr  # a path or an option vulture could not read
    assert done.returncode in (0, FOUND), done.stdout
    return done


def _allowed() -> set[str]:
    """The names the whitelist marks used: its `_.name` expressions."""
    tree = ast.parse((ROOT / ALLOW).read_text())
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "_"}


def test_vulture_finds_no_dead_code():
    assert ALLOW in CONFIG["paths"]
    done = _vulture()
    assert not done.stdout, (
        f"vulture (min_confidence {CONFIG['min_confidence']}) finds code nothing uses:\n"
        f"{done.stdout}\nDelete it. If something does use it by name (Django, Celery, a "
        f"template, a library's protocol, pytest), add `_.name` to {ALLOW} under the "
        "comment that says who, or in a new group whose comment says why.")


def test_the_whitelist_names_only_what_vulture_would_report():
    paths = [p for p in CONFIG["paths"] if p != ALLOW]
    reported = set(re.findall(r"'(\w+)'", _vulture(
        *paths, "--exclude", ",".join([*CONFIG["exclude"], ALLOW])).stdout))
    stale = sorted(_allowed() - reported)
    assert not stale, (
        f"{ALLOW} lists names vulture would not report without it: {', '.join(stale)}. "
        "Their code is gone, or the code or the tests now use them in plain sight: take "
        "them out of the list (and a group's comment that no longer holds).")
