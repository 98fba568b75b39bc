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
from nudges.services.reviews import review_open
from nudges.services.transitions import push_enqueue
from nudges.why import explain
from patients.models import Patient, Purpose
from safety.rules import Action


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
            snapshot = catalogue_snapshot()
            facts = patient_facts(locked, now=now, ruleset_version=snapshot.ruleset_version)
            [outcome] = core.decide(
                [facts],
                snapshot,
                now=now,
                trigger=trigger,
                settings=decision_settings(),
                rng=rng or np.random.default_rng(secrets.randbits(64)),
                context=[context or {}],
            )
            return _persist(point, locked, facts, outcome, snapshot, now), True
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
    snapshot: core.Snapshot,
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
        _route(decision, patient, facts, outcome, snapshot.ruleset_version, now)
    return decision


def _route(
    decision: Decision,
    patient: Patient,
    facts: core.PatientFacts,
    outcome: core.Outcome,
    ruleset_version: int | None,
    now: dt.datetime,
) -> Delivery:
    """Create the delivery: awaiting review when rules of the patient's groups ask for it
    (and no standing approval covers it); else held until the quiet hours end; else ready,
    with a push queued when the patient consents to notifications. Every later move towards
    the patient passes the safety gate again."""
    template, verdict = outcome.template, outcome.verdict
    assert template is not None and verdict is not None
    review = verdict.action == Action.REVIEW and not outcome.approved
    release = outcome.held_until
    if review:
        state = DeliveryState.AWAITING_REVIEW
    else:
        state = DeliveryState.HELD if release else DeliveryState.READY
    delivery = Delivery.objects.create(
        created_at=now,
        decision=decision,
        patient=patient,
        template_id=template.id,
        state=state,
        why=explain(goal=template.goal, agenda=facts.agenda),
        note=" ".join(verdict.notes)[:300] if verdict.action == Action.ALLOW_WITH_NOTE else "",
        ruleset_version=ruleset_version,
        safety_action="approved" if outcome.approved else verdict.name,
        safety_rules=list(verdict.rules),
        due_at=None if review else release,
        expires_at=(release or now) + dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS),
    )
    DeliveryTransition.objects.create(
        created_at=now,
        delivery=delivery,
        from_state=DeliveryState.PROPOSED,
        to_state=state,
        actor="engine",
        reason="rule_review" if review else ("quiet_hours" if release else ""),
    )
    if review:
        review_open(delivery=delivery, verdict=verdict, ruleset_version=ruleset_version, now=now)
    elif state == DeliveryState.READY and facts.consent.get(Purpose.NOTIFICATIONS):
        push_enqueue(delivery=delivery, now=now)
    return delivery
