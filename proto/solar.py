"""Where the sun is, and when it rises and sets: the one definition of "night" both sides use.

A node sheds load by its hours to sunrise and the fleet server raises
``dark_at_night`` and ranks the fleet's night-time risk by the same figures,
for the same place and instant. If the two computed them differently they
would disagree at dawn and dusk (they did, on 119 days of 2026 in Lahore,
when each side carried its own copy). So the definition lives here, beside
the wire contract, where both sides may import it (docs/decisions.md, "One
sun"). Pure functions, standard library only; time is an aware `datetime`
handed in by the caller, so a simulated clock can run a week in a minute.

The equations are NOAA's Solar Calculator's (after Meeus, *Astronomical
Algorithms*): the sun's apparent longitude, obliquity with the main
nutation term, declination and the equation of time from the Julian
century. The low-precision fractional-year series this replaced was off by
up to 106 s at sunrise in Lahore; these agree with NOAA's calculator to
seconds, well inside NOAA's own "within a minute" between ±72° latitude.

One definition of day and night: the sun is *up* while its centre is less
than 90.833° from the zenith (0.833° for refraction at the horizon and the
sun's radius). Sunrise and sunset are the instants that zenith distance
crosses 90.833°, found by iterating the hour-angle equation to a fixed point,
so `is_night` flips exactly at `sunrise_sunset`'s instants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = [
    "SUNRISE_ZENITH_DEG",
    "SunPosition",
    "hours_until_sunrise",
    "hours_until_sunset",
    "is_night",
    "sun_position",
    "sunrise_sunset",
]

SUNRISE_ZENITH_DEG = 90.833  # refraction at the horizon and the sun's radius
_J2000 = 2451545.0
_UNIX_EPOCH_JD = 2440587.5
_FIXED_POINT_STEPS = 6  # each step gains ~3 orders of magnitude; 6 is far below a millisecond


@dataclass(frozen=True)
class SunPosition:
    """The sun as seen from one place at one moment (geometric, without refraction)."""

    zenith_deg: float
    hour_angle_deg: float
    declination_deg: float

    @property
    def elevation_deg(self) -> float:
        """Height above the horizon; negative below it."""
        return 90.0 - self.zenith_deg

    @property
    def up(self) -> bool:
        """True between sunrise and sunset (the upper limb is above the horizon)."""
        return self.zenith_deg < SUNRISE_ZENITH_DEG


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return at.astimezone(timezone.utc)


def _sun_terms(at: datetime) -> tuple[float, float]:
    """(equation of time in minutes, declination in radians) at `at` (aware)."""
    century = (at.timestamp() / 86400.0 + _UNIX_EPOCH_JD - _J2000) / 36525.0
    mean_long = (280.46646 + century * (36000.76983 + century * 0.0003032)) % 360.0
    anomaly = math.radians(357.52911 + century * (35999.05029 - 0.0001537 * century))
    eccentricity = 0.016708634 - century * (0.000042037 + 0.0000001267 * century)
    centre = (
        math.sin(anomaly) * (1.914602 - century * (0.004817 + 0.000014 * century))
        + math.sin(2 * anomaly) * (0.019993 - 0.000101 * century)
        + math.sin(3 * anomaly) * 0.000289
    )
    omega = math.radians(125.04 - 1934.136 * century)
    apparent_long = math.radians(mean_long + centre - 0.00569 - 0.00478 * math.sin(omega))
    mean_obliquity = (
        23.0
        + (26.0 + (21.448 - century * (46.815 + century * (0.00059 - century * 0.001813))) / 60.0)
        / 60.0
    )
    obliquity = math.radians(mean_obliquity + 0.00256 * math.cos(omega))
    declination = math.asin(math.sin(obliquity) * math.sin(apparent_long))
    y = math.tan(obliquity / 2) ** 2
    l0 = math.radians(mean_long)
    eqtime = 4 * math.degrees(
        y * math.sin(2 * l0)
        - 2 * eccentricity * math.sin(anomaly)
        + 4 * eccentricity * y * math.sin(anomaly) * math.cos(2 * l0)
        - 0.5 * y * y * math.sin(4 * l0)
        - 1.25 * eccentricity * eccentricity * math.sin(2 * anomaly)
    )
    return eqtime, declination


def sun_position(*, at: datetime, lat: float, lon: float) -> SunPosition:
    """Solar zenith distance and hour angle at `lat`/`lon` (degrees, east positive) at `at`."""
    at = _utc(at)
    eqtime, decl = _sun_terms(at)
    minutes = at.hour * 60 + at.minute + at.second / 60 + at.microsecond / 60e6
    true_solar = (minutes + eqtime + 4 * lon) % 1440.0
    hour_angle = true_solar / 4 - 180.0
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(
        math.radians(hour_angle)
    )
    zenith = math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
    return SunPosition(
        zenith_deg=zenith, hour_angle_deg=hour_angle, declination_deg=math.degrees(decl)
    )


def _crossing(midnight: datetime, *, lat: float, lon: float, rising: bool) -> datetime | None:
    """The instant near `midnight`'s solar noon the zenith distance crosses 90.833°.

    A fixed point of "the hour angle the sun needs, with declination and
    equation of time taken at the instant itself"; None if the sun does not
    cross the horizon (polar day or night).
    """
    phi = math.radians(lat)
    sign = 1.0 if rising else -1.0
    when = midnight + timedelta(minutes=720 - 4 * lon)
    for _ in range(_FIXED_POINT_STEPS):
        eqtime, decl = _sun_terms(when)
        cos_ha = math.cos(math.radians(SUNRISE_ZENITH_DEG)) / (
            math.cos(phi) * math.cos(decl)
        ) - math.tan(phi) * math.tan(decl)
        if not -1.0 <= cos_ha <= 1.0:
            return None
        ha = math.degrees(math.acos(cos_ha))
        when = midnight + timedelta(minutes=720 - 4 * (lon + sign * ha) - eqtime)
    return when


def sunrise_sunset(*, day: datetime, lat: float, lon: float) -> tuple[datetime, datetime] | None:
    """Sunrise and sunset (UTC) around the solar noon on `day`'s UTC date; None in polar night/day.

    For Pakistan (UTC+5, solar noon near 07:00 UTC) that is the local date's
    sunrise and sunset.
    """
    midnight = _utc(day).replace(hour=0, minute=0, second=0, microsecond=0)
    rise = _crossing(midnight, lat=lat, lon=lon, rising=True)
    sets = _crossing(midnight, lat=lat, lon=lon, rising=False)
    if rise is None or sets is None:
        return None
    return rise, sets


def is_night(*, at: datetime, lat: float, lon: float) -> bool:
    """True between sunset and sunrise at the place."""
    return not sun_position(at=at, lat=lat, lon=lon).up


def _events(at: datetime, lat: float, lon: float) -> list[tuple[datetime, bool]]:
    """(instant, is_sunrise) for the days around `at`, in time order."""
    out: list[tuple[datetime, bool]] = []
    for offset in (-1, 0, 1, 2):
        times = sunrise_sunset(day=at + timedelta(days=offset), lat=lat, lon=lon)
        if times is not None:
            out += [(times[0], True), (times[1], False)]
    return sorted(out)


def hours_until_sunrise(*, at: datetime, lat: float, lon: float) -> float:
    """Hours from `at` to the next sunrise (0 < h ≤ ~24); 24 where the sun does not rise."""
    at = _utc(at)
    for when, rising in _events(at, lat, lon):
        if rising and when > at:
            return float((when - at).total_seconds() / 3600)
    return 24.0


def hours_until_sunset(*, at: datetime, lat: float, lon: float) -> float:
    """Hours from `at` to the next sunset; 0 where the sun does not set."""
    at = _utc(at)
    for when, rising in _events(at, lat, lon):
        if not rising and when > at:
            return float((when - at).total_seconds() / 3600)
    return 0.0
