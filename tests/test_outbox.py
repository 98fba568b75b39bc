"""The push outbox (docs/delivery.md, "Push notifications" and "When a nudge counts as
delivered"): nudges.services.outbox.outbox_dispatch sends due pushes through the configured
provider, retries provider errors with backoff, cancels pushes the patient no longer needs,
and never sends one push twice."""

import datetime as dt
import json
from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from nudges import push
from nudges.models import (
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    DevelopmentPush,
    PushMessage,
    PushState,
)
from nudges.push import PushError
from nudges.services.decisions import decision_make
from nudges.services.deliveries import delivery_feedback
from nudges.services.outbox import outbox_dispatch
from tests.factories import make_patient

pytestmark = pytest.mark.django_db

NOTHING = {"sent": 0, "retry": 0, "dead": 0, "cancelled": 0}


class FlakyProvider:
    """A provider whose service is down: every send fails with a transient error."""

    name = "flaky"
    calls = 0

    def send(self, *, message_id: str, payload: dict[str, Any]) -> str:
        type(self).calls += 1
        raise PushError("unavailable")


class RefusingProvider:
    """A provider that refuses the device token for good."""

    name = "refusing"
    calls = 0

    def send(self, *, message_id: str, payload: dict[str, Any]) -> str:
        type(self).calls += 1
        raise PushError("invalid_token", permanent=True)


class RacingProvider:
    """While it hands over a push, a second dispatcher sweeps the outbox at the same moment."""

    name = "racing"
    sends: list[str] = []
    inner_counts: list[dict[str, int]] = []
    now: dt.datetime | None = None

    def send(self, *, message_id: str, payload: dict[str, Any]) -> str:
        type(self).sends.append(message_id)
        if len(type(self).sends) == 1:
            type(self).inner_counts.append(outbox_dispatch(now=type(self).now))
        return f"race-{message_id}"


@pytest.fixture(autouse=True)
def fresh_provider_cache():
    push._provider_class.cache_clear()
    FlakyProvider.calls = RefusingProvider.calls = 0
    RacingProvider.sends, RacingProvider.inner_counts = [], []
    yield
    push._provider_class.cache_clear()


def _ready_with_push(patient, now: dt.datetime) -> Delivery:
    """A nudge chosen outside quiet hours for a patient who consents to notifications: ready,
    with a pending push. Seeds are tried in turn because the policy may choose no nudge."""
    for seed in range(30):
        decision, _ = decision_make(patient=patient, now=now, rng=np.random.default_rng(seed))
        if decision.outcome == "nudge":
            delivery = Delivery.objects.get(decision=decision)
            assert delivery.state == DeliveryState.READY
            assert PushMessage.objects.get(delivery=delivery).state == PushState.PENDING
            return delivery
        DecisionPoint.objects.filter(pk=decision.decision_point_id).delete()
    raise AssertionError("the policy never chose a nudge")


@pytest.fixture
def t0():
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def ready(patient_a, t0):
    return _ready_with_push(patient_a[0], t0)


def test_a_pending_push_is_sent_through_the_development_provider(ready, t0):
    sent_at = t0 + dt.timedelta(seconds=15)

    counts = outbox_dispatch(now=sent_at)

    assert counts == {**NOTHING, "sent": 1}
    message = PushMessage.objects.get(delivery=ready)
    assert message.state == PushState.SENT
    assert message.attempts == 1
    assert message.sent_at == sent_at
    assert message.provider == "development"
    [record] = DevelopmentPush.objects.all()
    assert record.message_id == message.pk
    assert message.provider_message_id == f"dev-{record.pk}"


def test_sending_the_push_counts_the_nudge_as_delivered(ready, t0):
    sent_at = t0 + dt.timedelta(seconds=15)

    outbox_dispatch(now=sent_at)

    delivery = Delivery.objects.get(pk=ready.pk)
    assert delivery.state == DeliveryState.DELIVERED
    assert delivery.delivered_at == sent_at
    last = DeliveryTransition.objects.filter(delivery=ready).order_by("-created_at").first()
    assert last is not None
    assert (last.from_state, last.to_state, last.actor) == ("ready", "delivered", "push")


def test_the_push_payload_carries_only_an_opaque_id_and_a_neutral_title(ready, patient_a, t0):
    outbox_dispatch(now=t0)

    payload = DevelopmentPush.objects.get().payload
    assert payload == {
        "title": "You have a new suggestion",
        "data": {"type": "nudge", "delivery_id": str(ready.pk)},
    }
    text = json.dumps(payload).lower()
    template = ready.template
    patient = patient_a[0]
    for secret in [template.slug, template.title, template.goal, ready.why, patient.pseudonym]:
        assert secret.lower() not in text
    assert str(patient.pk) not in text


def test_a_push_not_yet_due_is_left_alone(ready, t0):
    PushMessage.objects.filter(delivery=ready).update(next_attempt_at=t0 + dt.timedelta(minutes=1))

    assert outbox_dispatch(now=t0) == NOTHING
    assert not DevelopmentPush.objects.exists()
    assert PushMessage.objects.get(delivery=ready).state == PushState.PENDING


def test_a_sent_push_is_not_sent_again(ready, t0):
    outbox_dispatch(now=t0)

    assert outbox_dispatch(now=t0 + dt.timedelta(minutes=10)) == NOTHING
    assert DevelopmentPush.objects.count() == 1


def test_a_provider_error_is_retried_with_exponential_backoff(ready, t0, settings):
    settings.PUSH_PROVIDER = "tests.test_outbox.FlakyProvider"
    settings.PUSH_MAX_ATTEMPTS = 5

    # first attempt fails: retried 60 s later
    assert outbox_dispatch(now=t0) == {**NOTHING, "retry": 1}
    message = PushMessage.objects.get(delivery=ready)
    assert (message.state, message.attempts) == (PushState.PENDING, 1)
    assert message.next_attempt_at == t0 + dt.timedelta(seconds=60)
    assert message.last_error == "unavailable"

    # before the backoff has passed nothing is tried
    assert outbox_dispatch(now=t0 + dt.timedelta(seconds=59)) == NOTHING
    assert FlakyProvider.calls == 1

    # second attempt fails: the wait doubles
    second = t0 + dt.timedelta(seconds=60)
    assert outbox_dispatch(now=second) == {**NOTHING, "retry": 1}
    message.refresh_from_db()
    assert (message.state, message.attempts) == (PushState.PENDING, 2)
    assert message.next_attempt_at == second + dt.timedelta(seconds=120)
    assert Delivery.objects.get(pk=ready.pk).state == DeliveryState.READY


def test_a_push_that_keeps_failing_is_dead_after_the_maximum_attempts(ready, t0, settings):
    settings.PUSH_PROVIDER = "tests.test_outbox.FlakyProvider"
    settings.PUSH_MAX_ATTEMPTS = 3
    outcomes = []
    now = t0
    for _ in range(3):
        counts = outbox_dispatch(now=now)
        outcomes.append(next(k for k, v in counts.items() if v))
        now = PushMessage.objects.get(delivery=ready).next_attempt_at

    message = PushMessage.objects.get(delivery=ready)
    assert outcomes == ["retry", "retry", "dead"]
    assert (message.state, message.attempts) == (PushState.DEAD, 3)
    assert outbox_dispatch(now=now + dt.timedelta(days=1)) == NOTHING
    assert FlakyProvider.calls == 3
    # the nudge itself stays ready: the app can still fetch it
    assert Delivery.objects.get(pk=ready.pk).state == DeliveryState.READY


def test_a_permanent_provider_error_is_dead_at_once(ready, t0, settings):
    settings.PUSH_PROVIDER = "tests.test_outbox.RefusingProvider"
    settings.PUSH_MAX_ATTEMPTS = 5

    assert outbox_dispatch(now=t0) == {**NOTHING, "dead": 1}

    message = PushMessage.objects.get(delivery=ready)
    assert (message.state, message.attempts, message.last_error) == (
        PushState.DEAD,
        1,
        "invalid_token",
    )
    assert outbox_dispatch(now=t0 + dt.timedelta(hours=1)) == NOTHING
    assert RefusingProvider.calls == 1


def test_a_push_for_a_nudge_no_longer_ready_is_cancelled_not_sent(ready, t0):
    # the nudge expired underneath the pending push
    Delivery.objects.filter(pk=ready.pk).update(state=DeliveryState.EXPIRED)

    assert outbox_dispatch(now=t0) == {**NOTHING, "cancelled": 1}

    assert PushMessage.objects.get(delivery=ready).state == PushState.CANCELLED
    assert not DevelopmentPush.objects.exists()
    assert Delivery.objects.get(pk=ready.pk).state == DeliveryState.EXPIRED


def test_opening_the_nudge_in_the_app_cancels_its_pending_push(ready, patient_a, t0):
    delivery_feedback(patient=patient_a[0], delivery_id=ready.pk, action="opened")

    assert PushMessage.objects.get(delivery=ready).state == PushState.CANCELLED
    assert outbox_dispatch(now=t0) == NOTHING
    assert not DevelopmentPush.objects.exists()


def test_a_nudge_the_app_fetched_is_not_pushed(ready, api_a, t0):
    response = api_a.get("/api/v1/nudges/")
    assert response.status_code == 200
    assert Delivery.objects.get(pk=ready.pk).state == DeliveryState.DELIVERED

    assert outbox_dispatch(now=t0 + dt.timedelta(seconds=15)) == NOTHING

    assert PushMessage.objects.get(delivery=ready).state == PushState.CANCELLED
    assert not DevelopmentPush.objects.exists()


def test_a_push_claimed_by_one_dispatcher_is_not_sent_by_another(ready, t0, settings):
    settings.PUSH_PROVIDER = "tests.test_outbox.RacingProvider"
    RacingProvider.now = t0

    outer = outbox_dispatch(now=t0)

    assert outer == {**NOTHING, "sent": 1}
    assert RacingProvider.inner_counts == [NOTHING]
    assert len(RacingProvider.sends) == 1
    assert PushMessage.objects.get(delivery=ready).state == PushState.SENT


def test_a_recent_claim_is_respected(ready, t0):
    # another dispatcher claimed the row a minute ago and is still sending
    PushMessage.objects.filter(delivery=ready).update(
        state=PushState.SENDING, updated_at=t0 - dt.timedelta(minutes=1)
    )

    assert outbox_dispatch(now=t0) == NOTHING
    assert not DevelopmentPush.objects.exists()


def test_a_claim_left_by_a_crashed_worker_is_taken_again_after_five_minutes(ready, t0):
    PushMessage.objects.filter(delivery=ready).update(
        state=PushState.SENDING, updated_at=t0 - dt.timedelta(minutes=6)
    )

    assert outbox_dispatch(now=t0) == {**NOTHING, "sent": 1}
    assert DevelopmentPush.objects.count() == 1
    assert Delivery.objects.get(pk=ready.pk).state == DeliveryState.DELIVERED


def test_a_patient_who_declined_notifications_has_nothing_in_the_outbox(t0):
    patient, _ = make_patient(consents={"notifications": False})
    for seed in range(30):
        decision, _ = decision_make(patient=patient, now=t0, rng=np.random.default_rng(seed))
        if decision.outcome == "nudge":
            break
        DecisionPoint.objects.filter(pk=decision.decision_point_id).delete()
    assert decision.outcome == "nudge"

    assert not PushMessage.objects.exists()
    assert outbox_dispatch(now=t0) == NOTHING
    assert Delivery.objects.get(decision=decision).state == DeliveryState.READY
