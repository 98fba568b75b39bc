"""Consent per purpose (GET/PUT /api/v1/me/consent/): without personalisation consent the
patient gets the non-personalised baseline, without notification consent nothing is pushed,
and the consent in force is stored on each decision (the receipt's consent snapshot)."""

import pytest

from nudges.models import DevelopmentPush, PushMessage, PushState
from nudges.services.decisions import decision_make
from nudges.services.outbox import outbox_dispatch
from patients.models import ConsentEvent
from tests.factories import make_nudge

URL = "/api/v1/me/consent/"
ALL = {"personalisation": True, "notifications": True, "research": True}


def test_a_patient_reads_the_consent_in_force_for_every_purpose(api_a):
    response = api_a.get(URL)

    assert response.status_code == 200
    assert response.json() == ALL


def test_a_patient_changes_consent_and_only_changes_enter_the_history(api_a, patient_a):
    patient, _ = patient_a
    before = ConsentEvent.objects.filter(patient=patient).count()

    response = api_a.put(URL, {**ALL, "research": False}, format="json")

    assert response.status_code == 200
    assert response.json() == {**ALL, "research": False}
    assert api_a.get(URL).json() == {**ALL, "research": False}
    events = ConsentEvent.objects.filter(patient=patient).order_by("created_at")
    assert events.count() == before + 1
    last = events.last()
    assert last is not None
    assert (last.purpose, last.granted, last.source) == (
        "research",
        False,
        "app",
    )


def test_consent_of_one_patient_does_not_touch_another(api_a, api_b):
    api_a.put(URL, {**ALL, "notifications": False}, format="json")

    assert api_b.get(URL).json() == ALL


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"personalisation": True, "notifications": True}, "research"),
        ({**ALL, "marketing": True}, "marketing"),
        ({**ALL, "research": "no"}, "research"),
        ({**ALL, "research": None}, "research"),
    ],
    ids=["missing", "unknown", "string", "null"],
)
def test_a_bad_consent_body_is_refused_naming_the_purpose_and_changes_nothing(
    api_a, patient_a, body, field
):
    before = ConsentEvent.objects.filter(patient=patient_a[0]).count()

    response = api_a.put(URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert ConsentEvent.objects.filter(patient=patient_a[0]).count() == before
    assert api_a.get(URL).json() == ALL


def test_only_a_patient_token_reaches_consent(outsider_api, anonymous):
    assert outsider_api.get(URL).status_code == 403
    assert outsider_api.put(URL, ALL, format="json").status_code == 403
    assert anonymous.get(URL).status_code == 401


def test_without_personalisation_consent_the_decision_falls_back_to_the_baseline(api_a, patient_a):
    patient, _ = patient_a
    api_a.put(URL, {**ALL, "personalisation": False}, format="json")

    decision, _ = decision_make(patient=patient)

    assert decision.receipt["consent"] == {**ALL, "personalisation": False}
    assert decision.receipt["fallback"] == "no_personalisation_consent"
    assert decision.receipt["policy"]["name"] == "baseline"


def test_each_decision_stores_the_consent_in_force_when_it_was_made(api_a, patient_a):
    patient, _ = patient_a
    first = make_nudge(patient).decision
    api_a.put(URL, {**ALL, "research": False}, format="json")

    second = make_nudge(patient).decision

    first.refresh_from_db()
    assert first.receipt["consent"] == ALL
    assert second.receipt["consent"] == {**ALL, "research": False}


def test_without_notification_consent_a_new_nudge_is_not_pushed(api_a, patient_a):
    patient, _ = patient_a
    api_a.put(URL, {**ALL, "notifications": False}, format="json")

    delivery = make_nudge(patient)

    assert delivery.state == "ready"
    assert not PushMessage.objects.filter(delivery=delivery).exists()


def test_a_push_queued_before_consent_was_withdrawn_is_cancelled_not_sent(api_a, patient_a):
    patient, _ = patient_a
    delivery = make_nudge(patient)
    assert PushMessage.objects.filter(delivery=delivery, state=PushState.PENDING).exists()

    api_a.put(URL, {**ALL, "notifications": False}, format="json")
    counts = outbox_dispatch()

    assert counts["cancelled"] == 1 and counts["sent"] == 0
    assert PushMessage.objects.get(delivery=delivery).state == PushState.CANCELLED
    assert not DevelopmentPush.objects.exists()
