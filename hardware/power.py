"""The power monitor: panel, battery and load readings, with real and simulated backends.

One interface, `PowerMonitor`: ``read()`` returns a `PowerReading` (any field
a board cannot measure is None) and ``set_operating_mode(step)`` tells the
site which load-shedding step the node is in (a real site's load follows by
itself; the simulated one changes its draw). Backends are registered in
`MONITORS` (entry-point group ``nigehbaan.hardware.power_monitors``) by their
config model, selected by ``[power.monitor] type = "..."`` in agent.toml or by
name through `load_power_monitor` (the board backend picks its default):

- ``ina219``: Texas Instruments INA219 current/power monitors on I2C
  (smbus2, imported only when used), one per channel: ``panel``, ``battery``
  (bidirectional shunt, positive = charging) and optionally ``load``. The
  register arithmetic is in `ina219_bus_volts` / `ina219_shunt_amps`.
- ``sysfs``: Linux ``/sys/class/power_supply`` (fuel gauges and chargers
  with kernel drivers, e.g. a UPS HAT): battery voltage, current, capacity
  and temperature, mains ``online``, and optionally a panel supply.
- ``sim``: a `hardware.solar_site.SolarSite` advanced by the backend's clock.

Errors are `hardware.errors.HardwareError`; a backend whose library or
device is missing raises `BackendUnavailable`; a reading that fails raises
`PowerReadError`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field

from hardware.clock import Clock, SystemClock
from hardware.errors import BackendUnavailable, HardwareError
from hardware.registry import BackendConfig, BackendRegistry, factory_model
from hardware.solar import CITIES
from hardware.solar_site import DEFAULT_LOADS_W, SiteSpec, SolarSite, Weather

__all__ = [
    "MONITORS",
    "Ina219Channel",
    "Ina219Monitor",
    "Ina219MonitorConfig",
    "PowerMonitor",
    "PowerMonitorConfig",
    "PowerReadError",
    "PowerReading",
    "SimMonitorConfig",
    "SimPowerMonitor",
    "SmBus",
    "SysfsMonitorConfig",
    "SysfsPowerMonitor",
    "ina219_bus_volts",
    "ina219_shunt_amps",
    "load_power_monitor",
    "power_monitor_names",
    "register_power_monitor",
    "site_spec_from_options",
]

logger = logging.getLogger(__name__)


class PowerReadError(HardwareError):
    """A power reading could not be taken (bus error, missing file, garbage value)."""


@dataclass(frozen=True)
class PowerReading:
    """One set of measurements; None where the board has no sensor for it."""

    at: datetime
    panel_w: float | None = None
    battery_v: float | None = None
    battery_a: float | None = None  # positive while charging, negative while discharging
    battery_soc: float | None = None  # from a fuel gauge/BMS, if there is one
    battery_temp_c: float | None = None
    load_w: float | None = None
    mains_present: bool | None = None


class PowerMonitor(ABC):
    """Reads a site's power situation; see the module docstring."""

    name: str

    @abstractmethod
    def read(self) -> PowerReading:
        """Measure now."""

    def set_operating_mode(self, step: int) -> None:  # noqa: B027 - optional hook
        """The node entered load-shedding `step` (real loads change by themselves)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the bus/files."""


# ----------------------------------------------------------------- INA219

INA219_REG_CONFIG = 0x00
INA219_REG_SHUNT = 0x01
INA219_REG_BUS = 0x02
# 32 V bus range, ±320 mV shunt range, 12-bit ADCs, continuous shunt+bus: the reset value.
INA219_CONFIG_DEFAULT = 0x399F


class SmBus(Protocol):
    """The part of smbus2.SMBus the INA219 backend uses (a fake one in tests)."""

    def read_word_data(self, i2c_addr: int, register: int) -> int: ...

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None: ...


def _swap16(word: int) -> int:
    # SMBus words are little-endian on the wire; the INA219 sends MSB first.
    return ((word & 0xFF) << 8) | ((word >> 8) & 0xFF)


def ina219_bus_volts(raw_word: int) -> float:
    """Bus voltage from a raw SMBus word of register 0x02 (bits 15..3, 4 mV per bit).

    Raises `PowerReadError` when the math-overflow flag (bit 0) is set.
    """
    value = _swap16(raw_word)
    if value & 0x1:
        raise PowerReadError("INA219 math overflow: current or power out of range")
    return (value >> 3) * 0.004


def ina219_shunt_amps(raw_word: int, *, shunt_ohm: float) -> float:
    """Current through the shunt from a raw SMBus word of register 0x01 (10 µV per bit, signed)."""
    value = _swap16(raw_word)
    if value & 0x8000:
        value -= 0x10000
    return value * 10e-6 / shunt_ohm


@dataclass(frozen=True)
class Ina219Channel:
    """One INA219: its I2C address and shunt resistor."""

    address: int
    shunt_ohm: float = 0.1


class Ina219Monitor(PowerMonitor):
    """INA219s on panel, battery (and load) channels; see the module docstring."""

    name = "ina219"

    def __init__(
        self,
        *,
        bus: SmBus,
        panel: Ina219Channel | None,
        battery: Ina219Channel | None,
        load: Ina219Channel | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.bus = bus
        self.channels = {"panel": panel, "battery": battery, "load": load}
        self.clock: Clock = clock or SystemClock()
        for channel in self.channels.values():
            if channel is not None:
                self._write(channel, INA219_REG_CONFIG, INA219_CONFIG_DEFAULT)

    @classmethod
    def from_options(cls, *, clock: Clock, options: Mapping[str, Any]) -> Ina219Monitor:
        """Open ``/dev/i2c-<bus>`` (option ``i2c_bus``, default 1) with smbus2."""
        try:
            import smbus2  # only on boards with an I2C bus
        except ImportError as exc:
            raise BackendUnavailable(f"smbus2 is not installed: {exc}") from exc
        try:
            bus = smbus2.SMBus(int(options.get("i2c_bus", 1)))
        except OSError as exc:
            raise BackendUnavailable(f"cannot open the I2C bus: {exc}") from exc

        def channel(name: str, default: int | None) -> Ina219Channel | None:
            address = options.get(f"{name}_address", default)
            if address is None:
                return None
            return Ina219Channel(int(address), float(options.get(f"{name}_shunt_ohm", 0.1)))

        return cls(
            bus=bus,
            panel=channel("panel", 0x40),
            battery=channel("battery", 0x41),
            load=channel("load", None),
            clock=clock,
        )

    def _write(self, channel: Ina219Channel, register: int, value: int) -> None:
        try:
            self.bus.write_word_data(channel.address, register, _swap16(value))
        except OSError as exc:
            raise PowerReadError(f"INA219 at {channel.address:#04x}: {exc}") from exc

    def _measure(self, channel: Ina219Channel) -> tuple[float, float]:
        try:
            bus_raw = self.bus.read_word_data(channel.address, INA219_REG_BUS)
            shunt_raw = self.bus.read_word_data(channel.address, INA219_REG_SHUNT)
        except OSError as exc:
            raise PowerReadError(f"INA219 at {channel.address:#04x}: {exc}") from exc
        return ina219_bus_volts(bus_raw), ina219_shunt_amps(shunt_raw, shunt_ohm=channel.shunt_ohm)

    def read(self) -> PowerReading:
        values: dict[str, Any] = {}
        panel = self.channels["panel"]
        if panel is not None:
            volts, amps = self._measure(panel)
            values["panel_w"] = max(0.0, volts * amps)
        battery = self.channels["battery"]
        if battery is not None:
            volts, amps = self._measure(battery)
            values["battery_v"], values["battery_a"] = volts, amps
        load = self.channels["load"]
        if load is not None:
            volts, amps = self._measure(load)
            values["load_w"] = max(0.0, volts * amps)
        elif panel is not None and battery is not None:
            # What the panel gives and the battery does not take, the load uses.
            values["load_w"] = max(
                0.0, values["panel_w"] - values["battery_v"] * values["battery_a"]
            )
        return PowerReading(at=self.clock.now(), **values)

    def close(self) -> None:
        close = getattr(self.bus, "close", None)
        if callable(close):
            close()


# ------------------------------------------------------------------ sysfs


class SysfsPowerMonitor(PowerMonitor):
    """Linux ``power_supply`` class devices; units per the kernel ABI (µV, µA, µW, 0.1 °C)."""

    name = "sysfs"

    def __init__(
        self,
        *,
        root: Path = Path("/sys/class/power_supply"),
        battery: str | None = None,
        mains: str | None = None,
        panel: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not root.is_dir():
            raise BackendUnavailable(f"{root} does not exist (no power_supply class)")
        self.root = root
        self.clock: Clock = clock or SystemClock()
        self.battery = battery or self._first_of_type("Battery")
        self.mains = mains or self._first_of_type("Mains")
        self.panel = panel
        if self.battery is None:
            raise BackendUnavailable(f"no Battery supply under {root}")

    @classmethod
    def from_options(cls, *, clock: Clock, options: Mapping[str, Any]) -> SysfsPowerMonitor:
        return cls(
            root=Path(options.get("root", "/sys/class/power_supply")),
            battery=options.get("battery"),
            mains=options.get("mains"),
            panel=options.get("panel"),
            clock=clock,
        )

    def _first_of_type(self, kind: str) -> str | None:
        for supply in sorted(self.root.iterdir()):
            if self._text(supply.name, "type") == kind:
                return supply.name
        return None

    def _text(self, supply: str, attribute: str) -> str | None:
        try:
            return (self.root / supply / attribute).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None

    def _number(self, supply: str | None, attribute: str, scale: float) -> float | None:
        if supply is None:
            return None
        text = self._text(supply, attribute)
        if text is None:
            return None
        try:
            return int(text) * scale
        except ValueError as exc:
            raise PowerReadError(f"{supply}/{attribute}: not a number: {text!r}") from exc

    def read(self) -> PowerReading:
        if not (self.root / str(self.battery)).is_dir():
            raise PowerReadError(f"battery supply {self.battery!r} disappeared")
        volts = self._number(self.battery, "voltage_now", 1e-6)
        amps = self._number(self.battery, "current_now", 1e-6)
        capacity = self._number(self.battery, "capacity", 0.01)
        temp = self._number(self.battery, "temp", 0.1)
        mains = self._number(self.mains, "online", 1.0)
        panel_w = self._number(self.panel, "power_now", 1e-6)
        if panel_w is None and self.panel is not None:
            pv = self._number(self.panel, "voltage_now", 1e-6)
            pa = self._number(self.panel, "current_now", 1e-6)
            panel_w = pv * pa if pv is not None and pa is not None else None
        load_w = None
        if panel_w is not None and volts is not None and amps is not None and not mains:
            load_w = max(0.0, panel_w - volts * amps)
        return PowerReading(
            at=self.clock.now(),
            panel_w=max(0.0, panel_w) if panel_w is not None else None,
            battery_v=volts,
            battery_a=amps,
            battery_soc=min(1.0, max(0.0, capacity)) if capacity is not None else None,
            battery_temp_c=temp,
            load_w=load_w,
            mains_present=bool(mains) if mains is not None else None,
        )


# -------------------------------------------------------------------- sim


def site_spec_from_options(options: Mapping[str, Any]) -> SiteSpec:
    """A `SiteSpec` from plain options (``city``, ``panel_w``, ``chemistry``, …)."""
    city_name = str(options.get("city", "lahore"))
    city = CITIES.get(city_name)
    if city is None and ("lat" not in options or "lon" not in options):
        raise HardwareError(f"unknown city {city_name!r}; give lat/lon or one of {sorted(CITIES)}")
    loads = options.get("loads_w", DEFAULT_LOADS_W)
    return SiteSpec(
        city=city_name,
        lat=float(options.get("lat", city.lat if city else 0.0)),
        lon=float(options.get("lon", city.lon if city else 0.0)),
        panel_w=float(options.get("panel_w", 300.0)),
        chemistry=options.get("chemistry", "lifepo4"),
        capacity_ah=float(options.get("capacity_ah", 100.0)),
        mains=bool(options.get("mains", False)),
        mean_temp_c=float(options.get("mean_temp_c", city.mean_temp_c if city else 20.0)),
        daily_swing_c=float(options.get("daily_swing_c", city.daily_swing_c if city else 6.0)),
        enclosure_gain_c=float(options.get("enclosure_gain_c", 8.0)),
        resistance_factor=float(options.get("resistance_factor", 1.0)),
        loads_w=tuple(float(w) for w in loads),
    )


class SimPowerMonitor(PowerMonitor):
    """Readings from a simulated `SolarSite`, advanced to the clock's time on each read."""

    name = "sim"

    def __init__(self, *, site: SolarSite, clock: Clock) -> None:
        self.site = site
        self.clock = clock
        self.reads = 0

    @classmethod
    def from_options(cls, *, clock: Clock, options: Mapping[str, Any]) -> SimPowerMonitor:
        site = SolarSite(
            spec=site_spec_from_options(options),
            weather=Weather(base_cloud_cover=float(options.get("cloud_cover", 0.1))),
            at=clock.now(),
            soc=float(options.get("soc", 1.0)),
        )
        return cls(site=site, clock=clock)

    def read(self) -> PowerReading:
        state = self.site.advance(self.clock.now())
        self.reads += 1
        return PowerReading(
            at=state.at,
            panel_w=state.panel_w,
            battery_v=state.battery_v,
            battery_a=state.battery_a,
            battery_soc=state.soc,
            battery_temp_c=state.battery_temp_c,
            load_w=state.load_w,
            mains_present=state.mains_present,
        )

    def set_operating_mode(self, step: int) -> None:
        self.site.advance(self.clock.now())
        self.site.set_mode(step)


# --------------------------------------------------------------- registry


class PowerMonitorConfig(BackendConfig[PowerMonitor]):
    """Base of the ``[power.monitor]`` section's models (one per registered monitor)."""


class Ina219MonitorConfig(PowerMonitorConfig):
    """``[power.monitor] type = "ina219"``: INA219s on an I2C bus (smbus2)."""

    type: Literal["ina219"] = Field(description="INA219 current/power monitors on I2C")
    i2c_bus: int = Field(default=1, ge=0, le=255, description="the N of /dev/i2c-N")
    panel_address: int | None = Field(
        default=0x40, ge=0x03, le=0x77, description="I2C address of the panel INA219; None: none"
    )
    panel_shunt_ohm: float = Field(
        default=0.1, gt=0.0, le=10.0, description="shunt resistor on the panel channel"
    )
    battery_address: int | None = Field(
        default=0x41, ge=0x03, le=0x77, description="I2C address of the battery INA219; None: none"
    )
    battery_shunt_ohm: float = Field(
        default=0.1, gt=0.0, le=10.0, description="shunt resistor on the battery channel"
    )
    load_address: int | None = Field(
        default=None, ge=0x03, le=0x77, description="I2C address of a load INA219, if fitted"
    )
    load_shunt_ohm: float = Field(
        default=0.1, gt=0.0, le=10.0, description="shunt resistor on the load channel"
    )

    def create(self, *, clock: Clock) -> PowerMonitor:
        return Ina219Monitor.from_options(clock=clock, options=self.model_dump(exclude={"type"}))


class SysfsMonitorConfig(PowerMonitorConfig):
    """``[power.monitor] type = "sysfs"``: Linux ``/sys/class/power_supply``."""

    type: Literal["sysfs"] = Field(description="kernel power_supply class devices")
    root: Path = Field(
        default=Path("/sys/class/power_supply"), description="where the supplies are listed"
    )
    battery: str | None = Field(
        default=None, description="battery supply name; None: the first of type Battery"
    )
    mains: str | None = Field(
        default=None, description="mains supply name; None: the first of type Mains"
    )
    panel: str | None = Field(default=None, description="a supply that measures the panel")

    def create(self, *, clock: Clock) -> PowerMonitor:
        return SysfsPowerMonitor(
            root=self.root, battery=self.battery, mains=self.mains, panel=self.panel, clock=clock
        )


class SimMonitorConfig(PowerMonitorConfig):
    """``[power.monitor] type = "sim"``: a simulated solar site (`hardware.solar_site`)."""

    type: Literal["sim"] = Field(description="simulated solar site")
    city: str = Field(default="lahore", description="known city for position and climate")
    lat: float | None = Field(default=None, ge=-90.0, le=90.0, description="overrides the city")
    lon: float | None = Field(default=None, ge=-180.0, le=180.0, description="overrides the city")
    panel_w: float = Field(default=300.0, ge=0.0, le=10_000.0, description="panel rating (W)")
    chemistry: Literal["lifepo4", "lead_acid"] = Field(
        default="lifepo4", description="battery chemistry"
    )
    capacity_ah: float = Field(default=100.0, gt=0.0, le=10_000.0, description="battery (Ah)")
    mains: bool = Field(default=False, description="the site also has mains power")
    mean_temp_c: float | None = Field(default=None, description="overrides the city's mean")
    daily_swing_c: float | None = Field(default=None, description="overrides the city's swing")
    enclosure_gain_c: float = Field(default=8.0, description="enclosure heating in the sun")
    resistance_factor: float = Field(
        default=1.0, gt=0.0, description="battery internal resistance × this (ageing)"
    )
    loads_w: tuple[float, ...] = Field(
        default=tuple(DEFAULT_LOADS_W), description="load (W) in each operating mode"
    )
    cloud_cover: float = Field(default=0.1, ge=0.0, le=1.0, description="base cloud cover")
    soc: float = Field(default=1.0, ge=0.0, le=1.0, description="state of charge at start")

    def create(self, *, clock: Clock) -> PowerMonitor:
        options = self.model_dump(exclude={"type"}, exclude_none=True)
        return SimPowerMonitor.from_options(clock=clock, options=options)


MONITORS: BackendRegistry[PowerMonitor] = BackendRegistry(
    capability="power monitor",
    group="nigehbaan.hardware.power_monitors",
    builtin={
        "ina219": "hardware.power:Ina219MonitorConfig",
        "sysfs": "hardware.power:SysfsMonitorConfig",
        "sim": "hardware.power:SimMonitorConfig",
    },
)

MonitorFactory = Callable[..., PowerMonitor]


def register_power_monitor(name: str, factory: MonitorFactory) -> None:
    """Add a power monitor with no options; `factory(clock=..., options={})` builds it.

    A monitor with options registers its `PowerMonitorConfig` model through the
    ``nigehbaan.hardware.power_monitors`` entry-point group (or `MONITORS.register`).
    """

    def build(*, clock: Clock) -> PowerMonitor:
        return factory(clock=clock, options={})

    MONITORS.register(factory_model(PowerMonitorConfig, name, build))


def power_monitor_names() -> list[str]:
    """Names `load_power_monitor` accepts."""
    return MONITORS.names()


def load_power_monitor(
    name: str, *, clock: Clock | None = None, options: Mapping[str, Any] | None = None
) -> PowerMonitor:
    """The power monitor backend `name`, built from `options` (validated by its model).

    Raises `HardwareError` for an unknown name or a bad option and
    `BackendUnavailable` when the backend cannot load on this machine.
    """
    config = MONITORS.validate({**dict(options or {}), "type": name})
    return config.create(clock=clock or SystemClock())
