"""Where the sun is and how much of it reaches a panel: pure functions, no I/O.

Used by the simulated solar site (`hardware.solar_site`) and by anything that
needs to know whether it is night at a node. Everything takes values and
returns values; time is an aware UTC `datetime` handed in by the caller, so a
simulated clock can run a week in a minute.

The model, good to a few percent for planning (not for bankable yield):

- sun position: NOAA's low-precision equations (fractional year, equation of
  time, declination, hour angle), to about a minute in sunrise time;
- clear-sky beam irradiance: Meinel's model on the Kasten–Young air mass;
  diffuse taken as 10 % of beam, the usual rough figure for clear skies;
- panel: fixed, facing the equator, tilted at the site's latitude (how
  Pakistan's pole-mounted panels are installed), so plane-of-array irradiance
  is beam × cos(incidence) + isotropic diffuse;
- clouds: Kasten & Czeplak's ``1 − 0.75·C^3.4`` attenuation for cloud cover
  ``C`` in [0, 1], which leaves a quarter of clear-sky light under full
  overcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = [
    "CITIES",
    "City",
    "SunPosition",
    "cloud_factor",
    "hours_until_sunrise",
    "is_night",
    "plane_of_array_irradiance",
    "sun_position",
    "sunrise_sunset",
]

SOLAR_CONSTANT_W_M2 = 1353.0
_SUNRISE_ZENITH_DEG = 90.833  # refraction and the sun's radius


@dataclass(frozen=True)
class City:
    """A place pillars stand, with its coordinates and typical winter temperatures."""

    name: str
    lat: float
    lon: float
    mean_temp_c: float
    daily_swing_c: float


# Coordinates of the city centres; temperatures are December means.
CITIES: dict[str, City] = {
    "lahore": City("lahore", 31.5204, 74.3587, mean_temp_c=14.0, daily_swing_c=7.0),
    "karachi": City("karachi", 24.8607, 67.0011, mean_temp_c=21.0, daily_swing_c=6.0),
    "peshawar": City("peshawar", 34.0151, 71.5249, mean_temp_c=11.5, daily_swing_c=7.5),
}


@dataclass(frozen=True)
class SunPosition:
    """The sun as seen from one place at one moment."""

    zenith_deg: float
    hour_angle_deg: float
    declination_deg: float

    @property
    def elevation_deg(self) -> float:
        return 90.0 - self.zenith_deg

    @property
    def up(self) -> bool:
        return self.zenith_deg < _SUNRISE_ZENITH_DEG


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return at.astimezone(timezone.utc)


def _year_terms(at: datetime) -> tuple[float, float]:
    """(equation of time in minutes, declination in radians) for `at` (UTC)."""
    day = at.timetuple().tm_yday
    hour = at.hour + at.minute / 60 + at.second / 3600
    gamma = 2 * math.pi / 365 * (day - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    return eqtime, decl


def sun_position(*, at: datetime, lat: float, lon: float) -> SunPosition:
    """Solar zenith and hour angle at `lat`/`lon` (degrees, east positive) at `at`."""
    at = _utc(at)
    eqtime, decl = _year_terms(at)
    minutes = at.hour * 60 + at.minute + at.second / 60 + at.microsecond / 60e6
    true_solar = minutes + eqtime + 4 * lon
    hour_angle = true_solar / 4 - 180
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(
        math.radians(hour_angle)
    )
    zenith = math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
    return SunPosition(
        zenith_deg=zenith, hour_angle_deg=hour_angle, declination_deg=math.degrees(decl)
    )


def plane_of_array_irradiance(*, sun: SunPosition, lat: float) -> float:
    """Clear-sky W/m² on an equator-facing panel tilted at the site's latitude."""
    if sun.zenith_deg >= 90.0:
        return 0.0
    cos_z = math.cos(math.radians(sun.zenith_deg))
    air_mass = 1.0 / (cos_z + 0.50572 * (96.07995 - sun.zenith_deg) ** -1.6364)
    beam = SOLAR_CONSTANT_W_M2 * 0.7 ** (air_mass**0.678)
    diffuse = 0.1 * beam
    # With tilt == |latitude| facing the equator, the incidence angle reduces
    # to the one a horizontal panel at the equator would see.
    decl = math.radians(sun.declination_deg)
    cos_incidence = math.cos(decl) * math.cos(math.radians(sun.hour_angle_deg))
    tilt = math.radians(abs(lat))
    return float(max(0.0, beam * max(0.0, cos_incidence) + diffuse * (1 + math.cos(tilt)) / 2))


def cloud_factor(cloud_cover: float) -> float:
    """Share of clear-sky light that gets through `cloud_cover` (0 clear … 1 overcast)."""
    if not 0.0 <= cloud_cover <= 1.0:
        raise ValueError(f"cloud cover must be within 0..1, not {cloud_cover}")
    return float(1.0 - 0.75 * cloud_cover**3.4)


def sunrise_sunset(*, day: datetime, lat: float, lon: float) -> tuple[datetime, datetime] | None:
    """Sunrise and sunset (UTC) on `day`'s UTC date; None in polar night or day."""
    noon = _utc(day).replace(hour=12, minute=0, second=0, microsecond=0)
    eqtime, decl = _year_terms(noon)
    phi = math.radians(lat)
    cos_ha = math.cos(math.radians(_SUNRISE_ZENITH_DEG)) / (
        math.cos(phi) * math.cos(decl)
    ) - math.tan(phi) * math.tan(decl)
    if not -1.0 <= cos_ha <= 1.0:
        return None
    ha = math.degrees(math.acos(cos_ha))
    midnight = noon.replace(hour=0)
    rise = midnight + timedelta(minutes=720 - 4 * (lon + ha) - eqtime)
    sets = midnight + timedelta(minutes=720 - 4 * (lon - ha) - eqtime)
    return rise, sets


def is_night(*, at: datetime, lat: float, lon: float) -> bool:
    """True between sunset and sunrise at the place."""
    return not sun_position(at=at, lat=lat, lon=lon).up


def hours_until_sunrise(*, at: datetime, lat: float, lon: float) -> float:
    """Hours from `at` to the next sunrise (0 < h ≤ ~24); 24 where the sun does not rise."""
    at = _utc(at)
    for offset in (0, 1, 2):
        times = sunrise_sunset(day=at + timedelta(days=offset), lat=lat, lon=lon)
        if times is not None and times[0] > at:
            return float((times[0] - at).total_seconds() / 3600)
    return 24.0
