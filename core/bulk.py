"""Fast inserts of many rows (seeding, batch decisions) with executemany, bypassing model
instantiation. Callers format values with `DbFormat`, which writes them exactly as Django's
backend would store them (SQLite keeps datetimes as naive UTC text and UUIDs as 32 hex
digits; PostgreSQL casts text to uuid, timestamptz and jsonb)."""

import datetime as dt
import functools
import os
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, cast

import numpy as np
import orjson
from django.db import connection, models
from django.db.models.options import Options

from core import pipeline, raw


class DbFormat:
    """Value formatting for the current database connection's vendor."""

    def __init__(self) -> None:
        self.sqlite = connection.vendor == "sqlite"

    def new_ids(self, n: int, at: dt.datetime | None = None) -> list[str]:
        """n primary keys (core.ids) for rows created at `at` (now by default), as 32 hex
        digits, which both backends accept for a uuid column."""
        ms = int((at.timestamp() if at else time.time()) * 1000)
        raw = np.empty((n, 16), dtype=np.uint8)
        raw[:, :6] = np.frombuffer(ms.to_bytes(6, "big"), dtype=np.uint8)
        raw[:, 6:] = np.frombuffer(os.urandom(10 * n), dtype=np.uint8).reshape(n, 10)
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
        text = raw.tobytes().hex()
        return [text[32 * i : 32 * i + 32] for i in range(n)]

    def id(self, value: Any) -> str | None:
        """A UUID (or its string) as stored."""
        if value is None:
            return None
        return value.hex if hasattr(value, "hex") and not isinstance(value, str) else str(value)

    def datetime(self, value: dt.datetime | None) -> str | None:
        if value is None:
            return None
        utc = value.astimezone(dt.UTC)
        if self.sqlite:
            return utc.replace(tzinfo=None).isoformat(" ")
        return utc.isoformat(" ")

    def json(self, value: Any) -> str:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


# Below this many rows an INSERT costs less than a COPY, which takes a round trip more to set
# up: a lone live decision's writes took 1.9-2.0 ms of CPU by COPY, 1.2-1.35 ms by INSERT
# (in-process, on one slow stretch of the machine).
COPY_MIN_ROWS = 64


def insert_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    batch_size: int = 5000,
    ignore_conflicts: bool = False,
) -> int:
    """Insert rows (tuples in the order of `fields`, model field names, values formatted with
    DbFormat) into model's table: with PostgreSQL's COPY there for COPY_MIN_ROWS rows or more
    (about twice as fast as executemany for a batch chunk's thousand), else executemany. With
    ignore_conflicts, rows that break a unique constraint are skipped (an INSERT, as COPY
    cannot skip them). Returns the number of rows sent."""
    rows = list(rows)
    if not rows:
        return 0
    meta = model._meta
    columns = _columns(_field(meta, f) for f in fields)
    table = connection.ops.quote_name(meta.db_table)
    copy = connection.vendor == "postgresql" and len(rows) >= COPY_MIN_ROWS
    if copy and not ignore_conflicts:
        with (
            connection.cursor() as cursor,
            connection.wrap_database_errors,  # psycopg's errors as Django's (IntegrityError)
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return len(rows)
    placeholders = ", ".join(["%s"] * len(fields))
    verb, suffix = "INSERT", ""
    if ignore_conflicts:
        if connection.vendor == "sqlite":
            verb = "INSERT OR IGNORE"
        else:
            suffix = " ON CONFLICT DO NOTHING"
    sql = f"{verb} INTO {table} ({columns}) VALUES ({placeholders}){suffix}"
    sent = 0
    with connection.cursor() as cursor:
        if len(rows) == 1:  # executemany's pipeline costs more than it saves for one row
            cursor.execute(sql, rows[0])
            return 1
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            cursor.executemany(sql, batch)
            sent += len(batch)
    return sent


def insert_new_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: Sequence[str],
) -> list[tuple]:
    """Insert rows as insert_rows does with ignore_conflicts, and return the `returning`
    fields (converted as the ORM reads them) of the rows inserted now, not of those skipped.
    The first field is the primary key and each row's key is new (core.ids): a row holding
    one of them afterwards was inserted by this call. PostgreSQL does it in one statement
    (each column sent as an array, RETURNING); SQLite inserts, then reads those keys back."""
    return pipeline.run(new_rows_reader(model, fields, rows, returning=returning))


def new_rows_reader(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: Sequence[str],
) -> pipeline.Reader[list[tuple]]:
    """insert_new_rows as a reader (core.pipeline): on PostgreSQL its one statement is read
    with other queries."""
    if not rows:
        return []
    meta = model._meta
    if not _field(meta, fields[0]).primary_key:
        raise ValueError("the first field must be the primary key")
    wanted = [_field(meta, f) for f in returning]
    if connection.vendor != "postgresql":
        insert_rows(model, fields, rows, ignore_conflicts=True)
        keys = [meta.pk.get_db_prep_value(row[0], connection) for row in rows]
        sql = (
            f"SELECT {_columns(wanted)} "  # noqa: S608
            f"FROM {raw.table(model)} WHERE {_columns([meta.pk])} "
            f"IN ({raw.marks(len(keys))})"
        )
        [found] = yield [(sql, keys)]
        return raw.convert(found, wanted)
    quote = connection.ops.quote_name
    columns = _columns(_field(meta, f) for f in fields)
    arrays = ", ".join(f"%s::{_cast_type(_field(meta, f))}[]" for f in fields)
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) SELECT * FROM unnest({arrays}) "  # noqa: S608
        f"ON CONFLICT DO NOTHING RETURNING {_columns(wanted)}"
    )
    [inserted] = yield [(sql, [list(column) for column in zip(*rows, strict=True)])]
    return raw.convert(inserted, wanted)


Part = tuple[type[models.Model], Sequence[str], Sequence[Sequence[Any]]]


def insert_tables(parts: Sequence[Part]) -> None:
    """Insert (model, fields, rows) into several tables at once, rows as insert_rows takes
    them (or as object_rows makes them). On PostgreSQL the tables with fewer than
    COPY_MIN_ROWS rows go in one statement: each table's rows sent as one jsonb array of
    arrays (json would be parsed again for each column read), each table's INSERT a WITH
    clause of it; one round trip, one execution and one parameter a table, where executemany
    executes every row apart (a live round's writes: four to six tables of a few rows).
    Larger tables go by COPY; SQLite inserts table by table. The inserts of one statement run
    in no fixed order, so the foreign keys between them must be deferred, as Django's are;
    and a float NaN arrives as NULL (JSON has none)."""
    parts = [part for part in parts if part[2]]
    few: list[Part] = []
    for model, fields, rows in parts:
        if connection.vendor != "postgresql" or len(rows) >= COPY_MIN_ROWS:
            insert_rows(model, fields, rows)
        else:
            few.append((model, fields, rows))
    if len(few) == 1 and len(few[0][2]) == 1:
        insert_rows(*few[0])  # one row: a plain INSERT
    elif few:
        sql = _tables_sql(tuple((model, tuple(fields)) for model, fields, _ in few))
        params = [orjson.dumps(list(rows), default=_as_json).decode() for _, _, rows in few]
        with connection.cursor() as cursor, connection.wrap_database_errors:
            cursor.execute(sql, params)


def _as_json(value: Any) -> Any:
    """A value orjson does not write itself: a JSON field's prepared value (psycopg's Jsonb)
    goes as its JSON text, which the statement parses; a Decimal as its digits."""
    if hasattr(value, "obj"):
        return orjson.dumps(value.obj).decode()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def _field(meta: Options, name: str) -> models.Field:
    """The model field `name`, which these inserts expect to be concrete: get_field also finds
    reverse relations, which have no column."""
    return cast(models.Field, meta.get_field(name))


def _columns(fields: Iterable[models.Field]) -> str:
    """The concrete fields' columns (only a field without one has None), quoted, comma-separated."""
    quote = connection.ops.quote_name
    return ", ".join(quote(cast(str, f.column)) for f in fields)


def _cast_type(field: models.Field) -> str:
    """The column's type without its modifier: an explicit cast to varchar(40) would cut a
    longer value short in silence, where storing it into the column refuses it."""
    return str(field.db_type(connection)).split("(")[0]


@functools.lru_cache(maxsize=64)
def _tables_sql(tables: tuple[tuple[type[models.Model], tuple[str, ...]], ...]) -> str:
    """Each table's rows come as one parameter, a JSON array of row arrays: element i of a
    row is column i, read as text and cast to the column's type (JSON null is NULL)."""
    quote = connection.ops.quote_name
    inserts = []
    for model, fields in tables:
        meta = model._meta
        columns = _columns(_field(meta, f) for f in fields)
        values = ", ".join(
            f"(r->>{i})::{_cast_type(_field(meta, f))}" for i, f in enumerate(fields)
        )
        # Names from the models' metadata; the rows are one bound parameter.
        table, rows = quote(meta.db_table), "jsonb_array_elements(%s::jsonb) r"
        inserts.append(f"INSERT INTO {table} ({columns}) SELECT {values} FROM {rows}")  # noqa: S608
    *first, last = inserts
    with_ = ", ".join(f"w{i} AS ({insert})" for i, insert in enumerate(first))
    return f"WITH {with_} {last}" if first else last


def object_rows(objects: Sequence[models.Model]) -> Part:
    """Unsaved instances of one model as (model, fields, rows) for insert_tables: the fields'
    own pre-save and database preparation (defaults applied by the constructor, auto_now, JSON
    and UUID encoding), without the ORM's per-query compilation; an automatic integer key
    left unset is left to the database (a many-to-many's links). The instances count as
    saved from here on."""
    meta = objects[0]._meta
    fields = [f for f in meta.concrete_fields if not f.generated]
    if meta.auto_field is not None and getattr(objects[0], meta.auto_field.attname) is None:
        fields.remove(meta.auto_field)
    rows = [
        [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
        for obj in objects
    ]
    for obj in objects:
        obj._state.adding = False
        obj._state.db = connection.alias
    return objects[0].__class__, [f.name for f in fields], rows


def insert_objects(objects: Sequence[models.Model]) -> None:
    """INSERT unsaved instances of one model as they are (object_rows), in one statement per
    batch. For hot paths that write a few known rows; no signals are sent (none are
    connected to the models written this way)."""
    if not objects:
        return
    model, fields, rows = object_rows(objects)
    meta = model._meta
    table = connection.ops.quote_name(meta.db_table)
    columns = _columns(_field(meta, f) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        # Names from the model's metadata, values bound as parameters.
        sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608
        if len(rows) == 1:
            cursor.execute(sql, rows[0])
        else:
            cursor.executemany(sql, rows)
