"""The floors: a package imports only the floors below it, so the code reads from the ground up.

    core  <-  brokers  <-  accounts  <-  copier  <-  devkit        (tests may import anything)

`core` is the ground floor (the vocabulary, the clock, the raw-SQL helpers, the encrypted
field): it imports no app, Django itself allowed. The brokers speak to venues and know
nothing of the accounts' tables or the copier; the accounts know the brokers (an account's
kind, its login's form); the copier runs the whole. The development kit (the local runner,
replay, bench, demo, the local venues) stands on all of them and is in no product: the
settings install it by name where it can be imported, and nothing below imports it. The
same AST walk as the module-circle
test (tests/test_import_graph.py), with the imports under `if TYPE_CHECKING:` counted too:
a type-only import still makes a reader of the lower floor read the upper one first, and
is where the next run-time import begins.
"""

from __future__ import annotations

from tests.test_import_graph import MODULES, import_graph

FLOORS = ("core", "brokers", "accounts", "copier", "devkit")
# Which app each package may import: every floor below its own.
MAY_IMPORT: dict[str, frozenset[str]] = {
    floor: frozenset(FLOORS[:n]) for n, floor in enumerate(FLOORS)
}
# The exceptions, by module prefix, each with why. None today: the local venues, which built
# the copier's TradingAccount from brokers/, moved up into devkit/ with the rest of the
# harness. The settings name devkit only as a string (INSTALLED_APPS, when
# `importlib.util.find_spec` finds it) and Celery finds its task by autodiscovery, so
# neither is an import; test_only_the_settings_name_the_devkit below holds that.
EXCEPTIONS: dict[str, frozenset[str]] = {}


def _allowed(module: str, exceptions: dict[str, frozenset[str]]) -> frozenset[str]:
    allowed = MAY_IMPORT[module.partition(".")[0]] | {module.partition(".")[0]}
    for prefix, extra in exceptions.items():
        if module == prefix or module.startswith(prefix + "."):
            allowed |= extra
    return allowed


def upward_imports(graph: dict[str, set[str]],
                   exceptions: dict[str, frozenset[str]] = EXCEPTIONS) -> list[str]:
    """Each import of a module from a floor it may not import, as `importer -> imported`
    (the module named, not the packages its import runs on the way)."""
    wrong = []
    for module, targets in graph.items():
        allowed = _allowed(module, exceptions)
        up = {t for t in targets if t.partition(".")[0] not in allowed}
        wrong += [f"{module} -> {t}" for t in up
                  if not any(other.startswith(t + ".") for other in up)]
    return sorted(wrong)


def test_each_package_imports_only_the_floors_below_it() -> None:
    wrong = upward_imports(import_graph(type_only=True))
    assert not wrong, "imports reaching up a floor:\n" + "\n".join(wrong)


def test_every_module_is_on_a_floor() -> None:
    assert {m.partition(".")[0] for m in MODULES} == set(FLOORS)


def test_each_exception_is_still_needed() -> None:
    """Once the harness moves out, its exception must go too, not stay as a hole."""
    wrong = upward_imports(import_graph(type_only=True), exceptions={})
    for prefix in EXCEPTIONS:
        assert any(line.startswith(prefix) for line in wrong), f"{prefix}: nothing needs it"


def test_the_check_sees_lazy_type_only_and_upward_imports() -> None:
    typed, run = import_graph(type_only=True), import_graph()
    # inside a function: a session is read where it is used
    assert "brokers.sessions" in typed["brokers.projectx.adapter"]
    # under `if TYPE_CHECKING:`, which the circle test leaves out and this one counts
    assert "brokers.base" in typed["brokers.registry"]
    assert "brokers.base" not in run["brokers.registry"]
    # an import of a higher floor is caught, whichever floor it skips
    assert upward_imports({"brokers.sim": {"copier.domain.rules"}}) == [
        "brokers.sim -> copier.domain.rules"]
    assert upward_imports({"core.clock": {"brokers", "brokers.base"}}) == [
        "core.clock -> brokers.base"]
    # downward and sideways within a package: allowed; the development kit may import any floor
    assert upward_imports({"accounts.models": {"brokers.base", "core.fields", "accounts.symbols"},
                           "devkit.localvenue.projectx": {"accounts.models", "copier.models"},
                           }) == []
    # nothing in the product imports the development kit
    assert upward_imports({"copier.tasks": {"devkit.tasks"}}) == ["copier.tasks -> devkit.tasks"]
    # a listed exception lets its prefix, and only its prefix, reach up
    listed = {"brokers.sim": frozenset({"accounts"})}
    assert upward_imports({"brokers.sim": {"accounts.models"}}, listed) == []
    assert upward_imports({"brokers.simx": {"accounts.models"}}, listed) == [
        "brokers.simx -> accounts.models"]


PRODUCT = FLOORS[:-1]


def test_only_the_settings_name_the_devkit() -> None:
    """A name in a string is an import the AST walk cannot see (`import_string`, a Celery
    `include`, an app label): in the product only the settings' conditional INSTALLED_APPS
    entry may spell it, so a deployment without devkit/ never reaches for it."""
    naming = sorted(name for name, path in MODULES.items()
                    if name.partition(".")[0] in PRODUCT and "devkit" in path.read_text())
    assert naming == ["copier.shell.settings"]


# Inside copier/, the rooms (README, "The floors"): the domain is pure and reads alone; the
# services do the work and know nothing of what runs them (the shell's settings and Celery
# app, the stream process, the tasks, the console). `copier` itself is the package every
# import of a room runs on the way, so it is never counted.
ROOMS: dict[str, frozenset[str]] = {
    "copier.domain": frozenset({"core", "copier.domain"}),
}
ROOMS_NOT: dict[str, frozenset[str]] = {
    "copier.domain": frozenset({"copier.shell", "copier.services"}),
    "copier.services": frozenset({"copier.shell", "copier.stream", "copier.tasks",
                                  "copier.console", "copier.admin", "copier.management"}),
}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def room_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import inside copier/ that leaves its room's rule, as `importer -> imported`."""
    wrong = []
    for module, targets in graph.items():
        for room, only in ROOMS.items():
            if _within(module, room):
                wrong += [f"{module} -> {t}" for t in targets
                          if t.partition(".")[0] in FLOORS and t != "copier"
                          and not any(_within(t, ok) for ok in only)]
        for room, never in ROOMS_NOT.items():
            if _within(module, room):
                wrong += [f"{module} -> {t}" for t in targets
                          if any(_within(t, no) for no in never)]
    return sorted(set(wrong))


def test_inside_the_copier_each_room_imports_only_what_its_rule_allows() -> None:
    wrong = room_imports(import_graph(type_only=True))
    assert not wrong, "imports across copier's rooms:\n" + "\n".join(wrong)


def test_the_room_check_catches_a_wrong_import() -> None:
    assert room_imports({"copier.domain.rules": {"copier", "copier.domain.symbol_map",
                                                 "core.trading"}}) == []
    assert room_imports({"copier.domain.rules": {"copier.models"}}) == [
        "copier.domain.rules -> copier.models"]
    assert room_imports({"copier.services.engine": {"copier.shell.celery"}}) == [
        "copier.services.engine -> copier.shell.celery"]
    assert room_imports({"copier.services.engine": {"copier.models", "copier.publisher"}}) == []
