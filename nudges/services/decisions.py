"""The decision path for one decision point: load the facts, call the pure `decide`, persist
the receipt and route a chosen nudge. Called by POST /api/v1/decisions/ and by scheduled
slots."""

import datetime as dt
import functools
import secrets
from typing import Any, cast

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core import raw
from core.bulk import DbFormat, insert_objects
from nudges import decide as core
from nudges.availability import DeliveryLimits
from nudges.experiments import arm_for, parse_arms
from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    PushMessage,
    Trigger,
)
from nudges.selectors import patients_facts
from nudges.services.registry import serving_state
from nudges.services.reviews import review_deadline, reviews_open_many
from nudges.services.serving import HISTORY_DAYS, model_inputs, recent_deliveries
from patients.models import Patient


@functools.cache
def _arms(spec: str) -> list[tuple[str, int]]:
    try:
        return parse_arms(spec)
    except ValueError as error:
        raise ImproperlyConfigured(f"NUDGE_ARMS: {error}") from None


def arm_of(patient: Patient) -> str:
    """The patient's experiment arm (sticky, from a keyed hash of the pseudonym)."""
    return arm_for(
        patient.pseudonym,
        key=settings.EXPERIMENT_KEY.encode(),
        experiment=settings.NUDGE_EXPERIMENT,
        arms=_arms(settings.NUDGE_ARMS),
    )


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
            point = DecisionPoint(patient=patient, moment=moment, trigger=trigger)
            insert_objects([point])
            locked = _lock(patient)
            now = now or timezone.now()
            snapshot, recommender, problem = serving_state()
            deliveries = recent_deliveries([locked.pk], since=now - dt.timedelta(days=HISTORY_DAYS))
            [facts] = patients_facts(
                [locked],
                now=now,
                ruleset_version=snapshot.ruleset_version,
                deliveries=deliveries,
                arms=[arm_of(locked)],
            )
            inputs = None
            if recommender is not None:
                inputs = model_inputs(
                    patients=[locked],
                    facts=[facts],
                    deliveries=deliveries,
                    snapshot=snapshot,
                    schema=recommender.bundle.schema,
                    now=now,
                    triggers=[trigger],
                )
            [outcome] = core.decide(
                [facts],
                snapshot,
                now=now,
                trigger=trigger,
                settings=decision_settings(),
                rng=rng or np.random.default_rng(secrets.randbits(64)),
                context=[context or {}],
                recommender=recommender,
                inputs=inputs,
                model_problem=problem,
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


def _lock(patient: Patient) -> Patient:
    """The patient's row, read again under a row lock held until the transaction ends (on
    SQLite the transaction's write lock, taken by the decision point's insert, serialises
    decisions instead)."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = f"SELECT {raw.columns(Patient, 'p')} FROM {raw.table(Patient)} p WHERE p.id = %s"  # noqa: S608
    [values] = raw.fetch(sql + lock, [DbFormat().id(patient.pk)], raw.fields_of(Patient))
    locked = cast(Patient, raw.instance(Patient, values))
    return locked


def _persist(
    point: DecisionPoint,
    patient: Patient,
    facts: core.PatientFacts,
    outcome: core.Outcome,
    snapshot: core.Snapshot,
    now: dt.datetime,
) -> Decision:
    template = outcome.template
    decision = Decision(
        created_at=now,
        decision_point=point,
        patient=patient,
        outcome=outcome.outcome,
        reason=outcome.reason,
        policy_name=outcome.policy[0],
        policy_version=outcome.policy[1],
        arm=outcome.arm,
        model_version=outcome.model_version,
        template_id=template.id if template else None,
        template_version=template.version if template else None,
        propensity=outcome.propensity,
        receipt=outcome.receipt,
    )
    insert_objects([decision])
    if template is not None:
        _route(decision, patient, facts, outcome, snapshot, now)
    return decision


def _route(
    decision: Decision,
    patient: Patient,
    facts: core.PatientFacts,
    outcome: core.Outcome,
    snapshot: core.Snapshot,
    now: dt.datetime,
) -> Delivery:
    """Create the delivery as core.route says (review, held or ready), its first transition,
    and its review request or push. Every later move towards the patient passes the safety
    gate again."""
    plan = core.route(
        outcome, facts, now=now, expiry=dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS)
    )
    assert outcome.template is not None and outcome.verdict is not None
    delivery = Delivery(
        created_at=now,
        decision=decision,
        patient=patient,
        template_id=outcome.template.id,
        state=plan.state,
        why=plan.why,
        note=plan.note,
        ruleset_version=snapshot.ruleset_version,
        safety_action=plan.safety_action,
        safety_rules=plan.safety_rules,
        due_at=plan.due_at,
        expires_at=review_deadline(now) if plan.review else plan.expires_at,
    )
    insert_objects([delivery])
    insert_objects(
        [
            DeliveryTransition(
                created_at=now,
                delivery=delivery,
                from_state=DeliveryState.PROPOSED,
                to_state=plan.state,
                actor="engine",
                reason=plan.transition_reason,
            )
        ]
    )
    if plan.review:
        reviews_open_many(
            items=[(delivery.pk, patient.pk, outcome.verdict)], snapshot=snapshot, now=now
        )
    elif plan.push:
        insert_objects([PushMessage(created_at=now, delivery=delivery, next_attempt_at=now)])
    return delivery
