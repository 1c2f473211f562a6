"""Settings for the trade copier.

Everything comes from the environment so that the same code runs under the
local runner (private PostgreSQL and Redis on loopback), the tests and
`docker compose`. The defaults are safe for local use only; production mode
(`COPIER_ENV=production`) refuses to start without real secrets, and any other
mode than `local` or `production` is refused (`copier.shell.envcheck`).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import secrets
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from copier import periodic
from copier.outbound import networks_parse
from copier.shell.envcheck import copier_env, production_problems, second_factor_required
from core.keys import KeyListError, keys_split

BASE_DIR = Path(__file__).resolve().parent.parent.parent
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
    # Fernet key that encrypts broker credentials at rest (core.fields); several,
    # comma-separated, while a key is rotated: the first encrypts (core.keys).
    COPIER_ENCRYPTION_KEY = os.environ["COPIER_ENCRYPTION_KEY"]
else:
    # No key is written here: a key in public source protects nothing. `make run` and the
    # test harness pass keys generated on first run and kept 0600 under .stack/. A bare
    # `manage.py` command without them (copier_replay, collectstatic) signs with a key of its
    # own process, and has no encryption key at all: credentials can then be neither stored
    # nor read (core.fields says what to do) rather than locked with a key lost at exit.
    SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50)
    COPIER_ENCRYPTION_KEY = os.environ.get("COPIER_ENCRYPTION_KEY", "")
    if COPIER_ENCRYPTION_KEY:  # a key list given wrong is said at start, not at first read
        try:
            keys_split(COPIER_ENCRYPTION_KEY)
        except KeyListError as exc:
            raise ImproperlyConfigured(str(exc)) from None
# Off by default even locally: query logging costs the hot path a third of its time.
DEBUG = _flag("DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Two-factor login (copier.services.second_factor): django-otp's core. Its TOTP and
    # static plugins are not installed: they keep the key and the recovery codes in plain
    # text; the copier's own devices (copier.models.AuthenticatorDevice, RecoveryCodeDevice)
    # keep the key encrypted and the codes hashed.
    "django_otp",
    # Login throttling (AXES_* below)
    "axes",
    "accounts",
    "brokers",
    "copier",
    # After copier: copier/templates/admin/djcelery/ replaces its periodic task form (whose
    # inline script the Content-Security-Policy refuses) with one loading a static file.
    "django_celery_beat",
    # Django's admin with the copier's site (its name, a "System" section); last, so that
    # the copier's admin/base_site.html (favicon, dashboard link) wins over the admin's own.
    "copier.console.apps.CopierAdminConfig",
]
# The development kit (devkit/: the local runner, replay, bench and demo commands, the local
# venues) where it can be imported: a checkout has it, the wheel and the Docker image do not.
# By name, never imported: the one place the product names it (tests/test_layering.py).
if importlib.util.find_spec("devkit") is not None:
    INSTALLED_APPS.append("devkit")

MIDDLEWARE = [
    # Outermost: CSP, X-Frame-Options, Referrer-Policy, nosniff on every answer (/healthz
    # and error pages too), then no redirect off this site, whoever answered it.
    "copier.shell.middleware.SecurityHeadersMiddleware",
    "copier.shell.middleware.SameOriginRedirectMiddleware",
    # Then: the container's health check speaks plain HTTP to 127.0.0.1 (docker-compose.yml).
    "copier.shell.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's CSS and JS from STATIC_ROOT under gunicorn (docker compose), with no
    # proxy to configure; `manage.py collectstatic` fills it (the Dockerfile runs it).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the second factor
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A user who owes a code (or, where it is required, an enrolment) reaches nothing else
    "copier.shell.middleware.SecondFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a lockout its backend flagged into the lockout page
    "axes.middleware.AxesMiddleware",
]

# --- Browser protections (copier.shell.middleware.SecurityHeadersMiddleware) --------------
# Every page, in every mode: nothing of the admin or the console runs inline or comes from
# another origin (tests/console/test_headers.py), so the policy allows this origin only.
COPIER_CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",  # with X-Frame-Options: no page inside another's frame
    "form-action": "'self'",
}
X_FRAME_OPTIONS = "DENY"
# A link followed from the console tells another site nothing of the console's addresses.
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
# After the login, to the dashboard: also where a `next` that leaves the site is replaced
# (Django's default, /accounts/profile/, is no page here).
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "admin:index"

# --- The operator's login: a second factor, throttling ------------------------------------
# django-otp (1.7) rather than django-two-factor-auth or allauth's MFA: it is the maintained
# core that django-two-factor-auth itself builds on, without that package's wizard, phone
# and template layer; the copier's own small pages (copier.console.twofactor) keep to the
# Content-Security-Policy above (the QR code is inline SVG, no script). TOTP with recovery
# codes; a user with a confirmed device is asked for a code after the password. Where
# required, every user who may trade (copier.services.second_factor.TRADING_PERMISSIONS, or
# a superuser) must enrol before reaching anything else. On in production, off for
# `make run` and the tests unless set.
COPIER_REQUIRE_2FA = second_factor_required(os.environ)
# The name an authenticator app shows beside the code.
OTP_TOTP_ISSUER = os.environ.get("COPIER_OTP_ISSUER", "Trade copier")
# Wrong codes slow the device down (1, 2, 4, ... seconds), whatever the session; a wrong
# code also counts as a failed login for the lockout below.
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1
# scrypt's cost for recovery codes (N; r=8, p=1): 16 MiB and some 30 ms a code, so that a
# dump's codes (40 bits each) cost an attacker years, and a login's check of ten codes
# well under a second. Each digest keeps its own N, so raising it never locks anyone out.
# Not read from the environment: only the tests lower it.
COPIER_RECOVERY_SCRYPT_N = 2**14

AUTHENTICATION_BACKENDS = [
    # first: refuses a locked-out user and address before the password is checked
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Locked out after this many failed logins (a wrong password or a wrong code) of one user
# from one address, for COPIER_LOGIN_LOCKOUT_MINUTES; `manage.py copier_unlock` ends it
# sooner. A success does not wipe the count: a stolen password cannot buy new guesses at
# the code by logging in again.
AXES_FAILURE_LIMIT = int(os.environ.get("COPIER_LOGIN_FAILURE_LIMIT", "5"))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_COOLOFF_TIME = dt.timedelta(
    minutes=int(os.environ.get("COPIER_LOGIN_LOCKOUT_MINUTES", "30")))
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "copier.console.twofactor.lockout_response"
# The client's address as copier.shell.clientip reads it: REMOTE_ADDR, or, behind as many
# trusted proxies as COPIER_TRUSTED_PROXIES says, the address the outermost one saw.
AXES_CLIENT_IP_CALLABLE = "copier.shell.clientip.client_ip"
# How many reverse proxies you run in front of the web (each appends the address it was
# reached from to X-Forwarded-For). 0: none, the peer's address is the client's and the
# header is ignored (a client cannot pick its own address to dodge a lockout).
try:
    COPIER_TRUSTED_PROXIES = int(os.environ.get("COPIER_TRUSTED_PROXIES", "0"))
except ValueError:
    raise ImproperlyConfigured("COPIER_TRUSTED_PROXIES must be a whole number (the reverse "
                               "proxies in front of the web; 0 for none)") from None
if COPIER_TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured("COPIER_TRUSTED_PROXIES must be 0 or more")
# What axes masks in its log lines and in the form it keeps of a failed login: the password
# always; the code; and the user name typed, which is now and then the password typed in
# the wrong field (the address is logged: a lockout names it). The user name it counts by
# is in its table (the admin's "Access attempts", `copier_unlock --list`), not in the logs.
AXES_USERNAME_FORM_FIELD = "username"
AXES_SENSITIVE_PARAMETERS = ["username", "code", "csrfmiddlewaretoken"]
# Its log lines name only what it locks by (user and address), not the browser; and no
# "AXES: BEGIN" line at every command's start.
AXES_VERBOSE = False
# The attempts are shown and cleared through the copier's own admin and command, which
# record who unlocked whom in the audit log (axes' admin would delete unrecorded).
AXES_ENABLE_ADMIN = False

ROOT_URLCONF = "copier.shell.urls"
WSGI_APPLICATION = "copier.shell.wsgi.application"

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
# The zone the console shows times in (an IANA name: America/New_York, Europe/London);
# stored times and every process stay in UTC. Shown beside each time with its name.
COPIER_DISPLAY_TZ = os.environ.get("COPIER_DISPLAY_TZ", "UTC")
try:
    ZoneInfo(COPIER_DISPLAY_TZ)
except (ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"COPIER_DISPLAY_TZ={COPIER_DISPLAY_TZ!r} is not a time zone: "
                               "use an IANA name such as UTC or America/New_York") from None

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Locally (runner, tests) straight from the apps, no collectstatic needed; in production
# from STATIC_ROOT as collected into the image, read once at start.
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = not PRODUCTION

# Logs: one JSON object a line in production (a log shipper parses it; the fields the
# code passes, event_id / follower / account / client_order_id, become searchable), plain
# text locally. COPIER_LOG_FORMAT=json|plain overrides either (copier.shell.logs).
LOG_FORMAT = os.environ.get("COPIER_LOG_FORMAT", "json" if PRODUCTION else "plain").lower()
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"COPIER_LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "copier.shell.logs.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "copier.shell.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT,
                             "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # runserver's line per request (the dashboard polls every few seconds): `make run`
        # sets WARNING unless -v; its lines then go through the handler above.
        "django.server": {"level": os.environ.get("COPIER_ACCESS_LOG_LEVEL", "INFO")},
        # httpx logs every request's full URL at INFO: an alert webhook's URL is its token
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # django-axes: failed logins and lockouts (WARNING), not a line per success or
        # clean-up; the logins themselves are in its AccessLog table
        "axes": {"level": "WARNING"},
    },
}

# --- Alerts (copier.alerts) -------------------------------------------------------------
# Django's mail: an SMTP server from the environment.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _flag("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _flag("EMAIL_USE_SSL", False)
# A mail server that hangs must not hold the housekeeping worker for long.
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "copier@localhost")
# Where alerts of a group without an alert configuration (and of no group) go.
COPIER_ALERT_EMAILS = os.environ.get("COPIER_ALERT_EMAILS", "")
COPIER_ALERT_WEBHOOK_URL = os.environ.get("COPIER_ALERT_WEBHOOK_URL", "")
COPIER_ALERT_WEBHOOK_TIMEOUT = float(os.environ.get("COPIER_ALERT_WEBHOOK_TIMEOUT", "10"))
# At most one message per channel this often: a storm becomes one summary.
COPIER_ALERT_INTERVAL_SECONDS = int(os.environ.get("COPIER_ALERT_INTERVAL_SECONDS", "60"))
# An account disconnected this long alerts (a group's alert configuration overrides it).
COPIER_ALERT_DISCONNECT_SECONDS = int(os.environ.get("COPIER_ALERT_DISCONNECT_SECONDS", "120"))
# Webhooks go to public addresses only (copier.outbound): loopback, private, link-local,
# unspecified, multicast and reserved ones are refused when sent to, unless allowed here,
# all of them (a webhook receiver on the operator's own network) or a list of networks.
COPIER_WEBHOOK_ALLOW_PRIVATE = _flag("COPIER_WEBHOOK_ALLOW_PRIVATE", False)
try:
    COPIER_WEBHOOK_ALLOWED_NETWORKS = [
        str(n) for n in networks_parse(os.environ.get("COPIER_WEBHOOK_ALLOWED_NETWORKS", ""))]
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# --- Metrics (copier.metrics, GET /metrics) -----------------------------------------------
# With a token, a scrape must send `Authorization: Bearer <token>`; without one, /metrics
# answers only requests from loopback that no proxy forwarded.
COPIER_METRICS_TOKEN = os.environ.get("COPIER_METRICS_TOKEN", "")
# Rows are counted once they are this old: a transaction still open then (a slow copy)
# would otherwise commit a row behind the counters' watermark, never to be counted.
COPIER_METRICS_SETTLE_SECONDS = int(os.environ.get("COPIER_METRICS_SETTLE_SECONDS", "30"))
# Prometheus scrapes over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]

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
# Two queues, so that Flower's view of the copy tasks is not buried under the periodic
# housekeeping. A worker consumes every queue listed here unless told otherwise (-Q), so
# `celery worker` with no -Q serves both.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery"), Queue(periodic.HOUSEKEEPING_QUEUE))
# Every periodic task, from the one table that defines them (copier.periodic).
CELERY_TASK_ROUTES = periodic.routes()
# With JSON logs the worker keeps Django's logging (one format for every process)
# instead of installing its own handlers on the root logger.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
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
# An order of the copier's still working at the broker this long after it was sent is
# cancelled there by the copier, and settles from what filled (docs/rules.md#orders-in-flight)
#; meanwhile nothing more is decided for its (follower, symbol).
COPIER_WORKING_ORDER_SECONDS = float(os.environ.get("COPIER_WORKING_ORDER_SECONDS", "10"))
# An event stored but still unprocessed after this long is dispatched again.
COPIER_REDISPATCH_AFTER_SECONDS = int(os.environ.get("COPIER_REDISPATCH_AFTER_SECONDS", "30"))
# When the trading day turns over ("HH:MM Time/Zone"): a follower's daily loss limit counts
# the realised P&L since the last one, and its lock lasts until the next (the CME futures
# day by default). The one setting every part of the copier reads
# (copier.domain.rules.SessionReset).
COPIER_SESSION_RESET = os.environ.get("COPIER_SESSION_RESET", "17:00 America/Chicago")
try:
    from copier.domain.rules import SessionReset as _SessionReset

    _SessionReset.parse(COPIER_SESSION_RESET)
except ValueError as _exc:
    raise ImproperlyConfigured(f"COPIER_SESSION_RESET: {_exc}") from None
# How often the daily loss limits are checked (the realised P&L read from each broker).
COPIER_LOSS_CHECK_SECONDS = int(os.environ.get("COPIER_LOSS_CHECK_SECONDS", "15"))
# How often each account guard reads its account's equity (copier.services.guard): the
# firm's line is enforced intraday, so this is the guard's reaction time to a price move.
COPIER_GUARD_CHECK_SECONDS = int(os.environ.get("COPIER_GUARD_CHECK_SECONDS", "5"))
# How many guarded accounts one guard task reads and flattens together when a market move
# crosses many at once: fewer tasks to publish and take, one round of orders per batch. As
# COPIER_BATCH_SIZE: 200 accounts are two tasks, one per worker process (at 50, the third
# and fourth batches waited for the first two: p99 285-405 ms against 213-310 ms at 100).
COPIER_GUARD_BATCH_SIZE = int(os.environ.get("COPIER_GUARD_BATCH_SIZE", "100"))

if PRODUCTION:
    SECURE_SSL_REDIRECT = _flag("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
