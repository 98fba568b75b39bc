"""The Idempotency-Key header on the patient API's writes: a repeat replays the first
response and writes nothing; a reuse with another body is refused; a refused request stores
nothing; keys are per user."""

import datetime as dt

import pytest
from django.utils import timezone

from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    Event,
    IdempotencyRecord,
)
from nudges.services.deliveries import delivery_move
from patients.models import Patient
from tests.factories import make_nudge

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"
DECISIONS = "/api/v1/decisions/"
ME = "/api/v1/me/"
REPLAYED = "Idempotent-Replayed"


def delivered_nudge(patient) -> Delivery:
    return delivery_move(
        delivery=make_nudge(patient), to_state=DeliveryState.DELIVERED, actor="test"
    )


def keyed(key: str) -> dict:
    return {"HTTP_IDEMPOTENCY_KEY": key}


def events(*client_ids: str, kind: str = "steps") -> dict:
    """A batch body. Each call stamps the current time, so a repeat must reuse the dict."""
    occurred_at = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    return {
        "events": [
            {"client_id": cid, "kind": kind, "value": 10, "occurred_at": occurred_at}
            for cid in client_ids
        ]
    }


def feedback_url(delivery: Delivery) -> str:
    return f"/api/v1/nudges/{delivery.pk}/feedback/"


def test_a_repeated_event_batch_replays_the_first_response(patient_a, api_a):
    body = events("e1", "e2")
    first = api_a.post(EVENTS, body, format="json", **keyed("batch-1"))

    again = api_a.post(EVENTS, body, format="json", **keyed("batch-1"))

    assert first.status_code == again.status_code == 201
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    # Run again, the batch would report two duplicates; the replay repeats the first answer.
    assert again.json() == first.json() == {"stored": 2, "duplicates": 0}
    assert Event.objects.count() == 2


def test_a_repeated_decision_replays_the_first_response_and_decides_nothing_more(api_a):
    first = api_a.post(DECISIONS, {"trigger": "app_open"}, format="json", **keyed("d-1"))

    again = api_a.post(DECISIONS, {"trigger": "app_open"}, format="json", **keyed("d-1"))

    assert first.status_code == 201
    # Without the key a repeat within the minute is a 200; the replay keeps the first 201.
    assert again.status_code == 201
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert DecisionPoint.objects.count() == Decision.objects.count() == 1


def test_repeated_feedback_replays_instead_of_moving_the_nudge_again(patient_a, api_a):
    delivery = delivered_nudge(patient_a[0])
    first = api_a.post(feedback_url(delivery), {"action": "done"}, format="json", **keyed("f-1"))
    transitions = DeliveryTransition.objects.filter(delivery=delivery).count()

    again = api_a.post(feedback_url(delivery), {"action": "done"}, format="json", **keyed("f-1"))

    assert first.status_code == 200
    # A second "done" on a done nudge would be a 409; the replay answers as the first did.
    assert again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert DeliveryTransition.objects.filter(delivery=delivery).count() == transitions


def test_a_repeated_me_patch_replays_and_does_not_undo_a_later_change(patient_a, api_a):
    first = api_a.patch(ME, {"timezone": "Europe/Paris"}, format="json", **keyed("me-1"))
    api_a.patch(ME, {"timezone": "Asia/Tokyo"}, format="json")
    before = Patient.objects.get(pk=patient_a[0].pk)

    again = api_a.patch(ME, {"timezone": "Europe/Paris"}, format="json", **keyed("me-1"))

    assert again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    after = Patient.objects.get(pk=patient_a[0].pk)
    assert after.timezone == "Asia/Tokyo"
    assert after.updated_at == before.updated_at


def test_the_same_key_with_a_different_body_is_a_409_and_writes_nothing(api_a):
    api_a.post(EVENTS, events("e1"), format="json", **keyed("batch-1"))

    response = api_a.post(EVENTS, events("e2"), format="json", **keyed("batch-1"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert list(Event.objects.values_list("client_id", flat=True)) == ["e1"]


def test_the_same_key_on_another_endpoint_is_a_409_and_writes_nothing(api_a):
    api_a.post(EVENTS, events("e1"), format="json", **keyed("shared"))

    response = api_a.post(DECISIONS, {}, format="json", **keyed("shared"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert Decision.objects.count() == 0


def test_a_refused_event_batch_stores_nothing_so_a_corrected_retry_may_reuse_the_key(api_a):
    refused = api_a.post(EVENTS, events("e1", kind="nonsense"), format="json", **keyed("k"))
    assert refused.status_code == 400
    assert IdempotencyRecord.objects.count() == 0

    retry = api_a.post(EVENTS, events("e1"), format="json", **keyed("k"))

    assert retry.status_code == 201
    assert REPLAYED not in retry.headers
    assert retry.json() == {"stored": 1, "duplicates": 0}


def test_refused_feedback_stores_nothing_so_a_corrected_retry_may_reuse_the_key(patient_a, api_a):
    delivery = delivered_nudge(patient_a[0])
    url = feedback_url(delivery)
    refused = api_a.post(url, {"action": "snoozed"}, format="json", **keyed("k"))
    assert refused.status_code == 400

    until = (timezone.now() + dt.timedelta(hours=3)).isoformat()
    retry = api_a.post(url, {"action": "snoozed", "until": until}, format="json", **keyed("k"))

    assert retry.status_code == 200
    assert REPLAYED not in retry.headers
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.SNOOZED


def test_a_409_illegal_transition_is_not_stored_as_the_keys_response(patient_a, api_a):
    delivery = delivered_nudge(patient_a[0])
    api_a.post(feedback_url(delivery), {"action": "done"}, format="json")

    refused = api_a.post(feedback_url(delivery), {"action": "opened"}, format="json", **keyed("k"))

    assert refused.status_code == 409
    assert IdempotencyRecord.objects.count() == 0


def test_a_refused_me_patch_stores_nothing_so_a_corrected_retry_may_reuse_the_key(patient_a, api_a):
    refused = api_a.patch(ME, {"timezone": "Nowhere/Atall"}, format="json", **keyed("k"))
    assert refused.status_code == 400

    retry = api_a.patch(ME, {"timezone": "Europe/Oslo"}, format="json", **keyed("k"))

    assert retry.status_code == 200
    assert Patient.objects.get(pk=patient_a[0].pk).timezone == "Europe/Oslo"


def test_keys_are_per_user_so_another_patient_may_use_the_same_key(
    patient_a, patient_b, api_a, api_b
):
    api_a.post(EVENTS, events("a-1"), format="json", **keyed("same-key"))

    response = api_b.post(EVENTS, events("b-1", "b-2"), format="json", **keyed("same-key"))

    assert response.status_code == 201
    assert REPLAYED not in response.headers
    assert response.json() == {"stored": 2, "duplicates": 0}
    assert set(Event.objects.filter(patient=patient_b[0]).values_list("client_id", flat=True)) == {
        "b-1",
        "b-2",
    }


def test_another_patients_identical_request_with_the_same_key_is_not_their_replay(
    patient_b, api_a, api_b
):
    body = events("e1")
    api_a.post(EVENTS, body, format="json", **keyed("same-key"))

    response = api_b.post(EVENTS, body, format="json", **keyed("same-key"))

    assert REPLAYED not in response.headers
    assert Event.objects.filter(patient=patient_b[0], client_id="e1").exists()


def test_a_key_of_255_characters_is_accepted(api_a):
    response = api_a.post(EVENTS, events("e1"), format="json", **keyed("k" * 255))

    assert response.status_code == 201
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.parametrize("key", ["k" * 256, ""], ids=["256-characters", "empty"])
def test_a_key_outside_1_to_255_characters_is_refused_and_nothing_is_written(api_a, key):
    response = api_a.post(EVENTS, events("e1"), format="json", **keyed(key))

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert Event.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0
