"""Pure: the reporting period (one calendar month, UTC) and its weeks. Both are public: they
follow from the calendar, never from the data."""

import datetime as dt
import re
from dataclasses import dataclass

import polars as pl

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


class PeriodError(ValueError):
    """A period that is malformed, too early or not yet begun; the message says which."""


@dataclass(frozen=True)
class Period:
    year: int
    month: int

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def last_day(self) -> dt.date:
        return self.next_first_day - dt.timedelta(days=1)

    @property
    def next_first_day(self) -> dt.date:
        if self.month == 12:
            return dt.date(self.year + 1, 1, 1)
        return dt.date(self.year, self.month + 1, 1)

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first_day, dt.time(), tzinfo=dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """Exclusive."""
        return dt.datetime.combine(self.next_first_day, dt.time(), tzinfo=dt.UTC)

    @property
    def weeks(self) -> tuple[str, ...]:
        """Weeks run Monday to Sunday, cut at the month's edges; each is named by its first
        day within the month (so a month has four to six)."""
        days = (self.first_day + dt.timedelta(days=i) for i in range(self.last_day.day))
        return tuple(d.isoformat() for d in days if d.day == 1 or d.weekday() == 0)

    def week_of(self, column: str) -> pl.Expr:
        """The week label of a UTC datetime column, by the same rule as `weeks`."""
        day = pl.col(column).dt.date()
        monday = day.dt.truncate("1w")
        return pl.max_horizontal(monday, pl.lit(self.first_day)).dt.strftime("%Y-%m-%d")

    def __str__(self) -> str:
        return self.label


def period_parse(text: str, *, today: dt.date, first: str) -> Period:
    """'YYYY-MM', not before `first` (the first month the engine reported on) and not after
    the month of `today`."""
    match = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise PeriodError("A period is a calendar month written YYYY-MM, e.g. 2025-03.")
    period = Period(int(match.group(1)), int(match.group(2)))
    earliest = _PERIOD.match(first)
    if earliest and (period.year, period.month) < (int(earliest[1]), int(earliest[2])):
        raise PeriodError(f"There are no reports before {first}.")
    if (period.year, period.month) > (today.year, today.month):
        raise PeriodError(f"The period {period.label} has not begun.")
    return period
