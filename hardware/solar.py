"""Where the sun is and how much of it reaches a panel: pure functions, no I/O.

Used by the simulated solar site (`hardware.solar_site`) and by anything that
needs to know whether it is night at a node. Everything takes values and
returns values; time is an aware UTC `datetime` handed in by the caller, so a
simulated clock can run a week in a minute.

The model, good to a few percent for planning (not for bankable yield):

- sun position, sunrise, sunset and night: `proto.solar` (NOAA's Solar
  Calculator equations), the one definition the fleet server uses too;
  re-exported here so the simulated site and its callers keep one import;
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

from proto.solar import (
    SunPosition,
    hours_until_sunrise,
    hours_until_sunset,
    is_night,
    sun_position,
    sunrise_sunset,
)

__all__ = [
    "CITIES",
    "City",
    "SunPosition",
    "cloud_factor",
    "hours_until_sunrise",
    "hours_until_sunset",
    "is_night",
    "plane_of_array_irradiance",
    "sun_position",
    "sunrise_sunset",
]

SOLAR_CONSTANT_W_M2 = 1353.0


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
