"""Settings for the trade copier.

Everything comes from the environment so that the same code runs under the
local runner (private PostgreSQL and Redis on loopback), the tests and
`docker compose`. The defaults are safe for local use only; production mode
(`COPIER_ENV=production`) refuses to start without real secrets, and any other
mode than `local` or `production` is refused (`copier.envcheck`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from copier.envcheck import copier_env, production_problems

BASE_DIR = Path(__file__).resolve().parent.parent
try:
    ENV = copier_env(os.environ.get("COPIER_ENV"))
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
PRODUCTION = ENV == "production"
if PRODUCTION and (_problems := production_problems(os.environ)):
    raise ImproperlyConfigured("COPIER_ENV=production refuses to start:\n  - "
                               + "\n  - ".join(_problems))


def _flag(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").lower() in {"1", "true", "yes", "on"}


if PRODUCTION:  # both checked by production_problems above
    SECRET_KEY = os.environ["SECRET_KEY"]
    # Fernet key that encrypts broker credentials at rest (accounts.fields).
    COPIER_ENCRYPTION_KEY = os.environ["COPIER_ENCRYPTION_KEY"]
else:
    # No key is written here: a key in public source protects nothing. `make run` and the
    # test harness pass keys generated on first run and kept 0600 under .stack/. A bare
    # `manage.py` command without them (copier_replay, collectstatic) signs with a key of its
    # own process, and has no encryption key at all: credentials can then be neither stored
    # nor read (accounts.fields says what to do) rather than locked with a key lost at exit.
    SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50)
    COPIER_ENCRYPTION_KEY = os.environ.get("COPIER_ENCRYPTION_KEY", "")
# Off by default even locally: query logging costs the hot path a third of its time.
DEBUG = _flag("DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "accounts",
    "brokers",
    "copier",
]

MIDDLEWARE = [
    # First: the container's health check speaks plain HTTP to 127.0.0.1 (docker-compose.yml).
    "copier.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's CSS and JS from STATIC_ROOT under gunicorn (docker compose), with no
    # proxy to configure; `manage.py collectstatic` fills it (the Dockerfile runs it).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "copier.urls"
WSGI_APPLICATION = "copier.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://copier@127.0.0.1:5432/copier")
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=600, conn_health_checks=True)
# Server-side binding lets psycopg prepare a statement the fifth time a connection runs it:
# the copy path's hand-written statements (joins, CTEs) then skip parsing and planning,
# about a quarter of a one-follower copy's time (copier_bench). PostgreSQL re-plans a
# prepared statement after a migration, but refuses one whose result columns changed:
# hence no `SELECT *` or `RETURNING *` in the hand-written SQL.
_db["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
# The `sim` paper broker keeps its books in the same database but on its own
# connection: like a real broker, what it executed stays executed when the
# copier's transaction rolls back (a crash mid-placement), which is what makes
# the client-order-id deduplication observable in tests.
DATABASES = {"default": _db, "broker": {**_db}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Locally (runner, tests) straight from the apps, no collectstatic needed; in production
# from STATIC_ROOT as collected into the image, read once at start.
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = not PRODUCTION

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Celery -----------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True  # no result backend on the hot path
CELERY_RESULT_BACKEND = None
# At-least-once delivery: a task is acknowledged after it ran, and a worker
# killed mid-task gives it back. Every task is idempotent against the DB.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-late
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Countdowns (failed-exit retries) stay far below this, so a delayed task is
# never redelivered early (celery docs, "Redis caveats"; kombu issue 337).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "7200")),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "retry_on_timeout": True,
}
# Publishing must not hang a request when Redis is away: the event is stored
# already and the periodic re-dispatch picks it up.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Write each task's last_run_at back as it is sent, not every 3 minutes: the beat health
# check (copier_beat_health) reads it. One UPDATE per sent task, a few a minute.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#beat-sync-every
CELERY_BEAT_SYNC_EVERY = 1
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower
# No "task-sent" events: one more Redis publish on the hot path for a state
# Flower can do without.
CELERY_TASK_SEND_SENT_EVENT = False

# --- Copier -----------------------------------------------------------------
# Followers handled by one task; the rest of a large group fans out to more
# tasks that other worker processes pick up in parallel.
COPIER_BATCH_SIZE = int(os.environ.get("COPIER_BATCH_SIZE", "100"))
# Failed-exit retries get up to this fraction of extra delay, so that many
# followers of one broker do not retry in lockstep. Replay uses none.
COPIER_RETRY_JITTER = float(os.environ.get("COPIER_RETRY_JITTER", "0.1"))
COPIER_FAILED_EXIT_KEEP_DAYS = 7
# A broker's position statement that no fill explains within this many seconds is applied
# (a leader's as a missed move, close-only): venues send a position before its fill.
COPIER_POSITION_GRACE_SECONDS = int(os.environ.get("COPIER_POSITION_GRACE_SECONDS", "3"))
# An event stored but still unprocessed after this long is dispatched again.
COPIER_REDISPATCH_AFTER_SECONDS = int(os.environ.get("COPIER_REDISPATCH_AFTER_SECONDS", "30"))

if PRODUCTION:
    SECURE_SSL_REDIRECT = _flag("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_CONTENT_TYPE_NOSNIFF = True
