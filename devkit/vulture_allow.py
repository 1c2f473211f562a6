"""What vulture (60 %, [tool.vulture] in pyproject.toml) calls unused but something reaches
by name: Django, Celery, a library's protocol, a template, pytest. Each group says who.

vulture reads this file beside the code; nothing imports it (`_` has no attributes: an
import would fail), and devkit/ stays out of the wheel and the image. A name is here only
while vulture would report it: one that stops being reached leaves with its code, one the
code or the tests come to name in plain sight leaves this list (tests/test_dead_code.py
checks both).
"""

from typing import Any

_: Any = object()

# Django model fields: columns written through save(), update() keywords or raw SQL and
# read by the admin (fields, readonly_fields), by ORM lookups (`claimed_at__lte=`), by
# getattr (AlertConfig.wants reads `on_<kind>`), or kept for a person reading the row
# (stream_owned_since, obtained_at, updated_at: dropping one is a migration, not dead code).
(
    _.last_connected_at, _.stream_owned_since, _.updated_at, _.seen_at, _.lookup_fail_next,
    _.obtained_at, _.claimed_at, _.redispatched_at, _.in_flight_since, _.on_quarantine,
    _.on_pause, _.on_abandoned_exit, _.on_rejection, _.on_disconnect, _.on_kill_switch,
    _.on_loss_limit,
)

# Django choices that stored rows hold: a follower's daily_loss_action "alert" (the code
# asks only whether it is LOCK); an append-only audit log's `follower_switch`, written
# before the dashboard's switch became an operator action.
(_.ALERT, _.FOLLOWER_SWITCH)

# Django by dotted path or by attribute name: MIDDLEWARE, AXES_CLIENT_IP_CALLABLE, the
# admin app's default_site and the AdminSite attributes its templates read; a ModelForm's
# declared fields, which the admin's fieldsets and the form's clean() name as strings.
(
    _.SecurityHeadersMiddleware, _.HealthCheckMiddleware, _.SecondFactorMiddleware,
    _.client_ip, _.default_site, _.CopierAdminSite, _.site_title, _.index_title, _.site_url,
    _.on_disable, _.webhook_clear,
)

# A library's protocol, called by the library: a Django model field's hooks (from_db_value
# takes `expression` whether it reads it or not); django-otp's ThrottlingMixin; django-axes
# calls AXES_LOCKOUT_CALLABLE as (request, original_response, credentials);
# prometheus_client calls a collector's collect(); the standard library's request
# handlers, HTML parsers and redirect handlers in the tests. And attributes the tests set
# for a library to read: django-otp's throttle time, Django's connection.close_at.
(
    _.value_to_string, _.from_db_value, _.expression, _.to_python, _.get_prep_value,
    _.get_throttle_factor, _.original_response, _.collect,
    _.do_GET, _.do_PUT, _.do_DELETE, _.log_message, _.handle_starttag, _.handle_endtag,
    _.handle_data, _.redirect_request, _.throttling_failure_timestamp, _.close_at,
)

# Templates: the dashboard's rows and cards (copier/templates/copier/console/_groups.html).
(
    _.leader_symbols, _.latency_event_id, _.disconnected_too_long, _.own_why,
    _.leader_positions,
)

# Settings that Django, Celery (config_from_object, namespace CELERY), django-axes and
# WhiteNoise read by name, in copier/shell/settings.py and the tests' overrides of them;
# COPIER_LOSS_CHECK_SECONDS and COPIER_GUARD_CHECK_SECONDS, which copier.periodic reads by
# getattr.
(
    _.ALLOWED_HOSTS, _.CSRF_TRUSTED_ORIGINS, _.MIDDLEWARE, _.AUTHENTICATION_BACKENDS,
    _.ROOT_URLCONF, _.WSGI_APPLICATION, _.TEMPLATES, _.DATABASES, _.DEFAULT_AUTO_FIELD,
    _.AUTH_PASSWORD_VALIDATORS, _.LANGUAGE_CODE, _.TIME_ZONE, _.USE_I18N, _.USE_TZ,
    _.STATIC_ROOT, _.LOGGING, _.SECURE_REDIRECT_EXEMPT, _.SECURE_SSL_REDIRECT,
    _.SESSION_COOKIE_SECURE, _.CSRF_COOKIE_SECURE, _.SECURE_HSTS_SECONDS,
    _.SECURE_HSTS_INCLUDE_SUBDOMAINS, _.SECURE_HSTS_PRELOAD, _.SECURE_PROXY_SSL_HEADER,
    _.EMAIL_BACKEND, _.EMAIL_HOST, _.EMAIL_PORT, _.EMAIL_HOST_USER, _.EMAIL_HOST_PASSWORD,
    _.EMAIL_USE_TLS, _.EMAIL_USE_SSL,
    _.AXES_RESET_ON_SUCCESS, _.AXES_LOCKOUT_CALLABLE, _.AXES_CLIENT_IP_CALLABLE,
    _.AXES_USERNAME_FORM_FIELD, _.AXES_SENSITIVE_PARAMETERS, _.AXES_VERBOSE,
    _.AXES_ENABLE_ADMIN, _.WHITENOISE_AUTOREFRESH, _.WHITENOISE_USE_FINDERS,
    _.CELERY_BROKER_URL, _.CELERY_TASK_IGNORE_RESULT, _.CELERY_RESULT_BACKEND,
    _.CELERY_TASK_ACKS_LATE, _.CELERY_TASK_REJECT_ON_WORKER_LOST,
    _.CELERY_WORKER_PREFETCH_MULTIPLIER, _.CELERY_TASK_SERIALIZER, _.CELERY_ACCEPT_CONTENT,
    _.CELERY_TIMEZONE, _.CELERY_ENABLE_UTC, _.CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP,
    _.CELERY_BROKER_TRANSPORT_OPTIONS, _.CELERY_BROKER_CONNECTION_TIMEOUT,
    _.CELERY_TASK_PUBLISH_RETRY, _.CELERY_TASK_PUBLISH_RETRY_POLICY, _.CELERY_BEAT_SCHEDULER,
    _.CELERY_BEAT_SYNC_EVERY, _.CELERY_WORKER_SEND_TASK_EVENTS, _.CELERY_TASK_DEFAULT_QUEUE,
    _.CELERY_TASK_QUEUES, _.CELERY_WORKER_HIJACK_ROOT_LOGGER, _.CELERY_TASK_SEND_SENT_EVENT,
    _.COPIER_LOSS_CHECK_SECONDS, _.COPIER_GUARD_CHECK_SECONDS,
)

# devkit: the scenario runner dispatches a step to `_op_<op>` by name (devkit/replay.py).
(
    _._op_fill, _._op_price, _._op_outage, _._op_restore, _._op_fail_orders,
    _._op_reject_orders, _._op_hold_orders, _._op_fill_held, _._op_cancel_held,
    _._op_release, _._op_enable, _._op_crash, _._op_recover, _._op_reverse, _._op_join,
    _._op_leave, _._op_mode, _._op_group_mode, _._op_flatten, _._op_advance,
)

# pytest: a module's pytestmark, hooks, autouse fixtures, and fixtures a test asks for by
# parameter name for what they do, not for a value (pytest-django's django_db_setup among
# them: the browser stacks start after the test database exists; anyio's anyio_backend,
# which its plugin reads to pick the event loop of an async test).
(
    _.pytestmark, _.pytest_runtest_makereport, _.pytest_collection_modifyitems,
    _.pytest_unconfigure, _._fast_password_hashing, _._cheap_recovery_codes,
    _._fresh_latency_cache, _.controlled, _.celery_worker, _.loopback_webhooks, _.bob,
    _.unfrozen, _.django_db_setup, _.anyio_backend,
)

# The account guard's columns that only the admin reads, by name in its form's and its
# fieldsets' field lists (copier.admin.AccountGuardAdmin): a person reads them there; the
# form's preset choice and buffer percentage, which Django reads by their field names
# (cleaned_data).
# (`preset` and `source_url` are read in plain sight by copier.domain.presets and its tests.)
(
    _.resumed_at, _.apply_preset, _.buffer_percent,
)

# Dead, to be deleted: the dashboard card's `latency_at` (the last copy's time) is set
# from _last_latencies and read by nothing. It stays until the branch reshaping
# copier/console lands (that query and the card's builder are among its functions).
(_.latency_at,)
