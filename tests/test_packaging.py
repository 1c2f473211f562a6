"""The product ships without the harness: the wheel and the Docker image hold no devkit/.

The development kit (the local runner, replay, bench, demo, the local venues and their
aiohttp servers) is a quarter of the code and none of the product; a deployment that
carried it would carry a venue simulator and a dependency it never runs. The wheel is
built for real (pip with the installed setuptools, no index, no build isolation: no
network) from a copy of the sources, devkit/ included, so the exclusion is what is
tested; the Dockerfile's COPY lines are read as Docker reads them. Then the built wheel,
alone on the path with its dependencies, starts Django: the product runs without the kit.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
DEV_PACKAGE = "devkit"
# What the harness is, by module name: devkit/ itself and the modules it holds, so that
# one moved back into the product under another package is caught too.
HARNESS = {DEV_PACKAGE, "devstack", "replay", "replay_brokers", "scenario", "localvenue",
           "copier_bench", "copier_demo", "copier_replay"}
DEV_ONLY = {"aiohttp"}  # distributions only the harness needs
SETUPTOOLS_NEEDED = (77,)  # pyproject's [build-system] requires


def _sources_copy(into: Path) -> Path:
    """The project as a checkout has it (the product and devkit/), outside the work tree:
    a build writes build/ and *.egg-info beside its sources."""
    src = into / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for package in ROOT.iterdir():
        if (package / "__init__.py").is_file() and package.name != "tests":
            shutil.copytree(package, src / package.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert (src / DEV_PACKAGE / "__init__.py").is_file()  # the build must leave it out
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import setuptools

    version = tuple(int(p) for p in setuptools.__version__.split(".")[:1])
    assert version >= SETUPTOOLS_NEEDED, (
        f"setuptools {setuptools.__version__} cannot build this project (pyproject asks for "
        ">=77): `pip install -e '.[dev]'` (make does it when pyproject.toml changes)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _sources_copy(tmp)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), "."], cwd=src, env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (tmp / "dist").glob("*.whl")
    return built


def harness_entries(names: list[str]) -> list[str]:
    """The wheel entries that are harness: under devkit/, or a harness module anywhere."""
    return [name for name in names
            if any(Path(part).stem in HARNESS for part in Path(name).parts)]


def dev_requirements(metadata: str) -> list[str]:
    """`Requires-Dist` lines naming a development-only distribution without the dev extra."""
    wrong = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.partition(":")[2].strip()
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name and name.group().lower() in DEV_ONLY and 'extra == "dev"' not in requirement:
            wrong.append(requirement)
    return wrong


def test_the_wheel_holds_the_product_and_no_harness(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        requires = whl.read(metadata).decode()
        sources = {n: whl.read(n).decode() for n in names if n.endswith(".py")}
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"core", "brokers", "accounts", "copier"}
    assert {"copier/tasks.py", "copier/shell/settings.py", "brokers/sim.py"} <= set(names)
    assert harness_entries(names) == []
    assert dev_requirements(requires) == []
    assert "aiohttp" in requires  # the dev extra still names it: the check reads real lines
    for name, text in sources.items():
        imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(text))
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(ast.parse(text))
                     if isinstance(node, ast.ImportFrom) and not node.level}
        assert not imported & (DEV_ONLY | {DEV_PACKAGE}), name
        assert '"copier.noop"' not in text, f"{name}: the bench's task is the devkit's"


def test_the_checks_catch_harness_and_dev_requirements() -> None:
    assert harness_entries(["copier/tasks.py", "devkit/__init__.py",
                            "copier/management/commands/copier_replay.py",
                            "brokers/localvenue/projectx.py", "copier/devstack.py"]) == [
        "devkit/__init__.py", "copier/management/commands/copier_replay.py",
        "brokers/localvenue/projectx.py", "copier/devstack.py"]
    assert dev_requirements('Requires-Dist: aiohttp<4,>=3.11\n'
                            'Requires-Dist: aiohttp<4; extra == "dev"\n'
                            'Requires-Dist: httpx<1\n') == ["aiohttp<4,>=3.11"]


def _instructions(dockerfile: str) -> list[list[str]]:
    """Each instruction as Docker reads it: continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile)
    return [shlex.split(line) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def copied_harness(dockerfile: str, product: set[str]) -> list[str]:
    """Each COPY source that is not product: devkit/, the whole context, or anything
    outside the known product files."""
    allowed = product | {"pyproject.toml", "README.md", "manage.py"}
    wrong = []
    for words in _instructions(dockerfile):
        if words[0].upper() not in ("COPY", "ADD"):
            continue
        sources = [w for w in words[1:-1] if not w.startswith("--")]
        wrong += [s for s in sources if s.strip("./") not in allowed]
    return wrong


def test_the_image_copies_no_harness_and_installs_no_dev_extra() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    product = {"core", "brokers", "accounts", "copier"}
    assert copied_harness(dockerfile, product) == []
    copied = {w.strip("./") for words in _instructions(dockerfile) if words[0] == "COPY"
              for w in words[1:-1]}
    assert product <= copied  # the check reads the real COPY lines
    runs = " ".join(" ".join(words) for words in _instructions(dockerfile) if words[0] == "RUN")
    assert "pip install ." in runs
    assert "[dev]" not in runs
    # the check itself: the whole context, the kit, or a stray file is caught
    assert copied_harness("COPY . .\nCOPY --chown=1 devkit ./devkit\nCOPY copier ./copier\n",
                          product) == [".", "devkit"]


def test_the_wheel_alone_runs_django_without_the_kit(wheel: Path, tmp_path: Path) -> None:
    """Only the wheel and its dependencies on the path (`-S`: no .pth, so no editable
    install of the checkout): the settings leave devkit out and every app loads."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(target)
    site_packages = sysconfig.get_paths()["purelib"]
    probe = ("import importlib.util, django\n"
             "from django.conf import settings\n"
             "django.setup()\n"
             "from django.core.management import get_commands\n"
             "from copier.shell.celery import app\n"
             "app.loader.import_default_modules()\n"
             "assert importlib.util.find_spec('devkit') is None\n"
             "assert 'devkit' not in settings.INSTALLED_APPS\n"
             "assert 'copier_listen' in get_commands()\n"
             "assert not {'copier_bench', 'copier_replay', 'copier_demo'} & set(get_commands())\n"
             "assert 'copier.check_disconnects' in app.tasks and 'copier.noop' not in app.tasks\n"
             "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COPIER_"))}
    env |= {"PYTHONPATH": f"{target}{os.pathsep}{site_packages}",
            "DJANGO_SETTINGS_MODULE": "copier.shell.settings"}
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"
