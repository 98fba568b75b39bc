"""What happens to deliveries after the decision: the patient's feedback, the app fetching
them, the release of nudges held by quiet hours, and expiry. Every move towards the patient
passes the safety gate (nudges.services.gate) in the same transaction."""

import datetime as dt
import functools
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core import raw
from core.bulk import DbFormat, insert_objects
from core.errors import ApplicationError, not_found
from core.ids import uuid7
from nudges.availability import quiet_hours_end
from nudges.models import (
    Delivery,
    DeliveryState,
    DeliveryTransition,
    PushMessage,
    PushState,
    ReviewKind,
    ReviewRequest,
    ReviewState,
    TemplateDecline,
)
from nudges.selectors import deliveries_for_patient
from nudges.services.gate import gate_check, gate_enforce
from nudges.services.reviews import feedback_review_open, review_open
from nudges.services.transitions import cancel_pending_pushes, delivery_move, push_enqueue
from patients.models import Patient, Purpose
from patients.selectors import consent_snapshot

__all__ = [
    "delivery_move",
    "push_enqueue",
    "delivery_feedback",
    "deliveries_mark_delivered",
    "deliveries_release_held",
    "deliveries_expire",
]

MAX_SNOOZE = dt.timedelta(days=7)

FEEDBACK_STATES = {
    "opened": DeliveryState.OPENED,
    "done": DeliveryState.DONE,
    "dismissed": DeliveryState.DISMISSED,
    "snoozed": DeliveryState.SNOOZED,
    "not_for_me": DeliveryState.DISMISSED,
}


def delivery_feedback(
    *, patient: Patient, delivery_id: Any, action: str, until: dt.datetime | None = None
) -> Delivery:
    """Record the patient's feedback on one of their own nudges. Another patient's nudge is
    not found. Snoozing needs a time within the next seven days. "not_for_me" dismisses the
    nudge, stops that template for the patient and puts it before the clinicians of their
    groups. Feedback on a nudge that has not reached the app yet passes the safety gate
    first; one the gate stops is blocked (or sent to review) and answers 409 "gone"."""
    with transaction.atomic():
        delivery, stopped = _feedback(patient, delivery_id, action, until)
    if stopped:
        raise ApplicationError("This nudge is no longer available.", code="gone", status=409)
    return delivery


def _feedback(
    patient: Patient, delivery_id: Any, action: str, until: dt.datetime | None
) -> tuple[Delivery, bool]:
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
    if delivery.state == DeliveryState.READY:
        result = gate_check([delivery], now=now)[delivery.pk]
        if not gate_enforce(delivery, result, actor="gate", now=now):
            return delivery, True
    if delivery.delivered_at is None:
        fields["delivered_at"] = now
    delivery = delivery_move(
        delivery=delivery, to_state=to_state, actor="patient", reason=action, **fields
    )
    if action == "not_for_me":
        TemplateDecline.objects.get_or_create(
            patient=patient, slug=delivery.template.slug, defaults={"delivery": delivery}
        )
        feedback_review_open(delivery=delivery, now=now)
    return delivery, False


def deliveries_mark_delivered(*, deliveries: list[Delivery], actor: str) -> list[Delivery]:
    """The app has received these nudges: ready -> delivered (see docs/delivery.md), each
    after passing the safety gate. Returns the deliveries the app may show: those already
    past ready, and those that passed; a nudge the gate stopped is left out."""
    ready = [d for d in deliveries if d.state == DeliveryState.READY]
    if not ready:
        return deliveries
    now = timezone.now()
    stopped: set[Any] = set()
    with transaction.atomic():
        results = gate_check(ready, now=now)
        passing = []
        for delivery in ready:
            if results[delivery.pk].passes:
                passing.append(delivery)
            else:
                gate_enforce(delivery, results[delivery.pk], actor="gate", now=now)
                stopped.add(delivery.pk)
        ids = _deliver_ready([d.pk for d in passing], now, actor=actor)
    for delivery in deliveries:
        if delivery.pk in ids:
            delivery.state = DeliveryState.DELIVERED
            delivery.delivered_at = now
    return [d for d in deliveries if d.pk not in stopped]


def _deliver_ready(ids: list[Any], now: dt.datetime, *, actor: str) -> set[Any]:
    """ready -> delivered for those of these deliveries still ready (the row locks taken by
    the update itself), their pending pushes cancelled and the moves recorded; returns the
    ones moved. On PostgreSQL one statement does all three (the fetch's round trips are what
    its latency is made of), elsewhere three."""
    if not ids:
        return set()
    if connection.vendor == "postgresql":
        return _deliver_ready_at_once(ids, now, actor=actor)
    db = DbFormat()
    stamp = db.datetime(now)
    sql = (
        f"UPDATE {raw.table(Delivery)} SET state = %s, delivered_at = %s, updated_at = %s "  # noqa: S608
        f"WHERE id IN ({raw.marks(len(ids))}) AND state = %s RETURNING id"
    )
    params = [DeliveryState.DELIVERED.value, stamp, stamp, *map(db.id, ids)]
    moved = raw.fetch(sql, [*params, DeliveryState.READY.value], [Delivery._meta.pk])
    delivered = [row[0] for row in moved]
    cancel_pending_pushes(delivered, now=now)
    insert_objects([_fetched(pk, actor, now) for pk in delivered])
    return set(delivered)


def _fetched(delivery_id: Any, actor: str, now: dt.datetime) -> DeliveryTransition:
    return DeliveryTransition(
        delivery_id=delivery_id,
        from_state=DeliveryState.READY,
        to_state=DeliveryState.DELIVERED,
        actor=actor,
        reason="fetched",
        created_at=now,
    )


def _deliver_ready_at_once(ids: list[Any], now: dt.datetime, *, actor: str) -> set[Any]:
    """_deliver_ready as one statement with data-modifying CTEs (they see one snapshot, and
    the push and the transition follow the update's RETURNING). The transitions' keys are
    made here, as for any row (core.ids), one per delivery asked for."""
    sql = _deliver_ready_statement()
    params: dict[str, Any] = {
        "delivered": DeliveryState.DELIVERED.value,
        "ready": DeliveryState.READY.value,
        "now": now,
        "ids": list(ids),
        "keys": [uuid7() for _ in ids],
        "cancelled": PushState.CANCELLED.value,
        "pending": PushState.PENDING.value,
        "actor": actor,
        "reason": "fetched",
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


@functools.cache
def _deliver_ready_statement() -> str:
    """Names from the models' metadata; every value a bound parameter, the ids as arrays so
    that the text (and the prepared statement) is the same however many there are."""
    q = connection.ops.quote_name
    delivery, push, log = raw.table(Delivery), raw.table(PushMessage), raw.table(DeliveryTransition)
    fields = DeliveryTransition._meta.concrete_fields
    # A concrete field always has a column; the stubs type Field.column as optional.
    column = {f.name: q(f.column) for f in fields}  # type: ignore[arg-type]
    return f"""
        WITH moved AS (
            UPDATE {delivery} SET state = %(delivered)s, delivered_at = %(now)s,
                   updated_at = %(now)s
             WHERE id = ANY(%(ids)s::uuid[]) AND state = %(ready)s
            RETURNING id
        ), cancelled AS (
            UPDATE {push} SET state = %(cancelled)s, updated_at = %(now)s
             WHERE delivery_id IN (SELECT id FROM moved) AND state = %(pending)s
        ), logged AS (
            INSERT INTO {log} ({column["id"]}, {column["created_at"]}, {column["updated_at"]},
                               {column["delivery"]}, {column["from_state"]},
                               {column["to_state"]}, {column["actor"]}, {column["reason"]})
            SELECT k.key, %(now)s, %(now)s, m.id, %(ready)s, %(delivered)s, %(actor)s,
                   %(reason)s
              FROM moved m
              JOIN unnest(%(ids)s::uuid[], %(keys)s::uuid[]) AS k (delivery_id, key)
                ON k.delivery_id = m.id
        )
        SELECT id FROM moved
    """  # noqa: S608


def delivery_release(*, delivery: Delivery, actor: str, reason: str, now: dt.datetime) -> bool:
    """Move a held or just-approved delivery to ready through the gate, and queue its push
    when the patient consents to notifications. Returns whether it was released. Call
    inside a transaction."""
    result = gate_check([delivery], now=now)[delivery.pk]
    if not gate_enforce(delivery, result, actor="gate", now=now):
        return False
    delivery_move(
        delivery=delivery,
        to_state=DeliveryState.READY,
        actor=actor,
        reason=reason,
        ruleset_version=result.ruleset_version,
        expires_at=now + dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS),
    )
    if consent_snapshot(delivery.patient).get(Purpose.NOTIFICATIONS):
        push_enqueue(delivery=delivery, now=now)
    return True


def delivery_after_review(*, delivery: Delivery, now: dt.datetime) -> str:
    """Every group approved: the nudge goes on through the gate, held until the patient's
    quiet hours end or ready now. If the rule set changed since the review was asked for,
    the approval no longer counts and a new review is opened. Returns the new state. Call
    inside a transaction."""
    result = gate_check([delivery], now=now)[delivery.pk]
    if result.action == "review":
        assert result.verdict is not None
        Delivery.objects.filter(pk=delivery.pk).update(ruleset_version=result.ruleset_version)
        review_open(
            delivery=delivery,
            verdict=result.verdict,
            ruleset_version=result.ruleset_version,
            now=now,
        )
        return DeliveryState.AWAITING_REVIEW
    if not gate_enforce(delivery, result, actor="gate", now=now):
        return DeliveryState.BLOCKED
    patient = delivery.patient
    release = quiet_hours_end(
        now, tz_name=patient.timezone, start=patient.quiet_start, end=patient.quiet_end
    )
    if release is None:
        delivery_release(delivery=delivery, actor="clinician", reason="approved", now=now)
        return delivery.state
    delivery_move(
        delivery=delivery,
        to_state=DeliveryState.HELD,
        actor="clinician",
        reason="approved_quiet_hours",
        due_at=release,
        expires_at=release + dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS),
    )
    return DeliveryState.HELD


def deliveries_release_held(*, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Release nudges held by quiet hours whose time has come: held -> ready through the
    safety gate. Each row is claimed on its own, so a second sweeper running at once
    releases nothing twice."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(state=DeliveryState.HELD, due_at__lte=now)
        .select_related("patient")
        .order_by("due_at")[:limit]
    )
    released = 0
    for delivery in due:
        try:
            with transaction.atomic():
                released += delivery_release(
                    delivery=delivery, actor="beat", reason="quiet_hours_over", now=now
                )
        except ApplicationError:
            continue  # moved by someone else meanwhile
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
    approved by default, and its review request with it."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(state__in=EXPIRING, expires_at__lte=now).order_by("expires_at")[
            :limit
        ]
    )
    expired = 0
    for delivery in due:
        try:
            with transaction.atomic():
                delivery_move(
                    delivery=delivery,
                    to_state=DeliveryState.EXPIRED,
                    actor="beat",
                    reason="deadline",
                    closed_at=now,
                )
                ReviewRequest.objects.filter(
                    delivery=delivery,
                    kind=ReviewKind.BEFORE_DELIVERY,
                    state=ReviewState.PENDING,
                ).update(state=ReviewState.EXPIRED, closed_at=now, updated_at=now)
            expired += 1
        except ApplicationError:
            continue
    return expired
