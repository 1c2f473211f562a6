"""pytest plugin (`-p tests.stack`): a private PostgreSQL and Redis for the test run.

Loaded before pytest-django reads the settings, so the servers are up and
DATABASE_URL / REDIS_URL point at them when Django starts. Set DATABASE_URL
yourself to run the suite against servers of your own instead.

The servers have passwords and the run has its own Django and Fernet keys, as
under the local runner (`devkit.devstack.StackSecrets`), generated for this run
and kept nowhere: the environment hands them to the subprocesses tests start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from devkit.devstack import PostgresServer, RedisServer, StackSecrets

_servers: dict[str, object] = {}


def _start() -> None:
    keys = StackSecrets.fresh()
    for name, value in keys.django_env().items():
        os.environ.setdefault(name, value)
    if "DATABASE_URL" in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    root = Path(tempfile.mkdtemp(prefix="copier-tests-"))
    _servers["root"] = root
    _servers["pg"] = pg = PostgresServer.start(root / "pg", keys.postgres_password)
    _servers["redis"] = redis = RedisServer.start(root / "redis", keys.redis_password)
    os.environ["DATABASE_URL"] = pg.url
    os.environ["REDIS_URL"] = redis.url
    atexit.register(_stop)


def _stop() -> None:
    for key in ("redis", "pg"):
        server = _servers.pop(key, None)
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    root = _servers.pop("root", None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)  # type: ignore[arg-type]


_start()


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop()


def _own(key: str) -> object:
    server = _servers.get(key)
    if server is None:
        pytest.skip(f"needs the harness's own {key} server (DATABASE_URL was given from outside)")
    return server


@pytest.fixture(scope="session")
def pg_server() -> PostgresServer:
    return _own("pg")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    return _own("redis")  # type: ignore[return-value]
