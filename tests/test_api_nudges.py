"""GET /api/v1/nudges/: the patient's current nudges, and what fetching them records."""

import datetime as dt

import pytest
from django.utils import timezone

from nudges.models import Delivery, DeliveryState, DeliveryTransition, PushMessage, PushState
from nudges.services.deliveries import deliveries_mark_delivered, delivery_move, push_enqueue
from tests.factories import make_nudge, make_patient

pytestmark = pytest.mark.django_db

URL = "/api/v1/nudges/"


@pytest.fixture(autouse=True)
def room_for_many_nudges(settings):
    """Several nudges in a row: the daily cap and the minimum gap would otherwise refuse the
    second one, which is the delivery policy's business, not the inbox's."""
    settings.NUDGE_DAILY_CAP = 100
    settings.NUDGE_MIN_GAP_MINUTES = 0


def moved(delivery: Delivery, to_state: str, **fields) -> Delivery:
    return delivery_move(delivery=delivery, to_state=to_state, actor="test", **fields)


def listed_ids(response) -> list[str]:
    return [item["id"] for item in response.json()]


def test_the_inbox_shows_a_nudge_with_its_text_goal_and_why(patient_a, api_a):
    delivery = make_nudge(patient_a[0])

    response = api_a.get(URL)

    assert response.status_code == 200
    [item] = response.json()
    assert item["id"] == str(delivery.pk)
    assert item["title"] == delivery.template.title
    assert item["body"] == delivery.template.body
    assert item["goal"] == delivery.template.goal
    assert item["category"] == delivery.template.category
    assert item["why"] == delivery.why
    assert item["why"]
    assert item["expires_at"] is not None


def test_fetching_a_ready_nudge_marks_it_delivered_by_the_inbox(patient_a, api_a):
    delivery = make_nudge(patient_a[0])
    assert delivery.state == DeliveryState.READY
    before = timezone.now()

    response = api_a.get(URL)

    after = timezone.now()
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.DELIVERED
    assert before <= delivery.delivered_at <= after
    assert response.json()[0]["state"] == DeliveryState.DELIVERED
    transition = DeliveryTransition.objects.filter(delivery=delivery).latest("created_at")
    assert (transition.from_state, transition.to_state) == (
        DeliveryState.READY,
        DeliveryState.DELIVERED,
    )
    assert transition.actor == "inbox"


def test_fetching_again_does_not_deliver_the_same_nudge_twice(patient_a, api_a):
    delivery = make_nudge(patient_a[0])
    api_a.get(URL)
    delivery.refresh_from_db()
    first_delivered_at = delivery.delivered_at

    response = api_a.get(URL)

    delivery.refresh_from_db()
    assert listed_ids(response) == [str(delivery.pk)]
    assert delivery.delivered_at == first_delivered_at
    assert DeliveryTransition.objects.filter(delivery=delivery, actor="inbox").count() == 1


def test_a_fetch_delivers_only_what_is_still_ready_and_cancels_only_its_pushes(patient_a):
    """Two ready nudges with pending pushes; one expires between the app's read and the
    move. Only the other is delivered, logged and has its push cancelled."""
    kept, gone = make_nudge(patient_a[0]), make_nudge(patient_a[0])
    now = timezone.now()
    for delivery in (kept, gone):
        push_enqueue(delivery=delivery, now=now)
    Delivery.objects.filter(pk=gone.pk).update(state=DeliveryState.EXPIRED)  # after the read

    shown = deliveries_mark_delivered(deliveries=[kept, gone], actor="inbox")

    assert {d.pk for d in shown} == {kept.pk, gone.pk}  # neither was stopped by the gate
    states = dict(Delivery.objects.values_list("pk", "state"))
    assert (states[kept.pk], states[gone.pk]) == (DeliveryState.DELIVERED, DeliveryState.EXPIRED)
    assert (kept.state, gone.state) == (DeliveryState.DELIVERED, DeliveryState.READY)
    pushes = dict(PushMessage.objects.values_list("delivery_id", "state"))
    assert (pushes[kept.pk], pushes[gone.pk]) == (PushState.CANCELLED, PushState.PENDING)
    fetched = DeliveryTransition.objects.filter(reason="fetched")
    assert [(t.delivery_id, t.from_state, t.to_state, t.actor) for t in fetched] == [
        (kept.pk, DeliveryState.READY, DeliveryState.DELIVERED, "inbox")
    ]


def test_nudges_are_listed_newest_first(patient_a, api_a):
    oldest = make_nudge(patient_a[0])
    middle = make_nudge(patient_a[0])
    newest = make_nudge(patient_a[0])

    response = api_a.get(URL)

    assert listed_ids(response) == [str(newest.pk), str(middle.pk), str(oldest.pk)]


def test_the_inbox_lists_at_most_twenty_nudges(api_a):
    patient, token = make_patient(
        goals={goal: 0.5 for goal in ("activity", "sleep", "diet", "mood", "hydration")}
    )
    made = [make_nudge(patient) for _ in range(21)]
    api_a.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = api_a.get(URL)

    assert len(response.json()) == 20
    assert listed_ids(response) == [str(d.pk) for d in reversed(made[1:])]


@pytest.mark.parametrize("state", [DeliveryState.DELIVERED, DeliveryState.OPENED])
def test_a_nudge_already_delivered_or_opened_stays_in_the_inbox(patient_a, api_a, state):
    delivery = moved(make_nudge(patient_a[0]), state)

    response = api_a.get(URL)

    [item] = response.json()
    assert item["id"] == str(delivery.pk)
    assert item["state"] == state


@pytest.mark.parametrize(
    "state",
    [DeliveryState.DONE, DeliveryState.DISMISSED, DeliveryState.EXPIRED, DeliveryState.BLOCKED],
)
def test_a_finished_nudge_is_not_listed(patient_a, api_a, state):
    moved(make_nudge(patient_a[0]), state)

    response = api_a.get(URL)

    assert response.status_code == 200
    assert response.json() == []


def test_a_nudge_past_its_expiry_is_not_listed_even_before_the_sweeper_runs(patient_a, api_a):
    # Decided over a day ago: past its 24-hour expiry, though still ready in the table.
    stale = make_nudge(patient_a[0], at=timezone.now() - dt.timedelta(hours=30))
    assert stale.expires_at < timezone.now()

    response = api_a.get(URL)

    assert response.json() == []
    stale.refresh_from_db()
    assert stale.state == DeliveryState.READY
    assert stale.delivered_at is None


def test_a_snoozed_nudge_is_hidden_until_its_time_comes(patient_a, api_a):
    now = timezone.now()
    later = moved(
        make_nudge(patient_a[0]),
        DeliveryState.SNOOZED,
        due_at=now + dt.timedelta(hours=2),
        expires_at=now + dt.timedelta(hours=26),
    )
    due = moved(
        make_nudge(patient_a[0]),
        DeliveryState.SNOOZED,
        due_at=now - dt.timedelta(minutes=1),
        expires_at=now + dt.timedelta(hours=23),
    )

    response = api_a.get(URL)

    assert listed_ids(response) == [str(due.pk)]
    assert str(later.pk) not in listed_ids(response)
    assert response.json()[0]["state"] == DeliveryState.SNOOZED


def test_a_nudge_held_for_quiet_hours_is_not_listed(patient_a, api_a):
    patient = patient_a[0]
    patient.quiet_start, patient.quiet_end = dt.time(0, 0), dt.time(23, 59)
    patient.save()
    held = make_nudge(patient)
    assert held.state == DeliveryState.HELD

    response = api_a.get(URL)

    assert response.json() == []
    held.refresh_from_db()
    assert held.state == DeliveryState.HELD


def test_another_patients_nudges_never_appear_and_are_not_marked_delivered(
    patient_a, patient_b, api_a
):
    mine = make_nudge(patient_a[0])
    theirs = make_nudge(patient_b[0])

    response = api_a.get(URL)

    assert listed_ids(response) == [str(mine.pk)]
    theirs.refresh_from_db()
    assert theirs.state == DeliveryState.READY
    assert theirs.delivered_at is None


def test_without_a_token_the_inbox_answers_401(patient_a, anonymous):
    delivery = make_nudge(patient_a[0])

    response = anonymous.get(URL)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.READY


def test_a_token_that_is_not_a_patients_is_refused_403(outsider_api):
    response = outsider_api.get(URL)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
