"""Every worked scenario through `copier_replay`, compared by the rule of scenarios/README.md."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from accounts.models import TradingAccount
from devkit.localvenue import LocalVenue, venue_start
from devkit.replay import eager_tasks, replay_run
from devkit.scenario import load
from tests.scenarios.compare import mismatches

SHARED = Path(
    os.environ.get("COPIER_SCENARIOS_DIR", settings.BASE_DIR.parent / "shared" / "scenarios")
)
OURS = Path(__file__).parent / "cases"
SCENARIOS = sorted(SHARED.glob("*.json")) + sorted(OURS.glob("*.json"))

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_the_shared_scenarios_are_there():
    """The contract's worked examples live beside the repository (`../shared`), as in CI;
    a clone of the public repository has only ours, and says so."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the contract's worked scenarios are not run "
                    "(set COPIER_SCENARIOS_DIR to run them)")
    assert len(list(SHARED.glob("*.json"))) >= 6, f"no scenarios found in {SHARED}"


def replay(path: Path, *flags: str) -> dict:
    out = io.StringIO()
    call_command("copier_replay", str(path), *flags, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def venues() -> Iterator[dict[str, LocalVenue]]:
    """One local server per venue for the module's replays (each replay opens accounts of
    its own there), started when a replay first needs it."""
    started: dict[str, LocalVenue] = {}
    yield started
    for venue in started.values():
        venue.stop()


@pytest.mark.slow  # every replay: the full run's, not the edit loop's
@pytest.mark.parametrize("broker", ["sim", "projectx", "tradovate"])
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_replays_as_expected(path: Path, broker: str, venues: dict[str, LocalVenue]):
    """On the sim through the command; on a venue through the real adapter and its stream,
    against the module's local server of that venue."""
    case = json.loads(path.read_text())
    # what differs at a venue (ProjectX's fees move a guarded account's equity)
    expected = {**case["expected"], **case.get("expected_by_broker", {}).get(broker, {})}
    if broker == "sim":
        actual = replay(path, "--keep")
    else:
        venue = venues.get(broker) or venues.setdefault(broker, venue_start(broker))
        with eager_tasks():
            actual = replay_run(load(path.read_text()), broker=broker, venue=venue)
    assert mismatches(expected, actual) == []
    if "decisions" in expected:
        assert actual["decisions"] == expected["decisions"]


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["projectx", "tradovate"])
def test_replay_command_runs_on_a_venue_of_its_own(broker: str):
    """`--broker`: the command starts the venue's local server, replays, stops it."""
    path = SHARED / "05_sync_guard_pause_and_heal.json"
    if not path.is_file():
        path = OURS / "24_follower_outage_for_minutes.json"
    expected = json.loads(path.read_text())["expected"]
    assert mismatches(expected, replay(path, "--keep", "--broker", broker)) == []


@pytest.mark.worker
@pytest.mark.parametrize(
    "path", [p for p in SCENARIOS if p.stem.startswith(("04", "05", "24"))], ids=lambda p: p.stem
)
def test_scenario_replays_live_through_a_real_worker(path: Path, clean_redis: None):
    expected = json.loads(path.read_text())["expected"]
    assert mismatches(expected, replay(path, "--live")) == []


@pytest.mark.slow
def test_replay_default_mode_needs_no_running_server(tmp_path: Path):
    """No --keep: a private PostgreSQL of its own, tasks in-process, nothing else running."""
    path = SHARED / "04_failed_exit_retried.json"
    env = {**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:9/none",
           "REDIS_URL": "redis://127.0.0.1:9/0"}
    done = subprocess.run(
        [sys.executable, "manage.py", "copier_replay", str(path)], cwd=settings.BASE_DIR,
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = json.loads(path.read_text())["expected"]
    assert mismatches(expected, json.loads(done.stdout)) == []


BAD_INPUTS = {
    "not json {": "malformed JSON",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "fill", "account": "X", "symbol": "ES",'
    ' "side": "buy", "qty": 1}]}': "step 1 (fill): unknown account 'X'",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "fill", "account": "L1", "symbol": "ES",'
    ' "side": "buy", "qty": -2}]}': "step 1 (fill): qty must be a whole number > 0",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "fill", "account": "L1", "symbol": "ES",'
    ' "side": "buy", "qty": 1.5}]}': "step 1 (fill): qty must be a whole number > 0",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "fill", "account": "L1", "symbol": "ES",'
    ' "side": "hold", "qty": 1}]}': "step 1 (fill): side must be buy or sell",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "fill", "account": "L1", "symbol": "$$",'
    ' "side": "buy", "qty": 1}]}': "step 1 (fill): invalid symbol",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "advance", "seconds": 1},'
    ' {"op": "explode"}]}': "step 2: unknown op 'explode'",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "advance", "seconds": -1}]}':
        "step 1 (advance): seconds must be a number",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "enable", "account": "L1",'
    ' "enabled": false}]}': "step 1 (enable): L1 follows no group",
    '{"accounts": [{"name": "L1"}, {"name": "F1"}], "groups": [{"name": "g", "leader": "L1",'
    ' "followers": [{"account": "F1", "multiplier": "0"}]}]}': "multiplier must be > 0",
    '{"accounts": [{"name": "L1"}, {"name": "L1"}]}': "duplicate account name",
    '{"accounts": [{"name": "L1", "broker": "tradovate"}]}': "sim broker only",
    '{"accounts": [{"name": "L1"}], "groups": [{"name": "g", "leader": "L1",'
    ' "followers": [{"account": "L1"}]}]}': "both a leader and a follower",
    '[1, 2]': "expected an object",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "reverse", "group": "x",'
    ' "reverse": true}]}': "step 1 (reverse): unknown group 'x'",
    '{"accounts": [{"name": "L1"}, {"name": "F1"}], "groups": [{"name": "g", "leader": "L1"}],'
    ' "steps": [{"op": "join", "account": "L1", "group": "g"}]}': "L1 leads a group",
    '{"accounts": [{"name": "L1"}, {"name": "F1"}], "groups": [{"name": "g", "leader": "L1"}],'
    ' "steps": [{"op": "join", "account": "F1", "group": "g", "multiplier": "0"}]}':
        "step 1 (join): multiplier must be > 0",
    '{"accounts": [{"name": "L1"}, {"name": "F1"}], "steps": [{"op": "join",'
    ' "account": []}]}': "step 1 (join): account must be non-empty text",
    '{"accounts": [{"name": "L1"}, {"name": "F1"}], "steps": [{"op": "leave",'
    ' "account": "F1"}]}': "step 1 (leave): F1 follows no group",
    '{"accounts": [{"name": "L1"}, {"name": "F1"}], "groups": [{"name": "g", "leader": "L1",'
    ' "followers": [{"account": "F1", "multiplier": "3000"}]}]}': "at most 100",
    # numbers beyond what the books hold: a clear error, not another number stored
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "fail_orders", "account": "L1",'
    ' "count": 3000000000}]}': "step 1 (fail_orders): count must be at most 100,000",
    '{"accounts": [{"name": "L1"}], "steps": [{"op": "fill", "account": "L1", "symbol": "ES",'
    ' "side": "buy", "qty": 18446744073709551616}]}': "step 1 (fill): qty must be at most",
}


@pytest.mark.parametrize(("text", "message"), BAD_INPUTS.items(), ids=range(len(BAD_INPUTS)))
def test_bad_scenario_is_refused_with_a_clear_message_and_writes_nothing(
    tmp_path: Path, text: str, message: str
):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CommandError) as caught:
        replay(path, "--keep")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not TradingAccount.objects.exists()


def test_missing_scenario_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CommandError, match="cannot read"):
        replay(tmp_path / "nope.json", "--keep")
