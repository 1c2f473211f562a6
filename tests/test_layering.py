"""The floors: a package imports only the floors below it, so the code reads from the ground up.

    core  <-  brokers  <-  accounts  <-  copier        (tests may import anything)

`core` is the ground floor (the vocabulary, the clock, the raw-SQL helpers, the encrypted
field): it imports no app, Django itself allowed. The brokers speak to venues and know
nothing of the accounts' tables or the copier; the accounts know the brokers (an account's
kind, its login's form); the copier runs the whole. The same AST walk as the module-circle
test (tests/test_import_graph.py), with the imports under `if TYPE_CHECKING:` counted too:
a type-only import still makes a reader of the lower floor read the upper one first, and
is where the next run-time import begins.
"""

from __future__ import annotations

from tests.test_import_graph import MODULES, import_graph

FLOORS = ("core", "brokers", "accounts", "copier")
# Which app each package may import: every floor below its own.
MAY_IMPORT: dict[str, frozenset[str]] = {
    floor: frozenset(FLOORS[:n]) for n, floor in enumerate(FLOORS)
}
# The exceptions, by module prefix, each with why.
EXCEPTIONS: dict[str, frozenset[str]] = {
    # The test harness's local venues (a ProjectX and a Tradovate server for the tests and
    # the bench): `LocalVenue.trading_account` builds the copier's TradingAccount for an
    # account it opened. Harness, not product: issue 20's next step moves the harness out
    # of the product, and this exception goes with it.
    "brokers.localvenue": frozenset({"accounts"}),
}


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
    assert upward_imports({"brokers.sim": {"copier.rules"}}) == ["brokers.sim -> copier.rules"]
    assert upward_imports({"core.clock": {"brokers", "brokers.base"}}) == [
        "core.clock -> brokers.base"]
    # downward, sideways within a package, and the listed harness: allowed
    assert upward_imports({"accounts.models": {"brokers.base", "core.fields", "accounts.symbols"},
                           "brokers.localvenue.projectx": {"accounts.models"}}) == []
    assert upward_imports({"brokers.localvenue.projectx": {"copier.models"}}) == [
        "brokers.localvenue.projectx -> copier.models"]
