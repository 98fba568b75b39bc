"""Quiet hours (docs/delivery.md, "The delivery policy"): a nudge chosen in the patient's quiet
hours is held until their local wall-clock end, and beat releases it then. First the pure
rules in nudges/availability.py, then the decision, the release sweep and its Celery task."""

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from nudges import tasks
from nudges.availability import in_quiet_hours, quiet_hours_end
from nudges.models import (
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    PushMessage,
)
from nudges.services.decisions import decision_make
from nudges.services.deliveries import deliveries_release_held
from tests.factories import make_patient

UTC = dt.UTC
T = dt.time
NIGHT = (T(22, 0), T(7, 0))  # the default window, wrapping midnight


def utc(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(when: dt.datetime, zone: str) -> dt.datetime:
    return when.astimezone(ZoneInfo(zone))


# --- in_quiet_hours ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (T(21, 59), False),
        (T(22, 0), True),  # the start belongs to the quiet hours
        (T(23, 30), True),
        (T(0, 0), True),
        (T(3, 0), True),
        (T(6, 59), True),
        (T(7, 0), False),  # the end does not
        (T(12, 0), False),
    ],
)
def test_a_window_that_wraps_midnight_covers_the_night_on_both_sides(moment, expected):
    assert in_quiet_hours(moment, *NIGHT) is expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [(T(12, 59), False), (T(13, 0), True), (T(14, 30), True), (T(15, 0), False), (T(2, 0), False)],
)
def test_a_window_within_one_day_covers_only_that_span(moment, expected):
    assert in_quiet_hours(moment, T(13, 0), T(15, 0)) is expected


@pytest.mark.parametrize("moment", [T(0, 0), T(8, 0), T(8, 1), T(23, 59)])
def test_a_window_whose_start_equals_its_end_means_no_quiet_hours(moment):
    assert in_quiet_hours(moment, T(8, 0), T(8, 0)) is False


# --- quiet_hours_end across zones -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        # 23:00 IST (UTC+5:30) -> 07:00 IST next day
        ("Asia/Kolkata", utc(2026, 1, 15, 17, 30), utc(2026, 1, 16, 1, 30)),
        # 01:00 IST, after midnight -> 07:00 IST the same day
        ("Asia/Kolkata", utc(2026, 1, 15, 19, 30), utc(2026, 1, 16, 1, 30)),
        # 23:00 EST (UTC-5) -> 07:00 EST
        ("America/New_York", utc(2026, 1, 15, 4, 0), utc(2026, 1, 15, 12, 0)),
        # 23:00 EDT (UTC-4) in summer -> 07:00 EDT
        ("America/New_York", utc(2026, 7, 1, 3, 0), utc(2026, 7, 1, 11, 0)),
        # 23:00 AEDT (UTC+11) in the southern summer -> 07:00 AEDT
        ("Australia/Sydney", utc(2026, 1, 15, 12, 0), utc(2026, 1, 15, 20, 0)),
        # 23:00 AEST (UTC+10) in the southern winter -> 07:00 AEST
        ("Australia/Sydney", utc(2026, 7, 15, 13, 0), utc(2026, 7, 15, 21, 0)),
        # 23:30 BST (UTC+1) -> 07:00 BST
        ("Europe/London", utc(2026, 7, 1, 22, 30), utc(2026, 7, 2, 6, 0)),
        # 05:00 GMT in winter -> 07:00 GMT
        ("Europe/London", utc(2026, 1, 10, 5, 0), utc(2026, 1, 10, 7, 0)),
    ],
)
def test_quiet_hours_end_at_the_local_end_time_in_the_patients_zone(zone, now, expected):
    release = quiet_hours_end(now, tz_name=zone, start=NIGHT[0], end=NIGHT[1])

    assert release == expected
    assert local(release, zone).time() == NIGHT[1]


@pytest.mark.parametrize(
    ("zone", "now"),
    [
        ("Asia/Kolkata", utc(2026, 1, 15, 6, 30)),  # 12:00 IST
        ("America/New_York", utc(2026, 1, 15, 17, 0)),  # 12:00 EST
        ("Australia/Sydney", utc(2026, 1, 15, 1, 0)),  # 12:00 AEDT
        ("Europe/London", utc(2026, 1, 15, 7, 0)),  # exactly 07:00 GMT: already over
    ],
)
def test_outside_quiet_hours_there_is_nothing_to_wait_for(zone, now):
    assert quiet_hours_end(now, tz_name=zone, start=NIGHT[0], end=NIGHT[1]) is None


def test_the_same_utc_moment_is_quiet_in_one_zone_and_not_in_another():
    now = utc(2026, 1, 15, 17, 30)  # 23:00 in Kolkata, 12:30 in New York

    assert quiet_hours_end(now, tz_name="Asia/Kolkata", start=NIGHT[0], end=NIGHT[1])
    assert quiet_hours_end(now, tz_name="America/New_York", start=NIGHT[0], end=NIGHT[1]) is None


def test_a_daytime_window_ends_the_same_day():
    now = utc(2026, 1, 15, 8, 30)  # 14:00 IST

    release = quiet_hours_end(now, tz_name="Asia/Kolkata", start=T(13, 0), end=T(15, 0))

    assert release == utc(2026, 1, 15, 9, 30)


def test_at_the_start_of_a_wrapping_window_the_release_is_the_next_morning():
    now = utc(2026, 1, 15, 22, 0)  # exactly 22:00 GMT

    release = quiet_hours_end(now, tz_name="Europe/London", start=NIGHT[0], end=NIGHT[1])

    assert release == utc(2026, 1, 16, 7, 0)


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York", "Europe/London"])
@pytest.mark.parametrize("hour", [0, 3, 8, 12, 22, 23])
def test_start_equal_to_end_never_holds_a_nudge(zone, hour):
    now = utc(2026, 1, 15, hour, 0)

    assert quiet_hours_end(now, tz_name=zone, start=T(22, 0), end=T(22, 0)) is None


# --- daylight saving --------------------------------------------------------------------------


def test_london_spring_forward_releases_at_seven_summer_time():
    # 23:00 GMT on Saturday; at 01:00 GMT the clocks jump to 02:00 BST
    now = utc(2026, 3, 28, 23, 0)

    release = quiet_hours_end(now, tz_name="Europe/London", start=NIGHT[0], end=NIGHT[1])

    assert release == utc(2026, 3, 29, 6, 0)  # 07:00 BST: seven hours later, not eight
    assert local(release, "Europe/London").time() == T(7, 0)


def test_london_fall_back_releases_at_seven_winter_time():
    # 23:00 BST on Saturday; at 02:00 BST the clocks go back to 01:00 GMT
    now = utc(2026, 10, 24, 22, 0)

    release = quiet_hours_end(now, tz_name="Europe/London", start=NIGHT[0], end=NIGHT[1])

    assert release == utc(2026, 10, 25, 7, 0)  # 07:00 GMT: nine hours later
    assert local(release, "Europe/London").time() == T(7, 0)


def test_new_york_spring_forward_releases_at_seven_daylight_time():
    # 23:00 EST on Saturday; at 02:00 EST the clocks jump to 03:00 EDT
    now = utc(2026, 3, 8, 4, 0)

    release = quiet_hours_end(now, tz_name="America/New_York", start=NIGHT[0], end=NIGHT[1])

    assert release == utc(2026, 3, 8, 11, 0)  # 07:00 EDT
    assert local(release, "America/New_York").time() == T(7, 0)


@pytest.mark.parametrize(
    ("zone", "now", "end", "clock_change"),
    [
        # London skips 01:00-02:00 local on 2026-03-29 (01:00 UTC)
        ("Europe/London", utc(2026, 3, 28, 23, 0), T(1, 30), utc(2026, 3, 29, 1, 0)),
        # New York skips 02:00-03:00 local on 2026-03-08 (07:00 UTC)
        ("America/New_York", utc(2026, 3, 8, 4, 0), T(2, 30), utc(2026, 3, 8, 7, 0)),
    ],
)
def test_an_end_time_the_clock_skips_releases_just_after_the_jump(zone, now, end, clock_change):
    release = quiet_hours_end(now, tz_name=zone, start=NIGHT[0], end=end)

    assert release is not None
    # not before the wall clock has passed the end time, and not an hour past it
    assert clock_change <= release <= clock_change + dt.timedelta(hours=1)
    assert not in_quiet_hours(local(release, zone).time(), NIGHT[0], end)


def test_an_end_time_in_the_repeated_hour_waits_for_the_first_time_the_clock_shows_it():
    # 00:15 UTC is 01:15 BST, the first pass through 01:00-02:00 on 2026-10-25
    release = quiet_hours_end(
        utc(2026, 10, 25, 0, 15), tz_name="Europe/London", start=NIGHT[0], end=T(1, 30)
    )

    assert release == utc(2026, 10, 25, 0, 30)  # 01:30 BST


def test_in_the_repeated_hour_a_patient_still_in_quiet_hours_is_held_until_the_end():
    # 01:15 UTC is 01:15 GMT, the second pass through 01:00-02:00 on 2026-10-25; the wall
    # clock reads 01:15, inside 22:00-01:30, so the nudge waits for 01:30 on the wall clock
    now = utc(2026, 10, 25, 1, 15)
    zone = "Europe/London"
    assert in_quiet_hours(local(now, zone).time(), NIGHT[0], T(1, 30))

    release = quiet_hours_end(now, tz_name=zone, start=NIGHT[0], end=T(1, 30))

    assert release is not None
    assert release > now
    assert local(release, zone).time() == T(1, 30)


ZONES = ["Asia/Kolkata", "America/New_York", "Australia/Sydney", "Europe/London", "UTC"]
minutes = st.integers(0, 24 * 60 - 1).map(lambda m: T(m // 60, m % 60))


def _wall_time_exists(day: dt.date, wall: dt.time, zone: str) -> bool:
    naive = dt.datetime.combine(day, wall)
    there = naive.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return there.astimezone(ZoneInfo(zone)).replace(tzinfo=None) == naive


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    now=st.datetimes(
        min_value=dt.datetime(2026, 1, 1),
        max_value=dt.datetime(2026, 12, 31),
        timezones=st.just(UTC),
    ),
    start=minutes,
    end=minutes,
)
def test_a_release_is_never_in_the_past_and_comes_when_the_wall_clock_shows_the_end(
    zone, now, start, end
):
    release = quiet_hours_end(now, tz_name=zone, start=start, end=end)
    quiet = in_quiet_hours(local(now, zone).time().replace(tzinfo=None), start, end)

    assert (release is not None) == quiet
    if release is not None:
        assert now <= release <= now + dt.timedelta(hours=25)
        there = local(release, zone)
        if _wall_time_exists(there.date(), end, zone):
            assert there.time() == end


# --- a decision inside quiet hours, and its release -------------------------------------------

KOLKATA_NIGHT = utc(2026, 1, 15, 17, 30)  # 23:00 IST
KOLKATA_MORNING = utc(2026, 1, 16, 1, 30)  # 07:00 IST, the end of the quiet hours


def _nudge(patient, now: dt.datetime) -> Delivery:
    """Decide at `now` with successive seeds until the policy chooses a nudge (it may choose
    none); returns the delivery."""
    for seed in range(30):
        decision, created = decision_make(patient=patient, now=now, rng=np.random.default_rng(seed))
        assert created
        if decision.outcome == "nudge":
            return Delivery.objects.get(decision=decision)
        DecisionPoint.objects.filter(pk=decision.decision_point_id).delete()
    raise AssertionError("the policy never chose a nudge")


@pytest.fixture
def night_owl(db):
    patient, _ = make_patient(timezone="Asia/Kolkata", quiet=NIGHT)
    return patient


@pytest.fixture
def night_owl_without_push(db):
    patient, _ = make_patient(
        timezone="Asia/Kolkata", quiet=NIGHT, consents={"notifications": False}
    )
    return patient


def test_a_nudge_chosen_in_quiet_hours_is_held_until_their_local_end(night_owl):
    delivery = _nudge(night_owl, KOLKATA_NIGHT)

    assert delivery.state == DeliveryState.HELD
    assert delivery.due_at == KOLKATA_MORNING
    assert not PushMessage.objects.filter(delivery=delivery).exists()
    [transition] = DeliveryTransition.objects.filter(delivery=delivery)
    assert (transition.from_state, transition.to_state) == ("proposed", "held")
    assert (transition.actor, transition.reason) == ("engine", "quiet_hours")


def test_a_nudge_chosen_outside_quiet_hours_is_ready_at_once(night_owl):
    delivery = _nudge(night_owl, utc(2026, 1, 15, 6, 30))  # 12:00 IST

    assert delivery.state == DeliveryState.READY
    assert delivery.due_at is None
    assert PushMessage.objects.filter(delivery=delivery).exists()


def test_the_release_sweep_before_the_end_releases_nothing(night_owl):
    delivery = _nudge(night_owl, KOLKATA_NIGHT)

    released = deliveries_release_held(now=KOLKATA_MORNING - dt.timedelta(minutes=1))

    assert released == 0
    assert Delivery.objects.get(pk=delivery.pk).state == DeliveryState.HELD
    assert not PushMessage.objects.exists()


def test_after_the_end_beat_makes_it_ready_and_queues_a_push(night_owl):
    delivery = _nudge(night_owl, KOLKATA_NIGHT)
    release_time = KOLKATA_MORNING + dt.timedelta(minutes=1)

    released = deliveries_release_held(now=release_time)

    assert released == 1
    assert Delivery.objects.get(pk=delivery.pk).state == DeliveryState.READY
    last = DeliveryTransition.objects.filter(delivery=delivery).order_by("-created_at").first()
    assert last is not None
    assert (last.from_state, last.to_state, last.actor) == ("held", "ready", "beat")
    push = PushMessage.objects.get(delivery=delivery)
    assert push.state == "pending"
    assert push.next_attempt_at == release_time


def test_a_patient_who_declined_notifications_gets_no_push_on_release(night_owl_without_push):
    delivery = _nudge(night_owl_without_push, KOLKATA_NIGHT)

    released = deliveries_release_held(now=KOLKATA_MORNING + dt.timedelta(minutes=1))

    assert released == 1
    assert Delivery.objects.get(pk=delivery.pk).state == DeliveryState.READY
    assert not PushMessage.objects.exists()


def test_releasing_twice_releases_nothing_twice(night_owl):
    delivery = _nudge(night_owl, KOLKATA_NIGHT)
    later = KOLKATA_MORNING + dt.timedelta(minutes=1)

    first = deliveries_release_held(now=later)
    second = deliveries_release_held(now=later + dt.timedelta(minutes=1))

    assert (first, second) == (1, 0)
    assert DeliveryTransition.objects.filter(delivery=delivery, to_state="ready").count() == 1
    assert PushMessage.objects.filter(delivery=delivery).count() == 1


def test_the_release_only_takes_the_held_nudges_that_are_due(night_owl):
    # given one nudge held in Kolkata and one held in New York, whose night ends later
    early = _nudge(night_owl, KOLKATA_NIGHT)
    new_yorker, _ = make_patient(timezone="America/New_York", quiet=NIGHT)
    late = _nudge(new_yorker, utc(2026, 1, 16, 4, 0))  # 23:00 EST, held until 12:00 UTC

    released = deliveries_release_held(now=KOLKATA_MORNING + dt.timedelta(minutes=1))

    assert released == 1
    assert Delivery.objects.get(pk=early.pk).state == DeliveryState.READY
    assert Delivery.objects.get(pk=late.pk).state == DeliveryState.HELD
    assert late.due_at == utc(2026, 1, 16, 12, 0)


def test_a_nudge_held_over_the_london_clock_change_waits_for_seven_summer_time(db):
    patient, _ = make_patient(timezone="Europe/London", quiet=NIGHT)

    delivery = _nudge(patient, utc(2026, 3, 28, 23, 0))

    assert delivery.state == DeliveryState.HELD
    assert delivery.due_at == utc(2026, 3, 29, 6, 0)
    assert deliveries_release_held(now=utc(2026, 3, 29, 5, 59)) == 0
    assert deliveries_release_held(now=utc(2026, 3, 29, 6, 0)) == 1


def test_the_celery_task_releases_what_is_due(night_owl):
    # given a nudge held in January (long past) and one held until a few hours from now
    past = _nudge(night_owl, KOLKATA_NIGHT)
    now = timezone.now()
    local_now = local(now, "Asia/Kolkata")
    window = (
        (local_now - dt.timedelta(hours=1)).time(),
        (local_now + dt.timedelta(hours=3)).time(),
    )
    later_patient, _ = make_patient(timezone="Asia/Kolkata", quiet=window)
    future = _nudge(later_patient, now)
    assert future.state == DeliveryState.HELD

    # when beat runs the task (eagerly in tests)
    released = tasks.deliveries_release_held.delay().get()

    # then only the due one is released, with its push, by beat
    assert released == 1
    assert Delivery.objects.get(pk=past.pk).state == DeliveryState.READY
    assert Delivery.objects.get(pk=future.pk).state == DeliveryState.HELD
    assert DeliveryTransition.objects.filter(delivery=past, to_state="ready", actor="beat").exists()
    assert PushMessage.objects.filter(delivery=past).exists()
    assert not PushMessage.objects.filter(delivery=future).exists()
    assert tasks.deliveries_release_held.delay().get() == 0
