"""The decision path for one decision point: load the facts, call the pure `decide`, persist
the receipt and route a chosen nudge. Called by POST /api/v1/decisions/ and by scheduled
slots."""

import datetime as dt
import secrets
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from nudges import decide as core
from nudges.availability import DeliveryLimits
from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    Trigger,
)
from nudges.selectors import patient_facts
from nudges.services.catalogue import catalogue_snapshot
from nudges.services.deliveries import push_enqueue
from nudges.why import explain
from patients.models import Patient, Purpose


def decision_settings() -> core.Settings:
    return core.Settings(
        limits=DeliveryLimits(
            daily_cap=settings.NUDGE_DAILY_CAP,
            min_gap=dt.timedelta(minutes=settings.NUDGE_MIN_GAP_MINUTES),
        ),
        repeat_window_days=settings.NUDGE_REPEAT_WINDOW_DAYS,
    )


def decision_make(
    *,
    patient: Patient,
    trigger: str = Trigger.APP_OPEN,
    moment: dt.datetime | None = None,
    context: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[Decision, bool]:
    """Decide once for (patient, moment). The moment is truncated to the minute, so a repeat
    within the minute, a retried task or a concurrent duplicate gets the first decision back.
    The patient's row is locked while deciding, so the daily cap and the repeat window hold
    under concurrency; `now` defaults to the time the lock was taken, so a decision that waited
    for another sees that one's nudge in its past. Returns (decision, created)."""
    moment = (moment or now or timezone.now()).replace(second=0, microsecond=0)
    try:
        with transaction.atomic():
            point = DecisionPoint.objects.create(patient=patient, moment=moment, trigger=trigger)
            locked = Patient.objects.select_for_update().get(pk=patient.pk)
            now = now or timezone.now()
            facts = patient_facts(locked, now=now)
            [outcome] = core.decide(
                [facts],
                catalogue_snapshot(),
                now=now,
                trigger=trigger,
                settings=decision_settings(),
                rng=rng or np.random.default_rng(secrets.randbits(64)),
                context=[context or {}],
            )
            return _persist(point, locked, facts, outcome, now), True
    except IntegrityError:
        existing = (
            Decision.objects.select_related("template", "delivery", "decision_point")
            .filter(decision_point__patient=patient, decision_point__moment=moment)
            .first()
        )
        if existing is None:
            raise
        return existing, False


def _persist(
    point: DecisionPoint,
    patient: Patient,
    facts: core.PatientFacts,
    outcome: core.Outcome,
    now: dt.datetime,
) -> Decision:
    template = outcome.template
    decision = Decision.objects.create(
        created_at=now,
        decision_point=point,
        patient=patient,
        outcome=outcome.outcome,
        reason=outcome.reason,
        policy_name=outcome.receipt["policy"]["name"],
        policy_version=outcome.receipt["policy"]["version"],
        template_id=template.id if template else None,
        template_version=template.version if template else None,
        propensity=outcome.propensity,
        receipt=outcome.receipt,
    )
    if template is not None:
        _route(decision, patient, facts, outcome, now)
    return decision


def _route(
    decision: Decision,
    patient: Patient,
    facts: core.PatientFacts,
    outcome: core.Outcome,
    now: dt.datetime,
) -> Delivery:
    """Create the delivery: held until the quiet hours end, else ready (and a push queued when
    the patient consents to notifications)."""
    assert outcome.template is not None
    release = outcome.held_until
    state = DeliveryState.HELD if release else DeliveryState.READY
    delivery = Delivery.objects.create(
        created_at=now,
        decision=decision,
        patient=patient,
        template_id=outcome.template.id,
        state=state,
        why=explain(goal=outcome.template.goal, agenda=facts.agenda),
        due_at=release,
        expires_at=(release or now) + dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS),
    )
    DeliveryTransition.objects.create(
        created_at=now,
        delivery=delivery,
        from_state=DeliveryState.PROPOSED,
        to_state=state,
        actor="engine",
        reason="quiet_hours" if release else "",
    )
    if state == DeliveryState.READY and facts.consent.get(Purpose.NOTIFICATIONS):
        push_enqueue(delivery=delivery, now=now)
    return delivery
