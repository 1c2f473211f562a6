"""Structured logs: one JSON object a line, with the copy's identifiers as fields.

A person following one copy through the logs of the listener, the workers and the web
searches for `event_id=123` or `account=F1`, not for words in messages. The code passes
them with `extra={"event_id": ...}`, or a task sets them for everything it logs with
`log_context(...)` (a contextvar: each worker thread and each asyncio task has its own).
Only the fields named in `FIELDS` are written: an `extra` that happens to carry an object
with a secret (an account's credentials) never reaches the log by accident.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

FIELDS = ("event_id", "follower", "account", "client_order_id", "symbol", "group",
          "failed_exit_id", "alert_kind", "task", "task_id")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "copier_log_context", default={})  # noqa: B039 (never mutated: replaced on each set)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every record logged inside the block carries these fields (unless it sets its own)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the current `log_context` fields on each record, under what `extra=` set."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, the known fields that are set, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None and value != "":
                entry[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
