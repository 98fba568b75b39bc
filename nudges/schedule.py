"""Pure: which scheduled decision slots (local wall-clock times) fall in a window."""

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo


def parse_slots(text: str) -> list[dt.time]:
    """'08:30,12:30' -> [time(8, 30), time(12, 30)]; raises ValueError naming a bad entry."""
    slots = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            slots.append(dt.time.fromisoformat(item))
        except ValueError:
            raise ValueError(f"Not a time of day: {item!r}") from None
    return sorted(slots)


def due_slots(
    *, now: dt.datetime, tz_name: str, slots: Sequence[dt.time], window: dt.timedelta
) -> list[dt.datetime]:
    """Slot moments (UTC) in (now - window, now] for a patient in tz_name."""
    zone = ZoneInfo(tz_name)
    start = now - window
    days = {start.astimezone(zone).date(), now.astimezone(zone).date()}
    moments = []
    for day in sorted(days):
        for slot in slots:
            moment = dt.datetime.combine(day, slot).replace(tzinfo=zone).astimezone(dt.UTC)
            if start < moment <= now:
                moments.append(moment)
    return moments
