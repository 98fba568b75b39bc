"""Reads for nudges. Every patient-facing read goes through deliveries_for_patient, so a
delivery of another patient is simply not found."""

import datetime as dt

from django.conf import settings
from django.db.models import QuerySet

from nudges import lifecycle
from nudges.availability import local_day_start
from nudges.decide import PatientFacts
from nudges.models import Delivery, DeliveryState, TemplateDecline
from patients.models import Patient
from patients.selectors import agenda_for_patient, consent_snapshot
from safety.selectors import group_slugs_for_patient, standing_approvals


def deliveries_for_patient(patient: Patient) -> QuerySet[Delivery]:
    return Delivery.objects.filter(patient=patient)


def current_nudges(patient: Patient, *, now: dt.datetime, limit: int = 20) -> QuerySet[Delivery]:
    """The nudges the patient should see now: visible states, not expired, a snoozed one only
    once its time has come; newest first."""
    return (
        deliveries_for_patient(patient)
        .filter(state__in=lifecycle.VISIBLE, expires_at__gt=now)
        .exclude(state=DeliveryState.SNOOZED, due_at__gt=now)
        .select_related("template")
        .order_by("-created_at")[:limit]
    )


def delivery_history(
    patient: Patient, *, now: dt.datetime, deliveries: list[tuple] | None = None
) -> dict:
    """What the delivery policy needs about past deliveries: how many count against today's
    cap (the patient's local day), the last nudge within the minimum gap, and the templates
    sent within the repeat window. `deliveries` may be rows the caller already read
    (nudges.services.serving.recent_deliveries, which reaches further back); else one query."""
    day_start = local_day_start(now, patient.timezone)
    window_start = now - dt.timedelta(days=settings.NUDGE_REPEAT_WINDOW_DAYS)
    gap_start = now - dt.timedelta(minutes=settings.NUDGE_MIN_GAP_MINUTES)
    since = min(day_start, window_start, gap_start)
    if deliveries is None:
        rows = (
            deliveries_for_patient(patient)
            .filter(created_at__gte=since, state__in=lifecycle.COUNTED)
            .values_list("template__slug", "created_at")
        )
    else:
        rows = [
            (slug, created)
            for _, slug, _, _, _, created, state in deliveries
            if created >= since and state in lifecycle.COUNTED
        ]
    recent, today, last = set(), 0, None
    for slug, created_at in rows:
        if created_at >= window_start:
            recent.add(slug)
        if created_at >= day_start:
            today += 1
        if created_at >= gap_start and (last is None or created_at > last):
            last = created_at
    return {"recent_slugs": frozenset(recent), "counted_today": today, "last_nudged_at": last}


def patient_facts(
    patient: Patient,
    *,
    now: dt.datetime,
    ruleset_version: int | None,
    deliveries: list[tuple] | None = None,
    arm: str = "treatment",
) -> PatientFacts:
    """Everything one decision needs about the patient, read now. Groups are None (unknown,
    so every candidate goes to review) until the patient's codes have been mapped to groups."""
    history = delivery_history(patient, now=now, deliveries=deliveries)
    groups = group_slugs_for_patient(patient) if patient.groups_refreshed_at else None
    return PatientFacts(
        patient_id=patient.pk,
        timezone=patient.timezone,
        quiet_start=patient.quiet_start,
        quiet_end=patient.quiet_end,
        snoozed_until=patient.snoozed_until,
        is_active=patient.is_active,
        agenda=agenda_for_patient(patient),
        groups=groups,
        consent=consent_snapshot(patient),
        counted_today=history["counted_today"],
        last_nudged_at=history["last_nudged_at"],
        recent_slugs=history["recent_slugs"],
        declined=frozenset(
            TemplateDecline.objects.filter(patient=patient).values_list("slug", flat=True)
        ),
        approved=standing_approvals(
            patient, groups=groups, ruleset_version=ruleset_version, now=now
        ),
        arm=arm,
    )
