"""The scheduling core: cron parsing, fire times across calendars and DST, ``every`` ticks,
tick keys and catch-up. Pure arithmetic: no journal, no worker, no database.

Two oracles check the fire times: cronsim, an independent implementation of the same
cron dialect and of Debian's DST handling, and a slow minute-by-minute reference of
those DST rules.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError

from procpool_tasks.periodic.cron import (
    CronError,
    CronExpression,
    Every,
    due_tick,
    latest_tick,
    tick_key,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def seeded(seed: str) -> random.Random:
    """Reproducible test data: the same expressions and moments on every run."""
    return random.Random(seed)  # noqa: S311 - test data, not secrets


def fires(expression: str, tz: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of ``expression`` from ``start`` (inclusive) to ``end`` (exclusive)."""
    cron = CronExpression.parse(expression)
    found: list[datetime] = []
    moment = start - timedelta(microseconds=1)
    while (moment := cron.next_after(moment, tz)) < end:
        found.append(moment)
    return found


def fires_on(expression: str, tz: ZoneInfo, day: date) -> list[datetime]:
    """The fire times of ``expression`` on one local calendar day, in local time."""
    start = datetime.combine(day, time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    return [moment.astimezone(tz) for moment in fires(expression, tz, start, end)]


def wall_clock(moments: list[datetime]) -> list[str]:
    """How local fire times read, with their offsets: ``["01:30-04:00", "01:30-05:00"]``."""
    return [moment.isoformat(timespec="minutes")[len("2025-01-01T") :] for moment in moments]


# Parsing


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
        ("5-20/5 * * * *", "minutes", {5, 10, 15, 20}),
        ("50/3 * * * *", "minutes", {50, 53, 56, 59}),
        ("1,2,5-7 * * * *", "minutes", {1, 2, 5, 6, 7}),
        ("0 9-17/4,23 * * *", "hours", {9, 13, 17, 23}),
        ("0 0 */10 * *", "days", {1, 11, 21, 31}),
        ("0 0 1 jan-MAR/2 *", "months", {1, 3}),
        ("0 0 1 Dec *", "months", {12}),
        ("0 0 * * MON-fri", "weekdays", {1, 2, 3, 4, 5}),
        ("0 0 * * 0", "weekdays", {0}),
        ("0 0 * * 7", "weekdays", {0}),
        ("0 0 * * fri-7", "weekdays", {5, 6, 0}),
        ("0 0 * * */2", "weekdays", {0, 2, 4, 6}),
        ("0 0 * * sun,sat", "weekdays", {0, 6}),
        ("  0\t0 * *   *  ", "minutes", {0}),
    ],
)
def test_fields_expand_to_the_values_they_name(
    expression: str, field: str, values: set[int]
) -> None:
    assert getattr(CronExpression.parse(expression), field) == values


@pytest.mark.parametrize(
    ("macro", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros_mean_their_expressions(macro: str, expression: str) -> None:
    parsed = CronExpression.parse(macro)

    assert parsed.text == macro
    assert replace(parsed, text=expression) == CronExpression.parse(expression)


@pytest.mark.parametrize(
    ("expression", "either_day_matches"),
    [
        ("0 0 13 * fri", True),
        ("0 0 1-31 * 1-5", True),
        ("0 0 13 * *", False),
        ("0 0 * * fri", False),
        # Vixie cron looks at the first character only: */2 counts as a wildcard.
        ("0 0 */2 * fri", False),
        ("0 0 13 * */2", False),
    ],
)
def test_a_day_matches_either_day_field_only_when_neither_starts_with_a_star(
    expression: str, either_day_matches: bool
) -> None:
    assert CronExpression.parse(expression).either_day_matches is either_day_matches


@pytest.mark.parametrize(
    ("expression", "follows_elapsed_time"),
    [
        ("*/15 * * * *", True),
        ("0 * * * *", True),
        ("@hourly", True),
        ("5 */2 * * *", True),
        ("*/15 2 * * *", True),
        ("0 3 * * *", False),
        ("30 2 * * *", False),
        ("0 0-23 * * *", False),
        ("@daily", False),
    ],
)
def test_a_wildcard_in_minute_or_hour_makes_a_job_follow_elapsed_time(
    expression: str, follows_elapsed_time: bool
) -> None:
    assert CronExpression.parse(expression).follows_elapsed_time is follows_elapsed_time


MALFORMED = (
    "is malformed; use *, a value, a range a-b, a step */n, a-b/n or a/n, "
    "or a comma-separated list of these"
)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "",
            "cron '': expected 5 fields (minute hour day-of-month month day-of-week) "
            "or a macro such as @daily, not 0",
        ),
        (
            "* * * *",
            "cron '* * * *': expected 5 fields (minute hour day-of-month month "
            "day-of-week) or a macro such as @daily, not 4",
        ),
        (
            "0 * * * * *",
            "cron '0 * * * * *': expected 5 fields (minute hour day-of-month month "
            "day-of-week) or a macro such as @daily, not 6",
        ),
        (
            "@reboot",
            "cron '@reboot': unknown macro '@reboot'; use one of @yearly, @annually, "
            "@monthly, @weekly, @daily, @midnight, @hourly",
        ),
        ("@daily 5", "cron '@daily 5': a macro stands alone, with no fields after it"),
        ("61 * * * *", "cron '61 * * * *': minute field '61' is out of range 0-59"),
        ("1,61 * * * *", "cron '1,61 * * * *': minute field '61' is out of range 0-59"),
        ("* 24 * * *", "cron '* 24 * * *': hour field '24' is out of range 0-23"),
        ("* * 0 * *", "cron '* * 0 * *': day-of-month field '0' is out of range 1-31"),
        ("* * 32 * *", "cron '* * 32 * *': day-of-month field '32' is out of range 1-31"),
        (
            "* * * 13 *",
            "cron '* * * 13 *': month field '13' is out of range 1-12 or jan-dec",
        ),
        (
            "* * * * 8",
            "cron '* * * * 8': day-of-week field '8' is out of range 0-7 or sun-sat",
        ),
        (
            "100000000000000000000 * * * *",
            "cron '100000000000000000000 * * * *': minute field '100000000000000000000' "
            "is out of range 0-59",
        ),
        ("x * * * *", "cron 'x * * * *': minute field 'x' is not a number; use 0-59"),
        ("* mon * * *", "cron '* mon * * *': hour field 'mon' is not a number; use 0-23"),
        (
            "* * * january *",
            "cron '* * * january *': month field 'january' is not a number or month "
            "name; use 1-12 or jan-dec",
        ),
        (
            "* * * * mon-funday",
            "cron '* * * * mon-funday': day-of-week field 'funday' is not a number or "
            "weekday name; use 0-7 or sun-sat",
        ),
        ("1- * * * *", f"cron '1- * * * *': minute field '1-' {MALFORMED}"),
        ("*-5 * * * *", f"cron '*-5 * * * *': minute field '*-5' {MALFORMED}"),
        ("/5 * * * *", f"cron '/5 * * * *': minute field '/5' {MALFORMED}"),
        ("-1 * * * *", f"cron '-1 * * * *': minute field '-1' {MALFORMED}"),
        ("1,,2 * * * *", f"cron '1,,2 * * * *': minute field '1,,2' {MALFORMED}"),
        ("1-2-3 * * * *", f"cron '1-2-3 * * * *': minute field '1-2-3' {MALFORMED}"),
        ("*/x * * * *", f"cron '*/x * * * *': minute field '*/x' {MALFORMED}"),
        ("\u0663 * * * *", f"cron '\u0663 * * * *': minute field '\u0663' {MALFORMED}"),
        ("*/0 * * * *", "cron '*/0 * * * *': minute field '*/0' has step 0; use a step of 1-59"),
        (
            "*/60 * * * *",
            "cron '*/60 * * * *': minute field '*/60' has step 60; use a step of 1-59",
        ),
        (
            "0 0 * * 1-5/8",
            "cron '0 0 * * 1-5/8': day-of-week field '1-5/8' has step 8; use a step of 1-7",
        ),
        (
            "5-2 * * * *",
            "cron '5-2 * * * *': minute field '5-2' is a reversed range; put the smaller "
            "value first",
        ),
        (
            "0 0 * * fri-sun",
            "cron '0 0 * * fri-sun': day-of-week field 'fri-sun' is a reversed range; put "
            "the smaller value first (7 is Sunday too, as in fri-7)",
        ),
        (
            "0 0 30 2 *",
            "cron '0 0 30 2 *': the day-of-month field '30' names no day that the months "
            "of the month field '2' have, so it would never fire",
        ),
        (
            "0 0 31 4,6,9,11 *",
            "cron '0 0 31 4,6,9,11 *': the day-of-month field '31' names no day that the "
            "months of the month field '4,6,9,11' have, so it would never fire",
        ),
        (
            "0 0 30-31 feb */2",
            "cron '0 0 30-31 feb */2': the day-of-month field '30-31' names no day that "
            "the months of the month field 'feb' have, so it would never fire",
        ),
    ],
)
def test_a_bad_expression_raises_cron_error_naming_field_value_and_what_is_allowed(
    expression: str, message: str
) -> None:
    with pytest.raises(CronError) as caught:
        CronExpression.parse(expression)

    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 31 * *", "0 0 30 2 mon"])
def test_an_expression_that_fires_only_sometimes_is_accepted(expression: str) -> None:
    CronExpression.parse(expression)


# Fire times in UTC: calendars


def test_next_after_is_strictly_after_the_moment() -> None:
    hourly = CronExpression.parse("0 * * * *")

    assert hourly.next_after(utc(2025, 1, 1, 10), UTC) == utc(2025, 1, 1, 11)
    assert hourly.next_after(utc(2025, 1, 1, 9, 59, 59, 999999), UTC) == utc(2025, 1, 1, 10)


def test_next_after_answers_in_utc_for_a_moment_in_any_zone() -> None:
    moment = datetime(2025, 6, 1, 11, tzinfo=NEW_YORK)

    fire = CronExpression.parse("0 18 * * *").next_after(moment, BERLIN)

    assert fire == utc(2025, 6, 1, 16)
    assert fire.tzinfo is UTC


def test_next_after_refuses_a_naive_moment() -> None:
    with pytest.raises(
        ValueError,
        match=r"^moment datetime\.datetime\(2025, 1, 1, 0, 0\) is naive; pass an aware datetime$",
    ):
        CronExpression.parse("0 * * * *").next_after(datetime(2025, 1, 1), UTC)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("0 0 * * *", utc(2025, 12, 31, 12), utc(2026, 1, 1)),
        ("30 * * * *", utc(2025, 12, 31, 23, 45), utc(2026, 1, 1, 0, 30)),
        ("59 23 31 12 *", utc(2025, 12, 31, 23, 59), utc(2026, 12, 31, 23, 59)),
        ("0 0 1 * *", utc(2025, 1, 31, 23, 59), utc(2025, 2, 1)),
        ("0 0 31 * *", utc(2025, 4, 1), utc(2025, 5, 31)),
        ("0 12 * 2 *", utc(2025, 2, 28, 12), utc(2026, 2, 1, 12)),
        ("@yearly", utc(2025, 1, 1), utc(2026, 1, 1)),
        ("@weekly", utc(2025, 6, 1), utc(2025, 6, 8)),
    ],
)
def test_next_after_crosses_month_and_year_ends(
    expression: str, moment: datetime, expected: datetime
) -> None:
    assert CronExpression.parse(expression).next_after(moment, UTC) == expected


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("0 0 29 2 *", utc(2025, 1, 1), utc(2028, 2, 29)),
        ("0 0 29 2 *", utc(2024, 2, 29), utc(2028, 2, 29)),
        # 2100 is no leap year: the search goes on for eight years.
        ("0 0 29 2 *", utc(2096, 3, 1), utc(2104, 2, 29)),
        ("0 0 * 2 *", utc(2024, 2, 28, 12), utc(2024, 2, 29)),
        ("0 0 * 2 *", utc(2025, 2, 28, 12), utc(2026, 2, 1)),
        # February 29 on a Sunday (*/7 is 0 and 7): 28 years after 2004.
        ("0 0 29 2 */7", utc(2004, 3, 1), utc(2032, 2, 29)),
    ],
)
def test_next_after_finds_february_29_in_leap_years_only(
    expression: str, moment: datetime, expected: datetime
) -> None:
    assert CronExpression.parse(expression).next_after(moment, UTC) == expected


@pytest.mark.parametrize(
    ("expression", "days"),
    [
        # Both day fields restricted: the 13th, and every Friday.
        ("0 0 13 * fri", ["06-06", "06-13", "06-20", "06-27", "07-04", "07-11", "07-13"]),
        ("0 0 13 * *", ["06-13", "07-13", "08-13", "09-13", "10-13", "11-13", "12-13"]),
        ("0 0 * * fri", ["06-06", "06-13", "06-20", "06-27", "07-04", "07-11", "07-18"]),
        # A day field that starts with * makes both apply: the 1st, 14th or 27th, a Friday.
        ("0 0 */13 * fri", ["06-27", "08-01", "11-14", "02-27", "03-27", "05-01", "08-14"]),
    ],
)
def test_day_of_month_and_day_of_week_follow_the_vixie_or_rule(
    expression: str, days: list[str]
) -> None:
    found = fires(expression, UTC, utc(2025, 6, 1), utc(2027, 1, 1))[: len(days)]

    assert [moment.strftime("%m-%d") for moment in found] == days


def test_an_expression_built_by_hand_that_never_matches_stops_searching() -> None:
    never = replace(CronExpression.parse("0 0 28 2 *"), days=frozenset({30}))

    with pytest.raises(CronError, match=r"^cron '0 0 28 2 \*': no match within 400 years of "):
        never.next_after(utc(2025, 1, 1), UTC)


# Fire times across daylight saving time


@dataclass(frozen=True)
class Zone:
    name: str
    #: Where the clock skips forward: the day, and the first skipped minute.
    spring: datetime
    #: Where the clock goes back: the day, and the first repeated minute.
    fall: datetime
    shift: timedelta

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.name)


ZONES = [
    Zone("Europe/Berlin", datetime(2025, 3, 30, 2), datetime(2025, 10, 26, 2), timedelta(hours=1)),
    Zone("Europe/London", datetime(2025, 3, 30, 1), datetime(2025, 10, 26, 1), timedelta(hours=1)),
    Zone("America/New_York", datetime(2025, 3, 9, 2), datetime(2025, 11, 2, 1), timedelta(hours=1)),
    # Half an hour, in the southern hemisphere: back in April, forward in October.
    Zone(
        "Australia/Lord_Howe",
        datetime(2025, 10, 5, 2),
        datetime(2025, 4, 6, 1, 30),
        timedelta(minutes=30),
    ),
]
ZONE_IDS = [zone.name for zone in ZONES]
IN_BERLIN, IN_LONDON, IN_NEW_YORK, ON_LORD_HOWE = ZONES


@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
def test_the_zone_table_says_where_the_clocks_change(zone: Zone) -> None:
    def offset(wall: datetime) -> timedelta:
        offset = wall.replace(tzinfo=zone.tz).utcoffset()
        assert offset is not None
        return offset

    assert offset(zone.spring + zone.shift) == offset(zone.spring - zone.shift) + zone.shift
    assert offset(zone.fall + zone.shift) == offset(zone.fall - zone.shift) - zone.shift


@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
@pytest.mark.parametrize("change", ["spring", "fall"])
def test_a_daily_0300_job_fires_exactly_once_on_both_change_days(zone: Zone, change: str) -> None:
    day = getattr(zone, change).date()

    found = fires_on("0 3 * * *", zone.tz, day)

    assert [moment.time() for moment in found] == [time(3)]


def test_a_0230_job_in_new_york_fires_at_0300_edt_in_spring_and_once_in_fall() -> None:
    spring = fires_on("30 2 * * *", NEW_YORK, date(2025, 3, 9))
    fall = fires_on("30 2 * * *", NEW_YORK, date(2025, 11, 2))

    assert wall_clock(spring) == ["03:00-04:00"]
    assert wall_clock(fall) == ["02:30-05:00"]


@pytest.mark.parametrize(
    ("zone", "expression", "expected"),
    [
        (IN_BERLIN, "30 2 * * *", ["03:00+02:00"]),
        (IN_LONDON, "30 1 * * *", ["02:00+01:00"]),
        (IN_NEW_YORK, "0,15,30,45 2 * * *", ["03:00-04:00"]),
        (ON_LORD_HOWE, "15 2 * * *", ["02:30+11:00"]),
        # The skipped 02:00 and the real 03:00 land on one instant: one tick.
        (IN_NEW_YORK, "0 2,3 * * *", ["03:00-04:00"]),
        (IN_NEW_YORK, "30 2,3 * * *", ["03:00-04:00", "03:30-04:00"]),
    ],
    ids=["Berlin", "London", "New_York", "Lord_Howe", "gap-and-end", "gap-then-after"],
)
def test_a_fixed_time_job_in_the_skipped_interval_fires_once_where_it_ends(
    zone: Zone, expression: str, expected: list[str]
) -> None:
    assert wall_clock(fires_on(expression, zone.tz, zone.spring.date())) == expected


@pytest.mark.parametrize(
    ("zone", "expression", "expected"),
    [
        (IN_BERLIN, "30 2 * * *", ["02:30+02:00"]),
        (IN_LONDON, "30 1 * * *", ["01:30+01:00"]),
        (IN_NEW_YORK, "30 1 * * *", ["01:30-04:00"]),
        (ON_LORD_HOWE, "45 1 * * *", ["01:45+11:00"]),
    ],
    ids=ZONE_IDS,
)
def test_a_fixed_time_job_in_the_repeated_interval_fires_once_at_its_first_occurrence(
    zone: Zone, expression: str, expected: list[str]
) -> None:
    assert wall_clock(fires_on(expression, zone.tz, zone.fall.date())) == expected


@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
def test_a_quarter_hourly_job_skips_the_skipped_interval_and_repeats_the_repeated_one(
    zone: Zone,
) -> None:
    quarters = zone.shift // timedelta(minutes=15)
    spring = fires_on("*/15 * * * *", zone.tz, zone.spring.date())
    fall = fires_on("*/15 * * * *", zone.tz, zone.fall.date())

    assert len(spring) == 96 - quarters
    assert not [
        moment
        for moment in spring
        if zone.spring <= moment.replace(tzinfo=None) < zone.spring + zone.shift
    ]
    assert len(fall) == 96 + quarters
    repeated = [
        moment
        for moment in fall
        if zone.fall <= moment.replace(tzinfo=None) < zone.fall + zone.shift
    ]
    assert len(repeated) == 2 * quarters
    # In elapsed time the job never misses a beat: always 15 minutes apart.
    for day in (spring, fall):
        instants = [moment.astimezone(UTC) for moment in day]
        assert {b - a for a, b in pairwise(instants)} == {timedelta(minutes=15)}


def test_a_wildcard_minute_job_at_a_fixed_hour_follows_elapsed_time_as_in_debian_cron() -> None:
    assert fires_on("*/15 2 * * *", NEW_YORK, date(2025, 3, 9)) == []
    assert wall_clock(fires_on("*/20 1 * * *", NEW_YORK, date(2025, 11, 2))) == [
        "01:00-04:00",
        "01:20-04:00",
        "01:40-04:00",
        "01:00-05:00",
        "01:20-05:00",
        "01:40-05:00",
    ]


def test_a_midnight_job_fires_at_0100_on_a_day_that_begins_at_0100() -> None:
    santiago = ZoneInfo("America/Santiago")

    assert wall_clock(fires_on("@daily", santiago, date(2025, 9, 7))) == ["01:00-03:00"]


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        # From the first 01:20 (EDT) and from the second (EST) on the fall day.
        ("45 1 * * *", utc(2025, 11, 2, 5, 20), utc(2025, 11, 2, 5, 45)),
        ("45 1 * * *", utc(2025, 11, 2, 6, 20), utc(2025, 11, 3, 6, 45)),
        ("0 * * * *", utc(2025, 11, 2, 5, 50), utc(2025, 11, 2, 6)),
        ("0 * * * *", utc(2025, 11, 2, 6, 20), utc(2025, 11, 2, 7)),
        ("10 * * * *", utc(2025, 11, 2, 6, 0), utc(2025, 11, 2, 6, 10)),
        ("*/20 1 * * *", utc(2025, 11, 2, 5, 50), utc(2025, 11, 2, 6)),
        # Just before the spring gap and at its end: the skipped 02:30 fires at 03:00 EDT.
        ("30 2 * * *", utc(2025, 3, 9, 6, 59, 59), utc(2025, 3, 9, 7)),
        ("30 2 * * *", utc(2025, 3, 9, 7), utc(2025, 3, 10, 6, 30)),
    ],
)
def test_next_after_from_inside_a_changed_interval_in_new_york(
    expression: str, moment: datetime, expected: datetime
) -> None:
    assert CronExpression.parse(expression).next_after(moment, NEW_YORK) == expected


def small_hours_expression(rng: random.Random) -> str:
    """A random expression that fires around the changes, wildcards and fixed times alike."""
    minute = rng.choice(["*/15", "*/20", "0", "30", "45", "0,30", "10-50/20", "15", "*/7"])
    hour = rng.choice(["*", "*/2", "0-4", "1", "2", "1,2", "3", "2-3", "1-3", "0/3"])
    return f"{minute} {hour} * * *"


def reference_fires(
    expression: str, tz: ZoneInfo, start: datetime, end: datetime
) -> list[datetime]:
    """Debian cron's rules spelled out minute by minute of real time.

    A job with a wildcard fires at each minute whose local time matches. Any other job
    fires at a minute when the local clock has newly reached a matching time: one at a
    time as usual, several at once after a gap, none while a repeated interval replays.
    """
    cron = CronExpression.parse(expression)
    found: list[datetime] = []
    reached = (start - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
    for minute in range((end - start) // timedelta(minutes=1)):
        instant = start + timedelta(minutes=minute)
        wall = instant.astimezone(tz).replace(tzinfo=None, fold=0)
        if cron.follows_elapsed_time:
            newly = [wall]
        else:
            minutes_on = (wall - reached) // timedelta(minutes=1)
            newly = [reached + timedelta(minutes=n) for n in range(1, minutes_on + 1)]
        if any(matches(cron, candidate) for candidate in newly):
            found.append(instant)
        reached = max(reached, wall)
    return found


def matches(cron: CronExpression, wall: datetime) -> bool:
    in_month = wall.day in cron.days
    in_week = wall.isoweekday() % 7 in cron.weekdays
    day = (in_month or in_week) if cron.either_day_matches else (in_month and in_week)
    return (
        day
        and wall.minute in cron.minutes
        and wall.hour in cron.hours
        and wall.month in cron.months
    )


@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
@pytest.mark.parametrize("change", ["spring", "fall"])
def test_next_after_agrees_with_a_minute_by_minute_reference_across_the_change_days(
    zone: Zone, change: str
) -> None:
    rng = seeded(f"reference {zone.name} {change}")
    day = getattr(zone, change).replace(hour=0, minute=0)
    start = day.replace(tzinfo=zone.tz).astimezone(UTC)
    end = start + timedelta(hours=30)
    for _ in range(25):
        expression = small_hours_expression(rng)
        assert fires(expression, zone.tz, start, end) == reference_fires(
            expression, zone.tz, start, end
        ), expression


# cronsim as an oracle


def random_field(rng: random.Random, low: int, high: int, names: tuple[str, ...] = ()) -> str:
    """One random field in the dialect both implementations share."""

    def value() -> str:
        number = rng.randint(low, high)
        if names and number - low < len(names) and rng.random() < 0.3:
            name = names[number - low]
            return name.upper() if rng.random() < 0.5 else name
        return str(number)

    def term() -> str:
        kind = rng.choice(["value", "range", "range-step", "start-step"])
        if kind == "value":
            return value()
        start = rng.randint(low, high)
        step = f"/{rng.randint(1, high)}"
        if kind == "start-step":
            return f"{start}{step}"
        end = str(rng.randint(start, high))
        return f"{start}-{end}" + (step if kind == "range-step" else "")

    choice = rng.random()
    if choice < 0.25:
        return "*"
    if choice < 0.4:
        return f"*/{rng.randint(1, high)}"
    return ",".join(term() for _ in range(rng.randint(1, 3)))


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def random_expression(rng: random.Random) -> str:
    return " ".join(
        [
            random_field(rng, 0, 59),
            random_field(rng, 0, 23),
            random_field(rng, 1, 31),
            random_field(rng, 1, 12, MONTHS),
            random_field(rng, 0, 7, WEEKDAYS),
        ]
    )


def oracle_fires(expression: str, start: datetime, count: int) -> list[datetime]:
    oracle = CronSim(expression, start)
    # In UTC: PEP 495 makes a local time in a repeated interval unequal to any other zone's.
    return [next(oracle).astimezone(UTC) for _ in range(count)]


def our_fires(expression: str, tz: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    cron = CronExpression.parse(expression)
    found = [cron.next_after(start, tz)]
    while len(found) < count:
        found.append(cron.next_after(found[-1], tz))
    return found


def accepted_by_both(expression: str) -> bool:
    """Whether ``expression`` can fire; cronsim and ``CronExpression.parse`` must agree."""
    try:
        CronSim(expression, utc(2025, 1, 1))
    except CronSimError:
        with pytest.raises(CronError):
            CronExpression.parse(expression)
        return False
    CronExpression.parse(expression)
    return True


def test_next_after_agrees_with_cronsim_in_utc_for_random_expressions() -> None:
    rng = seeded("utc")
    compared = 0
    for _ in range(400):
        expression = random_expression(rng)
        if not accepted_by_both(expression):
            continue
        start = utc(2000, 1, 1) + timedelta(seconds=rng.randrange(40 * 365 * 86400))
        assert our_fires(expression, ZoneInfo("UTC"), start, 12) == oracle_fires(
            expression, start, 12
        ), expression
        compared += 1
    assert compared > 300


# cronsim 2.9 steps wildcard jobs an hour at a time in elapsed time, which lands on :30
# across Lord Howe's half-hour changes and skips the hour's :00; the reference above
# covers that zone.
WHOLE_HOUR_ZONES = [zone for zone in ZONES if zone.shift == timedelta(hours=1)]


@pytest.mark.parametrize("zone", WHOLE_HOUR_ZONES, ids=[zone.name for zone in WHOLE_HOUR_ZONES])
@pytest.mark.parametrize("change", ["spring", "fall"])
def test_next_after_agrees_with_cronsim_across_the_change_days(zone: Zone, change: str) -> None:
    rng = seeded(f"{zone.name} {change}")
    start = (getattr(zone, change) - timedelta(hours=3)).replace(tzinfo=zone.tz)
    for _ in range(40):
        expression = small_hours_expression(rng)
        assert our_fires(expression, zone.tz, start, 8) == oracle_fires(expression, start, 8), (
            expression
        )


# every


def test_every_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    five_minutes = Every(seconds=300)

    assert five_minutes.tick_at_or_before(utc(2025, 1, 1, 10, 7, 30)) == utc(2025, 1, 1, 10, 5)
    assert five_minutes.tick_at_or_before(utc(2025, 1, 1, 10, 5)) == utc(2025, 1, 1, 10, 5)
    assert five_minutes.next_after(utc(2025, 1, 1, 10, 5)) == utc(2025, 1, 1, 10, 10)
    assert five_minutes.next_after(utc(2025, 1, 1, 10, 7, 30)) == utc(2025, 1, 1, 10, 10)


def test_every_ticks_do_not_depend_on_when_or_where_they_are_asked() -> None:
    seven = Every(seconds=7)
    moment = utc(2025, 3, 30, 1, 30, 12, 345678)
    tick = seven.tick_at_or_before(moment)

    assert tick.timestamp() % 7 == 0
    assert moment - timedelta(seconds=7) < tick <= moment
    assert seven.tick_at_or_before(moment.astimezone(BERLIN)) == tick
    assert seven.next_after(moment, BERLIN) == seven.next_after(moment, NEW_YORK)
    assert tick.tzinfo is UTC


def test_every_takes_fractions_of_a_second() -> None:
    quarter = Every(seconds=0.25)

    assert quarter.next_after(utc(2025, 1, 1, 0, 0, 0, 300000)) == utc(2025, 1, 1, 0, 0, 0, 500000)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0"),
        (-5, "-5"),
        (1e-7, "1e-07"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (1e300, "1e+300"),
    ],
)
def test_every_refuses_an_interval_that_is_not_a_positive_number_of_seconds(
    seconds: float, shown: str
) -> None:
    message = (
        f"every {shown}: not a positive number of seconds; use for example 300 for every "
        "five minutes"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Every(seconds=seconds)


# Tick keys


def test_a_tick_key_names_the_schedule_and_the_utc_instant() -> None:
    tick = datetime(2025, 3, 30, 3, tzinfo=BERLIN)

    assert tick_key("nightly-report", tick) == "nightly-report@2025-03-30T01:00:00Z"
    assert tick_key("nightly-report", tick.astimezone(NEW_YORK)) == tick_key("nightly-report", tick)
    assert tick_key("poll", utc(2025, 1, 1, 0, 0, 0, 500000)) == "poll@2025-01-01T00:00:00.500000Z"


def test_a_tick_key_tells_the_two_occurrences_of_a_repeated_hour_apart() -> None:
    first = datetime(2025, 11, 2, 1, tzinfo=NEW_YORK)
    second = first.replace(fold=1)

    assert tick_key("poll", first) == "poll@2025-11-02T05:00:00Z"
    assert tick_key("poll", second) == "poll@2025-11-02T06:00:00Z"


def test_a_tick_key_refuses_a_naive_tick() -> None:
    with pytest.raises(ValueError, match=r"^tick datetime\.datetime\(2025, 1, 1, 0, 0\) is naive"):
        tick_key("poll", datetime(2025, 1, 1))


# Catch-up


@pytest.mark.parametrize(
    ("expression", "tz"),
    [
        ("*/7 * * * *", UTC),
        ("0 3 * * *", BERLIN),
        ("*/15 * * * *", NEW_YORK),
        ("30 1 * * *", NEW_YORK),
    ],
)
def test_latest_tick_is_the_last_tick_walked_to(expression: str, tz: tzinfo) -> None:
    rng = seeded(expression)
    cron = CronExpression.parse(expression)
    for _ in range(30):
        after = utc(2025, 10, 20) + timedelta(seconds=rng.randrange(20 * 86400))
        until = after + timedelta(seconds=rng.randrange(3 * 86400))
        walked = [
            tick
            for tick in fires(expression, tz, after, until + timedelta(microseconds=1))
            if tick > after
        ]

        assert latest_tick(cron, after=after, until=until, tz=tz) == (
            walked[-1] if walked else None
        )


NOW = utc(2025, 6, 1, 12, 3)
EVERY_5_MIN = Every(seconds=300)


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_tick_found_less_than_the_grace_late_is_due_either_way(catch_up: bool) -> None:
    now = utc(2025, 6, 1, 12, 0, 59, 900000)

    due = due_tick(
        EVERY_5_MIN, last_tick=utc(2025, 6, 1, 11, 55), now=now, tz=UTC, catch_up=catch_up
    )

    assert due == utc(2025, 6, 1, 12)


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_fired_tick_is_not_due_again(catch_up: bool) -> None:
    last = utc(2025, 6, 1, 12)

    assert due_tick(EVERY_5_MIN, last_tick=last, now=NOW, tz=UTC, catch_up=catch_up) is None


def test_with_catch_up_only_the_latest_missed_tick_is_due_once() -> None:
    last = utc(2025, 5, 1)

    due = due_tick(EVERY_5_MIN, last_tick=last, now=NOW, tz=UTC, catch_up=True)
    again = due_tick(
        EVERY_5_MIN, last_tick=due, now=NOW + timedelta(seconds=30), tz=UTC, catch_up=True
    )

    assert due == utc(2025, 6, 1, 12)
    assert again is None


def test_without_catch_up_missed_ticks_are_dropped_and_the_next_one_fires() -> None:
    last = utc(2025, 5, 1)
    next_tick = utc(2025, 6, 1, 12, 5)

    assert due_tick(EVERY_5_MIN, last_tick=last, now=NOW, tz=UTC, catch_up=False) is None
    assert due_tick(EVERY_5_MIN, last_tick=last, now=next_tick, tz=UTC, catch_up=False) == next_tick


def test_a_tick_as_old_as_the_grace_counts_as_missed() -> None:
    now = utc(2025, 6, 1, 12, 1)

    assert due_tick(EVERY_5_MIN, last_tick=None, now=now, tz=UTC, catch_up=False) is None
    assert due_tick(
        EVERY_5_MIN, last_tick=None, now=now, tz=UTC, catch_up=False, grace_s=61
    ) == utc(2025, 6, 1, 12)


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_schedule_that_never_fired_has_missed_nothing(catch_up: bool) -> None:
    assert due_tick(EVERY_5_MIN, last_tick=None, now=NOW, tz=UTC, catch_up=catch_up) is None
    assert due_tick(
        EVERY_5_MIN, last_tick=None, now=utc(2025, 6, 1, 12, 0, 30), tz=UTC, catch_up=catch_up
    ) == utc(2025, 6, 1, 12)


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_clock_that_went_back_makes_no_tick_due_twice(catch_up: bool) -> None:
    last = utc(2025, 6, 1, 12)
    earlier = utc(2025, 6, 1, 11, 55, 10)

    assert due_tick(EVERY_5_MIN, last_tick=last, now=earlier, tz=UTC, catch_up=catch_up) is None
    nightly = CronExpression.parse("0 3 * * *")
    assert due_tick(nightly, last_tick=last, now=earlier, tz=BERLIN, catch_up=catch_up) is None


def test_a_cron_schedule_catches_up_its_latest_missed_tick_in_local_time() -> None:
    nightly = CronExpression.parse("0 3 * * *")
    last = utc(2025, 3, 20, 2)  # 03:00 CET, ten days before the change
    now = utc(2025, 3, 31, 9)

    due = due_tick(nightly, last_tick=last, now=now, tz=BERLIN, catch_up=True)

    assert due == utc(2025, 3, 31, 1)  # 03:00 CEST
    assert due_tick(nightly, last_tick=last, now=now, tz=BERLIN, catch_up=False) is None
