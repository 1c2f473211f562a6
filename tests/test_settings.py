"""Production mode: refuses to start without secrets, and passes `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys

from cryptography.fernet import Fernet
from django.conf import settings


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
