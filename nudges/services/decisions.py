"""The decision path for decision points asked for now: load the facts, call the pure
`decide`, persist the receipts and route the chosen nudges, for one patient or several at
once. Called by POST /api/v1/decisions/ (through nudges.services.live, which decides the
requests a process has waiting together) and by scheduled slots."""

import datetime as dt
import functools
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core import pipeline, raw
from core.bulk import DbFormat, insert_tables, new_rows_reader
from nudges import decide as core
from nudges import rows as columns
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
from nudges.selectors import facts_assemble, facts_reader
from nudges.services.catalogue import cached_ruleset_version
from nudges.services.registry import ServingState, serving_state_reader
from nudges.services.reviews import review_deadline, review_rows
from nudges.services.serving import HISTORY_DAYS, model_inputs, recent_deliveries_reader
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


@dataclass(frozen=True)
class DecisionAsk:
    """One decision asked for: the patient, what triggered it, the app's context, and the
    moment (the time of asking when None)."""

    patient: Patient
    trigger: str = Trigger.APP_OPEN
    context: dict[str, Any] | None = None
    moment: dt.datetime | None = None


def decision_make(
    *,
    patient: Patient,
    trigger: str = Trigger.APP_OPEN,
    moment: dt.datetime | None = None,
    context: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[Decision, bool]:
    """Decide once for (patient, moment); see decisions_make. Returns (decision, created)."""
    [made] = decisions_make([DecisionAsk(patient, trigger, context, moment)], now=now, rng=rng)
    return made


def decisions_make(
    asks: Sequence[DecisionAsk],
    *,
    now: dt.datetime | None = None,
    rng: np.random.Generator | None = None,
) -> list[tuple[Decision, bool]]:
    """Decide for each ask (one per patient) in one transaction. Each moment is truncated to
    the minute, so a repeat within the minute, a retried task or a concurrent duplicate gets
    the first decision back. The patients' rows are locked (in key order) before anything
    else, so the daily cap and the repeat window hold under concurrency; `now` defaults to
    the time the locks were taken, so a decision that waited for another sees that one's
    nudge in its past. Returns (decision, created) for each ask, in order."""
    if not asks:
        return []
    if len({ask.patient.pk for ask in asks}) != len(asks):
        raise ValueError("one ask per patient")
    asked_at = timezone.now()
    moments = [(ask.moment or now or asked_at).replace(second=0, microsecond=0) for ask in asks]
    with transaction.atomic():
        locked = _lock([ask.patient.pk for ask in asks])
        now = now or timezone.now()
        # The claim and the reads in one round trip: read for every asked patient, as all
        # but a repeat within the minute are decided.
        points, loaded = pipeline.gather(
            _claim_reader(asks, moments, locked),
            loading_reader([locked[ask.patient.pk] for ask in asks], now=now),
        )
        made: list[tuple[Decision, bool] | None] = [None] * len(asks)
        new = [i for i, ask in enumerate(asks) if ask.patient.pk in points]
        if new:
            decisions = _decide(
                [asks[i] for i in new],
                [locked[asks[i].patient.pk] for i in new],
                [points[asks[i].patient.pk] for i in new],
                now=now,
                rng=rng or np.random.default_rng(secrets.randbits(64)),
                loaded=loaded if len(new) == len(asks) else None,
            )
            for i, decision in zip(new, decisions, strict=True):
                made[i] = (decision, True)
        old = [i for i, ask in enumerate(asks) if ask.patient.pk not in points]
        if old:
            existing = _existing([(asks[i].patient.pk, moments[i]) for i in old])
            for i in old:
                found = existing.get((asks[i].patient.pk, moments[i]))
                if found is None:
                    raise LookupError("a decision point without its decision")
                made[i] = (found, False)
    return cast(list[tuple[Decision, bool]], made)


def _lock(patient_ids: list[Any]) -> dict[Any, Patient]:
    """The patients' rows, read again under row locks held until the transaction ends, taken
    in key order so that two transactions locking overlapping sets cannot deadlock (on
    SQLite the transaction's write lock, taken when it begins, serialises decisions
    instead)."""
    db = DbFormat()
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = (
        f"SELECT {raw.columns(Patient, 'p')} FROM {raw.table(Patient)} p "  # noqa: S608
        f"WHERE p.id IN ({raw.marks(len(patient_ids))}) ORDER BY p.id{lock}"
    )
    rows = raw.fetch(sql, [db.id(pk) for pk in patient_ids], raw.fields_of(Patient))
    found = {patient.pk: patient for patient in map(_patient, rows)}
    if len(found) != len(patient_ids):
        raise Patient.DoesNotExist("a patient to decide for no longer exists")
    return found


def _patient(values: Sequence[Any]) -> Patient:
    return cast(Patient, raw.instance(Patient, values))


def _claim_reader(
    asks: Sequence[DecisionAsk], moments: list[dt.datetime], locked: dict[Any, Patient]
) -> pipeline.Reader[dict[Any, DecisionPoint]]:
    """Insert the decision points not taken yet; patient -> the point inserted now. A reader
    (core.pipeline), read with the decision's reads."""
    db = DbFormat()
    stamp = timezone.now()
    ids = db.new_ids(len(asks), stamp)
    at = db.datetime(stamp)
    rows = [
        (ids[i], at, at, db.id(ask.patient.pk), db.datetime(moments[i]), str(ask.trigger))
        for i, ask in enumerate(asks)
    ]
    claimed = dict(
        (
            yield from new_rows_reader(
                DecisionPoint, list(columns.POINT_COLUMNS), rows, returning=["patient", "id"]
            )
        )
    )
    points = {}
    for i, ask in enumerate(asks):
        pk = ask.patient.pk
        if pk in claimed:
            point = DecisionPoint(
                id=claimed[pk],
                created_at=stamp,
                updated_at=stamp,
                patient=locked[pk],
                moment=moments[i],
                trigger=ask.trigger,
            )
            point._state.adding = False  # inserted above
            points[pk] = point
    return points


def _existing(keys: list[tuple[Any, dt.datetime]]) -> dict[tuple[Any, dt.datetime], Decision]:
    """The decisions already made for these (patient, moment) points."""
    wanted = Q()
    for patient, moment in keys:
        wanted |= Q(decision_point__patient=patient, decision_point__moment=moment)
    found = Decision.objects.select_related("template", "delivery", "decision_point").filter(wanted)
    return {(d.decision_point.patient_id, d.decision_point.moment): d for d in found}


def _decide(
    asks: list[DecisionAsk],
    patients: list[Patient],
    points: list[DecisionPoint],
    *,
    now: dt.datetime,
    rng: np.random.Generator,
    loaded: "Loaded | None",
) -> list[Decision]:
    """Decide for the locked patients, persist the receipts and route the chosen nudges."""
    snapshot, facts, outcomes = outcomes_for(
        patients,
        now=now,
        triggers=[str(ask.trigger) for ask in asks],
        contexts=[ask.context or {} for ask in asks],
        rng=rng,
        loaded=loaded,
    )
    return _persist(points, patients, facts, outcomes, snapshot, now)


@dataclass(frozen=True)
class Loaded:
    """What deciding reads for some patients (loading_reader), in their order."""

    state: ServingState
    deliveries: list[tuple]
    facts: list[core.PatientFacts]


def loading_reader(patients: Sequence[Patient], *, now: dt.datetime) -> pipeline.Reader[Loaded]:
    """The serving state, the patients' recent deliveries and their facts, in one round trip
    (a reader, core.pipeline). The facts depend on the rule set in force, which the stamps
    read beside them tell: they are read for the rule set this process served with last,
    and read again in the rare case the stamps show another."""
    guess = cached_ruleset_version()
    state, deliveries, rows = yield from pipeline.together(
        serving_state_reader(),
        recent_deliveries_reader(
            [patient.pk for patient in patients], since=now - dt.timedelta(days=HISTORY_DAYS)
        ),
        facts_reader(patients, now=now, ruleset_version=guess),
    )
    ruleset_version = state[0].ruleset_version
    if ruleset_version != guess:
        rows = yield from facts_reader(patients, now=now, ruleset_version=ruleset_version)
    facts = facts_assemble(
        patients,
        rows,
        now=now,
        ruleset_version=ruleset_version,
        deliveries=deliveries,
        arms=[arm_of(patient) for patient in patients],
    )
    return Loaded(state, deliveries, facts)


def outcomes_for(
    patients: list[Patient],
    *,
    now: dt.datetime,
    triggers: list[str],
    contexts: list[dict[str, Any]] | None,
    rng: np.random.Generator,
    loaded: Loaded | None = None,
) -> tuple[core.Snapshot, list[core.PatientFacts], list[core.Outcome]]:
    """Load what deciding needs for these patients (loading_reader, unless the caller has
    `loaded` it already; then the model's inputs) and call the pure `decide` once for all of
    them; live decisions and batch chunks both decide through here. Writes nothing."""
    if loaded is None:
        loaded = pipeline.run(loading_reader(patients, now=now))
    (snapshot, recommender, problem), deliveries, facts = (
        loaded.state,
        loaded.deliveries,
        loaded.facts,
    )
    inputs = None
    if recommender is not None:
        inputs = model_inputs(
            patients=patients,
            facts=facts,
            deliveries=deliveries,
            snapshot=snapshot,
            schema=recommender.bundle.schema,
            now=now,
            triggers=triggers,
        )
    outcomes = core.decide(
        facts,
        snapshot,
        now=now,
        trigger=triggers,
        settings=decision_settings(),
        rng=rng,
        context=contexts,
        recommender=recommender,
        inputs=inputs,
        model_problem=problem,
    )
    return snapshot, facts, outcomes


def _persist(
    points: list[DecisionPoint],
    patients: list[Patient],
    facts: list[core.PatientFacts],
    outcomes: list[core.Outcome],
    snapshot: core.Snapshot,
    now: dt.datetime,
) -> list[Decision]:
    """Write the outcomes (outcomes_write) and return the decisions as the response shows
    them, each with its delivery when it chose a nudge."""
    written = outcomes_write(
        [point.pk for point in points], patients, facts, outcomes, snapshot, now
    )
    decisions = []
    for point, patient, outcome, (decision_id, delivery_id, plan) in zip(
        points, patients, outcomes, written, strict=True
    ):
        template = outcome.template
        decision = Decision(
            id=decision_id,
            created_at=now,
            updated_at=now,
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
        decision._state.adding = False
        decisions.append(decision)
        if template is not None and plan is not None:
            delivery = Delivery(
                id=delivery_id,
                created_at=now,
                updated_at=now,
                decision=decision,  # and decision.delivery
                patient=patient,
                template_id=template.id,
                state=plan.state,
                why=plan.why,
                note=plan.note,
                ruleset_version=snapshot.ruleset_version,
                safety_action=plan.safety_action,
                safety_rules=plan.safety_rules,
                due_at=plan.due_at,
                expires_at=_expires(plan, now),
            )
            delivery._state.adding = False
    return decisions


def outcomes_write(
    point_ids: list[Any],
    patients: list[Patient],
    facts: list[core.PatientFacts],
    outcomes: list[core.Outcome],
    snapshot: core.Snapshot,
    now: dt.datetime,
) -> list[tuple[uuid.UUID, uuid.UUID | None, core.Route | None]]:
    """The receipts; for each chosen nudge its delivery as core.route says (review, held or
    ready), its first transition, and its review request or push. Every later move towards
    the patient passes the safety gate again. One statement for all of a live round's rows,
    one COPY per table for a batch chunk's thousand (core.bulk.insert_tables). Returns, per
    outcome, the decision's key, its delivery's key and route (None without a nudge)."""
    db = DbFormat()
    stamp = db.datetime(now)
    expiry = dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS)
    ruleset_version = snapshot.ruleset_version
    decision_ids = db.new_ids(len(outcomes), now)
    # A delivery, its transition and perhaps a push for each nudge: their keys drawn at once.
    spare_ids = iter(db.new_ids(3 * len(outcomes), now))
    decisions, deliveries, transitions, pushes, reviews = [], [], [], [], []
    written: list[tuple[uuid.UUID, uuid.UUID | None, core.Route | None]] = []
    for i, (patient, f, out) in enumerate(zip(patients, facts, outcomes, strict=True)):
        template = out.template
        decisions.append(
            (
                decision_ids[i],
                stamp,
                stamp,
                db.id(point_ids[i]),
                db.id(patient.pk),
                out.outcome,
                out.reason,
                out.policy[0],
                out.policy[1],
                db.id(template.id) if template else None,
                template.version if template else None,
                out.propensity,
                out.arm,
                out.model_version,
                db.json(out.receipt),
            )
        )
        if template is None:
            written.append((uuid.UUID(decision_ids[i]), None, None))
            continue
        plan = core.route(out, f, now=now, expiry=expiry)
        delivery_id = next(spare_ids)
        written.append((uuid.UUID(decision_ids[i]), uuid.UUID(delivery_id), plan))
        deliveries.append(
            (
                delivery_id,
                stamp,
                stamp,
                decision_ids[i],
                db.id(patient.pk),
                db.id(template.id),
                plan.state,
                plan.why,
                plan.note,
                ruleset_version,
                plan.safety_action,
                db.json(plan.safety_rules),
                db.datetime(plan.due_at),
                db.datetime(_expires(plan, now)),
            )
        )
        transitions.append(
            (
                next(spare_ids),
                stamp,
                stamp,
                delivery_id,
                DeliveryState.PROPOSED.value,
                plan.state,
                "engine",
                plan.transition_reason,
            )
        )
        if plan.push:
            pushes.append(
                (next(spare_ids), stamp, stamp, delivery_id, "pending", 0, stamp, "", "", "")
            )
        if plan.review:
            assert out.verdict is not None
            reviews.append((uuid.UUID(delivery_id), patient.pk, out.verdict, f.group_keys))
    insert_tables(
        [
            (Decision, columns.DECISION_COLUMNS, decisions),
            (Delivery, columns.DELIVERY_COLUMNS, deliveries),
            (DeliveryTransition, columns.TRANSITION_COLUMNS, transitions),
            (PushMessage, columns.PUSH_COLUMNS, pushes),
            *review_rows(items=reviews, snapshot=snapshot, now=now),
        ]
    )
    return written


def _expires(plan: core.Route, now: dt.datetime) -> dt.datetime:
    """A nudge waiting for review expires at the review deadline, else when its route says."""
    return review_deadline(now) if plan.review else plan.expires_at
