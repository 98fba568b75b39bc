"""core.bulk.insert_tables: rows of several tables written together read back as written, on
SQLite table by table, on PostgreSQL in one statement for a few rows and by COPY for many, with
values formatted either way the writers format them (DbFormat's text, a model field's own
preparation: JSON, UUIDs, aware datetimes)."""

import datetime as dt

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.bulk import COPY_MIN_ROWS, DbFormat, insert_new_rows, insert_tables, object_rows
from nudges import rows as columns
from nudges.models import Decision, DecisionPoint, Delivery, ReviewKind, ReviewRequest
from safety.models import MedicalGroup
from tests.factories import make_nudge

pytestmark = pytest.mark.django_db


def _points(patient, n: int, now: dt.datetime) -> list[tuple]:
    db = DbFormat()
    at = db.datetime(now)
    return [
        (pk, at, at, db.id(patient.pk), db.datetime(now + dt.timedelta(minutes=i)), "slot")
        for i, pk in enumerate(db.new_ids(n, now))
    ]


def _decisions(points: list[tuple]) -> list[tuple]:
    """A decision for each point, with a receipt and a propensity that must come back exact."""
    db = DbFormat()
    receipt = {"v": 1, "candidates": {"probability": [0.1, 1 / 3]}, "why": 'é \\ "q" ✓'}
    return [
        (pk, at, at, point, patient, "no_nudge", "policy_chose_none", "baseline", "b-1")
        + (None, None, propensity, "control", "", db.json(receipt))
        for (point, at, _, patient, _, _), pk, propensity in zip(
            points, db.new_ids(len(points)), [1 / 3, 5e-324, *[0.1] * len(points)], strict=False
        )
    ]


def _reviews(patient, delivery, group, n: int, now: dt.datetime):
    requests = [
        ReviewRequest(
            created_at=now,
            delivery=delivery,
            patient=patient,
            kind=ReviewKind.PATIENT_FEEDBACK,
            state="closed",  # many for one delivery: only one may be pending
            severity="high",
            rules=[{"code": f"r{i}", "rationale": 'é ✓ "quoted"'}],
            ruleset_version=3,
            deadline=now + dt.timedelta(hours=i),
        )
        for i in range(n)
    ]
    through = ReviewRequest.groups.through
    links = [through(reviewrequest_id=r.pk, medicalgroup_id=group.pk) for r in requests]
    return requests, links


@pytest.mark.parametrize("n", [2, COPY_MIN_ROWS], ids=["few", "many"])
def test_rows_of_several_tables_read_back_as_written(patient_a, n):
    patient = patient_a[0]
    delivery = make_nudge(patient)
    group = MedicalGroup.objects.get(slug="hypertension")
    now = timezone.now().replace(microsecond=0)
    points = _points(patient, n, now + dt.timedelta(days=1))
    requests, links = _reviews(patient, delivery, group, n, now)

    with CaptureQueriesContext(connection) as queries:
        insert_tables(
            [
                (DecisionPoint, columns.POINT_COLUMNS, points),
                object_rows(requests),
                object_rows(links),
                (Decision, columns.DECISION_COLUMNS, _decisions(points)),
                (Delivery, columns.DELIVERY_COLUMNS, []),  # nothing to write: left out
            ]
        )

    written = DecisionPoint.objects.filter(moment__gte=now + dt.timedelta(days=1))
    decisions = Decision.objects.filter(decision_point__in=written).order_by("propensity")
    assert [d.propensity for d in decisions] == sorted([1 / 3, 5e-324, *[0.1] * n][:n])
    assert decisions[0].receipt["why"] == 'é \\ "q" ✓'
    assert decisions[0].template_id is None
    assert sorted(p.id.hex for p in written) == sorted(row[0] for row in points)
    assert {p.trigger for p in written} == {"slot"}
    stored = ReviewRequest.objects.filter(kind=ReviewKind.PATIENT_FEEDBACK).order_by("deadline")
    assert [r.pk for r in stored] == [r.pk for r in requests]
    assert stored[n - 1].rules == requests[n - 1].rules
    assert stored[0].deadline == now
    assert all({g.slug for g in r.groups.all()} == {"hypertension"} for r in stored)
    if connection.vendor == "postgresql" and n < COPY_MIN_ROWS:
        [statement] = queries  # all four tables
        assert statement["sql"].count("INSERT INTO") == 4
    elif connection.vendor == "postgresql":  # by COPY, which Django's query log does not see
        assert not any("INSERT" in query["sql"] for query in queries)


@pytest.mark.postgres
@pytest.mark.parametrize("n", [1, 2], ids=["one row", "one statement"])
def test_a_value_too_long_for_its_column_is_refused_not_cut_short(patient_a, n):
    points = _points(patient_a[0], n, timezone.now().replace(microsecond=0))
    points[-1] = (*points[-1][:5], "x" * 21)  # trigger is at most 20 characters

    with pytest.raises(DataError), transaction.atomic():
        insert_tables([(DecisionPoint, columns.POINT_COLUMNS, points)])

    assert not DecisionPoint.objects.filter(trigger__startswith="x").exists()


@pytest.mark.postgres
def test_a_claimed_row_too_long_for_its_column_is_refused_not_cut_short(patient_a):
    [point] = _points(patient_a[0], 1, timezone.now().replace(microsecond=0))

    with pytest.raises(DataError), transaction.atomic():
        insert_new_rows(
            DecisionPoint, columns.POINT_COLUMNS, [(*point[:5], "y" * 21)], returning=["id"]
        )
