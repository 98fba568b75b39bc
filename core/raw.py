"""Reading rows of a hand-written query as the ORM would: each column converted by its
field's converters (the backend's and the field's own, as Django's compiler applies them),
and model instances built with Model.from_db. For the few fixed reads on a hot path (the
token and its patient, the patient's row under lock, the delivery history), where building
the query each time costs more than running it."""

import functools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from django.db import connection, models
from django.db.models.expressions import RawSQL

Converter = Any


@functools.lru_cache(maxsize=128)
def _converters(fields: tuple[models.Field, ...], vendor: str) -> tuple[tuple[int, tuple], ...]:
    out = []
    for i, field in enumerate(fields):
        expression = field.get_col("t")  # a foreign key reads as its target's type
        found = (
            *connection.ops.get_db_converters(expression),
            *expression.get_db_converters(connection),
        )
        if found:
            out.append((i, (tuple(found), expression)))
    return tuple(out)


_plans: dict[tuple[tuple[int, ...], str], tuple[tuple[int, tuple], ...]] = {}


def _plan(fields: Sequence[models.Field]) -> tuple[tuple[int, tuple], ...]:
    """_converters, looked up by the fields' identities: hashing thirty Field objects (their
    __hash__ is Python) cost more than converting the row. Model fields live as long as the
    process, so their ids stay theirs."""
    vendor = connection.vendor
    key = (tuple(map(id, fields)), vendor)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _converters(tuple(fields), vendor)
    return plan


def convert(rows: Sequence[Sequence[Any]], fields: Sequence[models.Field]) -> list[tuple]:
    """The rows (as tuples) with column i converted as `fields[i]` is when Django reads it."""
    plan = _plan(fields)
    if not plan:  # e.g. PostgreSQL's driver already gives UUIDs and aware datetimes
        return [tuple(row) for row in rows]
    out = []
    for row in rows:
        values = list(row)
        for i, (functions, expression) in plan:
            value = values[i]
            for function in functions:
                value = function(value, expression, connection)
            values[i] = value
        out.append(tuple(values))
    return out


def columns(model: type[models.Model], alias: str) -> str:
    """The select list of the model's concrete fields, in order, for `instance`."""
    q = connection.ops.quote_name
    return ", ".join(f"{alias}.{q(str(f.column))}" for f in model._meta.concrete_fields)


def fields_of(model: type[models.Model]) -> list[models.Field]:
    return list(model._meta.concrete_fields)


def instance(model: type[models.Model], values: Sequence[Any]) -> models.Model:
    """An instance from its concrete fields' converted values (in the order of `columns`)."""
    return model.from_db(connection.alias, _attnames(model), list(values))


@functools.cache
def _attnames(model: type[models.Model]) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


def marks(n: int) -> str:
    """n parameter placeholders, comma-separated (for `IN (...)`)."""
    return ", ".join(["%s"] * n)


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def fetch(sql: str, params: Sequence[Any], fields: Sequence[models.Field]) -> list[tuple]:
    """Run a query and convert its rows (column i as `fields[i]`)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return convert(cursor.fetchall(), fields)


def uuid_list(ids: Iterable[Any]) -> RawSQL:
    """These UUIDs (or their driver values) as a subquery for `field__in=`: one parameter
    however many there are, and a plan the database cannot misjudge from stale statistics,
    as it may a subquery over tables just written."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::uuid[])", [[uuid.UUID(str(pk)) for pk in ids]])
    hexes = [pk.hex if isinstance(pk, uuid.UUID) else uuid.UUID(str(pk)).hex for pk in ids]
    return RawSQL("SELECT value FROM json_each(%s)", [orjson.dumps(hexes).decode()])
