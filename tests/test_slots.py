"""Scheduled decision points (docs/architecture.md, "Background work"): every 5 minutes
slots_decide makes one decision per active patient whose local slot (NUDGE_SLOTS, default
09:00 and 18:30) fell in the last window, in the patient's own time zone."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from nudges.models import Decision, DecisionPoint, Trigger
from nudges.services.slots import slots_decide
from tests.factories import make_patient

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def utc(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(autouse=True)
def slot_settings(settings):
    settings.NUDGE_SLOTS = "09:00,18:30"
    settings.NUDGE_SLOT_WINDOW_MINUTES = 10


@pytest.fixture
def world_patients(db):
    """One patient in each of four zones, and a second one in Kolkata."""
    return {
        "kolkata": make_patient(timezone="Asia/Kolkata")[0],
        "kolkata_2": make_patient(timezone="Asia/Kolkata", goals={"mood": 0.7})[0],
        "london": make_patient(timezone="Europe/London")[0],
        "new_york": make_patient(timezone="America/New_York")[0],
        "sydney": make_patient(timezone="Australia/Sydney")[0],
    }


def decided(patient) -> list[DecisionPoint]:
    return list(DecisionPoint.objects.filter(patient=patient).order_by("moment"))


def test_patients_whose_morning_slot_just_passed_get_one_decision_each(world_patients):
    # 03:35 UTC is 09:05 in Kolkata: their 09:00 slot (03:30 UTC) fell in the last 10 minutes
    made = slots_decide(now=utc(2026, 1, 15, 3, 35))

    assert made == 2
    for name in ("kolkata", "kolkata_2"):
        [point] = decided(world_patients[name])
        assert point.moment == utc(2026, 1, 15, 3, 30)
        assert point.trigger == Trigger.SLOT
        decision = Decision.objects.get(decision_point=point)
        assert decision.receipt["context"]["trigger"] == "slot"
        assert decision.receipt["context"]["local_hour"] == 9


def test_patients_in_zones_whose_slot_has_not_come_are_untouched(world_patients):
    slots_decide(now=utc(2026, 1, 15, 3, 35))  # 03:35 London, 22:35 New York, 14:35 Sydney

    for name in ("london", "new_york", "sydney"):
        assert decided(world_patients[name]) == []


def test_sweeping_again_over_an_overlapping_window_creates_nothing_twice(world_patients):
    first = slots_decide(now=utc(2026, 1, 15, 3, 35))
    second = slots_decide(now=utc(2026, 1, 15, 3, 38))  # window (03:28, 03:38] holds 03:30

    assert (first, second) == (2, 0)
    assert DecisionPoint.objects.count() == 2
    assert Decision.objects.count() == 2


def test_the_evening_slot_is_local_too(world_patients):
    # 18:30 AEDT (UTC+11) is 07:30 UTC
    made = slots_decide(now=utc(2026, 1, 15, 7, 31))

    assert made == 1
    [point] = decided(world_patients["sydney"])
    assert point.moment.astimezone(ZoneInfo("Australia/Sydney")).time() == dt.time(18, 30)
    assert DecisionPoint.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "now", "slot_utc"),
    [
        ("london", utc(2026, 1, 15, 9, 4), utc(2026, 1, 15, 9, 0)),  # 09:00 GMT
        ("london", utc(2026, 7, 15, 8, 4), utc(2026, 7, 15, 8, 0)),  # 09:00 BST
        ("new_york", utc(2026, 1, 15, 14, 4), utc(2026, 1, 15, 14, 0)),  # 09:00 EST
        ("new_york", utc(2026, 1, 15, 23, 34), utc(2026, 1, 15, 23, 30)),  # 18:30 EST
    ],
)
def test_each_zone_is_decided_at_its_own_local_slot(world_patients, name, now, slot_utc):
    made = slots_decide(now=now)

    assert made == 1
    assert [p.moment for p in decided(world_patients[name])] == [slot_utc]


def test_a_slot_outside_the_window_is_not_decided(world_patients):
    # 03:41 UTC: the Kolkata 09:00 slot (03:30 UTC) is 11 minutes ago, outside the window
    assert slots_decide(now=utc(2026, 1, 15, 3, 41)) == 0
    assert not DecisionPoint.objects.exists()


def test_the_slot_follows_the_clock_across_a_daylight_saving_change(world_patients):
    # the Sunday London moves to summer time, 09:00 local is 08:00 UTC
    assert slots_decide(now=utc(2026, 3, 29, 8, 5)) == 1
    assert [p.moment for p in decided(world_patients["london"])] == [utc(2026, 3, 29, 8, 0)]
    # and 09:00 UTC that day is not a slot for London any more
    assert slots_decide(now=utc(2026, 3, 29, 9, 5)) == 0


def test_an_inactive_patient_gets_no_slot_decision(world_patients):
    paused = world_patients["kolkata_2"]
    paused.is_active = False
    paused.save(update_fields=["is_active"])

    made = slots_decide(now=utc(2026, 1, 15, 3, 35))

    assert made == 1
    assert decided(paused) == []
    assert len(decided(world_patients["kolkata"])) == 1


def test_configured_slots_are_used(world_patients, settings):
    settings.NUDGE_SLOTS = "12:15"

    # 09:00 in Kolkata is no longer a slot; 12:15 IST (06:45 UTC) is
    assert slots_decide(now=utc(2026, 1, 15, 3, 35)) == 0
    assert slots_decide(now=utc(2026, 1, 15, 6, 50)) == 2


def test_a_window_holding_two_slots_decides_both(world_patients, settings):
    settings.NUDGE_SLOTS = "09:00,09:05"

    made = slots_decide(now=utc(2026, 1, 15, 3, 36))  # 09:06 IST

    assert made == 4
    moments = [p.moment for p in decided(world_patients["kolkata"])]
    assert moments == [utc(2026, 1, 15, 3, 30), utc(2026, 1, 15, 3, 35)]
