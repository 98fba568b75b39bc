from django.db import transaction

from nudges.models import Event
from patients.models import Patient


@transaction.atomic
def events_record(*, patient: Patient, events: list[dict]) -> tuple[int, int]:
    """Store a batch of the patient's events once each: an event whose client_id is already
    stored for this patient is a duplicate and left as it is. Returns (stored, duplicates)."""
    ids = [event["client_id"] for event in events]
    known = set(
        Event.objects.filter(patient=patient, client_id__in=ids).values_list("client_id", flat=True)
    )
    fresh = [Event(patient=patient, **event) for event in events if event["client_id"] not in known]
    # ignore_conflicts covers a concurrent resend between the read above and this insert.
    Event.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh), len(events) - len(fresh)
