"""Moves deliveries through their state machine. A move is a conditional UPDATE on the state
the caller read, so two concurrent moves cannot both win; the loser gets a 409."""

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import ApplicationError, not_found
from nudges import lifecycle
from nudges.models import (
    Delivery,
    DeliveryState,
    DeliveryTransition,
    PushMessage,
    PushState,
)
from nudges.selectors import deliveries_for_patient
from patients.models import Patient

MAX_SNOOZE = dt.timedelta(days=7)


@transaction.atomic
def delivery_move(
    *, delivery: Delivery, to_state: str, actor: str, reason: str = "", **fields: Any
) -> Delivery:
    """Move one delivery to to_state if the state machine allows it from the state it is in
    now; record the move. Raises a 409 ApplicationError otherwise."""
    from_state = delivery.state
    if not lifecycle.can_move(from_state, to_state):
        raise ApplicationError(
            f"A nudge that is {from_state} cannot become {to_state}.",
            code="illegal_transition",
            status=409,
        )
    now = timezone.now()
    changed = Delivery.objects.filter(pk=delivery.pk, state=from_state).update(
        state=to_state, updated_at=now, **fields
    )
    if changed != 1:
        raise ApplicationError(
            "The nudge changed while this request was handled; reload it.",
            code="conflict",
            status=409,
        )
    DeliveryTransition.objects.create(
        delivery=delivery, from_state=from_state, to_state=to_state, actor=actor, reason=reason
    )
    delivery.state = to_state
    for name, value in fields.items():
        setattr(delivery, name, value)
    if from_state == DeliveryState.READY:
        _cancel_pending_pushes([delivery.pk], now=now)
    return delivery


def _cancel_pending_pushes(delivery_ids: list[Any], *, now: dt.datetime) -> None:
    """A push is only for a nudge still waiting to reach the phone; once the patient has it
    (or it is gone) the pending push is moot."""
    PushMessage.objects.filter(delivery_id__in=delivery_ids, state=PushState.PENDING).update(
        state=PushState.CANCELLED, updated_at=now
    )


def push_enqueue(*, delivery: Delivery, now: dt.datetime) -> None:
    PushMessage.objects.get_or_create(delivery=delivery, defaults={"next_attempt_at": now})


FEEDBACK_STATES = {
    "opened": DeliveryState.OPENED,
    "done": DeliveryState.DONE,
    "dismissed": DeliveryState.DISMISSED,
    "snoozed": DeliveryState.SNOOZED,
}


@transaction.atomic
def delivery_feedback(
    *, patient: Patient, delivery_id: Any, action: str, until: dt.datetime | None = None
) -> Delivery:
    """Record the patient's feedback on one of their own nudges. Another patient's nudge is
    not found. Snoozing needs a time within the next seven days."""
    delivery = (
        deliveries_for_patient(patient).select_related("template").filter(pk=delivery_id).first()
    )
    if delivery is None:
        raise not_found("nudge")
    now = timezone.now()
    to_state = FEEDBACK_STATES[action]
    fields: dict[str, Any] = {}
    if action == "snoozed":
        if until is None or until <= now or until > now + MAX_SNOOZE:
            raise ApplicationError(
                "Snoozing needs 'until', a time in the next 7 days.",
                fields={"until": "required, in the future, at most 7 days ahead"},
            )
        fields["due_at"] = until
        fields["expires_at"] = until + dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS)
    elif action == "opened":
        fields["opened_at"] = now
    else:
        fields["closed_at"] = now
    if delivery.delivered_at is None:
        fields["delivered_at"] = now
    return delivery_move(
        delivery=delivery, to_state=to_state, actor="patient", reason=action, **fields
    )


@transaction.atomic
def deliveries_mark_delivered(*, deliveries: list[Delivery], actor: str) -> None:
    """The app has received these nudges: ready -> delivered (see docs/delivery.md)."""
    now = timezone.now()
    candidates = [d.pk for d in deliveries if d.state == DeliveryState.READY]
    if not candidates:
        return
    ids = set(
        Delivery.objects.select_for_update()
        .filter(pk__in=candidates, state=DeliveryState.READY)
        .values_list("pk", flat=True)
    )
    ready = [d for d in deliveries if d.pk in ids]
    Delivery.objects.filter(pk__in=ids).update(
        state=DeliveryState.DELIVERED, delivered_at=now, updated_at=now
    )
    _cancel_pending_pushes(list(ids), now=now)
    DeliveryTransition.objects.bulk_create(
        DeliveryTransition(
            delivery=d,
            from_state=DeliveryState.READY,
            to_state=DeliveryState.DELIVERED,
            actor=actor,
            reason="fetched",
        )
        for d in ready
    )
    for d in ready:
        d.state = DeliveryState.DELIVERED
        d.delivered_at = now


def deliveries_release_held(*, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Release nudges held by quiet hours whose time has come: held -> ready, and queue the
    push for patients who consent to notifications. Each row is claimed on its own, so a
    second sweeper running at once releases nothing twice."""
    from patients.selectors import consent_snapshot

    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(state=DeliveryState.HELD, due_at__lte=now)
        .select_related("patient")
        .order_by("due_at")[:limit]
    )
    released = 0
    for delivery in due:
        with transaction.atomic():
            try:
                delivery_move(
                    delivery=delivery,
                    to_state=DeliveryState.READY,
                    actor="beat",
                    reason="quiet_hours_over",
                )
            except ApplicationError:
                continue
            if consent_snapshot(delivery.patient).get("notifications"):
                push_enqueue(delivery=delivery, now=now)
            released += 1
    return released


EXPIRING = (
    DeliveryState.AWAITING_REVIEW,
    DeliveryState.HELD,
    DeliveryState.READY,
    DeliveryState.DELIVERED,
    DeliveryState.OPENED,
    DeliveryState.SNOOZED,
)


def deliveries_expire(*, now: dt.datetime | None = None, limit: int = 5000) -> int:
    """Expire what is past its deadline. A nudge awaiting review expires rather than being
    approved by default."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(state__in=EXPIRING, expires_at__lte=now).order_by("expires_at")[
            :limit
        ]
    )
    expired = 0
    for delivery in due:
        try:
            delivery_move(
                delivery=delivery,
                to_state=DeliveryState.EXPIRED,
                actor="beat",
                reason="deadline",
                closed_at=now,
            )
            expired += 1
        except ApplicationError:
            continue
    return expired
