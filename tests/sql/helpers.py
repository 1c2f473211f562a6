"""What every statement test checks besides its result: its real columns against the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import Model

from core.rawsql import Statement


def model_columns(model: type[Model], *, without: Sequence[str] = ()) -> list[str]:
    """The model's table columns, in its field order: what a statement must return for it."""
    return [f.column for f in model._meta.concrete_fields if f.name not in without]


def result_columns(statement: Statement, params: Sequence[Any], *, using: str = "default",
                   rows: Mapping[str, int] | None = None) -> list[str]:
    """The names of the columns the statement really returns, its effects rolled back."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(statement.text(rows), params)
        names = [column.name for column in cursor.description or []]
        transaction.set_rollback(True, using=using)
    return names


def check_columns(statement: Statement, params: Sequence[Any], expected: Sequence[str], *,
                  using: str = "default", rows: Mapping[str, int] | None = None) -> None:
    """The statement declares, and really returns, these columns in this order."""
    assert list(statement.columns) == list(expected), statement.name
    assert result_columns(statement, params, using=using, rows=rows) == list(expected), \
        statement.name
