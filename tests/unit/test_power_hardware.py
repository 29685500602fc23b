"""Power monitor backends: INA219 register math on a fake I2C bus, sysfs on a fake tree, sim.

One contract test runs over every backend: a reading is a `PowerReading`
with sane values. The INA219 and sysfs backends run their real code against
fakes of what the kernel gives them (an SMBus object, a directory shaped like
``/sys/class/power_supply``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hardware import SimBackend
from hardware.clock import ManualClock
from hardware.errors import BackendUnavailable, HardwareError
from hardware.power import (
    INA219_REG_BUS,
    INA219_REG_CONFIG,
    INA219_REG_SHUNT,
    Ina219Channel,
    Ina219Monitor,
    PowerMonitor,
    PowerReadError,
    PowerReading,
    SimPowerMonitor,
    SysfsPowerMonitor,
    ina219_bus_volts,
    ina219_shunt_amps,
    load_power_monitor,
    power_monitor_names,
)

CLOCK = ManualClock(start=0.0, wall=datetime(2025, 12, 1, 7, tzinfo=timezone.utc))


def _smbus_word(register_value: int) -> int:
    """What smbus2's read_word_data returns for a register holding `register_value`."""
    return ((register_value & 0xFF) << 8) | (register_value >> 8)


class FakeBus:
    """An I2C bus with INA219s on it: register values by (address, register)."""

    def __init__(self) -> None:
        self.registers: dict[tuple[int, int], int] = {}
        self.writes: list[tuple[int, int, int]] = []
        self.fail: set[int] = set()

    def set_channel(self, address: int, *, bus_v: float, shunt_mv: float) -> None:
        self.registers[(address, INA219_REG_BUS)] = round(bus_v / 0.004) << 3 | 0b10
        raw = round(shunt_mv * 100)
        self.registers[(address, INA219_REG_SHUNT)] = raw & 0xFFFF

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        if i2c_addr in self.fail:
            raise OSError(121, "Remote I/O error")
        return _smbus_word(self.registers[(i2c_addr, register)])

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None:
        self.writes.append((i2c_addr, register, value))


def test_ina219_bus_voltage_and_shunt_current_from_raw_words() -> None:
    # 12.8 V → 3200 × 4 mV in bits 15..3, conversion-ready bit set.
    assert ina219_bus_volts(_smbus_word(3200 << 3 | 0b10)) == pytest.approx(12.8)
    # +25.0 mV across 10 mΩ = 2.5 A; −12.0 mV = −1.2 A (two's complement, 10 µV per bit).
    assert ina219_shunt_amps(_smbus_word(2500), shunt_ohm=0.01) == pytest.approx(2.5)
    assert ina219_shunt_amps(_smbus_word((-1200) & 0xFFFF), shunt_ohm=0.01) == pytest.approx(-1.2)
    with pytest.raises(PowerReadError, match="overflow"):
        ina219_bus_volts(_smbus_word(3200 << 3 | 0b1))


def test_ina219_monitor_reads_panel_and_battery_and_infers_the_load() -> None:
    bus = FakeBus()
    bus.set_channel(0x40, bus_v=18.0, shunt_mv=20.0)  # panel: 20 mV / 10 mΩ = 2 A at 18 V
    bus.set_channel(0x41, bus_v=13.0, shunt_mv=10.0)  # battery charging at 1 A = 13 W
    monitor = Ina219Monitor(
        bus=bus,
        panel=Ina219Channel(0x40, shunt_ohm=0.01),
        battery=Ina219Channel(0x41, shunt_ohm=0.01),
        clock=CLOCK,
    )
    reading = monitor.read()
    assert reading.panel_w == pytest.approx(36.0)
    assert reading.battery_v == pytest.approx(13.0)
    assert reading.battery_a == pytest.approx(1.0)
    assert reading.load_w == pytest.approx(23.0)
    assert reading.battery_soc is None  # no fuel gauge: the agent estimates it
    # Both chips were configured (byte-swapped word, as SMBus sends it).
    assert {(a, r) for a, r, _ in bus.writes} == {
        (0x40, INA219_REG_CONFIG),
        (0x41, INA219_REG_CONFIG),
    }


def test_an_i2c_error_is_a_read_error_not_a_crash() -> None:
    bus = FakeBus()
    bus.set_channel(0x41, bus_v=13.0, shunt_mv=0.0)
    monitor = Ina219Monitor(bus=bus, panel=None, battery=Ina219Channel(0x41), clock=CLOCK)
    bus.fail.add(0x41)
    with pytest.raises(PowerReadError, match="0x41"):
        monitor.read()


def _supply(root: Path, name: str, **attributes: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for key, value in attributes.items():
        (folder / key).write_text(value + "\n", encoding="ascii")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "power_supply"
    _supply(
        root,
        "BAT0",
        type="Battery",
        voltage_now="12950000",
        current_now="-1500000",
        capacity="64",
        temp="312",
    )
    _supply(root, "AC", type="Mains", online="0")
    _supply(root, "solar", type="USB", voltage_now="18000000", current_now="1000000")
    return root


def test_sysfs_reads_battery_mains_and_a_panel_in_kernel_units(sysfs: Path) -> None:
    monitor = SysfsPowerMonitor(root=sysfs, panel="solar", clock=CLOCK)
    reading = monitor.read()
    assert reading.battery_v == pytest.approx(12.95)
    assert reading.battery_a == pytest.approx(-1.5)
    assert reading.battery_soc == pytest.approx(0.64)
    assert reading.battery_temp_c == pytest.approx(31.2)
    assert reading.mains_present is False
    assert reading.panel_w == pytest.approx(18.0)
    assert reading.load_w == pytest.approx(18.0 + 12.95 * 1.5)


def test_sysfs_garbage_and_missing_devices_are_named(sysfs: Path, tmp_path: Path) -> None:
    (sysfs / "BAT0" / "capacity").write_text("lots\n", encoding="ascii")
    with pytest.raises(PowerReadError, match="capacity"):
        SysfsPowerMonitor(root=sysfs, clock=CLOCK).read()
    with pytest.raises(BackendUnavailable, match="does not exist"):
        SysfsPowerMonitor(root=tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackendUnavailable, match="no Battery"):
        SysfsPowerMonitor(root=empty)


def test_unknown_power_monitors_and_cities_are_refused() -> None:
    assert set(power_monitor_names()) >= {"ina219", "sim", "sysfs"}
    with pytest.raises(HardwareError, match="unknown power monitor"):
        load_power_monitor("ups-hat-9000")
    with pytest.raises(HardwareError, match="unknown city"):
        load_power_monitor("sim", options={"city": "atlantis"})


def test_the_sim_backend_makes_a_sim_power_monitor() -> None:
    monitor = SimBackend(clock=CLOCK).power_monitor(options={"city": "karachi", "panel_w": 200})
    assert isinstance(monitor, SimPowerMonitor)
    assert monitor.site.spec.panel_w == 200


def _ina219() -> PowerMonitor:
    bus = FakeBus()
    bus.set_channel(0x40, bus_v=18.0, shunt_mv=5.0)
    bus.set_channel(0x41, bus_v=12.9, shunt_mv=-3.0)
    return Ina219Monitor(bus=bus, panel=Ina219Channel(0x40), battery=Ina219Channel(0x41))


def _smbus2_ina219() -> PowerMonitor:
    try:
        return load_power_monitor("ina219", options={"i2c_bus": 1})
    except BackendUnavailable as exc:
        pytest.skip(f"ina219 on a real I2C bus cannot load here: {exc}")


def _sysfs_real() -> PowerMonitor:
    try:
        return load_power_monitor("sysfs")
    except BackendUnavailable as exc:
        pytest.skip(f"no power_supply battery on this machine: {exc}")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: load_power_monitor("sim", clock=CLOCK), id="sim"),
        pytest.param(_ina219, id="ina219-fake-bus"),
        pytest.param(_smbus2_ina219, id="ina219-smbus2"),
        pytest.param(_sysfs_real, id="sysfs-this-machine"),
    ],
)
def test_every_power_monitor_keeps_the_contract(make: Callable[[], PowerMonitor]) -> None:
    monitor = make()
    try:
        reading = monitor.read()
        assert isinstance(reading, PowerReading)
        assert reading.at.tzinfo is not None
        for value in (reading.panel_w, reading.load_w):
            assert value is None or value >= 0.0
        assert reading.battery_soc is None or 0.0 <= reading.battery_soc <= 1.0
        monitor.set_operating_mode(2)  # accepted by every backend
    finally:
        monitor.close()


def test_power_monitor_options_are_checked_by_the_backends_own_model() -> None:
    # Refused before any library or bus is touched: a typo never reaches the I2C bus.
    with pytest.raises(HardwareError, match="batery_address"):
        load_power_monitor("ina219", options={"batery_address": 0x41})
    with pytest.raises(HardwareError, match="i2c_bus"):
        load_power_monitor("ina219", options={"i2c_bus": -1})
    with pytest.raises(HardwareError, match="soc"):
        load_power_monitor("sim", options={"soc": 1.5})
