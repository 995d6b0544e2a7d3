"""The breaker's arithmetic (docs/architecture.md, rule 7, "the breaker rule"): its bound,
the flips it counts within the last hour, and when a source is stale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from appwarden.access.breaker import bound, hour_of, recent_flips
from appwarden.staleness import Staleness, is_stale

AT = datetime(2021, 3, 1, 11, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("in_scope", "expected"),
    [(0, 50), (60, 50), (1000, 50), (1019, 50), (1020, 51), (2000, 100), (100_000, 5000)],
)
def test_the_bound_is_the_larger_of_50_and_5_percent_of_the_in_scope_devices(in_scope, expected):
    assert bound(in_scope) == expected


def test_flips_in_the_last_hour_take_this_hours_and_the_overlapping_part_of_the_previous():
    assert hour_of(AT) == datetime(2021, 3, 1, 11, tzinfo=UTC)
    # 15 minutes into the hour, three quarters of the previous hour still lie within the hour.
    assert recent_flips(10, 40, AT) == 10 + 30
    assert recent_flips(10, 40, hour_of(AT)) == 50
    assert recent_flips(0, 40, hour_of(AT) + timedelta(minutes=59, seconds=59.999)) < 1


def test_hours_are_clock_hours_in_utc_whatever_the_offset():
    kolkata = AT.astimezone(timezone(timedelta(hours=5, minutes=30)))  # 16:45 there
    assert hour_of(kolkata) == datetime(2021, 3, 1, 11, tzinfo=UTC)


def test_a_source_bound_comes_from_its_own_setting_else_three_intervals_else_the_default():
    staleness = Staleness(
        stale_after={"intune": timedelta(hours=12)},
        intervals={"fleet": timedelta(hours=1), "intune": timedelta(hours=8)},
        default=timedelta(days=2),
    )
    assert staleness.bound("intune") == timedelta(hours=12)
    assert staleness.bound_from("intune") == "stale_after"
    assert staleness.bound("fleet") == timedelta(hours=3)
    assert staleness.bound_from("fleet") == "interval"
    assert staleness.bound("jamf") == timedelta(days=2)
    assert staleness.configured_sources == {"intune", "fleet"}
    assert not staleness.configured("jamf")


def test_a_watched_source_is_stale_past_its_bound_or_without_a_complete_run():
    last = AT - timedelta(hours=3)
    bound_ = timedelta(hours=3)
    assert not is_stale(watched=True, last_complete_at=last, bound=bound_, now=AT)
    late = AT + timedelta(microseconds=1)
    assert is_stale(watched=True, last_complete_at=last, bound=bound_, now=late)
    assert is_stale(watched=True, last_complete_at=None, bound=bound_, now=AT)
    assert not is_stale(watched=False, last_complete_at=None, bound=bound_, now=AT)
