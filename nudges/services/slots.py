"""Scheduled decision points: at each configured local slot time, one decision per patient."""

import datetime as dt
import logging

from django.conf import settings
from django.utils import timezone

from nudges.models import Trigger
from nudges.schedule import due_slots, parse_slots
from nudges.services.decisions import decision_make
from patients.models import Patient

logger = logging.getLogger(__name__)


def slots_decide(*, now: dt.datetime | None = None) -> int:
    """Decide for every active patient whose slot fell in the last sweep window. Overlapping
    windows are harmless: a decision point is decided once. Returns decisions made now."""
    now = now or timezone.now()
    slots = parse_slots(settings.NUDGE_SLOTS)
    window = dt.timedelta(minutes=settings.NUDGE_SLOT_WINDOW_MINUTES)
    made = 0
    zones = Patient.objects.filter(is_active=True).values_list("timezone", flat=True).distinct()
    for tz_name in zones:
        moments = due_slots(now=now, tz_name=tz_name, slots=slots, window=window)
        if not moments:
            continue
        for patient in Patient.objects.filter(is_active=True, timezone=tz_name).iterator():
            for moment in moments:
                _, created = decision_make(
                    patient=patient, trigger=Trigger.SLOT, moment=moment, now=now
                )
                made += int(created)
    logger.info("slot decisions made: %d", made)
    return made
