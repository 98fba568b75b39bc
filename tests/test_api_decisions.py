"""POST /api/v1/decisions/: a decision now, with its receipt."""

import datetime as dt

import pytest

from nudges.models import Decision, DecisionPoint, DeliveryState
from tests.factories import make_nudge

pytestmark = pytest.mark.django_db


def test_decision_returns_a_receipt_whose_probabilities_sum_to_one(api_a):
    response = api_a.post("/api/v1/decisions/", {"trigger": "app_open"}, format="json")

    assert response.status_code == 201
    body = response.json()
    receipt = body["receipt"]
    total = sum(receipt["candidates"]["probability"]) + receipt["no_nudge_probability"]
    assert total == pytest.approx(1.0, abs=1e-5)
    assert body["outcome"] in {"nudge", "no_nudge"}
    assert receipt["policy"] == {"name": "baseline", "version": "baseline-1"}
    assert 0 <= receipt["draw"] < 1


def test_candidates_serve_only_the_patients_agenda(api_a):
    body = api_a.post("/api/v1/decisions/", {}, format="json").json()

    goals = {key.split("@")[0] for key in body["receipt"]["candidates"]["template"]}
    from nudges.models import Template

    assert set(Template.objects.filter(slug__in=goals).values_list("goal", flat=True)) <= {
        "activity",
        "sleep",
    }


def test_a_repeat_within_the_minute_returns_the_first_decision(api_a):
    first = api_a.post("/api/v1/decisions/", {}, format="json")
    second = api_a.post("/api/v1/decisions/", {}, format="json")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["decision_id"] == first.json()["decision_id"]
    assert DecisionPoint.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"trigger": "slot"},
        {"trigger": "nonsense"},
        {"context": {"hour": [1, 2]}},
        {"context": {f"k{i}": i for i in range(21)}},
        {"context": "not an object"},
        {"context": {"x": "y" * 65}},
    ],
)
def test_bad_input_is_refused_with_a_uniform_error_and_writes_nothing(api_a, body):
    response = api_a.post("/api/v1/decisions/", body, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "message", "fields"}
    assert Decision.objects.count() == 0


def test_malformed_json_is_a_400_parse_error(api_a):
    response = api_a.post("/api/v1/decisions/", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_a_non_object_body_is_refused(api_a):
    response = api_a.post("/api/v1/decisions/", [1, 2], format="json")

    assert response.status_code == 400
    assert Decision.objects.count() == 0


def test_without_a_token_the_api_answers_401(anonymous):
    assert anonymous.post("/api/v1/decisions/", {}, format="json").status_code == 401


def test_a_token_that_is_not_a_patients_is_refused(outsider_api):
    response = outsider_api.post("/api/v1/decisions/", {}, format="json")

    assert response.status_code == 403
    assert Decision.objects.count() == 0


def test_a_nudge_chosen_in_quiet_hours_is_held_until_they_end(patient_a):
    patient, _ = patient_a
    patient.timezone = "Asia/Kolkata"
    patient.quiet_start, patient.quiet_end = dt.time(0, 0), dt.time(23, 59)
    patient.save()

    delivery = make_nudge(patient)  # one the rules do not send to review

    assert delivery.state == DeliveryState.HELD
    assert delivery.due_at is not None
    assert delivery.due_at > delivery.created_at
