"""Cron expressions and their next fire time, in an IANA time zone. Pure: no clock, no I/O.

Syntax (docs/schedules-limits-results.md, "Cron expressions")::

    minute hour day-of-month month day-of-week [second]

Five fields, or six with seconds as the sixth (last) field. Each field is ``*``, a number,
a range ``a-b``, a step ``*/n`` / ``a-b/n`` / ``a/n``, or a comma list of those. Months
take JAN-DEC, weekdays SUN-SAT; weekday 0 and 7 are both Sunday. When both day-of-month
and day-of-week are restricted (neither is ``*``), a day matches if *either* matches
(the classic cron rule). ``@yearly @annually @monthly @weekly @daily @midnight @hourly``
are shorthands.

Daylight saving time. A cron expression names wall-clock times in its zone; the fire
instants are defined as follows, so every replica computes the same ones:

- a local time that exists once fires at that instant;
- an *ambiguous* local time (clocks go back, the hour repeats) fires once, at its first
  occurrence (``fold=0``);
- a *nonexistent* local time (clocks go forward, the hour is skipped) fires once, at the
  instant the clocks jump (the first real instant after the gap). Several matching times
  in one gap fire once together.

So the map "matching local time -> instant" never decreases, and :func:`next_fire` is the
first matching local time whose instant is after the given one.
"""

from __future__ import annotations

import bisect
import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_EXPRESSION = 200
SEARCH_YEARS = 30  # "0 0 29 2 1" (Feb 29 on a Monday) recurs within 28 years
UTC = timezone.utc

MONTHS = {name: i + 1 for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
SHORTHANDS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """The expression or the zone is not valid; the message names the field."""


@dataclass(frozen=True)
class Cron:
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]  # day of month, 1-31
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday .. 6
    any_day: bool  # day-of-month field was *
    any_weekday: bool  # day-of-week field was *

    def day_matches(self, year: int, month: int, day: int) -> bool:
        # Python's weekday(): Monday = 0; cron's: Sunday = 0.
        weekday = (calendar.weekday(year, month, day) + 1) % 7
        in_days = day in self.days
        in_weekdays = weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def matches(self, local: datetime) -> bool:
        """Does this naive local wall-clock time match (to the second)?"""
        return (local.second in self.seconds and local.minute in self.minutes
                and local.hour in self.hours and local.month in self.months
                and self.day_matches(local.year, local.month, local.day))


def _field(text: str, low: int, high: int, names: dict, what: str) -> tuple[int, ...]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            if not step_text.isdigit() or not 1 <= int(step_text) <= high - low + 1:
                raise CronError(f"{what}: bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, _, b = part.partition("-")
            start, end = _value(a, low, high, names, what), _value(b, low, high, names, what)
            if start > end:
                raise CronError(f"{what}: range {part!r} runs backwards")
        else:
            start = _value(part, low, high, names, what)
            end = high if step > 1 else start  # "a/n": from a to the end, every n
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


def _value(text: str, low: int, high: int, names: dict, what: str) -> int:
    text = text.lower()
    if text in names:
        return names[text]
    if not text.isdigit():
        raise CronError(f"{what}: {text!r} is not a number" + (
            f" or a name ({', '.join(n.upper() for n in names)})" if names else ""))
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{what}: {number} is outside {low}-{high}")
    return number


def parse(expression: str) -> Cron:
    if not isinstance(expression, str) or not expression.strip():
        raise CronError("cron: expected an expression like '*/5 * * * *'")
    if len(expression) > MAX_EXPRESSION:
        raise CronError(f"cron: at most {MAX_EXPRESSION} characters")
    text = SHORTHANDS.get(expression.strip().lower(), expression)
    fields = text.split()
    if len(fields) not in (5, 6):
        raise CronError(f"cron: expected 5 fields (minute hour day month weekday) or 6 "
                        f"(plus seconds), got {len(fields)}")
    if len(fields) == 5:
        fields.append("0")
    minute, hour, dom, month, dow, second = fields
    weekdays = _field(dow, 0, 7, WEEKDAYS, "cron day-of-week")
    cron = Cron(
        seconds=_field(second, 0, 59, {}, "cron second"),
        minutes=_field(minute, 0, 59, {}, "cron minute"),
        hours=_field(hour, 0, 23, {}, "cron hour"),
        days=_field(dom, 1, 31, {}, "cron day-of-month"),
        months=_field(month, 1, 12, MONTHS, "cron month"),
        weekdays=tuple(sorted({d % 7 for d in weekdays})),
        any_day=dom == "*", any_weekday=dow == "*")
    if cron.any_weekday or not cron.any_day:
        # Only the day-of-month can make a date impossible (Feb 30): refuse it now.
        longest = max(calendar.monthrange(2000, m)[1] for m in cron.months)
        if cron.any_weekday and min(cron.days) > longest:
            raise CronError("cron: no month in the expression has that day")
    return cron


def zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64:
        raise CronError("tz: expected an IANA time zone name like Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"tz: unknown time zone {name!r} (an IANA name like "
                        "Europe/Berlin or UTC)") from None


# ---------------------------------------------------------------- next local candidate

def _next_in(values: tuple[int, ...], current: int) -> int | None:
    """The smallest value >= current, or None."""
    i = bisect.bisect_left(values, current)
    return values[i] if i < len(values) else None


def next_local(cron: Cron, after: datetime) -> datetime | None:
    """The first naive local time strictly after ``after`` that matches, or None if there
    is none within SEARCH_YEARS. Jumps field by field; each step moves forward."""
    t = after.replace(microsecond=0) + timedelta(seconds=1)
    limit_year = after.year + SEARCH_YEARS
    while t.year <= limit_year:
        month = _next_in(cron.months, t.month)
        if month is None:
            t = datetime(t.year + 1, cron.months[0], 1)
            continue
        if month != t.month:
            t = datetime(t.year, month, 1)
        if not cron.day_matches(t.year, t.month, t.day):
            t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            continue
        hour = _next_in(cron.hours, t.hour)
        if hour is None:
            t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            continue
        if hour != t.hour:
            t = t.replace(hour=hour, minute=0, second=0)
        minute = _next_in(cron.minutes, t.minute)
        if minute is None:
            t = t.replace(minute=0, second=0) + timedelta(hours=1)
            continue
        if minute != t.minute:
            t = t.replace(minute=minute, second=0)
        second = _next_in(cron.seconds, t.second)
        if second is None:
            t = t.replace(second=0) + timedelta(minutes=1)
            continue
        return t.replace(second=second)
    return None


# ------------------------------------------------------------------- local <-> instant

def instant(local: datetime, tz: ZoneInfo) -> int:
    """Epoch seconds of a naive local time under the rules in the module docstring."""
    first = int(local.replace(tzinfo=tz, fold=0).timestamp())
    if _local(first, tz) == local:
        return first  # exists (for an ambiguous time: its first occurrence)
    # In a gap: fold=0 lands after the jump, fold=1 before it. Find the jump.
    low = int(local.replace(tzinfo=tz, fold=1).timestamp())  # before the jump
    high = first  # after it
    if low > high:
        low, high = high, low
    before = _offset(low, tz)
    while high - low > 1:
        mid = (low + high) // 2
        if _offset(mid, tz) == before:
            low = mid
        else:
            high = mid
    return high


def _local(epoch: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(epoch, tz).replace(tzinfo=None)


def _offset(epoch: int, tz: ZoneInfo) -> timedelta:
    return datetime.fromtimestamp(epoch, tz).utcoffset()


def next_fire(cron: Cron, tz: ZoneInfo, after: int) -> int | None:
    """The first fire instant (epoch seconds) strictly after ``after``, or None."""
    local = _local(after, tz)
    # During a repeated hour's second pass, local times just after ``local`` fired in the
    # first pass already (their instants are before ``after``): the loop skips them. In a
    # gap's aftermath a local time just before ``local`` may fire at the jump, which is
    # never after ``after`` once ``after`` is past the jump, so starting at ``local`` loses
    # nothing.
    candidate = local
    for _ in range(100_000):  # bound: an hour of seconds, with margin
        candidate = next_local(cron, candidate)
        if candidate is None:
            return None
        at = instant(candidate, tz)
        if at > after:
            return at
    return None  # pragma: no cover - beyond any real repeated hour
