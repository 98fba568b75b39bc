"""The retention policy: raw events (the app's behaviour and health measurements) are kept
RAW_EVENT_RETENTION_DAYS days after they occurred, then deleted by a daily beat task. What
was learnt from them (released aggregates, trained models) stays."""

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import record
from nudges.models import Event

BATCH = 5000


def events_purge_expired(*, now: dt.datetime | None = None, batch_size: int = BATCH) -> int:
    """Delete the events that occurred before the retention cut-off, a batch per short
    transaction (so the app keeps writing meanwhile); safe to run twice or concurrently.
    Audited once, with the count, when anything was deleted. Returns how many."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.RAW_EVENT_RETENTION_DAYS)
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                Event.objects.filter(occurred_at__lt=cutoff).values_list("pk", flat=True)[
                    :batch_size
                ]
            )
            if not ids:
                break
            total += Event.objects.filter(pk__in=ids).delete()[0]
    if total:
        detail = {"events": total, "occurred_before": cutoff.isoformat()}
        record(AuditAction.RETENTION_PURGE, "system:retention", detail=detail)
    return total
