"""Releasing DP reports through the services: the ledger, consent, bad input, the dry run,
stored results and the dp_report / verify_report commands."""

import datetime as dt
import io
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinicians.roles import COMPLIANCE
from core.errors import ApplicationError
from nudges.models import Delivery, Event, ReviewRequest
from privacy.exports import export_verify
from privacy.models import PrivacyBudget, Release
from privacy.reports import release_export, report_preview, report_release
from safety.models import MedicalGroup
from tests.factories import UserFactory, make_delivery_row, make_patient

pytestmark = pytest.mark.django_db

PERIOD = "2025-03"
# A budget so large that the noise of a count (scale below 0.02) rounds to nothing and that
# of a mean is below 0.01: the released numbers are then (nearly) the exact ones, which lets a
# test check what went into them.
EXACT = "100000"


def at(day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2025, 3, day, hour, tzinfo=dt.UTC)


def deliver(patient, *, day: int, state: str, hour: int = 10, goal: str | None = None):
    """A nudge delivered to `patient` on that day of the period, now in `state`."""
    from nudges.models import Template

    template = Template.objects.filter(status="active", goal=goal).first() if goal else None
    delivery = make_delivery_row(patient, state, template=template)
    Delivery.objects.filter(pk=delivery.pk).update(delivered_at=at(day, hour))
    return delivery


def make_officer(username: str = "officer"):
    user = UserFactory.create(username=username)
    user.groups.add(Group.objects.get(name=COMPLIANCE))
    return user


@pytest.fixture
def officer(db):
    return make_officer()


@pytest.fixture
def huge_cap(settings):
    settings.PRIVACY_PERIOD_CAP_RHO = "100000000"


def _row(release: Release, **keys: str) -> dict:
    (row,) = [r for r in release.results if all(r[k] == v for k, v in keys.items())]
    return row


# The ledger ---------------------------------------------------------------------------------


def test_a_release_debits_the_period_and_stores_what_was_released(officer, patient_a):
    patient, _ = patient_a
    deliver(patient, day=4, state="done")

    release = report_release(
        report="engagement", period=PERIOD, budget="0.2", by=officer, channel="api"
    )

    budget = PrivacyBudget.objects.get(period=PERIOD)
    assert budget.spent_nanorho == release.charged_nanorho == 200_000_000
    assert release.spent_after_nanorho == budget.spent_nanorho
    weeks, groups = 6, MedicalGroup.objects.count() + 1
    assert len(release.results) == groups * weeks * 3
    assert release.parameters["privacy_loss"]["rho"] == 0.2


def test_a_release_beyond_what_remains_is_refused_and_changes_nothing(settings, officer):
    settings.PRIVACY_PERIOD_CAP_RHO = "0.3"
    report_release(report="acceptance", period=PERIOD, budget="0.2", by=officer, channel="api")

    with pytest.raises(ApplicationError) as refused:
        report_release(report="acceptance", period=PERIOD, budget="0.2", by=officer, channel="api")

    assert refused.value.status == 409
    assert refused.value.code == "budget_exceeded"
    assert "budget" in refused.value.fields
    assert "0.1" in refused.value.message  # what remains
    assert PrivacyBudget.objects.get(period=PERIOD).spent_nanorho == 200_000_000
    assert Release.objects.count() == 1


def test_the_last_of_the_budget_can_be_spent_exactly(settings, officer):
    settings.PRIVACY_PERIOD_CAP_RHO = "0.3"
    for _ in range(3):
        report_release(
            report="review_outcomes", period=PERIOD, budget="0.1", by=officer, channel="api"
        )

    assert PrivacyBudget.objects.get(period=PERIOD).spent_nanorho == 300_000_000
    with pytest.raises(ApplicationError):
        report_release(
            report="review_outcomes", period=PERIOD, budget="1e-9", by=officer, channel="api"
        )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"report": "engagement", "period": PERIOD, "budget": "0"}, "budget"),
        ({"report": "engagement", "period": PERIOD, "budget": "-0.5"}, "budget"),
        ({"report": "engagement", "period": PERIOD, "budget": "lots"}, "budget"),
        ({"report": "engagement", "period": "2025-13", "budget": "0.1"}, "period"),
        ({"report": "engagement", "period": "2099-01", "budget": "0.1"}, "period"),
        ({"report": "engagement", "period": "2019-01", "budget": "0.1"}, "period"),
        ({"report": "everything", "period": PERIOD, "budget": "0.1"}, "report"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_spends_nothing(officer, request_, field):
    with pytest.raises(ApplicationError) as refused:
        report_release(**request_, by=officer, channel="api")

    assert refused.value.status == 400
    assert set(refused.value.fields) == {field}
    assert not PrivacyBudget.objects.exists()
    assert not Release.objects.exists()


def test_a_repeated_request_id_returns_the_first_release_and_spends_once(officer):
    import uuid

    request_id = uuid.uuid4()
    first = report_release(
        report="engagement", period=PERIOD, budget="0.1", by=officer, channel="admin",
        request_id=request_id,
    )  # fmt: skip
    again = report_release(
        report="engagement", period=PERIOD, budget="0.1", by=officer, channel="admin",
        request_id=request_id,
    )  # fmt: skip

    assert again.pk == first.pk
    assert PrivacyBudget.objects.get(period=PERIOD).spent_nanorho == 100_000_000


# Consent and what goes into the numbers -----------------------------------------------------


def test_patients_without_research_consent_are_left_out_of_every_report(huge_cap, officer):
    consenting, _ = make_patient(groups=("hypertension",), age_band="30-44", sex="male")
    refusing, _ = make_patient(
        groups=("depression",), age_band="60-74", sex="female", consents={"research": False}
    )
    for patient in (consenting, refusing):
        deliver(patient, day=4, state="done")
        deliver(patient, day=5, state="dismissed")

    engagement = report_release(
        report="engagement", period=PERIOD, budget=EXACT, by=officer, channel="api"
    )
    acceptance = report_release(
        report="acceptance", period=PERIOD, budget=EXACT, by=officer, channel="api"
    )

    week = {"week": "2025-03-03"}
    for measure in ("delivered", "acted_on", "dismissed"):
        assert _row(engagement, group="hypertension", measure=measure, **week)["patients"] == 1
        assert _row(engagement, group="depression", measure=measure, **week)["patients"] == 0
    assert _row(acceptance, age_band="30-44", sex="male")["patients"] == 1
    assert _row(acceptance, age_band="30-44", sex="male")["acceptance_rate"] == pytest.approx(
        0.5, abs=0.03
    )
    assert _row(acceptance, age_band="60-74", sex="female")["patients"] == 0


def test_a_patient_counts_once_per_cell_however_many_nudges(huge_cap, officer, patient_a):
    patient, _ = patient_a
    for day in (10, 11, 12):
        for hour in (8, 12, 18):
            deliver(patient, day=day, state="done", hour=hour)

    release = report_release(
        report="engagement", period=PERIOD, budget=EXACT, by=officer, channel="api"
    )

    row = _row(release, group="hypertension", week="2025-03-10", measure="acted_on")
    assert row["patients"] == 1
    assert row["patients_low"] <= 1 <= row["patients_high"]


def test_the_health_report_measures_the_change_around_a_nudge_within_the_month(
    huge_cap, officer, patient_a
):
    patient, _ = patient_a
    # Steps: 1,200 a day up to the nudge's day, 2,400 the three days after: +1 standard unit
    # (nudges.measures: 1,200 steps).
    for day in range(8, 15):
        steps = 1200 if day <= 10 else 2400
        Event.objects.create(
            patient=patient, client_id=f"s{day}", kind="steps", value=steps, occurred_at=at(day, 20)
        )
    deliver(patient, day=10, state="done", goal="activity")
    # A nudge whose three days after fall in the next month is not measured in this one.
    deliver(patient, day=30, state="done", goal="activity")

    release = report_release(
        report="health_change", period=PERIOD, budget=EXACT, by=officer, channel="api"
    )

    row = _row(release, goal="activity")
    assert row["patients"] == 1
    assert row["mean_change"] == pytest.approx(1.0, abs=0.08)
    assert _row(release, goal="sleep")["patients"] == 0


def test_review_outcomes_count_requests_per_group_and_outcome_bounded_per_patient(
    huge_cap, officer, patient_a
):
    patient, _ = patient_a
    group = MedicalGroup.objects.get(slug="hypertension")
    for day in (3, 4, 5):  # three requests, but a patient adds at most two to one cell
        review = ReviewRequest.objects.create(
            delivery=deliver(patient, day=day, state="done"),
            patient=patient,
            kind="before_delivery",
            state="approved",
        )
        review.groups.add(group)
        ReviewRequest.objects.filter(pk=review.pk).update(created_at=at(day))

    release = report_release(
        report="review_outcomes", period=PERIOD, budget=EXACT, by=officer, channel="api"
    )

    assert _row(release, group="hypertension", outcome="approved")["requests"] == 2
    assert _row(release, group="hypertension", outcome="rejected")["requests"] == 0


# The dry run and exports --------------------------------------------------------------------


def test_a_dry_run_shows_the_intervals_spends_nothing_and_reads_no_patient_data(patient_a):
    patient, _ = patient_a
    deliver(patient, day=4, state="done")

    with CaptureQueriesContext(connection) as queries:
        preview = report_preview(report="acceptance", period=PERIOD, budget="0.1")

    tables = " ".join(q["sql"] for q in queries.captured_queries)
    for raw in ("nudges_delivery", "patients_", "nudges_event", "nudges_reviewrequest"):
        assert raw not in tables
    assert not PrivacyBudget.objects.exists()
    assert preview["fits"] is True
    assert preview["privacy_loss"]["rho"] == 0.1
    assert [a["column"] for a in preview["aggregates"]] == ["patients", "rate_sum"]
    assert all(a["half_width"] > 0 for a in preview["aggregates"])


def test_exporting_a_release_again_costs_nothing_and_every_export_verifies(officer, patient_a):
    patient, _ = patient_a
    deliver(patient, day=4, state="done")
    release = report_release(
        report="acceptance", period=PERIOD, budget="0.1", by=officer, channel="api"
    )
    spent = PrivacyBudget.objects.get(period=PERIOD).spent_nanorho

    for _ in range(2):
        for fmt in ("csv", "json", "html"):
            manifest = export_verify(release_export(release=release, fmt=fmt).content)
            assert manifest["results_sha256"] == release.results_sha256
            assert manifest["ledger"]["spent_rho_at_export"] == spent / 1e9

    assert PrivacyBudget.objects.get(period=PERIOD).spent_nanorho == spent
    assert Release.objects.count() == 1


# The commands -------------------------------------------------------------------------------


def test_dp_report_dry_run_prints_the_intervals_and_spends_nothing():
    out = io.StringIO()

    call_command(
        "dp_report", "--report", "engagement", "--period", PERIOD, "--budget", "0.1",
        "--dry-run", stdout=out,
    )  # fmt: skip

    assert "would spend rho 0.1" in out.getvalue()
    assert "±" in out.getvalue()
    assert not PrivacyBudget.objects.exists()


def test_dp_report_releases_and_writes_signed_exports_that_verify(tmp_path: Path, patient_a):
    patient, _ = patient_a
    deliver(patient, day=4, state="done")

    call_command(
        "dp_report", "--report", "engagement", "--period", PERIOD, "--budget", "0.1",
        "--out", str(tmp_path), stdout=io.StringIO(),
    )  # fmt: skip

    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".csv", ".html", ".json"]
    for path in files:
        out = io.StringIO()
        call_command("verify_report", str(path), stdout=out)
        assert out.getvalue().startswith("OK")
    assert PrivacyBudget.objects.get(period=PERIOD).spent_nanorho == 100_000_000


def test_dp_report_refuses_a_budget_above_what_remains(settings, tmp_path):
    settings.PRIVACY_PERIOD_CAP_RHO = "0.05"

    with pytest.raises(CommandError, match="more than remains"):
        call_command(
            "dp_report", "--report", "engagement", "--period", PERIOD, "--budget", "0.1",
            "--out", str(tmp_path), stdout=io.StringIO(),
        )  # fmt: skip

    assert not any(tmp_path.iterdir())
    assert not Release.objects.exists()


@pytest.mark.parametrize("name", ["engagement", "acceptance", "health_change", "review_outcomes"])
def test_a_month_without_data_still_releases_every_public_cell(officer, name):
    release = report_release(report=name, period="2024-02", budget="0.1", by=officer, channel="api")

    keys = release.parameters["keys"]
    cells = {tuple(row[k] for k in keys) for row in release.results}
    assert len(cells) == len(release.results) > 0
    assert all(row[release.parameters["headline"] + "_low"] is not None for row in release.results)
