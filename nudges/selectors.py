"""Reads for nudges. Every patient-facing read goes through deliveries_for_patient, so a
delivery of another patient is simply not found."""

import datetime as dt

from django.db.models import Max, Q, QuerySet

from nudges import lifecycle
from nudges.models import Delivery, DeliveryState, Template
from patients.models import Patient


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


def active_templates() -> list[Template]:
    """The newest active version of each template slug."""
    templates = Template.objects.filter(is_active=True).order_by("slug", "-version")
    latest: dict[str, Template] = {}
    for template in templates:
        latest.setdefault(template.slug, template)
    return list(latest.values())


def delivery_history(patient: Patient, *, since: dt.datetime, day_start: dt.datetime) -> dict:
    """What the delivery policy needs about past deliveries, in one query."""
    counted = Q(state__in=lifecycle.COUNTED)
    rows = deliveries_for_patient(patient).filter(created_at__gte=min(since, day_start))
    recent_slugs = set(
        rows.filter(created_at__gte=since).filter(counted).values_list("template__slug", flat=True)
    )
    today = rows.filter(counted, created_at__gte=day_start).count()
    last = deliveries_for_patient(patient).filter(counted).aggregate(last=Max("created_at"))["last"]
    return {"recent_slugs": recent_slugs, "counted_today": today, "last_nudged_at": last}
