"""Production mode: refuses to start without secrets, and passes `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

pytestmark = pytest.mark.slow  # settings imported in fresh processes: not the edit loop


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("SECRET_KEY", "COPIER_ENCRYPTION_KEY")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR,
                          env={**base, **env}, capture_output=True, text=True, timeout=120,
                          check=False)


def test_production_mode_refuses_to_start_without_secrets():
    done = _manage("check", COPIER_ENV="production")
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr


def test_production_settings_pass_check_deploy():
    done = _manage("check", "--deploy", "--fail-level", "WARNING", COPIER_ENV="production",
                   SECRET_KEY="x" * 20 + "-Zq8#vK2!pL9@wR4$tY7^uI1&oP3*aS6(dF0)",
                   COPIER_ENCRYPTION_KEY=Fernet.generate_key().decode())
    assert done.returncode == 0, done.stderr + done.stdout


def test_an_empty_encryption_key_is_refused_in_production():
    done = _manage("check", COPIER_ENV="production", SECRET_KEY="x" * 60,
                   COPIER_ENCRYPTION_KEY="")
    assert done.returncode != 0
    assert "COPIER_ENCRYPTION_KEY" in done.stderr


def test_collected_static_files_are_served_without_a_proxy(tmp_path, settings, client):
    """Under gunicorn (docker compose) nothing else serves the admin's CSS."""
    from django.core.management import call_command

    settings.STATIC_ROOT = tmp_path
    settings.WHITENOISE_USE_FINDERS = settings.WHITENOISE_AUTOREFRESH = False  # as in production
    call_command("collectstatic", "--noinput", "-v", "0")
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")


# --- COPIER_ENV and the production secrets (issue 8, item 15) ------------------------------

_SECRETS = ("COPIER_ENV", "SECRET_KEY", "COPIER_ENCRYPTION_KEY", "POSTGRES_PASSWORD",
            "FLOWER_BASIC_AUTH")


def _import_settings(**env: str) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh interpreter: they are read once, at import."""
    base = {k: v for k, v in os.environ.items() if k not in _SECRETS}
    return subprocess.run([sys.executable, "-c", "import copier.shell.settings"],
                          cwd=settings.BASE_DIR, env={**base, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def _good_production(**overrides: str) -> dict[str, str]:
    good = {"COPIER_ENV": "production", "SECRET_KEY": "Zq8#vK2!pL9@wR4$tY7^uI1&oP3*aS6(dF0)" * 2,
            "COPIER_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "POSTGRES_PASSWORD": "u2C9-hW4x7QeLr0t", "FLOWER_BASIC_AUTH": "ops:kP3-vX8qLm2n"}
    return {**good, **overrides}


def _env_example() -> dict[str, str]:
    lines = (settings.BASE_DIR / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_a_good_production_environment_is_accepted():
    done = _import_settings(**_good_production())
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("value", ["prod", "Production", "staging", "dev", "local "])
def test_an_unknown_copier_env_is_refused_naming_the_allowed_values(value):
    done = _import_settings(COPIER_ENV=value)
    assert done.returncode != 0
    assert f"COPIER_ENV={value!r}" in done.stderr
    assert "local, production" in done.stderr


@pytest.mark.parametrize("name", ["SECRET_KEY", "COPIER_ENCRYPTION_KEY", "POSTGRES_PASSWORD",
                                  "FLOWER_BASIC_AUTH"])
def test_each_placeholder_of_env_example_is_refused_in_production(name):
    done = _import_settings(**_good_production(**{name: _env_example()[name]}))
    assert done.returncode != 0
    assert name in done.stderr
    assert "ImproperlyConfigured" in done.stderr


def test_env_example_as_it_comes_is_refused_naming_every_value_to_replace():
    done = _import_settings(**{**_env_example(), "COPIER_ENV": "production"})
    assert done.returncode != 0
    for name in ("SECRET_KEY", "COPIER_ENCRYPTION_KEY", "POSTGRES_PASSWORD",
                 "FLOWER_BASIC_AUTH"):
        assert name in done.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    ({"SECRET_KEY": "short-but-not-a-placeholder"}, "SECRET_KEY is too short"),
    ({"SECRET_KEY": "ab" * 40}, "SECRET_KEY has too few different characters"),
    ({"SECRET_KEY": "django-insecure-" + "k3#Lp9!x" * 8}, "SECRET_KEY is Django's insecure"),
    ({"COPIER_ENCRYPTION_KEY": "not-a-fernet-key"}, "COPIER_ENCRYPTION_KEY is not a Fernet key"),
    ({"DATABASE_URL": "postgres://copier:change-me@postgres:5432/copier"},
     "DATABASE_URL has the .env.example placeholder as its password"),
    ({"FLOWER_BASIC_AUTH": "admin"}, "FLOWER_BASIC_AUTH must be user:password"),
    ({"FLOWER_BASIC_AUTH": "admin:"}, "FLOWER_BASIC_AUTH must be user:password"),
])
def test_weak_production_secrets_are_refused_with_a_clear_error(overrides, message):
    done = _import_settings(**_good_production(**overrides))
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize("value", ["5pm America/Chicago", "17:00 Mars/Olympus", "25:00 UTC"])
def test_a_malformed_session_reset_refuses_to_start(value):
    done = _import_settings(COPIER_SESSION_RESET=value)
    assert done.returncode != 0
    assert "COPIER_SESSION_RESET" in done.stderr


def test_the_session_reset_is_read_from_the_environment():
    base = {k: v for k, v in os.environ.items() if k not in _SECRETS}
    done = subprocess.run(
        [sys.executable, "-c", "import copier.shell.settings as s; print(s.COPIER_SESSION_RESET)"],
        cwd=settings.BASE_DIR, env={**base, "COPIER_SESSION_RESET": "16:00 America/New_York"},
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "16:00 America/New_York"


# --- check --deploy as docker compose runs web (issue 19, "Headers") -----------------------

def _compose_environment() -> dict[str, str]:
    """What the web container sees: `.env.example` with each placeholder replaced, and the
    compose file's own `environment` (COPIER_ENV, DATABASE_URL, REDIS_URL)."""
    env = {**_env_example(), **_good_production()}
    env["DATABASE_URL"] = f"postgres://copier:{env['POSTGRES_PASSWORD']}@postgres:5432/copier"
    env["REDIS_URL"] = "redis://redis:6379/0"
    return env


def test_the_compose_environment_passes_check_deploy_with_nothing_silenced():
    """No warning at all, and none silenced: a silenced check would need a reason written
    next to it in the settings (and this test changed to name it)."""
    done = _manage("check", "--deploy", "--fail-level", "WARNING", **_compose_environment())
    assert done.returncode == 0, done.stderr + done.stdout
    assert "System check identified no issues (0 silenced)." in done.stdout, done.stdout


def test_a_malformed_webhook_allow_list_refuses_to_start():
    done = _import_settings(COPIER_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32, 10.0.0.0/33")
    assert done.returncode != 0
    assert "COPIER_WEBHOOK_ALLOWED_NETWORKS: '10.0.0.0/33' is not a network" in done.stderr


def test_a_malformed_encryption_key_list_refuses_to_start_in_any_mode():
    good = Fernet.generate_key().decode()
    for env in ({}, _good_production()):
        done = _import_settings(**{**env, "COPIER_ENCRYPTION_KEY": f"{good},not-a-key"})
        assert done.returncode != 0
        assert "COPIER_ENCRYPTION_KEY: key 2 of 2 is not a Fernet key" in done.stderr
        assert good not in done.stderr


def test_two_encryption_keys_are_accepted_in_production():
    keys = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    done = _import_settings(**_good_production(COPIER_ENCRYPTION_KEY=keys))
    assert done.returncode == 0, done.stderr
