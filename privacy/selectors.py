"""Reads for the reports: the public key sets, and a period's raw rows as polars frames for
the pure pipeline (privacy.dp). Only patients who consent to research reporting are read at
all; the pipeline cuts every frame down to them once more."""

import io
from collections.abc import Iterable
from typing import Any

import polars as pl
from django.db import NotSupportedError, connection
from django.db.models import BigIntegerField, CharField, F, Func, QuerySet
from django.db.models.functions import Cast

from nudges import measures
from nudges.models import Delivery, Event, ReviewRequest, ReviewState
from patients.models import AgeBand, Consent, Goal, Patient, Purpose, Sex
from privacy.dp.bounding import PATIENT
from privacy.dp.catalogue import SCHEMAS, Public, Sources
from privacy.dp.periods import Period
from safety.models import GroupMembership, MedicalGroup


def public_sets() -> Public:
    """Configuration and choices, never patient data."""
    return Public(
        groups=tuple(MedicalGroup.objects.order_by("slug").values_list("slug", flat=True)),
        age_bands=tuple(AgeBand.values),
        sexes=tuple(Sex.values),
        goals=tuple(Goal.values),
        outcomes=tuple(ReviewState.values),
    )


def consenting_patients() -> QuerySet:
    """Ids of the patients whose consent to research reporting is in force."""
    return Consent.objects.filter(purpose=Purpose.RESEARCH, granted=True).values("patient_id")


def report_sources(*, period: Period, needs: Iterable[str]) -> Sources:
    needs = set(needs)
    consenting = consenting_patients()
    span = {"gte": period.start, "lt": period.end}
    loaders: dict[str, Any] = {
        "patients": lambda: Patient.objects.filter(pk__in=consenting).values_list(
            _text("pk"), "age_band", "sex"
        ),
        "memberships": lambda: GroupMembership.objects.filter(
            patient_id__in=consenting
        ).values_list(_text("patient_id"), "group__slug"),
        "deliveries": lambda: Delivery.objects.filter(
            patient_id__in=consenting,
            delivered_at__gte=span["gte"],
            delivered_at__lt=span["lt"],
        ).values_list(_text("patient_id"), _micros("delivered_at"), "state", "template__goal"),
        "events": lambda: Event.objects.filter(
            patient_id__in=consenting,
            kind__in=[m.kind for m in measures.MEASURES.values()],
            occurred_at__gte=span["gte"],
            occurred_at__lt=span["lt"],
        ).values_list(_text("patient_id"), "kind", "value", _micros("occurred_at")),
        "reviews": lambda: ReviewRequest.objects.filter(
            patient_id__in=consenting,
            created_at__gte=span["gte"],
            created_at__lt=span["lt"],
        ).values_list(_text("patient_id"), _micros("created_at"), "state", "groups__slug"),
    }
    frames = {name: _frame(name, loaders[name]()) for name in needs | {"patients"}}
    return Sources.of(**frames)


def _text(field: str) -> Cast:
    return Cast(field, output_field=CharField())


class _EpochMicros(Func):
    """A datetime as whole microseconds since 1970 (UTC), so that a million of them cross
    the driver as integers rather than as datetime objects."""

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(EXTRACT(EPOCH FROM {sql}) * 1000000)::bigint", params

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        # julianday is exact to tens of microseconds here: far below a report's day.
        return f"CAST(ROUND((julianday({sql}) - 2440587.5) * 86400000000.0) AS INTEGER)", params

    def as_sql(self, compiler, connection, **extra):  # type: ignore[override]
        raise NotSupportedError("the reports need SQLite or PostgreSQL")


def _micros(field: str) -> _EpochMicros:
    return _EpochMicros(F(field))


def _frame(name: str, queryset: QuerySet) -> pl.DataFrame:
    """The rows typed by the source's schema. On PostgreSQL they come as CSV from COPY and are
    parsed by polars: a million rows never become Python objects one by one."""
    schema = SCHEMAS[name]
    wire = {c: pl.Int64() if isinstance(t, pl.Datetime) else t for c, t in schema.items()}
    wire[PATIENT] = pl.String()
    if connection.vendor == "postgresql":
        frame = _copied(queryset, wire)
    else:
        frame = _fetched(queryset, wire)
    datetimes = [c for c, t in schema.items() if isinstance(t, pl.Datetime)]
    return frame.with_columns(
        pl.col(PATIENT).str.replace_all("-", "", literal=True),
        *[pl.from_epoch(pl.col(c), time_unit="us").dt.replace_time_zone("UTC") for c in datetimes],
    )


def _copied(queryset: QuerySet, wire: dict[str, pl.DataType]) -> pl.DataFrame:
    sql, params = queryset.query.sql_with_params()
    statement = connection.ops.compose_sql(sql, params)  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    copy_sql = f"COPY ({statement}) TO STDOUT (FORMAT csv)"
    with connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
        for chunk in copy:
            buffer.write(chunk)
    if not buffer.tell():
        return pl.DataFrame(schema=wire)
    return pl.read_csv(buffer.getvalue(), has_header=False, new_columns=list(wire), schema=wire)


def _fetched(queryset: QuerySet, wire: dict[str, pl.DataType]) -> pl.DataFrame:
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return pl.DataFrame(rows, schema=wire, orient="row")
