"""Power on the node: state of charge, hours of autonomy, load shedding, power events.

The pure part takes readings and returns values: `estimate_charge` (state of
charge from a fuel gauge, or coulomb counting corrected by the resting
voltage), `autonomy_h` (hours the usable charge lasts at the present load),
`select_step` (which load-shedding step the reserve calls for, with
hysteresis so a node does not flap at a threshold) and `battery_faults`
(voltage sag under load, over-temperature).

`PowerManager` is the thin runner around them (and `PowerComponent` puts it in
the node as a component): every `PowerConfig.interval_s`
of its clock it reads the `hardware.power.PowerMonitor`, updates its state,
tells the monitor the operating mode, and writes a `PowerEvent` through the
agent's durable outbox for each change: ``mains_lost``/``mains_restored``,
``autonomy_low``/``autonomy_restored`` (against the node's configured target),
``policy_step`` (entering or leaving a step) and ``battery_fault``.

Steps shed load in order: lower analytics rate → face recognition off →
cameras off → dark. Only the last step may shed the panic button and its
uplink; entering it is the node's orderly low-voltage shutdown (the agent
stops after the event, and the site's charge controller or an RTC wakes it
when the sun has charged the battery again).

Time comes from the manager's clock, so a simulated fleet can run its power
on a `hardware.sim_clock.ScaledClock` while the panic path stays real time.
Power events and telemetry carry that clock's time in ``ts``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from edge_agent.component import CommandHandler, Health, NodeContext
from hardware.battery import (
    CHEMISTRIES,
    Chemistry,
    autonomy_hours,
    reserve_fraction,
    sag_resistance_ohm,
)
from hardware.clock import Clock
from hardware.errors import HardwareError
from hardware.power import MONITORS, PowerMonitor, PowerMonitorConfig, PowerReading
from hardware.sim_clock import sleep_on
from proto.messages import Capability, EventBase, PowerEvent, PowerTelemetry
from proto.topics import NAME_PATTERN

__all__ = [
    "DEFAULT_STEPS",
    "ChargeEstimate",
    "PolicyStep",
    "PowerComponent",
    "PowerConfig",
    "PowerManager",
    "PowerNotice",
    "autonomy_h",
    "battery_faults",
    "estimate_charge",
    "select_step",
]

logger = logging.getLogger(__name__)

PowerKind = Literal[
    "mains_lost",
    "mains_restored",
    "autonomy_low",
    "autonomy_restored",
    "policy_step",
    "battery_fault",
]
AUTONOMY_CAP_H = 999.0
_REST_CURRENT_C = 0.02  # below this share of capacity (A per Ah) the voltage is a resting one


def _monitor(value: Any) -> Any:
    if value is None or isinstance(value, PowerMonitorConfig):
        return value
    if isinstance(value, str):  # the old spelling: monitor = "ina219"
        value = {"type": value}
    if not isinstance(value, Mapping):
        raise ValueError("[power.monitor] must be a table with a 'type' key")
    try:
        return MONITORS.validate(value)
    except HardwareError as exc:
        raise ValueError(str(exc)) from None


MonitorSelection = Annotated[SerializeAsAny[PowerMonitorConfig] | None, BeforeValidator(_monitor)]


class PolicyStep(BaseModel):
    """One load-shedding step: entered when the usable reserve falls below `below_reserve`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="reported in policy_step events")
    below_reserve: float = Field(
        gt=0.0,
        le=1.0,
        title="Enter below",
        description="share of the usable charge (0 at the chemistry's floor, 1 full)",
    )
    analytics_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="share of frames analysed (1 = all)"
    )
    face_recognition: bool = Field(default=True, description="face recognition stays on")
    cameras: bool = Field(default=True, description="cameras stay powered")
    panic: bool = Field(
        default=True,
        description="panic button and uplink stay up; only the last step may shed them",
    )


DEFAULT_STEPS: tuple[PolicyStep, ...] = (
    PolicyStep(name="analytics_reduced", below_reserve=0.50, analytics_rate=0.5),
    PolicyStep(name="face_off", below_reserve=0.35, analytics_rate=0.5, face_recognition=False),
    PolicyStep(
        name="cameras_off",
        below_reserve=0.20,
        analytics_rate=0.0,
        face_recognition=False,
        cameras=False,
    ),
    PolicyStep(
        name="dark",
        below_reserve=0.03,
        analytics_rate=0.0,
        face_recognition=False,
        cameras=False,
        panic=False,
    ),
)


class PowerConfig(BaseModel):
    """The ``[power]`` section of agent.toml: the monitor, the battery and the policy."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="measure power and shed load")
    monitor: MonitorSelection = Field(
        default=None,
        description="[power.monitor] type = ina219 | sysfs | sim (or a registered one) and its "
        "options; unset: the board's default monitor",
    )
    interval_s: float = Field(
        default=60.0, ge=0.01, le=3600.0, description="seconds between readings"
    )
    chemistry: Literal["lifepo4", "lead_acid"] = Field(
        default="lifepo4", description="battery chemistry (voltage curve, floor, limits)"
    )
    capacity_ah: float = Field(default=100.0, gt=0.0, le=10_000.0, description="rated capacity")
    autonomy_target_h: float = Field(
        default=8.0, gt=0.0, le=1000.0, description="autonomy_low below this (site's target)"
    )
    restore_factor: float = Field(
        default=1.25,
        ge=1.0,
        le=5.0,
        description="autonomy_restored at target × this, back at step 0",
    )
    hysteresis: float = Field(
        default=0.05, ge=0.0, le=0.5, description="reserve above a threshold needed to leave a step"
    )
    sag_factor: float = Field(
        default=3.0, gt=1.0, le=100.0, description="battery_fault when resistance ≥ healthy × this"
    )
    steps: tuple[PolicyStep, ...] = Field(
        default=DEFAULT_STEPS,
        max_length=16,
        description="load-shedding steps in the order they are entered ([[power.steps]])",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_monitor_spelling(cls, data: Any) -> Any:
        """``monitor = "ina219"`` + ``monitor_options = {...}`` → ``[power.monitor]``."""
        if not isinstance(data, Mapping) or "monitor_options" not in data:
            return data
        data = dict(data)
        options = data.pop("monitor_options") or {}
        monitor = data.get("monitor")
        if not isinstance(options, Mapping):
            raise ValueError("monitor_options must be a table")
        if isinstance(monitor, str):
            data["monitor"] = {**options, "type": monitor}
        elif options:
            raise ValueError(
                "monitor_options needs a named monitor: write [power.monitor] "
                'type = "<ina219|sysfs|sim>" with these options in that table'
            )
        logger.warning(
            "agent.toml: [power] monitor_options is deprecated; write [power.monitor] "
            'type = "%s" with the options in that table',
            monitor,
        )
        return data

    @field_validator("steps")
    @classmethod
    def _steps_shed_in_order(cls, steps: tuple[PolicyStep, ...]) -> tuple[PolicyStep, ...]:
        for before, after in itertools.pairwise(steps):
            if after.below_reserve >= before.below_reserve:
                raise ValueError("each step must start below the previous one's threshold")
            if (before.cameras < after.cameras) or (
                before.face_recognition < after.face_recognition
            ):
                raise ValueError("a later step may not switch back on what an earlier one shed")
        if any(not s.panic for s in steps[:-1]):
            raise ValueError("only the last step may shed the panic button and its uplink")
        return steps

    @property
    def battery(self) -> Chemistry:
        return CHEMISTRIES[self.chemistry]


# -------------------------------------------------------------- pure part


@dataclass(frozen=True)
class ChargeEstimate:
    """State of charge and what it means."""

    soc: float
    reserve: float  # share of the usable charge left
    source: Literal["gauge", "voltage", "coulomb"]


def estimate_charge(
    reading: PowerReading,
    *,
    battery: Chemistry,
    capacity_ah: float,
    previous: ChargeEstimate | None,
    elapsed_s: float,
) -> ChargeEstimate | None:
    """State of charge from a fuel gauge if there is one, else voltage and coulomb counting."""
    if reading.battery_soc is not None:
        soc = reading.battery_soc
        return ChargeEstimate(soc, reserve_fraction(battery, soc), "gauge")
    if reading.battery_v is None:
        return None
    amps = reading.battery_a or 0.0
    resting = abs(amps) < _REST_CURRENT_C * capacity_ah
    if previous is None or resting:
        soc = battery.soc_from_voltage(reading.battery_v)
        source: Literal["voltage", "coulomb"] = "voltage"
    else:
        soc = previous.soc + amps * elapsed_s / 3600.0 / capacity_ah
        source = "coulomb"
    soc = min(1.0, max(0.0, soc))
    return ChargeEstimate(soc, reserve_fraction(battery, soc), source)


def autonomy_h(
    reading: PowerReading, charge: ChargeEstimate | None, *, battery: Chemistry, capacity_ah: float
) -> float | None:
    """Hours of autonomy at the present load (no sun, no mains), or None if unknown."""
    if charge is None:
        return None
    load = reading.load_w
    if load is None and reading.battery_v is not None and reading.battery_a is not None:
        load = max(0.0, -reading.battery_v * reading.battery_a)
    if load is None:
        return None
    temp = reading.battery_temp_c if reading.battery_temp_c is not None else 25.0
    return autonomy_hours(
        chemistry=battery,
        capacity_ah=capacity_ah,
        soc=charge.soc,
        load_w=load,
        temp_c=temp,
        cap_h=AUTONOMY_CAP_H,
    )


def select_step(
    *, reserve: float, current: int, steps: tuple[PolicyStep, ...], hysteresis: float
) -> int:
    """The load-shedding step for `reserve`: 0 is normal, ``len(steps)`` the last.

    Draining enters a step as soon as the reserve is below its threshold;
    recovering leaves it only once the reserve is `hysteresis` above it.
    """
    target = sum(1 for step in steps if reserve < step.below_reserve)
    if target >= current:
        return target
    new = current
    while new > target and reserve >= steps[new - 1].below_reserve + hysteresis:
        new -= 1
    return new


def battery_faults(
    reading: PowerReading,
    charge: ChargeEstimate | None,
    *,
    battery: Chemistry,
    capacity_ah: float,
    sag_factor: float,
) -> dict[str, str]:
    """Faults the reading shows, by code: ``over_temperature``, ``voltage_sag``."""
    faults: dict[str, str] = {}
    temp = reading.battery_temp_c
    if temp is not None and temp > battery.max_temp_c:
        faults["over_temperature"] = (
            f"battery at {temp:.1f} °C, above {battery.max_temp_c:.0f} °C for {battery.name}"
        )
    if charge is not None and reading.battery_v is not None and reading.battery_a is not None:
        resistance = sag_resistance_ohm(
            chemistry=battery, soc=charge.soc, volts=reading.battery_v, amps=reading.battery_a
        )
        healthy = battery.resistance_ohm(capacity_ah)
        if resistance is not None and resistance >= healthy * sag_factor:
            faults["voltage_sag"] = (
                f"voltage sag: {reading.battery_v:.2f} V at {-reading.battery_a:.1f} A "
                f"discharge, {resistance * 1000:.0f} mΩ (healthy {healthy * 1000:.0f} mΩ)"
            )
    return faults


# ------------------------------------------------------------------ runner


@dataclass(frozen=True)
class PowerNotice:
    """A change the node reports as a `PowerEvent`."""

    power: PowerKind
    detail: str | None = None


EventBuilder = Callable[[str, int], EventBase]
EventWriter = Callable[[EventBuilder], object]


@dataclass
class PowerManager:
    """Reads the monitor, decides the step, reports changes; see the module docstring."""

    config: PowerConfig
    monitor: PowerMonitor
    clock: Clock
    node_id: str
    reading: PowerReading | None = None
    charge: ChargeEstimate | None = None
    autonomy: float | None = None
    step: int = 0
    mains: bool | None = None
    autonomy_low: bool = False
    faults: dict[str, str] = field(default_factory=dict)
    read_errors: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)  # (clock time, step)
    _last_at: float | None = None

    @property
    def last_step(self) -> int:
        return len(self.config.steps)

    @property
    def dark(self) -> bool:
        """True in a step that sheds the panic path (the node is going down)."""
        return self.step > 0 and not self.config.steps[self.step - 1].panic

    def step_name(self, step: int | None = None) -> str:
        step = self.step if step is None else step
        return "normal" if step == 0 else self.config.steps[step - 1].name

    def sample(self) -> list[PowerNotice]:
        """Take one reading and return what changed (the caller writes the events)."""
        try:
            reading = self.monitor.read()
        except HardwareError:
            self.read_errors += 1
            logger.warning("%s: power reading failed", self.node_id, exc_info=True)
            return []
        now = self.clock.monotonic()
        elapsed = 0.0 if self._last_at is None else max(0.0, now - self._last_at)
        self._last_at = now
        cfg = self.config
        self.reading = reading
        self.charge = estimate_charge(
            reading,
            battery=cfg.battery,
            capacity_ah=cfg.capacity_ah,
            previous=self.charge,
            elapsed_s=elapsed,
        )
        self.autonomy = autonomy_h(
            reading, self.charge, battery=cfg.battery, capacity_ah=cfg.capacity_ah
        )
        notices: list[PowerNotice] = []

        if reading.mains_present is not None:
            if self.mains is not None and reading.mains_present != self.mains:
                notices.append(
                    PowerNotice("mains_restored" if reading.mains_present else "mains_lost")
                )
            self.mains = reading.mains_present

        if self.charge is not None:
            new_step = select_step(
                reserve=self.charge.reserve,
                current=self.step,
                steps=cfg.steps,
                hysteresis=cfg.hysteresis,
            )
            if new_step != self.step:
                old = self.step
                self.step = new_step
                self.history.append((now, new_step))
                self.monitor.set_operating_mode(new_step)
                verb = "shedding" if new_step > old else "restoring"
                notices.append(
                    PowerNotice(
                        "policy_step",
                        f"{self.step_name()}: {verb} load (step {old} → {new_step})",
                    )
                )

        on_battery = not self.mains
        if self.autonomy is not None:
            target = cfg.autonomy_target_h
            if not self.autonomy_low and on_battery and self.autonomy < target:
                self.autonomy_low = True
                notices.append(
                    PowerNotice(
                        "autonomy_low", f"{self.autonomy:.1f} h at {reading.load_w or 0:.1f} W"
                    )
                )
            elif self.autonomy_low and (
                not on_battery or (self.step == 0 and self.autonomy >= target * cfg.restore_factor)
            ):
                self.autonomy_low = False
                notices.append(PowerNotice("autonomy_restored", f"{self.autonomy:.1f} h"))

        faults = battery_faults(
            reading,
            self.charge,
            battery=cfg.battery,
            capacity_ah=cfg.capacity_ah,
            sag_factor=cfg.sag_factor,
        )
        for code, text in faults.items():
            if code not in self.faults:
                notices.append(PowerNotice("battery_fault", f"{code}: {text}"[:1000]))
        self.faults = faults
        return notices

    def telemetry(self) -> PowerTelemetry | None:
        """The latest reading as the `Telemetry.power` block."""
        r = self.reading
        if r is None:
            return None

        def rounded(value: float | None, digits: int, low: float, high: float) -> float | None:
            return None if value is None else round(min(high, max(low, value)), digits)

        return PowerTelemetry(
            panel_w=rounded(r.panel_w, 1, 0.0, 10_000.0),
            battery_v=rounded(r.battery_v, 3, 0.0, 100.0),
            battery_a=rounded(r.battery_a, 3, -500.0, 500.0),
            battery_soc=rounded(self.charge.soc if self.charge else None, 4, 0.0, 1.0),
            battery_temp_c=rounded(r.battery_temp_c, 1, -60.0, 150.0),
            load_w=rounded(r.load_w, 2, 0.0, 10_000.0),
            mains_present=r.mains_present,
            autonomy_h=rounded(self.autonomy, 2, 0.0, 10_000.0),
            policy_step=self.step,
        )

    def event_builder(self, notice: PowerNotice) -> EventBuilder:
        """How to build the `PowerEvent` for `notice` once the outbox gives it id and seq."""
        soc = round(self.charge.soc, 4) if self.charge is not None else None
        autonomy = round(min(self.autonomy, 10_000.0), 2) if self.autonomy is not None else None
        at = self.clock.now()
        step = self.step

        def build(event_id: str, seq: int) -> EventBase:
            return PowerEvent(
                node_id=self.node_id,
                ts=at,
                event_id=event_id,
                seq=seq,
                power=notice.power,
                battery_soc=soc,
                autonomy_h=autonomy,
                policy_step=step,
                detail=notice.detail,
            )

        return build

    async def run(
        self,
        *,
        write: EventWriter,
        on_dark: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Sample forever; write an event per notice; call `on_dark` on entering the last step."""
        while True:
            notices = self.sample()
            for notice in notices:
                logger.info("%s: power %s %s", self.node_id, notice.power, notice.detail or "")
                write(self.event_builder(notice))
            if self.dark and on_dark is not None and any(n.power == "policy_step" for n in notices):
                logger.critical("%s: battery exhausted, shedding the panic path", self.node_id)
                await on_dark()
            await sleep_on(self.clock, self.config.interval_s)


class PowerComponent:
    """`PowerManager` as a node component: samples, writes power events, reports the step.

    Telemetry gets the ``power`` block; the node state gets ``power_step``;
    on entering the last step (the one that sheds the panic path) it gives the
    final power event a moment to be acked and stops the node. Healthy while
    the monitor gives readings: the latest sample read, and not too long ago
    on the manager's clock.
    """

    name = "power"

    def __init__(self, manager: PowerManager) -> None:
        self.manager = manager
        self.failed_reads = 0  # consecutive
        self.last_read_at: float | None = None

    @property
    def capabilities(self) -> Sequence[Capability]:
        return (Capability.POWER_MONITOR,)

    def commands(self) -> Mapping[str, CommandHandler]:
        return {}

    def telemetry(self) -> Mapping[str, Any]:
        return {"power": self.manager.telemetry()}

    def health(self) -> Health:
        manager = self.manager
        if self.failed_reads:
            return Health(False, f"power monitor: {self.failed_reads} failed readings in a row")
        if self.last_read_at is None:
            return Health(False, "power monitor: no reading yet")
        age = manager.clock.monotonic() - self.last_read_at
        if age > 3 * manager.config.interval_s:
            return Health(False, f"power monitor: no reading for {age:.0f}s")
        return Health(True, f"power monitor reading, step {manager.step_name()}")

    async def run(self, ctx: NodeContext) -> None:
        manager = self.manager
        while True:
            errors = manager.read_errors
            notices = manager.sample()
            if manager.read_errors > errors:
                self.failed_reads += 1
            else:
                self.failed_reads = 0
                self.last_read_at = manager.clock.monotonic()
            ctx.set_state(power_step=manager.step)
            for notice in notices:
                logger.info("%s: power %s %s", ctx.node_id, notice.power, notice.detail or "")
                ctx.write_event(manager.event_builder(notice))
            if manager.dark and any(n.power == "policy_step" for n in notices):
                logger.critical("%s: battery exhausted, shedding the panic path", ctx.node_id)
                await self._go_dark(ctx)
            await sleep_on(manager.clock, manager.config.interval_s)

    async def _go_dark(self, ctx: NodeContext) -> None:
        """The last power step: give the final power event a moment to be acked, then stop."""
        ctx.counters["power_dark"] += 1
        for _ in range(20):
            if ctx.state.outbox_depth == 0 or not ctx.state.connected:
                break
            await ctx.clock.sleep(0.05)
        ctx.request_stop()
