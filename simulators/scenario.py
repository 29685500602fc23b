"""Scenario files for `nigehbaan sim --scenario FILE`: a fleet, its weather, and timed steps.

A scenario is YAML (or JSON) validated by `Scenario` (pydantic, unknown keys
refused, loaded file → text → dict so tests pass plain dicts):

- ``sites``: groups of simulated sites (city or lat/lon, panel, battery
  chemistry and capacity, mains, load by step, the site's autonomy target,
  and ``provisioned``: the designer's verdict the run is checked against);
- ``weather``: base cloud cover and cloudy spells (from day X to day Y, for
  some cities);
- ``start``, ``duration_h`` and ``speed``: simulated time (a
  `hardware.sim_clock.ScaledClock`) shared by every site's physics and every
  agent's power and telemetry loops, so the whole fleet sees the same sun;
- ``steps``: a list of timed actions, a discriminated union on ``action``
  (``press``, ``mains``). New actions (panic storms, network cuts, broker
  restarts) are new members of `Step`, each with its own model here and a
  branch in `ScenarioRunner._apply`.

`ScenarioRunner` runs it: every site is a real `edge_agent.agent.Agent` on
the ``sim`` hardware backend with a `hardware.power.SimPowerMonitor` over a
`hardware.solar_site.SolarSite`, connected to a real broker. The panic path
runs in real time. A node that sheds its last step stops (it is dark); the
runner boots it again (same data directory, so its outbox survives) when its
site's charge controller would reconnect the load. The result is a JSON
report (`ScenarioReport`).

Errors: `ScenarioError` (a bad file, with every problem named).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.agent import Agent
from edge_agent.outbox import StoredEvent
from edge_agent.power import PowerConfig, PowerManager
from hardware.backends import SimBackend
from hardware.battery import CHEMISTRIES, reserve_fraction
from hardware.button import SimButton
from hardware.power import SimPowerMonitor
from hardware.sim_clock import ScaledClock
from hardware.solar import CITIES
from hardware.solar_site import DEFAULT_LOADS_W, CloudySpell, SiteSpec, SolarSite, Weather
from proto.topics import NAME_PATTERN

__all__ = [
    "MainsStep",
    "PressStep",
    "Scenario",
    "ScenarioError",
    "ScenarioReport",
    "ScenarioRunner",
    "SiteGroup",
    "Step",
    "load_scenario",
    "parse_scenario",
]

logger = logging.getLogger(__name__)

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message names every problem found."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Spell(_Model):
    """Cloud cover `cloud_cover` from day `from_day` to day `to_day` (days since start)."""

    from_day: float = Field(ge=0.0, description="days after the scenario's start")
    to_day: float = Field(gt=0.0)
    cloud_cover: float = Field(ge=0.0, le=1.0, description="0 clear … 1 overcast")
    cities: tuple[str, ...] = Field(default=(), description="cities affected; empty: all")

    @model_validator(mode="after")
    def _ordered(self) -> Spell:
        if self.to_day <= self.from_day:
            raise ValueError("to_day must be after from_day")
        return self


class WeatherSpec(_Model):
    """Base cloud cover plus spells."""

    base_cloud_cover: float = Field(default=0.1, ge=0.0, le=1.0)
    spells: tuple[Spell, ...] = ()


class SiteGroup(_Model):
    """`count` identical sites."""

    group: str = Field(
        pattern=NAME_PATTERN, max_length=24, description="node ids: PREFIX-GROUP-NNN"
    )
    count: int = Field(ge=1, le=5000)
    city: str = Field(default="lahore", description="lahore | karachi | peshawar, or give lat/lon")
    lat: float | None = Field(default=None, ge=-90.0, le=90.0)
    lon: float | None = Field(default=None, ge=-180.0, le=180.0)
    district: str | None = Field(default=None, pattern=NAME_PATTERN)
    panel_w: float = Field(gt=0.0, le=10_000.0)
    system_derate: float = Field(
        default=0.75, gt=0.0, le=1.0, description="dust, heat and wiring losses; low = neglected"
    )
    chemistry: Literal["lifepo4", "lead_acid"] = "lifepo4"
    capacity_ah: float = Field(gt=0.0, le=10_000.0)
    initial_soc: float = Field(default=1.0, ge=0.0, le=1.0)
    mains: bool = False
    loads_w: tuple[float, ...] = Field(
        default=DEFAULT_LOADS_W, min_length=5, max_length=5, description="draw at steps 0..4"
    )
    enclosure_gain_c: float = Field(default=8.0, ge=0.0, le=80.0)
    resistance_factor: float = Field(default=1.0, ge=0.5, le=50.0, description=">1: worn battery")
    autonomy_target_h: float = Field(default=8.0, gt=0.0, le=1000.0)
    provisioned: bool = Field(
        description="the designer's verdict: keeps its autonomy target through the weather"
    )

    @model_validator(mode="after")
    def _place(self) -> SiteGroup:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if self.lat is None and self.city not in CITIES:
            raise ValueError(f"unknown city {self.city!r}: use one of {sorted(CITIES)} or lat/lon")
        return self


class PressStep(_Model):
    """Press node `index` of `group` at `at_h` (and every `every_h` until `until_h`)."""

    action: Literal["press"]
    at_h: float = Field(ge=0.0, description="simulated hours after the start")
    group: str = Field(pattern=NAME_PATTERN)
    index: int = Field(default=0, ge=0)
    every_h: float | None = Field(default=None, gt=0.0)
    until_h: float | None = Field(default=None, ge=0.0)


class MainsStep(_Model):
    """Mains supply off or on at `at_h` for a group (or one of its sites)."""

    action: Literal["mains"]
    at_h: float = Field(ge=0.0)
    group: str = Field(pattern=NAME_PATTERN)
    index: int | None = Field(default=None, ge=0, description="None: the whole group")
    present: bool


Step = Annotated[PressStep | MainsStep, Field(discriminator="action")]


class Scenario(_Model):
    """A whole scenario; see the module docstring."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    start: datetime = Field(description="simulated UTC start (e.g. local midnight)")
    duration_h: float = Field(gt=0.0, le=24 * 366)
    speed: float = Field(default=1.0, gt=0.0, le=1e6, description="simulated s per real s")
    node_prefix: str = Field(default="sim", pattern=NAME_PATTERN, max_length=16)
    power_interval_s: float = Field(default=300.0, ge=1.0, le=3600.0, description="sim seconds")
    telemetry_interval_s: float = Field(default=1800.0, ge=1.0, le=86_400.0)
    wake_reserve: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="a dark node boots again when its usable reserve is back to this",
    )
    weather: WeatherSpec = Field(default_factory=WeatherSpec)
    sites: tuple[SiteGroup, ...] = Field(min_length=1)
    steps: tuple[Step, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone (e.g. 2025-12-01T19:00:00Z)")
        groups = {g.group: g for g in self.sites}
        if len(groups) != len(self.sites):
            raise ValueError("site group names must be unique")
        for i, step in enumerate(self.steps):
            group = groups.get(step.group)
            if group is None:
                raise ValueError(f"steps[{i}]: no site group {step.group!r}")
            if step.index is not None and step.index >= group.count:
                raise ValueError(f"steps[{i}]: group {step.group!r} has sites 0..{group.count - 1}")
            if step.at_h > self.duration_h:
                raise ValueError(f"steps[{i}]: at_h {step.at_h} is after the end")
        return self

    @property
    def node_count(self) -> int:
        return sum(g.count for g in self.sites)

    def node_id(self, group: str, index: int) -> str:
        return f"{self.node_prefix}-{group}-{index:03d}"


def parse_scenario(data: Mapping[str, Any]) -> Scenario:
    """Dict → `Scenario`, or `ScenarioError` naming each problem with its place."""
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for item in exc.errors(include_url=False)[:10]:
            where = ".".join(str(p) for p in item["loc"]) or "(scenario)"
            problems.append(f"{where}: {item['msg']}")
        raise ScenarioError("bad scenario: " + "; ".join(problems)) from exc


def load_scenario(path: Path) -> Scenario:
    """File → text → dict → `Scenario`; YAML unless the name ends in ``.json``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping")
    try:
        return parse_scenario(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc


# ------------------------------------------------------------------ runner


@dataclass
class PressResult:
    """One scripted press and what became of it."""

    node_id: str
    sim_h: float
    step: int | None  # the node's policy step when pressed; None: dark
    event_id: str | None = None
    sent: bool = False
    reason: str = ""


@dataclass
class SimSite:
    """One site: its physics, its monitor, and the agent currently running on it."""

    node_id: str
    group: SiteGroup
    index: int
    site: SolarSite
    monitor: SimPowerMonitor
    config: dict[str, Any]
    agent: Agent | None = None
    task: asyncio.Task[None] | None = None
    boots: int = 0
    dark_since_h: float | None = None
    dark_periods: list[tuple[float, float | None]] = field(default_factory=list)
    min_soc: float = 1.0
    min_autonomy_h: float | None = None
    max_step: int = 0
    power_events: dict[str, int] = field(default_factory=dict)
    pending_presses: list[PressResult] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass
class ScenarioReport:
    """What the run did; written as JSON by the CLI."""

    scenario: str
    nodes: int
    speed: float
    sim_hours: float
    wall_s: float
    sites: list[dict[str, Any]]
    presses: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "nodes": self.nodes,
            "speed": self.speed,
            "sim_hours": round(self.sim_hours, 2),
            "wall_s": round(self.wall_s, 2),
            "went_dark": sorted(s["node_id"] for s in self.sites if s["dark_periods"]),
            "presses_sent": sum(1 for p in self.presses if p["sent"]),
            "presses_while_dark": sum(1 for p in self.presses if p["step"] is None),
            "sites": self.sites,
            "presses": self.presses,
        }


SiteTargetSink = Callable[[str, float], None]


class ScenarioRunner:
    """Runs a `Scenario` against a broker; see the module docstring."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        broker_url: str,
        data_dir: Path,
        agent_overrides: Mapping[str, Any] | None = None,
        tick_s: float = 0.02,
    ) -> None:
        self.scenario = scenario
        self.broker_url = broker_url
        self.data_dir = data_dir
        self.tick_s = tick_s
        # Paused until every node is connected: the week starts with the fleet up.
        self.clock = ScaledClock(start=scenario.start, speed=scenario.speed, paused=True)
        start = scenario.start
        self.weather = Weather(
            base_cloud_cover=scenario.weather.base_cloud_cover,
            spells=tuple(
                CloudySpell(
                    start=start + timedelta(days=s.from_day),
                    end=start + timedelta(days=s.to_day),
                    cloud_cover=s.cloud_cover,
                    cities=s.cities,
                )
                for s in scenario.weather.spells
            ),
        )
        self.sites: dict[str, SimSite] = {}
        for group in scenario.sites:
            for index in range(group.count):
                site = self._make_site(group, index, agent_overrides or {})
                self.sites[site.node_id] = site
        self.presses: list[PressResult] = []
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------- building

    def _make_site(self, group: SiteGroup, index: int, overrides: Mapping[str, Any]) -> SimSite:
        scenario = self.scenario
        node_id = scenario.node_id(group.group, index)
        city = CITIES.get(group.city)
        # Sites of a group stand a few hundred metres apart along a road.
        lat = (group.lat if group.lat is not None else city.lat if city else 0.0) + index * 0.002
        lon = group.lon if group.lon is not None else city.lon if city else 0.0
        spec = SiteSpec(
            city=group.city,
            lat=lat,
            lon=lon,
            panel_w=group.panel_w,
            chemistry=group.chemistry,
            capacity_ah=group.capacity_ah,
            mains=group.mains,
            mean_temp_c=city.mean_temp_c if city else 20.0,
            daily_swing_c=city.daily_swing_c if city else 6.0,
            enclosure_gain_c=group.enclosure_gain_c,
            resistance_factor=group.resistance_factor,
            loads_w=group.loads_w,
            system_derate=group.system_derate,
        )
        solar = SolarSite(spec=spec, weather=self.weather, at=scenario.start, soc=group.initial_soc)
        config: dict[str, Any] = {
            "node_id": node_id,
            "serial": f"SIM-{node_id}".upper()[:64],
            "site_id": f"{group.group}-{index:03d}",
            "district": group.district or group.city,
            "data_dir": str(self.data_dir / node_id),
            "location": {"lat": round(lat, 6), "lon": round(lon, 6)},
            "mqtt": {"url": self.broker_url, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0},
            "hardware": {"backend": "sim"},
            "outbox": {"synchronous": "normal", "resend_after_s": 2.0},
            "telemetry": {"interval_s": scenario.telemetry_interval_s},
            "power": {
                "enabled": True,
                "monitor": "sim",
                "interval_s": scenario.power_interval_s,
                "chemistry": group.chemistry,
                "capacity_ah": group.capacity_ah,
                "autonomy_target_h": group.autonomy_target_h,
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return SimSite(
            node_id=node_id,
            group=group,
            index=index,
            site=solar,
            monitor=SimPowerMonitor(site=solar, clock=self.clock),
            config=config,
        )

    def _boot(self, site: SimSite) -> None:
        power_config = PowerConfig.model_validate(site.config["power"])
        manager = PowerManager(
            config=power_config, monitor=site.monitor, clock=self.clock, node_id=site.node_id
        )
        agent = Agent.from_dict(site.config, backend=SimBackend(), power=manager)
        agent.add_listener(self._listener(site))
        site.agent = agent
        site.task = asyncio.ensure_future(agent.run())
        site.boots += 1

    def _listener(self, site: SimSite) -> Callable[[StoredEvent], None]:
        def on_event(stored: StoredEvent) -> None:
            if stored.event_type == "panic" and site.pending_presses:
                press = site.pending_presses.pop(0)
                press.event_id, press.sent = stored.event_id, True
            elif stored.event_type == "power":
                kind = json.loads(stored.payload).get("power", "?")
                site.power_events[kind] = site.power_events.get(kind, 0) + 1

        return on_event

    # -------------------------------------------------------------- running

    @property
    def sim_hours(self) -> float:
        return self.clock.elapsed() / 3600.0

    async def start(self, *, connect_timeout: float = 60.0) -> None:
        """Boot every node and wait for all to connect; simulated time starts then."""
        for site in self.sites.values():
            self._boot(site)
        deadline = time.monotonic() + connect_timeout
        while any(s.agent is not None and not s.agent.connected for s in self.sites.values()):
            if time.monotonic() > deadline:
                missing = [n for n, s in self.sites.items() if s.agent and not s.agent.connected]
                raise ScenarioError(f"{len(missing)} nodes did not connect, e.g. {missing[:3]}")
            await asyncio.sleep(0.05)
        self.clock.restart()
        logger.info("scenario %s: %d nodes up", self.scenario.name, len(self.sites))

    async def run(self, *, progress: Callable[[str], None] | None = None) -> ScenarioReport:
        """Start, play the steps until the end of simulated time, stop; the report."""
        wall0 = time.monotonic()
        await self.start()
        steps = sorted(
            ((s.at_h, i, s) for i, s in enumerate(self.scenario.steps)), key=lambda x: x[:2]
        )
        queue: list[tuple[float, int, PressStep | MainsStep]] = list(steps)
        next_progress = 0.0
        while (now_h := self.sim_hours) < self.scenario.duration_h:
            while queue and queue[0][0] <= now_h:
                at_h, order, step = queue.pop(0)
                self._apply(step, now_h)
                if isinstance(step, PressStep) and step.every_h:
                    again = at_h + step.every_h
                    if again <= min(
                        step.until_h or self.scenario.duration_h, self.scenario.duration_h
                    ):
                        queue.append((again, order, step))
                        queue.sort(key=lambda x: x[:2])
            self._watch(now_h)
            if progress is not None and now_h >= next_progress:
                progress(self._progress_line(now_h))
                next_progress = now_h + 24.0
            await asyncio.sleep(self.tick_s)
        end_h = self.sim_hours
        await self._drain()
        await self.stop()
        for site in self.sites.values():
            if site.dark_since_h is not None:
                site.dark_periods.append((site.dark_since_h, None))
        return ScenarioReport(
            scenario=self.scenario.name,
            nodes=len(self.sites),
            speed=self.scenario.speed,
            sim_hours=end_h,
            wall_s=time.monotonic() - wall0,
            sites=[self._site_report(s) for s in self.sites.values()],
            presses=[vars(p) for p in self.presses],
        )

    def _progress_line(self, now_h: float) -> str:
        running = sum(1 for s in self.sites.values() if s.running)
        connected = sum(1 for s in self.sites.values() if s.agent and s.agent.connected)
        dark = sum(1 for s in self.sites.values() if s.dark_since_h is not None)
        return (
            f"day {now_h / 24:4.1f}: {running} running, {connected} connected, {dark} dark, "
            f"{len(self.presses)} presses"
        )

    def _apply(self, step: PressStep | MainsStep, now_h: float) -> None:
        if isinstance(step, PressStep):
            site = self.sites[self.scenario.node_id(step.group, step.index)]
            self._tasks.append(asyncio.ensure_future(self._press(site, now_h)))
        else:
            group = next(g for g in self.scenario.sites if g.group == step.group)
            indices = (
                range(group.count) if step.index is None else range(step.index, step.index + 1)
            )
            for index in indices:
                site = self.sites[self.scenario.node_id(step.group, index)]
                site.site.advance(self.clock.now())
                site.site.set_mains(step.present)
            logger.info("mains %s for %s at %.1f h", step.present, step.group, now_h)

    async def _press(self, site: SimSite, now_h: float) -> None:
        agent = site.agent
        if not site.running or agent is None:
            self.presses.append(PressResult(site.node_id, now_h, None, reason="node dark"))
            return
        step = agent.power.step if agent.power else 0
        press = PressResult(site.node_id, now_h, step)
        self.presses.append(press)
        site.pending_presses.append(press)
        button = agent.button
        if not isinstance(button, SimButton):
            press.reason = "no simulated button"
            return
        if agent.uptime_s == 0.0:
            # Booted but its loop has not started: a real pillar's button is dead then too.
            press.reason = "node booting"
            site.pending_presses.remove(press)
            return
        button.press()
        await asyncio.sleep(0.08)
        button.release()
        await asyncio.sleep(0.05)  # debounce and the outbox write
        if not press.sent and (not site.running or (agent.power is not None and agent.power.dark)):
            press.reason = "went dark during the press"

    def _watch(self, now_h: float) -> None:
        for site in self.sites.values():
            agent = site.agent
            if agent is not None and agent.power is not None:
                manager = agent.power
                if manager.charge is not None:
                    site.min_soc = min(site.min_soc, manager.charge.soc)
                if manager.autonomy is not None:
                    site.min_autonomy_h = min(site.min_autonomy_h or 1e9, manager.autonomy)
                site.max_step = max(site.max_step, manager.step)
            if site.running:
                continue
            if site.dark_since_h is None:
                site.dark_since_h = now_h
                logger.info("%s went dark at %.1f h", site.node_id, now_h)
            state = site.site.advance(self.clock.now())
            battery = CHEMISTRIES[site.group.chemistry]
            if reserve_fraction(battery, state.soc) >= self.scenario.wake_reserve or (
                state.mains_present
            ):
                site.dark_periods.append((site.dark_since_h, now_h))
                site.dark_since_h = None
                logger.info("%s boots again at %.1f h", site.node_id, now_h)
                self._boot(site)

    async def _drain(self, *, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [
                s for s in self.sites.values() if s.running and s.agent and s.agent.outbox_depth
            ]
            if not waiting:
                return
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop every running agent."""
        for site in self.sites.values():
            if site.agent is not None and site.running:
                site.agent.stop()
        for site in self.sites.values():
            if site.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(site.task, 10)

    def _site_report(self, site: SimSite) -> dict[str, Any]:
        return {
            "node_id": site.node_id,
            "group": site.group.group,
            "site_id": site.config["site_id"],
            "provisioned": site.group.provisioned,
            "autonomy_target_h": site.group.autonomy_target_h,
            "boots": site.boots,
            "dark_periods": [
                [round(a, 2), round(b, 2) if b is not None else None] for a, b in site.dark_periods
            ],
            "min_soc": round(site.min_soc, 4),
            "min_autonomy_h": round(site.min_autonomy_h, 2)
            if site.min_autonomy_h is not None
            else None,
            "max_step": site.max_step,
            "power_events": dict(sorted(site.power_events.items())),
            "final_soc": round(site.site.soc, 4),
        }

    def site_targets(self) -> dict[str, float]:
        """Every site id and its autonomy target (to set on the server)."""
        return {s.config["site_id"]: s.group.autonomy_target_h for s in self.sites.values()}
