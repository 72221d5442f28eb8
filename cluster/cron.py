"""Cron expressions for --cron-restart: when the next scheduled reload is.

    ┌ second (optional, 0-59: six fields, as PM2 and node-cron take them)
    │ ┌ minute 0-59
    │ │ ┌ hour 0-23
    │ │ │ ┌ day of month 1-31
    │ │ │ │ ┌ month 1-12 or jan-dec
    │ │ │ │ │ ┌ day of week 0-7 (0 and 7: Sunday) or sun-sat
    * * * * * *

Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma-separated list of those.
As in Vixie cron, when both the day of month and the day of week are restricted, a day matching either
one matches. Times are local.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SEARCH_DAYS = 366 * 5  # past that, an expression never matches (February 30th)


def _field(text: str, low: int, high: int, names: tuple[str, ...] = (), offset: int = 0) -> frozenset[int]:
    values: set[int] = set()

    def number(word: str) -> int:
        word = word.lower()
        if word in names:
            return names.index(word) + offset
        if not word.isdigit():
            raise ValueError(f"{word!r} is not a number{' or a name' if names else ''}")
        return int(word)

    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"invalid step in {part!r}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = number(first), number(last)
        else:
            start = end = number(base)
            if step:
                end = high
        if not low <= start <= high or not low <= end <= high or start > end:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0: Sunday
    any_day: bool  # the day of month is '*'
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ValueError("expected 5 fields (minute hour day month weekday), or 6 with seconds first")
        second, minute, hour, day, month, weekday = fields
        weekdays = _field(weekday, 0, 7, DAYS)
        return cls(_field(second, 0, 59), _field(minute, 0, 59), _field(hour, 0, 23), _field(day, 1, 31),
                   _field(month, 1, 12, MONTHS, 1), frozenset(d % 7 for d in weekdays), day == "*", weekday == "*")

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month, in_week = day.day in self.days, (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, now: float) -> float:
        """The first matching time strictly after `now` (a Unix time), as a Unix time."""
        start = dt.datetime.fromtimestamp(int(now) + 1)
        day = start.date()
        for _ in range(SEARCH_DAYS):
            if self.day_matches(day):
                first = start.time() if day == start.date() else dt.time(0, 0, 0)
                found = self._first_time(first)
                if found is not None:
                    return time.mktime(dt.datetime.combine(day, found).timetuple())
            day += dt.timedelta(days=1)
        raise ValueError("the expression matches no time in the next five years")

    def _first_time(self, after: dt.time) -> dt.time | None:
        """The first matching time of day at or after `after`."""
        for hour in sorted(h for h in self.hours if h >= after.hour):
            for minute in sorted(m for m in self.minutes if hour > after.hour or m >= after.minute):
                fresh = hour > after.hour or minute > after.minute
                for second in sorted(s for s in self.seconds if fresh or s >= after.second):
                    return dt.time(hour, minute, second)
        return None
