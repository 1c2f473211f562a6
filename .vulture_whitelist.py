"""What vulture (60 %) calls unused but is reached by name: `vulture` from the root reads
this beside the packages ([tool.vulture] in pyproject.toml). Not a package: neither the
wheel nor the image holds it. Each group says who reaches it; a name that stops being
reached leaves this list with its code.
"""

_ = object()

# Django: model fields written by update()/save() and read by the admin, templates or
# SQL; a model's choices, which stored rows hold (an append-only audit log's too:
# `follower_switch` was written before the dashboard's switch became an operator action).
(  # noqa: B018
    _.last_connected_at, _.pause_details, _.stream_owned_since, _.updated_at, _.seen_at,
    _.lookup_fail_next, _.missed, _.obtained_at, _.claimed_at, _.lifted_by,
    _.followers_total, _.redispatched_at, _.settled_at, _.in_flight_since, _.on_quarantine,
    _.on_pause, _.on_abandoned_exit, _.on_rejection, _.on_disconnect, _.on_kill_switch,
    _.on_loss_limit, _.ALERT, _.FOLLOWER_SWITCH,
)

# Django by dotted path or protocol: settings (MIDDLEWARE, LOGGING, AXES_*, the admin
# site's default_site), a model field's and django-otp's hooks, a row's `_state.db`, the
# admin's form fields, and copier/shell/settings.py's own calls (the config leaves settings out:
# every name in it is read by Django).
(  # noqa: B018
    _.SecurityHeadersMiddleware, _.SameOriginRedirectMiddleware, _.HealthCheckMiddleware,
    _.SecondFactorMiddleware, _.ContextFilter, _.JsonFormatter, _.format, _.client_ip,
    _.original_response, _.default_site, _.CopierAdminSite, _.site_header, _.site_title,
    _.index_title, _.site_url, _.value_to_string, _.from_db_value, _.expression, _.to_python,
    _.get_prep_value, _.get_throttle_factor, _.on_disable, _.webhook_clear, _.copier_env,
    _.production_problems, _.db,
)

# Templates: the console's rows and cards (copier/templates/copier/console/).
(  # noqa: B018
    _.slow_p99, _.leader_symbols, _.latency_at, _.latency_event_id, _.disconnected_too_long,
    _.own_why, _.leader_positions,
)

# prometheus_client calls a collector's collect(); tests/sql lists copier.sql's
# statements by their module names; docs and tests name the venue answers' set.
(_.collect, _.DECISIONS_INSERT, _.VENUE_ANSWERS)  # noqa: B018

# Process caches the tests reset between cases (a seam, as Django's cache.clear()).
(_.adapters_forget, _.latency_cache_clear)  # noqa: B018

# devkit: the scenario runner dispatches `_op_<op>` by name; the local venues' and the
# runner's controls are the tests' API (tests/brokers, tests/faults, tests/test_devstack).
(  # noqa: B018
    _._op_fill, _._op_price, _._op_outage, _._op_restore, _._op_fail_orders,
    _._op_reject_orders, _._op_hold_orders, _._op_fill_held, _._op_cancel_held,
    _._op_release, _._op_enable, _._op_crash, _._op_recover, _._op_reverse, _._op_join,
    _._op_leave, _._op_mode, _._op_group_mode, _._op_flatten, _._op_advance,
    _.restart, _.working_order_add, _.held_left, _.contract_hide, _.streams_drop,
    _.tokens_expire, _.tokens_revoke, _.streams_shutdown, _.hub_connections,
    _.hub_pings_received, _.renewals, _.fill_replay, _.socket_count, _.heartbeats_heard,
    _.ProjectXVenue, _.TradovateVenue,
)
