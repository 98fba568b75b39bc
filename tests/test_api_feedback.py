"""POST /api/v1/nudges/{id}/feedback/: the patient opens, completes, dismisses or snoozes one
of their own nudges."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from nudges.models import Delivery, DeliveryState, DeliveryTransition
from nudges.services.deliveries import delivery_move
from tests.factories import make_nudge

pytestmark = pytest.mark.django_db


def url(delivery_id) -> str:
    return f"/api/v1/nudges/{delivery_id}/feedback/"


def nudge_in(patient, state: str) -> Delivery:
    """A nudge moved to `state` through the state-machine service."""
    delivery = make_nudge(patient)
    if state != DeliveryState.READY:
        delivery_move(delivery=delivery, to_state=state, actor="test")
    return delivery


def snapshot(delivery: Delivery) -> tuple:
    """Everything feedback may change on a delivery, to check that a refusal changed nothing."""
    delivery.refresh_from_db()
    return (
        delivery.state,
        delivery.due_at,
        delivery.expires_at,
        delivery.delivered_at,
        delivery.opened_at,
        delivery.closed_at,
        DeliveryTransition.objects.filter(delivery=delivery).count(),
    )


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def test_opening_a_delivered_nudge_records_when_it_was_opened(patient_a, api_a):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    before = timezone.now()

    response = api_a.post(url(delivery.pk), {"action": "opened"}, format="json")

    assert response.status_code == 200
    assert response.json()["state"] == DeliveryState.OPENED
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.OPENED
    assert delivery.opened_at is not None
    assert delivery.opened_at >= before
    transition = DeliveryTransition.objects.filter(delivery=delivery).latest("created_at")
    assert (transition.from_state, transition.to_state, transition.actor) == (
        DeliveryState.DELIVERED,
        DeliveryState.OPENED,
        "patient",
    )


@pytest.mark.parametrize(
    ("from_state", "action"),
    [
        (DeliveryState.READY, "done"),
        (DeliveryState.DELIVERED, "done"),
        (DeliveryState.OPENED, "done"),
        (DeliveryState.READY, "dismissed"),
        (DeliveryState.DELIVERED, "dismissed"),
        (DeliveryState.OPENED, "dismissed"),
    ],
)
def test_done_and_dismissed_close_the_nudge(patient_a, api_a, from_state, action):
    delivery = nudge_in(patient_a[0], from_state)

    response = api_a.post(url(delivery.pk), {"action": action}, format="json")

    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.state == action
    assert delivery.closed_at is not None
    assert delivery.delivered_at is not None  # feedback proves the app had it


def test_a_ready_nudge_can_be_opened_before_the_inbox_marked_it_delivered(patient_a, api_a):
    delivery = nudge_in(patient_a[0], DeliveryState.READY)

    response = api_a.post(url(delivery.pk), {"action": "opened"}, format="json")

    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.OPENED
    assert delivery.delivered_at is not None


def test_snoozing_hides_the_nudge_until_the_chosen_time(patient_a, api_a):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    until = timezone.now() + dt.timedelta(days=2)

    response = api_a.post(
        url(delivery.pk), {"action": "snoozed", "until": iso(until)}, format="json"
    )

    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.SNOOZED
    assert delivery.due_at == until
    assert delivery.expires_at > until
    assert api_a.get("/api/v1/nudges/").json() == []


def test_a_snoozed_nudge_may_be_opened_later(patient_a, api_a):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    until = timezone.now() + dt.timedelta(hours=1)
    api_a.post(url(delivery.pk), {"action": "snoozed", "until": iso(until)}, format="json")

    response = api_a.post(url(delivery.pk), {"action": "opened"}, format="json")

    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.OPENED


@pytest.mark.parametrize(
    "until",
    [
        None,
        dt.timedelta(minutes=-5),
        dt.timedelta(days=7, hours=1),
        dt.timedelta(days=30),
        "next tuesday",
    ],
    ids=["missing", "past", "just-over-7-days", "a-month", "not-a-time"],
)
def test_snoozing_needs_a_time_within_the_next_seven_days(patient_a, api_a, until):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    before = snapshot(delivery)
    body = {"action": "snoozed"}
    if isinstance(until, dt.timedelta):
        body["until"] = iso(timezone.now() + until)
    elif until is not None:
        body["until"] = until

    response = api_a.post(url(delivery.pk), body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "until" in error["fields"]
    assert snapshot(delivery) == before


def test_opening_a_nudge_already_done_is_an_illegal_transition_and_changes_nothing(
    patient_a, api_a
):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    assert api_a.post(url(delivery.pk), {"action": "done"}, format="json").status_code == 200
    before = snapshot(delivery)

    response = api_a.post(url(delivery.pk), {"action": "opened"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"
    assert snapshot(delivery) == before
    assert delivery.opened_at is None


@pytest.mark.parametrize("state", [DeliveryState.EXPIRED, DeliveryState.DISMISSED])
@pytest.mark.parametrize("action", ["opened", "done", "dismissed"])
def test_a_finished_nudge_refuses_feedback_with_409(patient_a, api_a, state, action):
    delivery = nudge_in(patient_a[0], state)
    before = snapshot(delivery)

    response = api_a.post(url(delivery.pk), {"action": action}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"
    assert snapshot(delivery) == before


def test_a_nudge_held_for_quiet_hours_cannot_be_opened_yet(patient_a, api_a):
    patient = patient_a[0]
    patient.quiet_start, patient.quiet_end = dt.time(0, 0), dt.time(23, 59)
    patient.save()
    delivery = make_nudge(patient)
    assert delivery.state == DeliveryState.HELD
    before = snapshot(delivery)

    response = api_a.post(url(delivery.pk), {"action": "opened"}, format="json")

    assert response.status_code == 409
    assert snapshot(delivery) == before


def test_another_patients_nudge_is_not_found_and_unchanged(patient_b, api_a):
    theirs = nudge_in(patient_b[0], DeliveryState.DELIVERED)
    before = snapshot(theirs)

    response = api_a.post(url(theirs.pk), {"action": "dismissed"}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert snapshot(theirs) == before


def test_another_patients_nudge_answers_exactly_like_an_unknown_one(patient_b, api_a):
    theirs = nudge_in(patient_b[0], DeliveryState.DELIVERED)

    foreign = api_a.post(url(theirs.pk), {"action": "opened"}, format="json")
    unknown = api_a.post(url(uuid.uuid4()), {"action": "opened"}, format="json")

    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()


def test_an_unknown_nudge_id_is_404(api_a):
    response = api_a.post(url(uuid.uuid4()), {"action": "done"}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_id_that_is_not_a_uuid_is_404_with_the_uniform_error(api_a):
    response = api_a.post(url("12345"), {"action": "done"}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("body", [{"action": "liked"}, {"action": ""}, {}, {"action": 3}])
def test_an_unknown_action_is_400_naming_the_field(patient_a, api_a, body):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    before = snapshot(delivery)

    response = api_a.post(url(delivery.pk), body, format="json")

    assert response.status_code == 400
    assert "action" in response.json()["error"]["fields"]
    assert snapshot(delivery) == before


def test_without_a_token_feedback_answers_401_and_changes_nothing(patient_a, anonymous):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    before = snapshot(delivery)

    response = anonymous.post(url(delivery.pk), {"action": "done"}, format="json")

    assert response.status_code == 401
    assert snapshot(delivery) == before


def test_a_token_that_is_not_a_patients_is_refused_403(patient_a, outsider_api):
    delivery = nudge_in(patient_a[0], DeliveryState.DELIVERED)
    before = snapshot(delivery)

    response = outsider_api.post(url(delivery.pk), {"action": "done"}, format="json")

    assert response.status_code == 403
    assert snapshot(delivery) == before
