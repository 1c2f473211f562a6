"""The pieces every hand-written statement is made of: a named statement, and rows made models.

A few statements on the hot path are written out because the ORM's compile cost
was a good part of a copy's latency. Writing them out by hand must not mean
that a model change goes unnoticed until a trade: each statement names its
result columns, the columns that are a model's are spelled by `ModelColumns`
from the model itself, and tests/sql checks each statement's real result
columns against them. Only Django is imported here, so that any app's
`sql` module can use it.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from django.db import connections
from django.db.models import Model

M = TypeVar("M", bound=Model)


@dataclass(frozen=True, slots=True)
class Statement:
    """One hand-written statement: its name (for tests and logs), its text, its result columns.

    The text is the same bytes on every call, so psycopg prepares it on its fifth
    run. Where a statement carries VALUES lists, only their number of rows varies:
    `{key}` in the text becomes that many rows of placeholders, `widths[key]` wide.
    Every value, enum values included, is a bound parameter.
    """

    name: str
    sql: str
    columns: tuple[str, ...] = ()
    widths: Mapping[str, int] = field(default_factory=dict)

    def text(self, rows: Mapping[str, int] | None = None) -> str:
        """The text to send: `rows` gives each VALUES list's row count (`{"values": 3}`)."""
        text = self.sql
        for key, count in (rows or {}).items():
            row = "(" + ", ".join(["%s"] * self.widths[key]) + ")"
            text = text.replace("{" + key + "}", ", ".join([row] * count))
        return text

    def run(self, params: Sequence[Any], *, using: str = "default",
            rows: Mapping[str, int] | None = None) -> list[tuple[Any, ...]]:
        """Execute with bound parameters; the rows it returns (none for a plain write)."""
        with connections[using].cursor() as cursor:
            cursor.execute(self.text(rows) if rows else self.sql, params)
            return cursor.fetchall() if self.columns else []


@dataclass(frozen=True, slots=True)
class ModelColumns(Generic[M]):
    """A model's concrete columns, in the model's order: selected by a statement, read back.

    The one place a row (or a slice of a joined row) becomes a model instance:
    `Model.from_db` marks it as loaded from the database, as a queryset would.
    """

    model: type[M]
    names: tuple[str, ...]

    @classmethod
    def of(cls, model: type[M], *, without: Sequence[str] = ()) -> ModelColumns[M]:
        return cls(model, tuple(f.attname for f in model._meta.concrete_fields
                                if f.name not in without))

    def select(self, alias: str = "") -> str:
        """The column list for a SELECT or RETURNING, each prefixed with `alias.` if given."""
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + name for name in self.names)

    def build(self, row: Sequence[Any], *, start: int = 0, using: str = "default") -> M:
        """The instance from `row[start:]`'s first `len(names)` values."""
        return self.model.from_db(using, self.names, row[start : start + len(self.names)])


def database_conninfo(alias: str = "default", **extra: str | int) -> str:
    """A libpq connection string to the database of a Django alias, for the connections a
    process keeps outside Django (the listener's LISTEN and lease connections).

    From the settings as they stand, so a test run's database is the one connected to.
    """
    from psycopg.conninfo import make_conninfo

    s = connections[alias].settings_dict
    params: dict[str, str | int] = {"dbname": s["NAME"]}
    for key, name in (("user", "USER"), ("password", "PASSWORD"), ("host", "HOST"),
                      ("port", "PORT")):
        if s.get(name):
            params[key] = s[name]
    return make_conninfo("", **params, **extra)


@dataclass(frozen=True, slots=True)
class RowsInsert(Generic[M]):
    """Many new rows of a model in one `INSERT ... SELECT ... FROM unnest(arrays)`: one
    parameter per column whatever the row count, each value taken as the instance holds
    it. Django's `bulk_create` prepares every value of every row through its field (a
    fan-out's 100 decisions are 1,400 calls) and was a third of a 200-follower copy.

    For models whose fields need no preparation beyond that: no `auto_now`, no custom
    field; JSON fields are sent as text and cast. The arrays go in binary (`%b`): in
    text, psycopg escapes each string's quotes one by one, and a guard batch's 100 JSON
    documents took 16 ms to send that way, 0.4 ms in binary. The ids come back in row order and are
    set on the instances, which are then saved ones (`_state`).
    """

    statement: Statement
    fields: tuple[Any, ...]
    json: frozenset[str]

    @classmethod
    def of(cls, name: str, model: type[M], *, using: str = "default") -> RowsInsert[M]:
        fields = tuple(f for f in model._meta.concrete_fields
                       if not f.primary_key and not getattr(f, "generated", False))
        json = frozenset(f.attname for f in fields if f.get_internal_type() == "JSONField")
        connection = connections[using]

        def cast(f: Any) -> str:
            return "text[]" if f.attname in json else f"{f.db_type(connection)}[]"

        columns = ", ".join(f.column for f in fields)
        select = ", ".join(f"u.{f.column}::jsonb" if f.attname in json else f"u.{f.column}"
                           for f in fields)
        arrays = ", ".join(f"%b::{cast(f)}" for f in fields)
        pk = model._meta.pk
        assert pk is not None
        sql = (f"INSERT INTO {model._meta.db_table} ({columns}) SELECT {select}"  # noqa: S608
               f" FROM unnest({arrays}) AS u({columns}) RETURNING {pk.column}")
        return cls(Statement(name, sql, (pk.column,)), fields, json)

    def run(self, instances: Sequence[M], *, using: str = "default") -> None:
        if not instances:
            return
        rows = self.statement.run(_arrays(self.fields, self.json, instances), using=using)
        for obj, (pk,) in zip(instances, rows, strict=True):
            obj.pk = pk
            obj._state.adding = False
            obj._state.db = using



def _arrays(fields: Sequence[Any], json: frozenset[str], instances: Sequence[Model]
            ) -> list[list[Any]]:
    """One array per field of the instances' values, as `unnest` takes them."""
    params: list[list[Any]] = []
    for f in fields:
        values = [getattr(obj, f.attname) for obj in instances]
        if f.attname in json:
            values = [None if v is None else _json.dumps(v) for v in values]
        else:  # an enum member is its value (psycopg would send a plain Enum's name)
            values = [v.value if isinstance(v, Enum) else v for v in values]
        params.append(values)
    return params


@dataclass(frozen=True, slots=True)
class RowsUpdate(Generic[M]):
    """Some fields of many saved rows of a model in one `UPDATE ... FROM unnest(arrays)`,
    each value taken as the instance holds it: Django's `bulk_update` builds a CASE per
    field and row, and compiling it cost an account guard's batch of 50 more than
    judging them. The same limits as `RowsInsert` (no `auto_now`, no custom field)."""

    statement: Statement
    fields: tuple[Any, ...]
    json: frozenset[str]

    @classmethod
    def of(cls, name: str, model: type[M], names: Sequence[str], *, using: str = "default"
           ) -> RowsUpdate[M]:
        pk = model._meta.pk
        assert pk is not None
        fields: tuple[Any, ...] = (pk, *(model._meta.get_field(n) for n in names))
        json = frozenset(f.attname for f in fields if f.get_internal_type() == "JSONField")
        connection = connections[using]

        def cast(f: Any) -> str:
            return "text[]" if f.attname in json else f"{f.db_type(connection)}[]"

        columns = ", ".join(f.column for f in fields)
        sets = ", ".join(f"{f.column} = u.{f.column}" + ("::jsonb" if f.attname in json else "")
                         for f in fields[1:])
        arrays = ", ".join(f"%b::{cast(f)}" for f in fields)
        sql = (f"UPDATE {model._meta.db_table} AS t SET {sets}"  # noqa: S608
               f" FROM unnest({arrays}) AS u({columns}) WHERE t.{pk.column} = u.{pk.column}")
        return cls(Statement(name, sql), fields, json)

    def run(self, instances: Sequence[M], *, using: str = "default") -> None:
        if instances:
            self.statement.run(_arrays(self.fields, self.json, instances), using=using)
