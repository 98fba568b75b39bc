"""Nightly aggregate for the baseline policy: how often each template is acted on, per medical
group and overall, smoothed towards a prior (nudges.baseline.smoothed_rate)."""

import datetime as dt

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.stamps import stamp_bump
from nudges.baseline import smoothed_rate
from nudges.models import Delivery, DeliveryState, TemplatePopularity
from nudges.services.catalogue import POPULARITY_STAMP

WINDOW = dt.timedelta(days=90)


@transaction.atomic
def popularity_refresh(*, now: dt.datetime | None = None) -> int:
    """Replace every popularity row with counts over deliveries of the last 90 days that
    reached the patient. Returns the number of rows written."""
    since = (now or timezone.now()) - WINDOW
    reached = Delivery.objects.filter(created_at__gte=since, delivered_at__isnull=False)
    acted = Count("id", filter=Q(state=DeliveryState.DONE))
    overall = reached.values("template_id").annotate(n=Count("id"), acted=acted)
    by_group = (
        reached.filter(patient__group_memberships__isnull=False)
        .values("template_id", "patient__group_memberships__group_id")
        .annotate(n=Count("id"), acted=acted)
    )
    rows = [
        TemplatePopularity(
            template_id=r["template_id"],
            group_id=None,
            delivered=r["n"],
            acted=r["acted"],
            rate=float(smoothed_rate(r["acted"], r["n"])),
        )
        for r in overall
    ] + [
        TemplatePopularity(
            template_id=r["template_id"],
            group_id=r["patient__group_memberships__group_id"],
            delivered=r["n"],
            acted=r["acted"],
            rate=float(smoothed_rate(r["acted"], r["n"])),
        )
        for r in by_group
    ]
    TemplatePopularity.objects.all().delete()
    TemplatePopularity.objects.bulk_create(rows, batch_size=1000)
    stamp_bump(POPULARITY_STAMP)
    return len(rows)
