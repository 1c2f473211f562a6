"""The local stack's secrets: generated on first run, kept 0600 under `.stack/`, required.

The local runner and the test harness share `devkit.devstack`: PostgreSQL with
SCRAM passwords instead of trust, Redis with `requirepass`, and the Django and
Fernet keys generated rather than written in the source (issue 8, item 14).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis
from cryptography.fernet import Fernet
from django.conf import settings

from devkit.devstack import SECRET_FILES, PostgresServer, StackSecrets, private_stack

pytestmark = pytest.mark.slow  # starts the local stack's servers: the full run, not the edit loop


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_secrets_are_generated_once_into_0600_files_and_reused(tmp_path):
    first = StackSecrets.load_or_create(tmp_path / "stack")
    for name in SECRET_FILES.values():
        path = tmp_path / "stack" / name
        assert path.exists(), name
        assert _mode(path) == 0o600, name
    assert _mode(tmp_path / "stack") & 0o077 in (0, 0o001)  # at most traversable
    assert StackSecrets.load_or_create(tmp_path / "stack") == first
    Fernet(first.encryption_key.encode())  # a usable key
    assert len(first.secret_key) >= 50
    assert len({first.postgres_password, first.redis_password, first.secret_key,
                first.encryption_key}) == 4


def test_a_secret_file_left_readable_by_others_is_made_private_again(tmp_path):
    StackSecrets.load_or_create(tmp_path)
    path = tmp_path / SECRET_FILES["redis_password"]
    path.chmod(0o644)
    StackSecrets.load_or_create(tmp_path)
    assert _mode(path) == 0o600


def _connect_without_password(port: int) -> None:
    psycopg.connect(host="127.0.0.1", port=port, user="copier", dbname="copier",
                    password="", passfile=os.devnull, connect_timeout=5).close()


@pytest.mark.django_db
def test_the_harness_postgresql_refuses_a_connection_without_the_password(pg_server):
    with pytest.raises(psycopg.OperationalError, match="password"):
        _connect_without_password(pg_server.port)
    with psycopg.connect(pg_server.url.replace("postgres://", "postgresql://"),
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_harness_redis_refuses_a_client_without_the_password(redis_server):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=redis_server.port).ping()
    assert redis.Redis.from_url(redis_server.url).ping()
    assert redis_server.url == settings.REDIS_URL


def test_the_stack_keeps_its_secrets_across_two_starts(tmp_path):
    with private_stack(tmp_path) as stack:
        first = stack.env()
        assert redis.Redis.from_url(stack.redis.url).ping()
    with private_stack(tmp_path) as stack:
        second = stack.env()
        with pytest.raises(psycopg.OperationalError, match="password"):
            _connect_without_password(stack.pg.port)
        with psycopg.connect(second["DATABASE_URL"].replace("postgres://", "postgresql://"),
                             connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    for name in ("SECRET_KEY", "COPIER_ENCRYPTION_KEY"):
        assert first[name] == second[name]
    # the servers' ports are new each start, the passwords are not
    assert first["DATABASE_URL"].split("@")[0] == second["DATABASE_URL"].split("@")[0]
    assert first["REDIS_URL"].split("@")[0] == second["REDIS_URL"].split("@")[0]


def test_a_data_directory_made_with_trust_authentication_is_refused(tmp_path):
    """Stacks from before the passwords: reusing one would keep trust auth on loopback."""
    datadir = tmp_path / "pg"
    datadir.mkdir()
    (datadir / "PG_VERSION").write_text("16\n")
    (datadir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    with pytest.raises(RuntimeError, match="make clean"):
        PostgresServer.start(datadir, password="x" * 20)


def _local_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COPIER_ENV", "SECRET_KEY", "COPIER_ENCRYPTION_KEY")}
    return subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_local_settings_carry_no_key_in_the_source():
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(repr(s.COPIER_ENCRYPTION_KEY)); print(s.SECRET_KEY)")
    one, two = _local_python(code), _local_python(code)
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[0] == "''"
    assert one.stdout.splitlines()[1] != two.stdout.splitlines()[1]  # made up per process
    source = (Path(settings.BASE_DIR) / "copier" / "shell" / "settings.py").read_text()
    assert "bG9jYWwtZGV2" not in source


def test_without_a_key_credentials_are_refused_with_what_to_do():
    done = _local_python("import django; django.setup(); "
                         "from core.fields import encrypt; encrypt('{\"token\": 1}')")
    assert done.returncode != 0
    assert "COPIER_ENCRYPTION_KEY" in done.stderr
    assert "make run" in done.stderr
