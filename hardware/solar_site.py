"""A simulated solar site: panel, battery, load and mains, advanced through time.

`SolarSite` is the physics behind the ``sim`` power monitor. It holds a
battery's state of charge and integrates the energy balance in steps of at
most `SolarSite.max_step_s` up to whatever time it is asked about, so the
caller decides how fast time runs (a `hardware.sim_clock.ScaledClock` runs a
week in a minute). It does no I/O and never sleeps.

Each step: the sun's position (`hardware.solar`) and the `Weather`'s cloud
cover give the panel's available power; the load is the site's power draw in
the operating mode the node has chosen (load shedding lowers it); mains, when
present, carries the load and charges the battery; otherwise the battery takes
the difference. A charge controller's low-voltage disconnect cuts the load at
`SiteSpec.disconnect_soc` and reconnects it at `SiteSpec.reconnect_soc`, which
is what happens to a node whose own load shedding was not enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from hardware.battery import CHEMISTRIES, Chemistry, ChemistryName, capacity_factor
from hardware.solar import cloud_factor, plane_of_array_irradiance, sun_position

__all__ = ["DEFAULT_LOADS_W", "CloudySpell", "SiteSpec", "SiteState", "SolarSite", "Weather"]

# A camera pole's draw by policy step: everything on; analytics at half rate;
# face recognition off; cameras off (panic button, LTE, controller); dark
# (only the charge controller and the node's wake timer).
DEFAULT_LOADS_W: tuple[float, ...] = (26.0, 21.0, 17.0, 6.0, 0.3)


@dataclass(frozen=True)
class CloudySpell:
    """Cloud cover `cloud_cover` from `start` to `end` (UTC) over `cities` (all when empty)."""

    start: datetime
    end: datetime
    cloud_cover: float
    cities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Weather:
    """Cloud cover by time and city: a base cover plus spells (the last matching wins)."""

    base_cloud_cover: float = 0.1
    spells: tuple[CloudySpell, ...] = ()

    def cloud_cover(self, *, at: datetime, city: str) -> float:
        cover = self.base_cloud_cover
        for spell in self.spells:
            if spell.start <= at < spell.end and (not spell.cities or city in spell.cities):
                cover = spell.cloud_cover
        return cover


@dataclass(frozen=True)
class SiteSpec:
    """What was installed at a site and the climate it stands in."""

    city: str
    lat: float
    lon: float
    panel_w: float
    chemistry: ChemistryName
    capacity_ah: float
    mains: bool = False
    mean_temp_c: float = 20.0
    daily_swing_c: float = 6.0
    enclosure_gain_c: float = 8.0  # battery box above ambient in full sun
    resistance_factor: float = 1.0  # >1: a worn battery that sags under load
    loads_w: tuple[float, ...] = DEFAULT_LOADS_W
    system_derate: float = 0.75  # dust, heat, MPPT and wiring losses
    charge_rate_c: float = 0.3  # charge current limit as a fraction of capacity
    mains_charger_w: float = 60.0
    disconnect_soc: float | None = None  # charge controller LVD; default: half the floor
    reconnect_soc: float | None = None

    @property
    def battery(self) -> Chemistry:
        return CHEMISTRIES[self.chemistry]

    @property
    def lvd_soc(self) -> float:
        return self.disconnect_soc if self.disconnect_soc is not None else self.battery.min_soc / 2

    @property
    def lvr_soc(self) -> float:
        return self.reconnect_soc if self.reconnect_soc is not None else self.battery.min_soc + 0.1


@dataclass(frozen=True)
class SiteState:
    """One instant of a site, as a power monitor would read it."""

    at: datetime
    soc: float
    panel_w: float
    load_w: float
    battery_v: float
    battery_a: float
    battery_temp_c: float
    mains_present: bool
    load_connected: bool
    mode: int
    irradiance_w_m2: float
    cloud_cover: float


@dataclass
class SolarSite:
    """The mutable physics of one site; see the module docstring."""

    spec: SiteSpec
    weather: Weather
    at: datetime
    soc: float = 1.0
    mode: int = 0
    mains_present: bool = False
    load_connected: bool = True
    max_step_s: float = 300.0
    _state: SiteState | None = field(default=None, init=False, repr=False)
    energy_in_wh: float = field(default=0.0, init=False)
    energy_out_wh: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("site time must be timezone-aware (UTC)")
        if not self.spec.loads_w:
            raise ValueError("a site needs at least one load level")
        self.mains_present = self.mains_present or self.spec.mains
        self._state = self._step(0.0)

    @property
    def state(self) -> SiteState:
        assert self._state is not None
        return self._state

    def set_mode(self, mode: int) -> None:
        """The node's operating mode (policy step); selects the load level."""
        self.mode = max(0, min(mode, len(self.spec.loads_w) - 1))

    def set_mains(self, present: bool) -> None:
        """Mains supply on or off (load-shedding schedules, faults)."""
        self.mains_present = present

    def advance(self, to: datetime) -> SiteState:
        """Integrate up to `to` (never backwards) and return the state there."""
        to = to.astimezone(timezone.utc)
        while self.at < to:
            dt = min(self.max_step_s, (to - self.at).total_seconds())
            self.at += timedelta(seconds=dt)
            self._state = self._step(dt)
        return self.state

    def _ambient_c(self, hour_angle_deg: float) -> float:
        solar_hour = hour_angle_deg / 15.0 + 12.0
        # Warmest about three hours after solar noon.
        return self.spec.mean_temp_c + self.spec.daily_swing_c * math.cos(
            2 * math.pi * (solar_hour - 15.0) / 24.0
        )

    def _step(self, dt_s: float) -> SiteState:
        spec, battery = self.spec, self.spec.battery
        # Sun and clouds at the middle of the step.
        mid = self.at - timedelta(seconds=dt_s / 2)
        sun = sun_position(at=mid, lat=spec.lat, lon=spec.lon)
        cover = self.weather.cloud_cover(at=mid, city=spec.city)
        irradiance = plane_of_array_irradiance(sun=sun, lat=spec.lat) * cloud_factor(cover)
        available_w = spec.panel_w * irradiance / 1000.0 * spec.system_derate
        temp_c = self._ambient_c(sun.hour_angle_deg) + spec.enclosure_gain_c * irradiance / 1000.0

        # The charge controller's low-voltage disconnect, with hysteresis.
        if self.load_connected and self.soc <= spec.lvd_soc and not self.mains_present:
            self.load_connected = False
        elif not self.load_connected and (self.soc >= spec.lvr_soc or self.mains_present):
            self.load_connected = True
        load_w = spec.loads_w[self.mode] if self.load_connected else 0.0

        bank_v = battery.nominal_v
        capacity_wh = spec.capacity_ah * bank_v * capacity_factor(battery, temp_c)
        max_charge_w = spec.charge_rate_c * spec.capacity_ah * bank_v
        room_w = max_charge_w if self.soc < 1.0 else 0.0
        if self.mains_present:
            charge_w = min(room_w, available_w + spec.mains_charger_w)
            panel_w = min(available_w, charge_w + load_w)
            battery_w = charge_w
        else:
            surplus = available_w - load_w
            battery_w = min(surplus, room_w) if surplus > 0 else surplus
            panel_w = load_w + battery_w if surplus > 0 else available_w
        hours = dt_s / 3600.0
        if battery_w >= 0:
            stored = battery_w * battery.charge_efficiency * hours
            self.energy_in_wh += stored
        else:
            stored = battery_w * hours
            self.energy_out_wh -= stored
        if capacity_wh > 0:
            self.soc = min(1.0, max(0.0, self.soc + stored / capacity_wh))
        resistance = battery.resistance_ohm(spec.capacity_ah) * spec.resistance_factor
        ocv = battery.open_circuit_v(self.soc)
        amps = battery_w / ocv if ocv > 0 else 0.0
        volts = max(0.0, ocv + amps * resistance)
        return SiteState(
            at=self.at,
            soc=self.soc,
            panel_w=max(0.0, panel_w),
            load_w=load_w,
            battery_v=volts,
            battery_a=amps,
            battery_temp_c=temp_c,
            mains_present=self.mains_present,
            load_connected=self.load_connected,
            mode=self.mode,
            irradiance_w_m2=irradiance,
            cloud_cover=cover,
        )
