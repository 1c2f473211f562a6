"""The data path runs one way: no import circle among the project's own modules.

An AST walk over core/, copier/, brokers/, accounts/ and devkit/ that counts every import
that runs, lazy ones inside functions included (a lazy import only hides a circle
from the interpreter, it does not remove it), and leaves out those under
`if TYPE_CHECKING:`, which never run. Importing `a.b.c` runs `a` and `a.b`
too, so those count as well, except where `a.b` is the importer's own package
(it has begun before the importer): a venue package's `__init__` exports its
adapter, whose modules import one another, and a circle among them still counts.
The standard library's `graphlib` finds the cycle.
The package-level floors (tests/test_layering.py) walk the same way, type-only
imports included.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "copier", "brokers", "accounts", "devkit")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Every project module the statement runs: the named ones and their packages."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{anchor}.{base}" if base else anchor
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    # The importer's own packages have begun before it runs, so its statement runs no more
    # of them: a package's __init__ may import its modules, and they one another, without
    # a circle. Unless the statement takes a name from one (`from pkg import Name`, not a
    # module): that reads the package's __init__, and counts.
    parts = module.split(".")
    begun = {".".join(parts[:i]) for i in range(1, len(parts))}
    found = set()
    for name in names:
        parts = name.split(".")
        found.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                     if p not in begun)
        found.add(name)
    if isinstance(node, ast.ImportFrom) and names[0] in begun and all(
            n in MODULES for n in names[1:]):
        found.discard(names[0])  # `from pkg import module`: the module only
    return sorted(found & MODULES.keys() - {module})


def _imports(module: str, *, type_only: bool = False) -> set[str]:
    """What the module imports; `type_only`: those under `if TYPE_CHECKING:` too."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    edges: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            edges.update(_imported(module, node))
        todo.extend(ast.iter_child_nodes(node))
    return edges


def import_graph(*, type_only: bool = False) -> dict[str, set[str]]:
    return {module: _imports(module, type_only=type_only) for module in MODULES}


def test_no_import_circle_in_the_projects_packages() -> None:
    sorter = graphlib.TopologicalSorter(import_graph())
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each module before the one importing it: reversed, it reads "imports"
        circle = " -> ".join(reversed(exc.args[1]))
        raise AssertionError(f"import circle: {circle}") from None


def test_the_walk_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    graph = import_graph()
    # imported inside an admin action, at run time only
    assert "copier.services.quarantine" in graph["copier.admin"]
    # only for annotations: never runs
    assert "accounts.models" not in graph["brokers.registry"]
    # relative import in a package's __init__
    assert "copier.shell.celery" in graph["copier"]
    # a package's own modules: its __init__ has begun before them, and is no edge...
    assert "brokers.projectx.adapter" in graph["brokers.projectx"]
    assert "brokers.projectx.stream" in graph["brokers.projectx.adapter"]
    assert "brokers.projectx" not in graph["brokers.projectx.adapter"]
    # ...unless a name is taken from it, which reads the __init__
    def statement(module: str, code: str) -> list[str]:
        node = ast.parse(code).body[0]
        assert isinstance(node, ast.Import | ast.ImportFrom)
        return _imported(module, node)
    assert statement("brokers.projectx.stream", "from brokers.projectx import ProjectXBroker"
                     ) == ["brokers.projectx"]
    assert statement("brokers.projectx.stream", "from brokers.projectx import adapter") == [
        "brokers.projectx.adapter"]
    assert statement("brokers.projectx.stream", "from .adapter import ProjectXBroker") == [
        "brokers.projectx.adapter"]
    # another package's modules run that package's __init__ on the way
    assert statement("copier.tasks", "from brokers.projectx.records import when") == [
        "brokers", "brokers.projectx", "brokers.projectx.records"]


def test_services_publish_through_the_publisher_never_the_tasks() -> None:
    graph = import_graph()
    services = [m for m in graph if m.startswith("copier.services.")]
    assert services
    for module in services:
        assert "copier.tasks" not in graph[module], module
    assert graph["copier.publisher"] <= {"copier", "copier.shell", "copier.shell.celery"}
