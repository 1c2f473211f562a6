"""The README's first command: the whole stack comes up and answers on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from devkit.devstack import SECRET_FILES, free_port
from tests.helpers import wait_until


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.mark.slow
def test_runner_brings_up_admin_worker_beat_and_flower(tmp_path: Path):
    web, flower = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "COPIER_ENCRYPTION_KEY")}
    runner = subprocess.Popen(
        [sys.executable, "-m", "devkit.devstack", "run", "--web-port", str(web),
         "--flower-port", str(flower), "--stack-dir", str(tmp_path / "stack")],
        cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        wait_until(lambda: _status(f"http://127.0.0.1:{web}/login/") == 200, timeout=120,
                   interval=0.5, what="admin login page")
        wait_until(lambda: _status(f"http://127.0.0.1:{flower}/healthcheck") == 200,
                   timeout=60, interval=0.5, what="Flower healthcheck")
        assert _status(f"http://127.0.0.1:{web}/healthz") == 200
        assert _status(f"http://127.0.0.1:{web}/") == 200  # redirected to the admin login
        for name in ("admin-password.txt", *SECRET_FILES.values()):
            secret = tmp_path / "stack" / name
            assert secret.exists(), name
            assert oct(secret.stat().st_mode & 0o777) == "0o600", name
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            output, _ = runner.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            output, _ = runner.communicate()
    assert runner.returncode == 0, output[-3000:]
    assert "copier is running" in output
    assert "demo seeded" in output
    assert _status(f"http://127.0.0.1:{web}/healthz") is None  # everything stopped
