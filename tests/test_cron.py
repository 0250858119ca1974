"""broker/cron.py: parsing, and next_fire against a brute-force reference that walks UTC
minute by minute (second by second for six-field expressions) and decides for each instant,
from the zone's own conversion (fromtimestamp and its fold), whether it is a fire instant."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import cron

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
         "America/Santiago", "Pacific/Chatham", "Asia/Kathmandu", "Europe/London",
         "America/Sao_Paulo", "Asia/Tehran")


def ts(zone: str, *args, fold: int = 0) -> int:
    return int(datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).timestamp())


# ------------------------------------------------------------------------- reference

def reference_fires(c: cron.Cron, tz: ZoneInfo, after: int, window: int, step: int):
    """Every fire instant in (after, after + window], by definition (cron.py docstring):
    a matching local time seen at its first occurrence (fold 0), or the instant the clocks
    jump forward over a gap that holds a matching local time."""
    out = []
    u = (after // step + 1) * step
    while u <= after + window:
        here = datetime.fromtimestamp(u, tz)
        local = here.replace(tzinfo=None)
        before = datetime.fromtimestamp(u - step, tz)
        if here.fold == 0 and c.matches(local):
            out.append(u)
        elif here.utcoffset() > before.utcoffset():  # a jump forward just happened
            gap_local = before.replace(tzinfo=None) + timedelta(seconds=step)
            while gap_local < local:
                if c.matches(gap_local):
                    out.append(u)
                    break
                gap_local += timedelta(seconds=step)
        u += step
    return out


@functools.lru_cache(maxsize=None)
def transitions(zone: str) -> tuple[int, ...]:
    """UTC offset changes of ``zone`` in 2021-2027 (hourly scan, then to the minute)."""
    tz = ZoneInfo(zone)
    start, end = ts("UTC", 2021, 1, 1), ts("UTC", 2028, 1, 1)
    out = []
    prev = datetime.fromtimestamp(start, tz).utcoffset()
    for hour in range(start + 3600, end, 3600):
        off = datetime.fromtimestamp(hour, tz).utcoffset()
        if off != prev:
            minute = hour - 3600
            while datetime.fromtimestamp(minute, tz).utcoffset() == prev:
                minute += 60
            out.append(minute)
            prev = off
    return tuple(out) or (start,)


def field(low: int, high: int):
    single = st.integers(low, high).map(str)
    rng = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda ab: f"{min(ab)}-{max(ab)}")
    step = st.integers(1, max(1, (high - low) // 2)).map(lambda n: f"*/{n}")
    part = st.one_of(single, rng, step, st.just("*"))
    return st.lists(part, min_size=1, max_size=3).map(",".join)


# Day fields mostly open so that the reference's window finds fires.
days = st.one_of(st.just("* * *"), st.tuples(field(1, 31), st.just("*"), st.just("*")).map(
    " ".join), st.tuples(st.just("*"), st.just("*"), field(0, 7)).map(" ".join))
minute_crons = st.tuples(field(0, 59), field(0, 23), days).map(" ".join)


@st.composite
def near_transition(draw, spread_secs: int):
    zone = draw(st.sampled_from(ZONES))
    base = draw(st.sampled_from(transitions(zone)))
    return zone, base + draw(st.integers(-spread_secs, spread_secs))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=minute_crons, where=near_transition(2 * 86400))
def test_next_fire_matches_brute_force_by_minute(expr, where):
    zone, after = where
    c, tz = cron.parse(expr), ZoneInfo(zone)
    window = 3 * 86400
    expected = reference_fires(c, tz, after, window, 60)
    got = cron.next_fire(c, tz, after)
    if expected:
        assert got == expected[0], (expr, zone, after)
        # and walking on from each fire gives the next one: no slot lost, none twice
        walked, at = [], got
        while at is not None and at <= after + window and len(walked) < 200:
            walked.append(at)
            at = cron.next_fire(c, tz, at)
        assert walked == expected[:len(walked)]
    else:
        assert got is None or got > after + window


second_crons = st.tuples(field(0, 59), st.just("*"), st.just("* * *"), field(0, 59)).map(
    " ".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=second_crons, where=near_transition(3600))
def test_next_fire_matches_brute_force_by_second(expr, where):
    zone, after = where
    c, tz = cron.parse(expr), ZoneInfo(zone)
    window = 2 * 3600
    expected = reference_fires(c, tz, after, window, 1)
    walked, at = [], cron.next_fire(c, tz, after)
    while at is not None and at <= after + window:
        walked.append(at)
        at = cron.next_fire(c, tz, at)
    assert walked == expected, (expr, zone, after)


# ------------------------------------------------------------------ daylight saving

def test_nonexistent_time_fires_once_at_the_jump():
    """Berlin 2026-03-29: 02:00-03:00 does not exist; "30 2 * * *" fires at 03:00 CEST."""
    tz = ZoneInfo("Europe/Berlin")
    c = cron.parse("30 2 * * *")
    fire = cron.next_fire(c, tz, ts("Europe/Berlin", 2026, 3, 28, 12))
    assert fire == ts("Europe/Berlin", 2026, 3, 29, 3, 0)
    assert cron.next_fire(c, tz, fire) == ts("Europe/Berlin", 2026, 3, 30, 2, 30)


def test_every_minute_of_a_gap_fires_once_together():
    tz = ZoneInfo("America/New_York")
    c = cron.parse("* 2 8 3 *")  # 2026-03-08 02:xx does not exist in New York
    fire = cron.next_fire(c, tz, ts("America/New_York", 2026, 3, 8, 1, 59))
    assert fire == ts("America/New_York", 2026, 3, 8, 3, 0)
    assert cron.next_fire(c, tz, fire) == ts("America/New_York", 2027, 3, 8, 2, 0) or (
        cron.next_fire(c, tz, fire) > fire + 300 * 86400)


def test_ambiguous_time_fires_once_at_first_occurrence():
    """Berlin 2026-10-25: 02:00-03:00 happens twice; "30 2 * * *" fires in the first."""
    tz = ZoneInfo("Europe/Berlin")
    c = cron.parse("30 2 * * *")
    first = ts("Europe/Berlin", 2026, 10, 25, 2, 30, fold=0)
    assert cron.next_fire(c, tz, first - 60) == first
    assert cron.next_fire(c, tz, first) == ts("Europe/Berlin", 2026, 10, 26, 2, 30)
    # asked from inside the second pass, it does not fire again that day
    second = ts("Europe/Berlin", 2026, 10, 25, 2, 10, fold=1)
    assert cron.next_fire(c, tz, second) == ts("Europe/Berlin", 2026, 10, 26, 2, 30)


def test_hourly_through_fall_back_fires_each_distinct_hour():
    tz = ZoneInfo("Europe/Berlin")
    c = cron.parse("0 * * * *")
    at, fires = ts("Europe/Berlin", 2026, 10, 25, 0, 30), []
    for _ in range(5):
        at = cron.next_fire(c, tz, at)
        fires.append(datetime.fromtimestamp(at, tz).strftime("%H:%M%z"))
    # 02:00 fires once (first pass); the second pass's 02:00 (+0100) does not
    assert fires == ["01:00+0200", "02:00+0200", "03:00+0100", "04:00+0100", "05:00+0100"]


# ----------------------------------------------------------------------- parsing

@pytest.mark.parametrize("expr, after, expected", [
    ("*/15 * * * *", (2026, 1, 1, 0, 7), (2026, 1, 1, 0, 15)),
    ("0 9 * * MON-FRI", (2026, 1, 2, 10, 0), (2026, 1, 5, 9, 0)),  # Fri -> Mon
    ("0 0 1 JAN *", (2026, 6, 1), (2027, 1, 1)),
    ("0 0 13 * 5", (2026, 2, 1), (2026, 2, 6)),  # Friday OR the 13th: Fri 6th first
    ("@hourly", (2026, 1, 1, 5, 0), (2026, 1, 1, 6, 0)),
    ("0 0 * * 7", (2026, 1, 1), (2026, 1, 4)),  # 7 is Sunday
    ("* * * * * */20", (2026, 1, 1, 0, 0, 5), (2026, 1, 1, 0, 0, 20)),
    ("0 0 29 2 *", (2026, 1, 1), (2028, 2, 29)),
    ("5/20 * * * *", (2026, 1, 1, 0, 6), (2026, 1, 1, 0, 25)),
])
def test_examples(expr, after, expected):
    got = cron.next_fire(cron.parse(expr), ZoneInfo("UTC"), ts("UTC", *after))
    assert got == ts("UTC", *expected)


@pytest.mark.parametrize("expr, word", [
    ("* * * *", "5 fields"), ("60 * * * *", "minute"), ("* 24 * * *", "hour"),
    ("* * 0 * *", "day-of-month"), ("* * * 13 *", "month"), ("* * * * 8", "day-of-week"),
    ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"), ("* * 31 2 *", "no month"),
    ("x * * * *", "not a number"), ("", "expected"), ("* " * 120, "200"),
])
def test_bad_expressions_say_what(expr, word):
    with pytest.raises(cron.CronError, match=word):
        cron.parse(expr)


def test_unknown_zone():
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron.zone("Mars/Olympus")
    assert cron.zone("Asia/Tokyo").key == "Asia/Tokyo"


@st.composite
def in_the_changing_hour(draw):
    """A daily cron whose hour is the local hour a transition skips or repeats, asked from
    just before it: the random crons above rarely hit that hour."""
    zone = draw(st.sampled_from([z for z in ZONES if z != "UTC"]))
    at = draw(st.sampled_from(transitions(zone)))
    tz = ZoneInfo(zone)
    hour = datetime.fromtimestamp(at - 1, tz).hour  # local hour before the change
    expr = f"{draw(field(0, 59))} {draw(st.sampled_from([hour, (hour + 1) % 24]))} * * *"
    return expr, zone, at - draw(st.integers(60, 3 * 3600))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=in_the_changing_hour())
def test_next_fire_in_the_hour_a_transition_changes(case):
    expr, zone, after = case
    c, tz = cron.parse(expr), ZoneInfo(zone)
    window = 2 * 86400
    expected = reference_fires(c, tz, after, window, 60)
    walked, at = [], cron.next_fire(c, tz, after)
    while at is not None and at <= after + window:
        walked.append(at)
        at = cron.next_fire(c, tz, at)
    assert walked == expected, (expr, zone, after)
