"""Pure: the delivery policy's checks. Whether a patient may be nudged at a moment, and when
their quiet hours end. Times are timezone-aware; quiet hours are read in the patient's zone."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class AvailabilityInput:
    timezone: str
    quiet_start: dt.time
    quiet_end: dt.time
    snoozed_until: dt.datetime | None
    is_active: bool
    counted_today: int
    last_nudged_at: dt.datetime | None


@dataclass(frozen=True)
class DeliveryLimits:
    daily_cap: int
    min_gap: dt.timedelta


def unavailable_reason(
    state: AvailabilityInput, *, now: dt.datetime, limits: DeliveryLimits
) -> str | None:
    """The first reason the patient may not be nudged now, or None when they may."""
    if not state.is_active:
        return "inactive"
    if state.snoozed_until is not None and state.snoozed_until > now:
        return "snoozed"
    if state.counted_today >= limits.daily_cap:
        return "daily_cap"
    if state.last_nudged_at is not None and now - state.last_nudged_at < limits.min_gap:
        return "recently_nudged"
    return None


def local_day_start(now: dt.datetime, tz_name: str) -> dt.datetime:
    """Midnight of the patient's current local day, as an aware datetime."""
    local = now.astimezone(ZoneInfo(tz_name))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def in_quiet_hours(local_time: dt.time, start: dt.time, end: dt.time) -> bool:
    if start == end:
        return False
    if start < end:
        return start <= local_time < end
    return local_time >= start or local_time < end


def quiet_hours_end(
    now: dt.datetime, *, tz_name: str, start: dt.time, end: dt.time
) -> dt.datetime | None:
    """When the quiet hours that contain `now` end (UTC), or None if `now` is not in them.
    The end is a wall-clock time on the local calendar, so a DST change in the night moves it
    with the clock, as the patient expects: the first moment after `now` at which the local
    clock shows `end`. In the hour repeated when clocks go back that may be the second
    showing; a time skipped when clocks go forward resolves to just after the gap."""
    zone = ZoneInfo(tz_name)
    local = now.astimezone(zone)
    if not in_quiet_hours(local.time().replace(tzinfo=None), start, end):
        return None
    for days in range(3):
        for release in _wall_times(local.date() + dt.timedelta(days=days), end, zone):
            if release > now:
                return release
    raise AssertionError("quiet hours end within two days")  # pragma: no cover


def _wall_times(day: dt.date, wall: dt.time, zone: ZoneInfo) -> list[dt.datetime]:
    """The UTC moments at which the local clock shows `wall` on `day`, in order: two in the
    repeated hour, none in a skipped hour (then the moment just after the gap instead)."""
    first = dt.datetime.combine(day, wall, tzinfo=zone)
    moments = []
    for candidate in (first, first.replace(fold=1)):
        utc = candidate.astimezone(dt.UTC)
        shown = utc.astimezone(zone)
        if shown.replace(tzinfo=None) == candidate.replace(tzinfo=None) and utc not in moments:
            moments.append(utc)
    if not moments:  # skipped: fold=0 reads it with the offset before the gap, i.e. after it
        moments.append(first.astimezone(dt.UTC))
    return sorted(moments)
