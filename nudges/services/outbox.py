"""The push outbox: pending rows are claimed one at a time with a conditional UPDATE (so two
dispatchers never send the same push), sent through the configured provider, and retried with
exponential backoff on provider errors."""

import datetime as dt
import logging
import uuid

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from nudges.models import Delivery, DeliveryState, DeliveryTransition, PushMessage, PushState
from nudges.push import PushError, get_provider, push_payload
from nudges.services.gate import gate_check, gate_enforce
from patients.models import Consent, Purpose

logger = logging.getLogger(__name__)
STALE_CLAIM = dt.timedelta(minutes=5)


def _claim(message_id: uuid.UUID, now: dt.datetime) -> bool:
    due = Q(state=PushState.PENDING, next_attempt_at__lte=now) | Q(
        state=PushState.SENDING, updated_at__lt=now - STALE_CLAIM
    )
    return (
        PushMessage.objects.filter(due, pk=message_id).update(
            state=PushState.SENDING, updated_at=now
        )
        == 1
    )


def outbox_dispatch(*, limit: int = 200, now: dt.datetime | None = None) -> dict[str, int]:
    """Send up to `limit` due pushes. A push whose nudge is no longer ready (opened in the app,
    expired, blocked), or whose patient has withdrawn consent to notifications since it was
    queued, is cancelled instead of sent."""
    now = now or timezone.now()
    due = Q(state=PushState.PENDING, next_attempt_at__lte=now) | Q(
        state=PushState.SENDING, updated_at__lt=now - STALE_CLAIM
    )
    ids = list(
        PushMessage.objects.filter(due)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    counts = {"sent": 0, "retry": 0, "dead": 0, "cancelled": 0}
    provider = get_provider()
    for message_id in ids:
        if _claim(message_id, now):
            counts[_send_one(message_id, provider, now)] += 1
    return counts


def _send_one(message_id: uuid.UUID, provider, now: dt.datetime) -> str:
    message = PushMessage.objects.select_related("delivery").get(pk=message_id)
    if (
        message.delivery.state != DeliveryState.READY
        or not _notifications_consented(message.delivery)
        or not _gate(message.delivery, now)
    ):
        PushMessage.objects.filter(pk=message_id).update(state=PushState.CANCELLED, updated_at=now)
        return "cancelled"
    try:
        provider_id = provider.send(
            message_id=str(message.pk), payload=push_payload(delivery_id=str(message.delivery_id))
        )
    except PushError as error:
        return _failed(message, error, now)
    with transaction.atomic():
        # The push carries no content (the app fetches the nudge, through the gate again), but
        # the move to delivered is re-checked here too, so a rule change or a stop that landed
        # while the provider was called wins.
        # A delivery that no longer passes is blocked or reviewed, so the update below skips it.
        delivery = Delivery.objects.get(pk=message.delivery_id)
        if delivery.state == DeliveryState.READY:
            gate_enforce(
                delivery, gate_check([delivery], now=now)[delivery.pk], actor="gate", now=now
            )
        PushMessage.objects.filter(pk=message_id).update(
            state=PushState.SENT,
            sent_at=now,
            attempts=message.attempts + 1,
            provider=provider.name,
            provider_message_id=provider_id,
            updated_at=now,
        )
        moved = Delivery.objects.filter(pk=message.delivery_id, state=DeliveryState.READY).update(
            state=DeliveryState.DELIVERED, delivered_at=now, updated_at=now
        )
        if moved:
            DeliveryTransition.objects.create(
                delivery_id=message.delivery_id,
                from_state=DeliveryState.READY,
                to_state=DeliveryState.DELIVERED,
                actor="push",
                reason="provider_accepted",
            )
    return "sent"


def _notifications_consented(delivery: Delivery) -> bool:
    return Consent.objects.filter(
        patient_id=delivery.patient_id, purpose=Purpose.NOTIFICATIONS, granted=True
    ).exists()


def _gate(delivery: Delivery, now: dt.datetime) -> bool:
    """Whether the nudge may still be pushed; if not, it is blocked or sent to review."""
    with transaction.atomic():
        result = gate_check([delivery], now=now)[delivery.pk]
        return gate_enforce(delivery, result, actor="gate", now=now)


def _failed(message: PushMessage, error: PushError, now: dt.datetime) -> str:
    attempts = message.attempts + 1
    dead = error.permanent or attempts >= settings.PUSH_MAX_ATTEMPTS
    PushMessage.objects.filter(pk=message.pk).update(
        state=PushState.DEAD if dead else PushState.PENDING,
        attempts=attempts,
        last_error=error.code[:60],
        next_attempt_at=now + dt.timedelta(seconds=30 * 2**attempts),
        updated_at=now,
    )
    logger.warning("push %s failed (%s), attempt %d", message.pk, error.code, attempts)
    return "dead" if dead else "retry"
