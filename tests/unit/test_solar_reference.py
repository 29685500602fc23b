"""Sunrise, sunset and night in Lahore agree with NOAA's Solar Calculator at dawn and dusk.

The sun-position maths once lived twice (node and server) and the copies
disagreed on 119 days of 2026 — always within a minute or two of dawn or
dusk, where the old agreement test never looked. These tests look exactly
there: each reference instant is NOAA's Solar Calculator (Meeus' equations,
the sun's centre 90.833° from the zenith) for Lahore, 31.5204 N 74.3587 E,
PKT (UTC+5), to the second. The dates include the ones where each of the old
low-precision copies was furthest off (15 March: sunrise 106 s late;
21 January and 26 August: sunset 85–88 s off), so either copy would fail here.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

import hardware.solar
import proto.solar
from fleet_server import power as server_power
from proto.solar import (
    SUNRISE_ZENITH_DEG,
    hours_until_sunrise,
    hours_until_sunset,
    is_night,
    sun_position,
    sunrise_sunset,
)

LAHORE = (31.5204, 74.3587)
PKT = timezone(timedelta(hours=5))
UTC = timezone.utc
NOAA_TOLERANCE = timedelta(seconds=60)  # NOAA's own stated accuracy for sunrise and sunset

# (local date, sunrise PKT, sunset PKT) from NOAA's Solar Calculator equations.
NOAA_LAHORE = [
    (date(2025, 12, 1), "06:44:02", "16:58:59"),
    (date(2026, 1, 21), "07:00:52", "17:27:00"),
    (date(2026, 3, 15), "06:13:03", "18:10:26"),
    (date(2026, 3, 20), "06:06:46", "18:13:50"),
    (date(2026, 6, 21), "04:58:10", "19:10:30"),
    (date(2026, 8, 26), "05:34:29", "18:33:55"),
    (date(2026, 9, 23), "05:51:14", "17:58:20"),
    (date(2026, 12, 21), "06:57:41", "17:03:22"),
]


def _pkt(day: date, clock: str) -> datetime:
    hour, minute, second = (int(part) for part in clock.split(":"))
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=PKT)


def _day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.mark.parametrize(("day", "rise", "sets"), NOAA_LAHORE, ids=lambda v: str(v))
def test_sunrise_and_sunset_are_within_a_minute_of_noaa(day: date, rise: str, sets: str) -> None:
    times = sunrise_sunset(day=_day(day), lat=LAHORE[0], lon=LAHORE[1])
    assert times is not None
    assert abs(times[0] - _pkt(day, rise)) <= NOAA_TOLERANCE
    assert abs(times[1] - _pkt(day, sets)) <= NOAA_TOLERANCE


@pytest.mark.parametrize(("day", "rise", "sets"), NOAA_LAHORE, ids=lambda v: str(v))
def test_night_ends_at_noaa_sunrise_and_begins_at_noaa_sunset(
    day: date, rise: str, sets: str
) -> None:
    lat, lon = LAHORE
    dawn, dusk = _pkt(day, rise), _pkt(day, sets)
    assert is_night(at=dawn - NOAA_TOLERANCE, lat=lat, lon=lon)
    assert not is_night(at=dawn + NOAA_TOLERANCE, lat=lat, lon=lon)
    assert not is_night(at=dusk - NOAA_TOLERANCE, lat=lat, lon=lon)
    assert is_night(at=dusk + NOAA_TOLERANCE, lat=lat, lon=lon)


def test_the_elevation_changes_sign_exactly_at_sunrise_and_sunset_all_year() -> None:
    """`is_night` and `sunrise_sunset` are one definition, every day of 2026, to a millisecond."""
    lat, lon = LAHORE
    tick = timedelta(milliseconds=1)
    day = _day(date(2026, 1, 1))
    while day.year == 2026:
        times = sunrise_sunset(day=day, lat=lat, lon=lon)
        assert times is not None
        rise, sets = times
        assert rise.astimezone(PKT).date() == day.date() == sets.astimezone(PKT).date()
        assert is_night(at=rise - tick, lat=lat, lon=lon)
        assert not is_night(at=rise + tick, lat=lat, lon=lon)
        assert not is_night(at=sets - tick, lat=lat, lon=lon)
        assert is_night(at=sets + tick, lat=lat, lon=lon)
        for instant in (rise, sets):
            zenith = sun_position(at=instant, lat=lat, lon=lon).zenith_deg
            assert zenith == pytest.approx(SUNRISE_ZENITH_DEG, abs=1e-4)
        day += timedelta(days=1)


def test_hours_to_sunrise_and_sunset_count_down_to_the_same_instants() -> None:
    lat, lon = LAHORE
    day = date(2026, 3, 15)
    times = sunrise_sunset(day=_day(day), lat=lat, lon=lon)
    assert times is not None
    rise, sets = times
    minute = timedelta(minutes=1)
    assert hours_until_sunrise(at=rise - minute, lat=lat, lon=lon) == pytest.approx(1 / 60)
    # Just after sunrise the next one is tomorrow's, a few seconds less than a day away.
    assert 23.9 < hours_until_sunrise(at=rise + minute, lat=lat, lon=lon) < 24.0
    assert hours_until_sunset(at=sets - minute, lat=lat, lon=lon) == pytest.approx(1 / 60)
    assert 23.9 < hours_until_sunset(at=sets + minute, lat=lat, lon=lon) < 24.1


def test_polar_night_and_day_have_no_sunrise() -> None:
    midwinter = datetime(2026, 12, 21, 12, tzinfo=UTC)
    assert sunrise_sunset(day=midwinter, lat=80.0, lon=15.0) is None
    assert is_night(at=midwinter, lat=80.0, lon=15.0)
    assert hours_until_sunrise(at=midwinter, lat=80.0, lon=15.0) == 24.0
    assert not is_night(at=midwinter, lat=-80.0, lon=15.0)
    assert hours_until_sunset(at=midwinter, lat=-80.0, lon=15.0) == 0.0


def test_times_without_a_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sunrise_sunset(day=datetime(2026, 3, 15), lat=LAHORE[0], lon=LAHORE[1])


def test_node_and_server_use_the_one_copy() -> None:
    """Not two copies kept equal by a test: the node's and the server's names are proto's."""
    for name in ("sun_position", "sunrise_sunset", "is_night", "hours_until_sunrise"):
        assert getattr(hardware.solar, name) is getattr(proto.solar, name)
    assert server_power.is_night is proto.solar.is_night
    assert server_power.hours_until_sunrise is proto.solar.hours_until_sunrise
    assert hardware.solar.SunPosition is proto.solar.SunPosition
