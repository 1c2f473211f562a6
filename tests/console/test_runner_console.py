"""`make run` as a trader meets it: a taken port said before anything starts, the banner
once everything answers and again on request, quiet logs, and a shutdown in dependency
order (web first, Redis and PostgreSQL last)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from devkit import devstack
from devkit.devstack import Banner, banner_print, free_port, ports_check
from tests.helpers import wait_until


def test_a_taken_port_is_said_plainly_before_anything_starts(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert ports_check({"Web": port, "Flower": free_port()}) == [
            f"port {port} (Web) is taken: another program (an earlier `make run`?) is "
            f"listening on 127.0.0.1:{port}. Stop it, or choose another port (--web-port)."]
        code = devstack.run(port, free_port(), tmp_path / "stack")
    assert code == 2
    assert f"port {port} (Web) is taken" in capsys.readouterr().err
    assert not (tmp_path / "stack").exists()  # no server was started, no secret made


def test_the_banner_is_kept_private_and_printed_again_on_request(tmp_path, capsys):
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "admin-password.txt").write_text("s3cret-pw\n")
    banner = Banner(stack, 8123, 5566, verbose=False)
    assert banner_print(stack) == 1
    assert "no copier is running" in capsys.readouterr().err
    banner.show()
    shown = capsys.readouterr().out
    for words in ("copier is running", "http://127.0.0.1:8123/ ", "password `s3cret-pw`",
                  "http://127.0.0.1:8123/admin/", "http://127.0.0.1:5566/",
                  "warnings only (-v for more)", "make banner",
                  # how to enrol: the page, optional locally
                  "two-factor  http://127.0.0.1:8123/two-factor/  enrol: optional here"):
        assert words in shown
    assert oct(banner.path.stat().st_mode & 0o777) == "0o600"
    assert banner_print(stack) == 0
    assert "password `s3cret-pw`" in capsys.readouterr().out
    banner.clear()
    assert banner_print(stack) == 1


def test_the_banner_says_when_two_factor_login_is_required(tmp_path, monkeypatch):
    monkeypatch.setenv("COPIER_REQUIRE_2FA", "1")
    text = Banner(tmp_path, 8123, 5566, verbose=False).text()
    assert "http://127.0.0.1:8123/two-factor/  enrol: required (COPIER_REQUIRE_2FA)" in text


CHILD = """
import signal, sys, time
def bye(*_):
    with open(sys.argv[2], "a") as out:
        out.write(sys.argv[1] + "\\n")
    time.sleep(0.2)  # a dependent that takes a moment to go
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
open(sys.argv[3], "w").close()
while True:
    time.sleep(0.05)
"""


def test_shutdown_stops_the_dependents_first_each_gone_before_the_next(tmp_path):
    log = tmp_path / "stopped.txt"
    procs = {}
    for name in ("worker", "listener", "beat", "flower", "web"):
        ready = tmp_path / f"{name}.ready"
        procs[name] = subprocess.Popen([sys.executable, "-c", CHILD, name, str(log), str(ready)],
                                       start_new_session=True)
        wait_until(ready.exists, timeout=10, interval=0.05, what=f"{name} started")
    devstack._stop_in_order(procs)
    assert log.read_text().split() == ["web", "flower", "beat", "listener", "worker"]
    assert all(p.poll() is not None for p in procs.values())


@pytest.mark.slow
def test_make_run_prints_the_banner_once_all_answer_and_stops_in_order(tmp_path: Path):
    web, flower = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "COPIER_ENCRYPTION_KEY")}
    stack = tmp_path / "stack"
    runner = subprocess.Popen(
        [sys.executable, "-m", "devkit.devstack", "run", "--web-port", str(web),
         "--flower-port", str(flower), "--stack-dir", str(stack)],
        cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        wait_until(lambda: (stack / "banner.txt").exists(), timeout=180, interval=0.5,
                   what="the banner")
        # everything answers by the time the banner is out
        assert devstack._http_ok(f"http://127.0.0.1:{web}/healthz")
        assert devstack._http_ok(f"http://127.0.0.1:{flower}/healthcheck")
        time.sleep(12)  # a beat period: its chatter must not reach the terminal
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            output, _ = runner.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            output, _ = runner.communicate()
    assert runner.returncode == 0, output[-3000:]
    banner_at = output.index("copier is running")
    after = output[banner_at:output.index("stopping web")]
    assert " INFO " not in after, after[-2000:]  # quiet: no periodic INFO lines
    assert "favicon" not in output
    order = [output.index(f"stopping {n}") for n in
             ("web", "flower", "beat", "listener", "worker", "Redis and PostgreSQL")]
    assert order == sorted(order)
    assert not (stack / "banner.txt").exists()
