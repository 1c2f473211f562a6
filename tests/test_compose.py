"""docker-compose.yml's health checks, run as compose runs them, against production settings.

There is no Docker engine here, so each app service's command and health check
are taken from docker-compose.yml and run on loopback with the production
environment (COPIER_ENV=production, real-looking secrets, a public host name in
ALLOWED_HOSTS), on the test database and Redis. A health check must pass when
the service works and fail when what it needs is gone (issue 8, item 11: the
web's check got the HTTPS redirect, so beat, waiting on it, never started).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import yaml
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from devkit.devstack import free_port
from tests.helpers import wait_until

COMPOSE = yaml.safe_load((Path(settings.BASE_DIR) / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APPS = ["web", "worker", "beat", "flower", "listener"]
COMPOSE_PORTS = {"web": 8000, "flower": 5555}
UNREACHABLE_DB = "postgres://copier:nope@127.0.0.1:9/copier"


def _depends(service: str) -> dict[str, str]:
    return {name: cond["condition"] for name, cond in SERVICES[service]["depends_on"].items()}


def test_beat_waits_for_migrations_and_the_servers_not_for_the_web():
    assert _depends("beat") == {"postgres": "service_healthy", "redis": "service_healthy",
                                "migrate": "service_completed_successfully"}


def test_the_apps_start_after_the_one_shot_migration():
    for name in ("web", "worker", "beat", "listener"):
        assert _depends(name)["migrate"] == "service_completed_successfully", name
    migrate = SERVICES["migrate"]
    assert migrate["restart"] == "no"
    assert "healthcheck" not in migrate
    assert _depends("migrate") == {"postgres": "service_healthy"}
    assert "migrate" not in str(SERVICES["web"]["command"])  # one migrator, not one per app


def test_every_app_has_a_health_check_of_its_own():
    for name in APPS:
        assert SERVICES[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert SERVICES[name]["environment"]["COPIER_ENV"] == "production", name
    assert "/proc/1" not in str(SERVICES["beat"]["healthcheck"])  # always true: checks nothing


def test_two_listener_replicas_run_the_broker_streams():
    listener = SERVICES["listener"]
    assert "manage.py copier_listen" in listener["command"]
    assert listener["deploy"]["replicas"] == 2  # one takes over when the other dies
    # long enough to close the streams and release the leases on SIGTERM
    assert int(listener["stop_grace_period"].rstrip("s")) >= 10
    assert "--health" in listener["healthcheck"]["test"]


def test_the_login_lockout_believes_the_one_proxy_in_front_and_no_more():
    """Production trusts X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER): a TLS proxy stands in
    front of the web, which is published on the host's loopback for it alone. The lockout
    then keys on the address that proxy saw, its one X-Forwarded-For entry, and believes
    nothing a client wrote before it; .env may say another count."""
    web = SERVICES["web"]
    assert _compose_default(web["environment"]["COPIER_TRUSTED_PROXIES"]) == "1"
    assert "${COPIER_TRUSTED_PROXIES:-" in web["environment"]["COPIER_TRUSTED_PROXIES"]
    assert all(str(port).startswith("127.0.0.1:") for port in web["ports"])


# --- running the services ------------------------------------------------------------------


def _test_database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def _compose_default(value: object) -> str:
    """Compose's `${NAME:-default}` as compose reads it with NAME unset in .env."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def _production_env(**overrides: str) -> dict[str, str]:
    """What a container gets: compose's environment and a filled-in .env, servers of the test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SECRET_KEY", "COPIER_ENCRYPTION_KEY", "COPIER_ENV")}
    env.update({k: _compose_default(v) for k, v in SERVICES["web"]["environment"].items()})
    env.update({
        "SECRET_KEY": secrets.token_urlsafe(50),
        "COPIER_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(12)}",
        "ALLOWED_HOSTS": "copier.example.com",  # the public name only, as in production
        "CSRF_TRUSTED_ORIGINS": "https://copier.example.com",
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # the code under test, even where another checkout is installed in the venv
        "PYTHONPATH": str(settings.BASE_DIR),
        "HOSTNAME": socket.gethostname(),  # what a container's shell has
        "LOG_LEVEL": "WARNING",
    })
    env.update(overrides)
    assert env["COPIER_ENV"] == "production"
    return env


def _localize(text: str, ports: dict[str, int]) -> str:
    """Compose's `$$` is a `$` for the container's shell; its ports become free loopback ones."""
    text = text.replace("$$", "$").replace("0.0.0.0", "127.0.0.1")  # noqa: S104
    for service, port in ports.items():
        text = re.sub(rf"(?<=[:=]){COMPOSE_PORTS[service]}\b", str(port), text)
    return text


def _command(service: str, ports: dict[str, int]) -> list[str]:
    command = SERVICES[service]["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    return [_localize(arg, ports) for arg in argv]


def _health(service: str, env: dict[str, str], ports: dict[str, int] | None = None
            ) -> subprocess.CompletedProcess[str]:
    kind, *test = SERVICES[service]["healthcheck"]["test"]
    test = [_localize(arg, ports or {}) for arg in test]
    argv = test if kind == "CMD" else ["sh", "-c", test[0]]
    return subprocess.run(argv, env=env, cwd=settings.BASE_DIR, capture_output=True, text=True,
                          timeout=60, check=False)


@contextlib.contextmanager
def _service(service: str, env: dict[str, str], ports: dict[str, int] | None = None
             ) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(_command(service, ports or {}), env=env, cwd=settings.BASE_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _status(url: str, host: str | None = None) -> int | None:
    request = urllib.request.Request(url)  # noqa: S310 (loopback, http)
    if host:
        request.add_header("Host", host)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _healthy(service: str, env: dict[str, str], ports: dict[str, int] | None = None) -> bool:
    return _health(service, env, ports).returncode == 0



@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_migrate_service_runs_under_production_settings():
    done = subprocess.run(_command("migrate", {}), env=_production_env(), cwd=settings.BASE_DIR,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "periodic tasks" in done.stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_web_health_check_passes_over_plain_http_under_production_settings():
    ports = {"web": free_port()}
    base = f"http://127.0.0.1:{ports['web']}"
    with _service("web", _production_env(), ports) as web:
        wait_until(lambda: _status(f"{base}/healthz") is not None or web.poll() is not None,
                   timeout=60, interval=0.3, what="gunicorn answering")
        assert web.poll() is None, web.stderr.read() if web.stderr else ""
        assert _status(f"{base}/healthz") == 200  # not the 301 to https
        # everything else still goes to https, and only under the public name
        assert _status(f"{base}/login/", host="copier.example.com") == 301
        assert _status(f"{base}/login/") == 400
        done = _health("web", _production_env(), ports)
        assert done.returncode == 0, done.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.parametrize("down", ["DATABASE_URL", "REDIS_URL"])
def test_web_health_check_fails_when_the_database_or_redis_is_unreachable(down):
    ports = {"web": free_port()}
    unreachable = {"DATABASE_URL": UNREACHABLE_DB, "REDIS_URL": "redis://127.0.0.1:9/0"}[down]
    env = _production_env(**{down: unreachable})
    url = f"http://127.0.0.1:{ports['web']}/healthz"
    with _service("web", env, ports) as web:
        wait_until(lambda: _status(url) is not None or web.poll() is not None, timeout=60,
                   interval=0.3, what="gunicorn answering")
        assert _status(url) == 503
        assert _health("web", env, ports).returncode != 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_worker_health_check_passes_only_while_the_worker_answers(clean_redis):
    env = _production_env()
    with _service("worker", env) as worker:
        wait_until(lambda: _healthy("worker", env) or worker.poll() is not None, timeout=90,
                   interval=1, what="worker answering its ping")
        assert worker.poll() is None
    assert not _healthy("worker", env)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_beat_health_check_passes_only_while_beat_sends_the_periodic_tasks(clean_redis):
    call_command("copier_setup")  # what the migrate service does
    env = _production_env()
    assert not _healthy("beat", env)  # registered, never sent
    try:
        with _service("beat", env) as beat:
            wait_until(lambda: _healthy("beat", env) or beat.poll() is not None, timeout=90,
                       interval=1, what="beat healthy")
            assert beat.poll() is None
        assert not _healthy("beat", _production_env(DATABASE_URL=UNREACHABLE_DB))
    finally:
        redis.Redis.from_url(settings.REDIS_URL).flushdb()  # the tasks beat sent


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_flower_health_check_passes_and_the_rest_of_flower_asks_for_a_login(clean_redis):
    ports = {"flower": free_port()}
    env = _production_env()
    with _service("flower", env, ports) as flower:
        wait_until(lambda: _healthy("flower", env, ports) or flower.poll() is not None,
                   timeout=60, interval=0.5, what="flower healthy")
        assert flower.poll() is None
        assert _status(f"http://127.0.0.1:{ports['flower']}/") == 401


@pytest.mark.django_db
def test_beat_health_check_fails_when_the_last_task_sent_is_old():
    call_command("copier_setup")
    PeriodicTask.objects.update(last_run_at=timezone.now() - timedelta(minutes=10))
    with pytest.raises(CommandError, match=r"no periodic task for 6\d\d s"):
        call_command("copier_beat_health")
    PeriodicTask.objects.filter(task="copier.dispatch_due").update(last_run_at=timezone.now())
    call_command("copier_beat_health")
    PeriodicTask.objects.update(enabled=False)  # a disabled task's run does not count
    with pytest.raises(CommandError, match="not sent any enabled"):
        call_command("copier_beat_health")


HEARTBEAT = "/tmp/copier_listen.alive"  # the container's, as compose names it


def _listener_argv(argv: list[str], heartbeat: Path) -> list[str]:
    """The container's /tmp is its own; here each test gets a file of its own."""
    return [str(heartbeat) if arg == HEARTBEAT else arg for arg in argv]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_listener_health_check_passes_while_it_scans_and_it_stops_cleanly(tmp_path):
    heartbeat = tmp_path / "alive"
    env = _production_env()
    kind, *check = SERVICES["listener"]["healthcheck"]["test"]
    assert kind == "CMD"
    check = _listener_argv(check, heartbeat)

    def healthy() -> bool:
        return subprocess.run(check, env=env, cwd=settings.BASE_DIR, capture_output=True,
                              timeout=60, check=False).returncode == 0

    assert not healthy()  # never ran
    proc = subprocess.Popen(_listener_argv(_command("listener", {}), heartbeat), env=env,
                            cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: heartbeat.exists() or proc.poll() is not None, timeout=60,
                   interval=0.3, what="the listener's first turn")
        assert proc.poll() is None
        assert healthy()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_listener_health_check_fails_when_the_database_is_unreachable(tmp_path):
    heartbeat = tmp_path / "alive"
    env = _production_env(DATABASE_URL=UNREACHABLE_DB)
    argv = _listener_argv(_command("listener", {}), heartbeat)
    with subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True) as proc:
        try:
            time.sleep(4)  # several turns, none reaching PostgreSQL
            assert proc.poll() is None  # it keeps trying, it does not crash
            assert not heartbeat.exists()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    _kind, *check = SERVICES["listener"]["healthcheck"]["test"]
    done = subprocess.run(_listener_argv(check, heartbeat), env=env, cwd=settings.BASE_DIR,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "never completed a turn" in done.stderr
