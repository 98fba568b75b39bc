"""The decision path for one decision point: availability, candidates, policy, receipt,
routing. Called by POST /api/v1/decisions/ and by scheduled slots."""

import datetime as dt
import secrets
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from nudges import baseline
from nudges.availability import (
    AvailabilityInput,
    DeliveryLimits,
    local_day_start,
    quiet_hours_end,
    unavailable_reason,
)
from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    Outcome,
    Template,
    TemplatePopularity,
    Trigger,
)
from nudges.selectors import active_templates, delivery_history
from nudges.services.deliveries import push_enqueue
from nudges.why import explain
from patients.models import Patient, Purpose
from patients.selectors import agenda_for_patient, consent_snapshot

DEFAULT_POPULARITY = 0.3
POLICY_PARAMS = baseline.PolicyParams()


def decision_make(
    *,
    patient: Patient,
    trigger: str = Trigger.APP_OPEN,
    moment: dt.datetime | None = None,
    context: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> tuple[Decision, bool]:
    """Decide once for (patient, moment). The moment is truncated to the minute, so a repeat
    within the minute, a retried task or a concurrent duplicate returns the first decision.
    Returns (decision, created)."""
    now = now or timezone.now()
    moment = (moment or now).replace(second=0, microsecond=0)
    existing = _existing(patient, moment)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            # Serialise decisions per patient so the daily cap and repeat window hold.
            Patient.objects.select_for_update().filter(pk=patient.pk).exists()
            point = DecisionPoint.objects.create(patient=patient, moment=moment, trigger=trigger)
            return _decide(point, patient, context or {}, now), True
    except IntegrityError:
        existing = _existing(patient, moment)
        if existing is None:
            raise
        return existing, False


def _existing(patient: Patient, moment: dt.datetime) -> Decision | None:
    return (
        Decision.objects.select_related("template", "delivery", "decision_point")
        .filter(decision_point__patient=patient, decision_point__moment=moment)
        .first()
    )


def _decide(point: DecisionPoint, patient: Patient, context: dict, now: dt.datetime) -> Decision:
    day_start = local_day_start(now, patient.timezone)
    since = now - dt.timedelta(days=settings.NUDGE_REPEAT_WINDOW_DAYS)
    history = delivery_history(patient, since=since, day_start=day_start)
    consent = consent_snapshot(patient)
    agenda = agenda_for_patient(patient)
    receipt: dict[str, Any] = {
        "policy": {"name": baseline.POLICY_NAME, "version": baseline.POLICY_VERSION},
        "context": _context_features(point, patient, context, now),
        "consent": consent,
        "agenda": agenda,
        "ruleset_version": None,
    }
    reason = unavailable_reason(
        AvailabilityInput(
            timezone=patient.timezone,
            quiet_start=patient.quiet_start,
            quiet_end=patient.quiet_end,
            snoozed_until=patient.snoozed_until,
            is_active=patient.is_active,
            counted_today=history["counted_today"],
            last_nudged_at=history["last_nudged_at"],
        ),
        now=now,
        limits=DeliveryLimits(
            daily_cap=settings.NUDGE_DAILY_CAP,
            min_gap=dt.timedelta(minutes=settings.NUDGE_MIN_GAP_MINUTES),
        ),
    )
    if reason is not None:
        return _record(point, patient, receipt, Outcome.NOT_AVAILABLE, reason)

    templates, excluded = _candidates(agenda, history["recent_slugs"])
    receipt["excluded"] = excluded
    candidates = _with_popularity(patient, templates)
    scores, probabilities = baseline.baseline_probabilities(
        agenda=agenda, candidates=candidates, params=POLICY_PARAMS
    )
    seed = secrets.randbits(63)
    index, u = baseline.draw(probabilities, seed=seed)
    receipt["candidates"] = [
        {
            "template": c.template_id,
            "slug": c.slug,
            "version": c.version,
            "goal": c.goal,
            "popularity": round(c.popularity, 6),
            "score": round(float(s), 6),
            "probability": float(p),
        }
        for c, s, p in zip(candidates, scores, probabilities, strict=False)
    ]
    receipt["no_nudge_probability"] = float(probabilities[-1])
    receipt["seed"] = seed
    receipt["draw"] = u
    if not candidates:
        return _record(point, patient, receipt, Outcome.NOTHING_SUITABLE, "no_candidates")
    if index == len(candidates):
        return _record(
            point,
            patient,
            receipt,
            Outcome.NO_NUDGE,
            "policy_chose_none",
            propensity=float(probabilities[-1]),
        )
    chosen = templates[index]
    decision = _record(
        point,
        patient,
        receipt,
        Outcome.NUDGE,
        "chosen",
        template=chosen,
        propensity=float(probabilities[index]),
    )
    _route(decision, patient, chosen, agenda, consent, now)
    return decision


def _candidates(agenda: dict[str, float], recent_slugs: set[str]) -> tuple[list[Template], list]:
    templates, excluded = [], []
    for template in active_templates():
        if template.goal not in agenda:
            continue
        if template.slug in recent_slugs:
            excluded.append({"slug": template.slug, "reason": "repeat_window"})
            continue
        templates.append(template)
    return templates, excluded


def _with_popularity(patient: Patient, templates: list[Template]) -> list[baseline.Candidate]:
    """Popularity of each template within the patient's groups (their mean), else across all
    patients, else a prior."""
    group_ids = list(patient.group_memberships.values_list("group_id", flat=True))
    rows = TemplatePopularity.objects.filter(template__in=templates).filter(
        group_id__in=group_ids
    ) | TemplatePopularity.objects.filter(template__in=templates, group__isnull=True)
    in_groups: dict[Any, list[float]] = {}
    overall: dict[Any, float] = {}
    for template_id, group_id, rate in rows.values_list("template_id", "group_id", "rate"):
        if group_id is None:
            overall[template_id] = rate
        else:
            in_groups.setdefault(template_id, []).append(rate)

    def popularity(t: Template) -> float:
        if t.pk in in_groups:
            return sum(in_groups[t.pk]) / len(in_groups[t.pk])
        return overall.get(t.pk, DEFAULT_POPULARITY)

    return [
        baseline.Candidate(
            template_id=str(t.pk),
            slug=t.slug,
            version=t.version,
            goal=t.goal,
            popularity=popularity(t),
        )
        for t in templates
    ]


def _context_features(
    point: DecisionPoint, patient: Patient, context: dict, now: dt.datetime
) -> dict[str, Any]:
    local = now.astimezone(ZoneInfo(patient.timezone))
    return {
        "trigger": point.trigger,
        "local_hour": local.hour,
        "weekday": local.weekday(),
        "client": context,
    }


def _record(
    point: DecisionPoint,
    patient: Patient,
    receipt: dict,
    outcome: str,
    reason: str,
    *,
    template: Template | None = None,
    propensity: float | None = None,
) -> Decision:
    receipt["outcome"] = outcome
    receipt["reason"] = reason
    receipt["chosen"] = template.slug if template else None
    return Decision.objects.create(
        decision_point=point,
        patient=patient,
        outcome=outcome,
        reason=reason,
        policy_name=baseline.POLICY_NAME,
        policy_version=baseline.POLICY_VERSION,
        template=template,
        template_version=template.version if template else None,
        propensity=propensity,
        receipt=receipt,
    )


def _route(
    decision: Decision,
    patient: Patient,
    template: Template,
    agenda: dict[str, float],
    consent: dict[str, bool],
    now: dt.datetime,
) -> Delivery:
    """Create the delivery: held until the quiet hours end, else ready (and a push queued when
    the patient consents to notifications)."""
    release = quiet_hours_end(
        now, tz_name=patient.timezone, start=patient.quiet_start, end=patient.quiet_end
    )
    state = DeliveryState.HELD if release else DeliveryState.READY
    starts = release or now
    delivery = Delivery.objects.create(
        decision=decision,
        patient=patient,
        template=template,
        state=state,
        why=explain(template=template, agenda=agenda),
        due_at=release,
        expires_at=starts + dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS),
    )
    DeliveryTransition.objects.create(
        delivery=delivery,
        from_state=DeliveryState.PROPOSED,
        to_state=state,
        actor="engine",
        reason="quiet_hours" if release else "",
    )
    if state == DeliveryState.READY and consent.get(Purpose.NOTIFICATIONS):
        push_enqueue(delivery=delivery, now=now)
    return delivery
