"""Moves deliveries through their state machine. A move is a conditional UPDATE on the state
the caller read, so two concurrent moves cannot both win; the loser gets a 409."""

import datetime as dt
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core import raw
from core.bulk import DbFormat
from core.errors import ApplicationError
from nudges import lifecycle
from nudges.models import Delivery, DeliveryState, DeliveryTransition, PushMessage, PushState


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
        cancel_pending_pushes([delivery.pk], now=now)
    return delivery


def cancel_pending_pushes(delivery_ids: list[Any], *, now: dt.datetime) -> None:
    """A push is only for a nudge still waiting to reach the phone; once the patient has it
    (or it is gone) the pending push is moot."""
    if not delivery_ids:
        return
    db = DbFormat()
    sql = (
        f"UPDATE {raw.table(PushMessage)} SET state = %s, updated_at = %s "  # noqa: S608
        f"WHERE delivery_id IN ({raw.marks(len(delivery_ids))}) AND state = %s"
    )
    params = [PushState.CANCELLED.value, db.datetime(now), *map(db.id, delivery_ids)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, PushState.PENDING.value])


def push_enqueue(*, delivery: Delivery, now: dt.datetime) -> None:
    PushMessage.objects.get_or_create(delivery=delivery, defaults={"next_attempt_at": now})


def deliveries_block(
    *, delivery_ids: list[Any], from_states: frozenset[str], actor: str, reason: str
) -> int:
    """Block many deliveries at once (an emergency stop, a new block rule): each one still in
    one of `from_states` moves to blocked, with its transition logged and its pending push
    cancelled. Rows are locked, so a concurrent move either lands first or finds it blocked.
    Returns how many were blocked. Call inside a transaction."""
    assert all(lifecycle.can_move(state, DeliveryState.BLOCKED) for state in from_states)
    now = timezone.now()
    rows = list(
        Delivery.objects.select_for_update()
        .filter(pk__in=delivery_ids, state__in=from_states)
        .values_list("pk", "state")
    )
    if not rows:
        return 0
    ids = [pk for pk, _ in rows]
    Delivery.objects.filter(pk__in=ids).update(
        state=DeliveryState.BLOCKED, closed_at=now, updated_at=now
    )
    DeliveryTransition.objects.bulk_create(
        DeliveryTransition(
            delivery_id=pk,
            from_state=state,
            to_state=DeliveryState.BLOCKED,
            actor=actor,
            reason=reason,
        )
        for pk, state in rows
    )
    cancel_pending_pushes(ids, now=now)
    return len(ids)
