"""The retention policy (privacy/retention.py): raw events past RAW_EVENT_RETENTION_DAYS are
purged by a daily beat task; recent events stay."""

import datetime as dt

from django.conf import settings
from django.utils import timezone

from audit.models import AuditAction, AuditEntry
from config.celery import app
from nudges.models import Event
from privacy.tasks import events_purge_expired


def events(patient, *ages_in_days):
    now = timezone.now()
    return Event.objects.bulk_create(
        Event(
            patient=patient,
            client_id=f"age-{age}",
            kind="steps",
            value=1000.0,
            occurred_at=now - dt.timedelta(days=age),
        )
        for age in ages_in_days
    )


def test_events_older_than_the_retention_period_are_purged_and_recent_ones_kept(
    settings, patient_a, patient_b, tmp_path
):
    settings.RAW_EVENT_RETENTION_DAYS = 30
    settings.AUDIT_HEAD_FILE = tmp_path / "head.json"
    events(patient_a[0], 1, 29, 31, 400)
    events(patient_b[0], 2, 45)

    purged = events_purge_expired.delay().get()

    assert purged == 3
    kept = sorted(Event.objects.values_list("client_id", flat=True))
    assert kept == ["age-1", "age-2", "age-29"]
    [entry] = AuditEntry.objects.filter(action=AuditAction.RETENTION_PURGE)
    assert entry.detail["events"] == 3


def test_a_purge_with_nothing_to_delete_changes_nothing(patient_a):
    events(patient_a[0], 1)

    assert events_purge_expired.delay().get() == 0
    assert Event.objects.count() == 1
    assert not AuditEntry.objects.exists()


def test_the_purge_runs_daily_on_the_beat_schedule():
    entry = settings.CELERY_BEAT_SCHEDULE["purge-raw-events"]

    assert entry["schedule"] == 24 * 3600.0
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
