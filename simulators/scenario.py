"""Scenario files for `nigehbaan sim --scenario FILE`: a fleet, its weather, and timed steps.

A scenario is YAML (or JSON) validated by `Scenario` (pydantic, unknown keys
refused, loaded file → text → dict so tests pass plain dicts); the format
reference is docs/simulator.md:

- ``sites``: groups of simulated sites: their ``kind`` (``panic_pillar``,
  ``camera_node`` — cameras with synthetic plate reads, see
  `simulators.synthetic_scene` —, or ``mixed``, a pillar with cameras), their
  ``district`` or ``districts`` (sites spread over them in turn), and their
  power (city or lat/lon, panel, battery chemistry and capacity, mains, load
  by step, autonomy target, and ``provisioned``: the designer's verdict);
- ``districts``: the city's districts (steps and groups must use these);
- ``weather``: base cloud cover and cloudy spells;
- ``start``, ``duration_h`` (or ``duration_s``) and ``speed``: simulated
  time (a `hardware.sim_clock.ScaledClock`) shared by every site's physics
  and every agent's power and telemetry loops; ``speed: 1`` is real time;
- ``steps``: timed actions, a discriminated union on ``action``: ``press``,
  ``mains``, ``panic_storm``, ``power_loss``, ``node_offline``,
  ``network_cut``, ``broker_restart``; each takes ``at_h`` or ``at_s``.
  A new action is a new member of `Step` with a branch in
  `ScenarioRunner._apply`.

`ScenarioRunner` runs it: every site is a real `edge_agent.agent.Agent` on
the ``sim`` hardware backend with a `hardware.power.SimPowerMonitor` over a
`hardware.solar_site.SolarSite`, connected to a real broker — through a
`simulators.netcut.NetCut` relay (one per district) when a ``network_cut``
step names its district. The panic path runs in real time. A node that sheds
its last step stops (it is dark); the runner boots it again (same data
directory, so its outbox survives) when its site's charge controller would
reconnect the load; ``node_offline`` stops and restarts nodes the same way.
Every loop is bounded: the run by ``duration``, the drain and each step's
wait for reconnection by a timeout. The result is a JSON report
(`ScenarioReport`: per step what happened, per site, per press, and totals).
`scale_fleet` resizes a scenario (``--nodes``); `ensure_fd_limit` raises
RLIMIT_NOFILE or says how many open files the fleet needs.

One runner can also play one `Shard` of the fleet — the nodes whose position
in file order is ``index`` modulo ``count`` — so that a fleet too big for one
process's open-files limit runs in several (`simulators.scenario_shards`,
``--processes``). Everything random that picks nodes (`pick_targets`,
`storm_plan`) is a pure function of the whole scenario, so every shard picks
the same global nodes the single process would and acts only on its own;
`plan_processes` chooses how many processes a fleet needs.

Errors: `ScenarioError` (a bad file or a step the run cannot do, every
problem named).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.agent import Agent
from edge_agent.outbox import StoredEvent
from edge_agent.power import PowerConfig, PowerManager
from hardware.backends import SimBackend
from hardware.battery import CHEMISTRIES, reserve_fraction
from hardware.button import SimButton
from hardware.errors import HardwareError
from hardware.power import SimPowerMonitor
from hardware.sim_clock import ScaledClock, sleep_on
from hardware.solar import CITIES
from hardware.solar_site import DEFAULT_LOADS_W, CloudySpell, SiteSpec, SolarSite, Weather
from proto.messages import Capability
from proto.topics import NAME_PATTERN
from simulators.netcut import NetCut
from simulators.synthetic_scene import SyntheticScene, plate_event_builder

__all__ = [
    "BrokerRestartStep",
    "MainsStep",
    "NetworkCutStep",
    "NodeOfflineStep",
    "PanicStormStep",
    "PowerLossStep",
    "PressStep",
    "Scenario",
    "ScenarioError",
    "ScenarioReport",
    "ScenarioRunner",
    "Shard",
    "SiteGroup",
    "Step",
    "check_runnable",
    "ensure_fd_limit",
    "fds_needed",
    "fleet_positions",
    "format_summary",
    "load_scenario",
    "parse_scenario",
    "pick_targets",
    "plan_processes",
    "processes_needed",
    "scale_fleet",
    "shard_fds_needed",
    "storm_plan",
]

logger = logging.getLogger(__name__)

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message names every problem found."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NodeKind = Literal["panic_pillar", "camera_node", "mixed"]
KIND_CAPABILITIES: dict[str, tuple[Capability, ...]] = {
    "panic_pillar": (Capability.PANIC_BUTTON, Capability.INDICATOR),
    "camera_node": (Capability.CAMERA, Capability.ANPR),
    "mixed": (Capability.PANIC_BUTTON, Capability.INDICATOR, Capability.CAMERA, Capability.ANPR),
}


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
    count: int = Field(ge=1, le=20_000)
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
    kind: NodeKind = Field(
        default="panic_pillar",
        description="panic_pillar (button, light) | camera_node (cameras, synthetic plates) | "
        "mixed (a pillar with cameras)",
    )
    districts: tuple[str, ...] = Field(
        default=(), description="spread the group's sites over these districts, in turn"
    )
    cameras: int = Field(default=1, ge=1, le=16, description="cameras per camera/mixed node")
    plates_per_min: float = Field(
        default=2.0, ge=0.0, le=600.0, description="synthetic plate reads per camera node a minute"
    )

    @model_validator(mode="after")
    def _place(self) -> SiteGroup:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if self.lat is None and self.city not in CITIES:
            raise ValueError(f"unknown city {self.city!r}: use one of {sorted(CITIES)} or lat/lon")
        if self.district is not None and self.districts:
            raise ValueError("give district or districts, not both")
        for name in self.districts:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"districts: {name!r} is not a district name (a-z, 0-9, -, _)")
        return self

    def district_of(self, index: int) -> str:
        """The district site `index` stands in."""
        if self.districts:
            return self.districts[index % len(self.districts)]
        return self.district or self.city

    @property
    def district_names(self) -> tuple[str, ...]:
        return self.districts or (self.district or self.city,)

    @property
    def has_button(self) -> bool:
        return self.kind != "camera_node"

    @property
    def has_camera(self) -> bool:
        return self.kind != "panic_pillar"


def _hours_from_seconds(data: Any, stems: tuple[str, ...]) -> Any:
    """Accept ``<stem>_s`` (simulated seconds) for ``<stem>_h``; both at once is an error."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for stem in stems:
        hours, seconds = f"{stem}_h", f"{stem}_s"
        if seconds not in out:
            continue
        if hours in out:
            raise ValueError(f"give {hours} or {seconds}, not both")
        value = out.pop(seconds)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{seconds} must be a number of seconds, not {value!r}")
        if value < 0:
            raise ValueError(f"{seconds} must not be negative (got {value})")
        out[hours] = value / 3600.0
    return out


class _Step(_Model):
    """Every step happens at `at_h` simulated hours (or `at_s` seconds) after the start."""

    at_h: float = Field(ge=0.0, description="simulated hours after the start (or give at_s)")

    @model_validator(mode="before")
    @classmethod
    def _seconds(cls, data: Any) -> Any:
        return _hours_from_seconds(data, ("at", "every", "until"))

    @property
    def at_s(self) -> float:
        return self.at_h * 3600.0

    @property
    def lasts_s(self) -> float:
        """How long the step keeps going after `at_s` (its restore comes then)."""
        return 0.0


class _Targeted(_Step):
    """Steps aimed at part of the fleet: a district, a site group (or one site), all."""

    district: str | None = Field(default=None, pattern=NAME_PATTERN)
    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    index: int | None = Field(default=None, ge=0, description="one site of `group`")
    count: int | None = Field(
        default=None, ge=1, le=100_000, description="at most this many of them, picked (seeded)"
    )


class PressStep(_Step):
    """Press node `index` of `group` at `at_h` (and every `every_h` until `until_h`)."""

    action: Literal["press"]
    group: str = Field(pattern=NAME_PATTERN)
    index: int = Field(default=0, ge=0)
    every_h: float | None = Field(default=None, gt=0.0)
    until_h: float | None = Field(default=None, ge=0.0)


class MainsStep(_Step):
    """Mains supply off or on at `at_h` for a group (or one of its sites)."""

    action: Literal["mains"]
    group: str = Field(pattern=NAME_PATTERN)
    index: int | None = Field(default=None, ge=0, description="None: the whole group")
    present: bool


class PanicStormStep(_Targeted):
    """`presses` presses on random pillars of the target, spread over `within_s` seconds."""

    action: Literal["panic_storm"]
    presses: int = Field(ge=1, le=100_000)
    within_s: float = Field(gt=0.0, le=86_400.0)

    @property
    def lasts_s(self) -> float:
        return self.within_s


class PowerLossStep(_Targeted):
    """Mains off for the target's sites; back after `duration_s` (None: stays off)."""

    action: Literal["power_loss"]
    duration_s: float | None = Field(default=None, gt=0.0, le=366 * 86_400.0)

    @property
    def lasts_s(self) -> float:
        return self.duration_s or 0.0


class NodeOfflineStep(_Targeted):
    """Stop the target's nodes; start them again after `duration_s`, same identity and outbox."""

    action: Literal["node_offline"]
    duration_s: float = Field(gt=0.0, le=366 * 86_400.0)

    @property
    def lasts_s(self) -> float:
        return self.duration_s


class NetworkCutStep(_Step):
    """Cut a whole district's network (its relay drops and refuses connections), then restore."""

    action: Literal["network_cut"]
    district: str = Field(pattern=NAME_PATTERN)
    duration_s: float = Field(gt=0.0, le=366 * 86_400.0)

    @property
    def lasts_s(self) -> float:
        return self.duration_s


class BrokerRestartStep(_Step):
    """SIGKILL the broker the scenario owns; start it again (same port) after `down_s`."""

    action: Literal["broker_restart"]
    down_s: float = Field(default=3.0, ge=0.0, le=600.0)

    @property
    def lasts_s(self) -> float:
        return self.down_s


AnyStep = (
    PressStep
    | MainsStep
    | PanicStormStep
    | PowerLossStep
    | NodeOfflineStep
    | NetworkCutStep
    | BrokerRestartStep
)
Step = Annotated[AnyStep, Field(discriminator="action")]


class Scenario(_Model):
    """A whole scenario; see the module docstring."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    start: datetime = Field(description="simulated UTC start (e.g. local midnight)")
    duration_h: float = Field(gt=0.0, le=24 * 366, description="or give duration_s")
    speed: float = Field(default=1.0, gt=0.0, le=1e6, description="simulated s per real s")
    seed: int = Field(default=1, description="picks storm pillars, offline nodes, plates")
    node_prefix: str = Field(default="sim", pattern=NAME_PATTERN, max_length=16)
    power_interval_s: float = Field(default=300.0, ge=1.0, le=3600.0, description="sim seconds")
    telemetry_interval_s: float = Field(default=1800.0, ge=1.0, le=86_400.0)
    wake_reserve: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="a dark node boots again when its usable reserve is back to this",
    )
    districts: tuple[str, ...] = Field(
        default=(), description="the city's districts; empty: those the site groups name"
    )
    weather: WeatherSpec = Field(default_factory=WeatherSpec)
    sites: tuple[SiteGroup, ...] = Field(min_length=1)
    steps: tuple[Step, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _seconds(cls, data: Any) -> Any:
        return _hours_from_seconds(data, ("duration",))

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone (e.g. 2025-12-01T19:00:00Z)")
        for name in self.districts:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"districts: {name!r} is not a district name (a-z, 0-9, -, _)")
        groups = {g.group: g for g in self.sites}
        if len(groups) != len(self.sites):
            raise ValueError("site group names must be unique")
        if self.districts:
            for group in self.sites:
                for name in group.district_names:
                    if name not in self.districts:
                        raise ValueError(
                            f"site group {group.group!r}: district {name!r} is not one of the "
                            f"scenario's districts {list(self.districts)}"
                        )
        known = self.district_names
        end_s = self.duration_h * 3600.0
        for i, step in enumerate(self.steps):
            where = f"steps[{i}] ({step.action})"
            group_name = getattr(step, "group", None)
            index = getattr(step, "index", None)
            target = groups.get(group_name) if group_name is not None else None
            if group_name is not None and target is None:
                raise ValueError(f"{where}: no site group {group_name!r}")
            if index is not None and group_name is None:
                raise ValueError(f"{where}: index needs a group")
            if target is not None and index is not None and index >= target.count:
                raise ValueError(f"{where}: group {group_name!r} has sites 0..{target.count - 1}")
            district = getattr(step, "district", None)
            if district is not None and district not in known:
                raise ValueError(f"{where}: no district {district!r}; districts: {sorted(known)}")
            if step.at_h > self.duration_h:
                raise ValueError(
                    f"{where}: at_h {step.at_h:g} (at_s {step.at_s:g}) is after the end "
                    f"({end_s:g} s)"
                )
            if step.at_s + step.lasts_s > end_s + 1e-6:
                raise ValueError(
                    f"{where}: ends at {step.at_s + step.lasts_s:g} s, after the scenario's end "
                    f"({end_s:g} s); shorten it or lengthen duration"
                )
            if isinstance(step, PressStep) and target is not None and not target.has_button:
                raise ValueError(f"{where}: group {group_name!r} is {target.kind}: no panic button")
            if isinstance(step, _Targeted) and not self.matching(step, buttons=False):
                raise ValueError(f"{where}: no node is in both that district and that group")
            if isinstance(step, PanicStormStep) and not self.matching(step, buttons=True):
                raise ValueError(f"{where}: no panic pillar (panic_pillar or mixed) in the target")
        return self

    @property
    def node_count(self) -> int:
        return sum(g.count for g in self.sites)

    @property
    def district_names(self) -> tuple[str, ...]:
        """Declared districts, or the ones the site groups use (first-seen order)."""
        if self.districts:
            return self.districts
        seen: dict[str, None] = {}
        for group in self.sites:
            for index in range(min(group.count, len(group.districts) or 1)):
                seen.setdefault(group.district_of(index))
        return tuple(seen)

    def node_id(self, group: str, index: int) -> str:
        return f"{self.node_prefix}-{group}-{index:03d}"

    @staticmethod
    def site_id(group: str, index: int) -> str:
        return f"{group}-{index:03d}"

    def site_targets(self) -> dict[str, float]:
        """Every site id of the whole fleet and its autonomy target (to set on the server)."""
        return {
            self.site_id(g.group, i): g.autonomy_target_h
            for g in self.sites
            for i in range(g.count)
        }

    def matching(self, step: _Targeted, *, buttons: bool) -> list[tuple[SiteGroup, int]]:
        """(group, index) of every site the step's district/group/index picks, in file order."""
        out = []
        for group in self.sites:
            if step.group is not None and group.group != step.group:
                continue
            if buttons and not group.has_button:
                continue
            for index in range(group.count):
                if step.index is not None and index != step.index:
                    continue
                if step.district is not None and group.district_of(index) != step.district:
                    continue
                out.append((group, index))
        return out

    @property
    def cut_districts(self) -> tuple[str, ...]:
        """Districts a `network_cut` step names: their nodes connect through a relay."""
        return tuple(dict.fromkeys(s.district for s in self.steps if isinstance(s, NetworkCutStep)))

    def nodes_in(self, district: str) -> int:
        return sum(1 for g in self.sites for i in range(g.count) if g.district_of(i) == district)


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


# ------------------------------------------- the fleet's order, shards, picks


@dataclass(frozen=True)
class Shard:
    """The part of the fleet one process runs: nodes at position ≡ `index` (mod `count`).

    Positions are the fleet's file order (group by group, index by index), so
    dealing them out in turn spreads every group and district over the shards.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: give 0..{self.count - 1}")

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def fleet_positions(scenario: Scenario) -> list[tuple[int, SiteGroup, int]]:
    """(position, group, index) of every site, in file order: the order shards are dealt."""
    out, position = [], 0
    for group in scenario.sites:
        for index in range(group.count):
            out.append((position, group, index))
            position += 1
    return out


def pick_targets(
    scenario: Scenario, step: _Targeted, order: int, *, buttons: bool
) -> list[tuple[SiteGroup, int]]:
    """The sites a targeted step acts on, over the whole fleet (seeded by seed and `order`).

    Pure, so every shard of a multi-process run picks the same global sites as
    one process would, and then acts on the ones it owns.
    """
    matched = scenario.matching(step, buttons=buttons)
    if step.count is not None and step.count < len(matched):
        rng = random.Random(f"{scenario.seed}:{order}")
        picked = sorted(rng.sample(range(len(matched)), step.count))
        matched = [matched[i] for i in picked]
    return matched


def storm_plan(scenario: Scenario, step: PanicStormStep, order: int) -> list[tuple[float, str]]:
    """A storm's presses: (simulated seconds after the step, node id), in time order.

    The same draws, in the same order, as the runner has always made (all the
    offsets, then one pillar per offset), so a seed means the same storm in
    one process or in several.
    """
    pool = pick_targets(scenario, step, order, buttons=True)
    rng = random.Random(f"{scenario.seed}:storm:{order}")
    offsets = sorted(rng.uniform(0.0, step.within_s) for _ in range(step.presses))
    plan = []
    for offset in offsets:
        group, index = rng.choice(pool)
        plan.append((offset, scenario.node_id(group.group, index)))
    return plan


# ----------------------------------------------------------- fleet size, limits

# Open files one simulated node holds: its MQTT socket and its SQLite outbox
# (the database and its -wal; the outbox runs WAL in exclusive locking mode,
# so there is no -shm). A node behind a network-cut relay adds the relay's
# two sockets (the node's side and the broker's side).
FDS_PER_NODE = 3
FDS_PER_RELAYED_NODE = 2
FDS_SPARE = 512
# A multi-process run splits the fleet into at most this many processes, each
# kept this far under the hard limit (files the count above does not see:
# logs, pipes, a reconnect storm's half-closed sockets).
MAX_PROCESSES = 16
FD_HEADROOM = 0.10


def scale_fleet(scenario: Scenario, nodes: int) -> Scenario:
    """The scenario with `nodes` nodes in all, every site group scaled in proportion (≥ 1 each).

    Steps that name a site by index must still fit (the scenario is validated
    again); `ScenarioError` names the step that does not.
    """
    groups = scenario.sites
    if not len(groups) <= nodes <= 100_000:
        raise ScenarioError(
            f"--nodes {nodes}: give 1 node per site group at least ({len(groups)} groups) "
            "and at most 100000"
        )
    total = scenario.node_count
    shares = [g.count * nodes / total for g in groups]
    counts = [max(1, int(share)) for share in shares]
    # Largest remainder, so the counts add up to exactly `nodes`.
    for _ in range(len(groups) * 2 + nodes):
        if sum(counts) < nodes:
            i = max(range(len(groups)), key=lambda k: shares[k] - counts[k])
            counts[i] += 1
        elif sum(counts) > nodes:
            i = max(
                (k for k in range(len(groups)) if counts[k] > 1),
                key=lambda k: counts[k] - shares[k],
            )
            counts[i] -= 1
        else:
            break
    data = scenario.model_dump(mode="json")
    for site, count in zip(data["sites"], counts, strict=True):
        site["count"] = count
    try:
        return parse_scenario(data)
    except ScenarioError as exc:
        raise ScenarioError(f"with --nodes {nodes}: {exc}") from exc


def check_runnable(scenario: Scenario, *, owns_broker: bool) -> None:
    """Refuse steps this run cannot carry out (a broker restart needs a broker we started)."""
    if owns_broker:
        return
    restarts = [f"steps[{i}]" for i, s in enumerate(scenario.steps) if s.action == "broker_restart"]
    if restarts:
        raise ScenarioError(
            f"{', '.join(restarts)} (broker_restart): a scenario can only restart the broker it "
            "started itself, not one given with --broker-url; leave out --broker-url and the "
            "scenario starts its own Mosquitto"
        )


def fds_needed(scenario: Scenario) -> int:
    """Open files this process needs for the scenario (see FDS_PER_NODE)."""
    relayed = sum(scenario.nodes_in(d) for d in scenario.cut_districts)
    return scenario.node_count * FDS_PER_NODE + relayed * FDS_PER_RELAYED_NODE + FDS_SPARE


def shard_fds_needed(scenario: Scenario, shard: Shard) -> int:
    """Open files the process running `shard` needs (its own nodes and relays only)."""
    cut = set(scenario.cut_districts)
    nodes = relayed = 0
    for position, group, index in fleet_positions(scenario):
        if shard.owns(position):
            nodes += 1
            relayed += group.district_of(index) in cut
    return nodes * FDS_PER_NODE + relayed * FDS_PER_RELAYED_NODE + FDS_SPARE


def _shard_budget(hard: int) -> int:
    return int(hard * (1.0 - FD_HEADROOM))


def _worst_shard(scenario: Scenario, processes: int) -> int:
    return max(shard_fds_needed(scenario, Shard(k, processes)) for k in range(processes))


def processes_needed(scenario: Scenario, hard: int) -> int | None:
    """The fewest processes (2..MAX_PROCESSES) whose shards each fit `hard` less the headroom."""
    for processes in range(2, min(MAX_PROCESSES, scenario.node_count) + 1):
        if _worst_shard(scenario, processes) <= _shard_budget(hard):
            return processes
    return None


def plan_processes(scenario: Scenario, *, requested: int | None, hard: int) -> int:
    """How many processes run the fleet: `requested`, or (None: auto) as few as fit.

    Auto is 1 whenever the whole fleet fits the hard limit (today's single
    process, untouched); otherwise the fewest shards that each fit with
    `FD_HEADROOM` to spare. An explicit 1 is checked later by `ensure_fd_limit`,
    whose refusal names the processes that would do. `ScenarioError` names the
    numbers when nothing fits.
    """
    if requested is None:
        if fds_needed(scenario) <= hard:
            return 1
        found = processes_needed(scenario, hard)
        if found is None:
            raise ScenarioError(_too_big(scenario, hard))
        return found
    if not 1 <= requested <= MAX_PROCESSES:
        raise ScenarioError(f"--processes {requested}: give 1 to {MAX_PROCESSES}, or auto")
    if requested > scenario.node_count:
        raise ScenarioError(
            f"--processes {requested}: the fleet has only {scenario.node_count} nodes"
        )
    if requested == 1:
        return 1
    worst = _worst_shard(scenario, requested)
    if worst > _shard_budget(hard):
        found = processes_needed(scenario, hard)
        hint = f"use --processes {found} or more" if found else _too_big(scenario, hard)
        raise ScenarioError(
            f"--processes {requested}: each process would hold up to "
            f"{-(-scenario.node_count // requested)} nodes and need up to {worst} open files, "
            f"more than {_shard_budget(hard)} (the hard limit {hard}, ulimit -Hn, less "
            f"{FD_HEADROOM:.0%} headroom); {hint}"
        )
    return requested


def _too_big(scenario: Scenario, hard: int) -> str:
    worst = _worst_shard(scenario, min(MAX_PROCESSES, scenario.node_count))
    return (
        f"{scenario.node_count} nodes need {fds_needed(scenario)} open files; even "
        f"{MAX_PROCESSES} processes would need up to {worst} each, more than "
        f"{_shard_budget(hard)} (the hard limit {hard}, ulimit -Hn, less {FD_HEADROOM:.0%} "
        "headroom): raise the hard limit or use fewer --nodes"
    )


def ensure_fd_limit(scenario: Scenario) -> int:
    """Raise RLIMIT_NOFILE for the scenario; `ScenarioError` when the hard limit is too low."""
    from simulators.bench_cli import raise_fd_limit

    needed = fds_needed(scenario)
    got = raise_fd_limit(needed)
    if got < needed:
        per = FDS_PER_NODE
        fits = _largest_fleet(scenario, got)
        split = processes_needed(scenario, got)
        split_hint = (
            f", split it over processes (--processes {split}, or leave --processes out: auto does)"
            if split is not None
            else ""
        )
        raise ScenarioError(
            f"{scenario.node_count} nodes need {needed} open files ({per} per node: MQTT socket "
            f"and SQLite outbox + -wal; {FDS_PER_RELAYED_NODE} more behind a network-cut "
            f"relay), but the hard limit (ulimit -Hn) is {got}. Raise it (ulimit -Hn {needed}, "
            f"systemd LimitNOFILE=, /etc/security/limits.conf){split_hint} or run with "
            f"--nodes {fits} or fewer"
        )
    return got


def _largest_fleet(scenario: Scenario, files: int) -> int:
    """The largest --nodes whose scaled scenario fits in `files` open files (0: none)."""
    low, high = 0, scenario.node_count
    for _ in range(40):  # bisection; 40 halvings cover any fleet size we accept
        if high - low <= 1:
            break
        middle = (low + high) // 2
        try:
            fits = fds_needed(scale_fleet(scenario, middle)) <= files
        except ScenarioError:
            fits = False  # too small for its groups or its steps' indices
        low, high = (middle, high) if fits else (low, middle)
    return low


# ------------------------------------------------------------------ runner


class BrokerControl(Protocol):
    """The broker a scenario owns (`fleet_server.broker.ManagedBroker` fits)."""

    def kill(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class PressResult:
    """One scripted press and what became of it."""

    node_id: str
    sim_h: float
    step: int | None  # the node's policy step when pressed; None: dark or offline
    event_id: str | None = None
    sent: bool = False  # recorded in the node's outbox
    reason: str = ""
    at_s: float = 0.0  # simulated seconds after the start
    scenario_step: int | None = None  # index in `steps` of the step that pressed
    acked: bool = False  # the server's Ack removed it from the outbox: delivered


@dataclass
class SimSite:
    """One site: its physics, its monitor, and the agent currently running on it."""

    node_id: str
    group: SiteGroup
    index: int
    site: SolarSite
    monitor: SimPowerMonitor
    config: dict[str, Any]
    district: str = ""
    scene: SyntheticScene | None = None
    agent: Agent | None = None
    task: asyncio.Task[None] | None = None
    boots: int = 0
    offline: bool = False  # stopped by a node_offline step (not dark)
    dark_since_h: float | None = None
    dark_periods: list[tuple[float, float | None]] = field(default_factory=list)
    min_soc: float = 1.0
    min_autonomy_h: float | None = None
    max_step: int = 0
    power_events: dict[str, int] = field(default_factory=dict)
    power_log: list[tuple[float, str]] = field(default_factory=list)
    pending_presses: list[PressResult] = field(default_factory=list)
    plates: int = 0
    past_reconnects: int = 0
    press_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def connected(self) -> bool:
        return self.running and self.agent is not None and self.agent.connected

    @property
    def reconnects(self) -> int:
        return self.past_reconnects + max(0, _connects(self.agent) - 1)


def _connects(agent: Agent | None) -> int:
    return int(getattr(agent.transport, "connects", 0)) if agent is not None else 0


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
    steps: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "scenario": self.scenario,
            "nodes": self.nodes,
            "speed": self.speed,
            "sim_hours": round(self.sim_hours, 2),
            "wall_s": round(self.wall_s, 2),
            "went_dark": sorted(s["node_id"] for s in self.sites if s["dark_periods"]),
            "presses_sent": sum(1 for p in self.presses if p["sent"]),
            "presses_while_dark": sum(1 for p in self.presses if p["step"] is None),
            "totals": self.totals,
            "steps": self.steps,
            "sites": self.sites,
            "presses": self.presses,
        }
        if self.server is not None:
            out["server"] = self.server
        return out


SiteTargetSink = Callable[[str, float], None]
Progress = Callable[[str], None]
# Awaited once every node is connected, before simulated time starts: a shard
# waits there for the other processes (`simulators.scenario_shards`).
Gate = Callable[[], Awaitable[None]]


def format_summary(
    status: Mapping[str, Any], *, elapsed_s: float, rate: float, speed: float
) -> str:
    """The live summary line from `ScenarioRunner.status()` figures (or several summed)."""
    sim_s = float(status["sim_s"])
    line = (
        f"t={elapsed_s:6.1f}s sim {sim_s:7.0f}s "
        f"connected {status['connected']}/{status['nodes']} "
        f"presses {status['sent']} sent/{status['acked']} acked outbox {status['outbox']} "
        f"events/s {rate:.0f} reconnects {status['reconnects']}"
    )
    if speed > 1:
        line += f" day {sim_s / 3600.0 / 24:4.1f}"
    if status["dark"] or status["offline"]:
        line += f" dark {status['dark']} offline {status['offline']}"
    if status["active"]:
        line += " | " + "; ".join(text for _, text in status["active"])
    return line


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
        broker: BrokerControl | None = None,
        summary_every_s: float = 5.0,
        drain_s: float = 30.0,
        freeze_gc: bool = False,
        shard: Shard | None = None,
    ) -> None:
        check_runnable(scenario, owns_broker=broker is not None)
        self.scenario = scenario
        self.shard = shard
        self.broker_url = broker_url
        self.broker = broker
        self.data_dir = data_dir
        self.tick_s = tick_s
        self.summary_every_s = summary_every_s
        self.drain_s = drain_s
        self.freeze_gc = freeze_gc
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
        # One relay per district that a network_cut step names; its nodes connect through it.
        parts = urlsplit(broker_url)
        self.relays: dict[str, NetCut] = {
            district: NetCut(
                target_host=parts.hostname or "127.0.0.1",
                target_port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            )
            for district in scenario.cut_districts
        }
        self.sites: dict[str, SimSite] = {}
        for position, group, index in fleet_positions(scenario):
            if shard is None or shard.owns(position):
                site = self._make_site(group, index, agent_overrides or {})
                self.sites[site.node_id] = site
        self.presses: list[PressResult] = []
        self._press_by_event: dict[str, PressResult] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Plate reads only (node picks are `pick_targets`/`storm_plan`); shards draw
        # apart so that two processes do not replay the same vehicles.
        split = shard is not None and shard.count > 1
        self._rng = random.Random(f"{scenario.seed}:plates:{shard}" if split else scenario.seed)
        self.step_records: dict[int, dict[str, Any]] = {}
        self._windows: dict[int, tuple[str | None, float, float]] = {}
        self._window_nodes: dict[int, set[str]] = {}  # node_offline: only its own nodes' presses
        self._active: dict[int, str] = {}
        self.events_written = 0
        self.events_acked = 0
        self.plates_skipped = 0
        self._camera_sites = [s for s in self.sites.values() if s.scene is not None]
        cumulative, total = [], 0.0
        for site in self._camera_sites:
            total += site.group.plates_per_min
            cumulative.append(total)
        self._camera_cum = cumulative
        self._plates_per_min = total
        self._plate_due = 0.0
        # Watching thousands of sites every 20 ms would eat the loop; scale the interval.
        self._watch_every_s = max(tick_s, len(self.sites) * 5e-5)

    # ----------------------------------------------------------- building

    def _make_site(self, group: SiteGroup, index: int, overrides: Mapping[str, Any]) -> SimSite:
        scenario = self.scenario
        node_id = scenario.node_id(group.group, index)
        city = CITIES.get(group.city)
        district = group.district_of(index)
        # Sites of a group stand a few hundred metres apart, a hundred to a row.
        lat = (group.lat if group.lat is not None else city.lat if city else 0.0) + (
            index % 100
        ) * 0.002
        lon = (group.lon if group.lon is not None else city.lon if city else 0.0) + (
            index // 100
        ) * 0.002
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
        relay = self.relays.get(district)
        url = self.broker_url
        if relay is not None:
            url = f"{urlsplit(self.broker_url).scheme}://127.0.0.1:{relay.port}"
        config: dict[str, Any] = {
            "node_id": node_id,
            "serial": f"SIM-{node_id}".upper()[:64],
            "site_id": scenario.site_id(group.group, index),
            "district": district,
            "data_dir": str(self.data_dir / node_id),
            "location": {"lat": round(lat, 6), "lon": round(lon, 6)},
            "mqtt": {"url": url, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0},
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
            district=district,
            scene=SyntheticScene(node_id=node_id, cameras=group.cameras)
            if group.has_camera
            else None,
        )

    def _boot(self, site: SimSite) -> None:
        if site.agent is not None:
            site.past_reconnects += max(0, _connects(site.agent) - 1)
        site.pending_presses.clear()  # a press the last boot never recorded stays unrecorded
        power_config = PowerConfig.model_validate(site.config["power"])
        manager = PowerManager(
            config=power_config, monitor=site.monitor, clock=self.clock, node_id=site.node_id
        )
        agent = Agent.from_dict(site.config, backend=SimBackend(), power=manager)
        agent.capabilities = [*KIND_CAPABILITIES[site.group.kind], Capability.POWER_MONITOR]
        agent.add_listener(self._listener(site))
        agent.add_ack_listener(self._on_ack)
        site.agent = agent
        site.task = asyncio.ensure_future(agent.run())
        site.boots += 1

    def _listener(self, site: SimSite) -> Callable[[StoredEvent], None]:
        def on_event(stored: StoredEvent) -> None:
            self.events_written += 1
            if stored.event_type == "panic" and site.pending_presses:
                press = site.pending_presses.pop(0)
                press.event_id, press.sent = stored.event_id, True
                self._press_by_event[stored.event_id] = press
            elif stored.event_type == "plate":
                site.plates += 1
            elif stored.event_type == "power":
                kind = json.loads(stored.payload).get("power", "?")
                site.power_events[kind] = site.power_events.get(kind, 0) + 1
                site.power_log.append((self.clock.elapsed(), kind))

        return on_event

    def _on_ack(self, event_ids: list[str]) -> None:
        self.events_acked += len(event_ids)
        for event_id in event_ids:
            press = self._press_by_event.pop(event_id, None)
            if press is not None:
                press.acked = True

    # -------------------------------------------------------------- running

    @property
    def sim_hours(self) -> float:
        return self.clock.elapsed() / 3600.0

    async def start(
        self, *, connect_timeout: float | None = None, gate: Gate | None = None
    ) -> None:
        """Boot every node and wait for all to connect (then for `gate`); time starts then."""
        for relay in self.relays.values():
            await relay.start()
        for site in self.sites.values():
            self._boot(site)
        timeout = connect_timeout or max(60.0, len(self.sites) / 20)
        deadline = time.monotonic() + timeout
        while any(s.agent is not None and not s.agent.connected for s in self.sites.values()):
            if time.monotonic() > deadline:
                missing = [n for n, s in self.sites.items() if s.agent and not s.agent.connected]
                raise ScenarioError(f"{len(missing)} nodes did not connect, e.g. {missing[:3]}")
            await asyncio.sleep(0.05)
        if self.freeze_gc:
            # Thousands of agents live as long as the run: keep full collections from
            # walking them (a pause felt by every node in this loop). Process-wide, so
            # only the CLI asks for it.
            gc.collect()
            gc.freeze()
        if gate is not None:
            await gate()
        self.clock.restart()
        logger.info("scenario %s: %d nodes up", self.scenario.name, len(self.sites))

    async def run(
        self, *, progress: Progress | None = None, gate: Gate | None = None
    ) -> ScenarioReport:
        """Start, play the steps until the end of simulated time, drain, stop; the report."""
        wall0 = time.monotonic()
        try:
            await self.start(gate=gate)
            end_h = await self._play(progress, wall0)
            await self._drain(timeout=self.drain_s)
            if progress is not None:
                progress(self.summary_line(time.monotonic() - wall0, rate=0.0) + "  (drained)")
            report = self._report(end_h, time.monotonic() - wall0)
        finally:
            await self.stop()
        return report

    async def _play(self, progress: Progress | None, wall0: float) -> float:
        steps = sorted(
            ((s.at_h, i, s) for i, s in enumerate(self.scenario.steps)), key=lambda x: x[:2]
        )
        queue: list[tuple[float, int, AnyStep]] = list(steps)
        end = self.scenario.duration_h
        next_watch = next_summary = last_tick = last_summary = time.monotonic()
        last_events = 0
        while (now_h := self.sim_hours) < end:
            while queue and queue[0][0] <= now_h:
                at_h, order, step = queue.pop(0)
                self._apply(step, now_h, order)
                if isinstance(step, PressStep) and step.every_h:
                    again = at_h + step.every_h
                    if again <= min(step.until_h or end, end):
                        queue.append((again, order, step))
                        queue.sort(key=lambda x: x[:2])
            wall = time.monotonic()
            self._plates(wall - last_tick)
            last_tick = wall
            if wall >= next_watch:
                self._watch(now_h)
                next_watch = wall + self._watch_every_s
            if progress is not None and wall >= next_summary:
                rate = (self.events_written - last_events) / max(1e-3, wall - last_summary)
                last_events, last_summary = self.events_written, wall
                progress(self.summary_line(wall - wall0, rate=rate))
                next_summary = wall + self.summary_every_s
            await asyncio.sleep(self.tick_s)
        return self.sim_hours

    def summary_line(self, elapsed_s: float, *, rate: float) -> str:
        """One line: connected/total, presses sent/acked, outbox depth, events/s, what is on."""
        return format_summary(
            self.status(), elapsed_s=elapsed_s, rate=rate, speed=self.scenario.speed
        )

    def status(self) -> dict[str, Any]:
        """The summary's figures as numbers (a shard sends them to its parent to add up)."""
        sites = self.sites.values()
        return {
            "sim_s": self.clock.elapsed(),
            "nodes": len(self.sites),
            "connected": sum(1 for s in sites if s.connected),
            "sent": sum(1 for p in self.presses if p.sent),
            "acked": sum(1 for p in self.presses if p.acked),
            "outbox": sum(s.agent.outbox_depth for s in sites if s.running and s.agent is not None),
            "events": self.events_written,
            "reconnects": sum(s.reconnects for s in sites),
            "dark": sum(1 for s in sites if s.dark_since_h is not None),
            "offline": sum(1 for s in sites if s.offline),
            "active": [[order, text] for order, text in self._active.items()],
        }

    # ------------------------------------------------------------ steps

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    def _apply(self, step: AnyStep, now_h: float, order: int) -> None:
        record = self.step_records.setdefault(
            order, {"step": order, "action": step.action, "at_s": round(step.at_s, 2)}
        )
        if isinstance(step, PressStep):
            site_or_none = self.sites.get(self.scenario.node_id(step.group, step.index))
            if site_or_none is None:
                return  # another shard's pillar: that process presses it
            site = site_or_none
            record["node_id"] = site.node_id
            record["times"] = record.get("times", 0) + 1
            self._spawn(self._press(site, now_h, order))
        elif isinstance(step, MainsStep):
            group = next(g for g in self.scenario.sites if g.group == step.group)
            indices = (
                range(group.count) if step.index is None else range(step.index, step.index + 1)
            )
            mine = [
                self.sites[node_id]
                for index in indices
                if (node_id := self.scenario.node_id(step.group, index)) in self.sites
            ]
            for site in mine:
                site.site.advance(self.clock.now())
                site.site.set_mains(step.present)
            record.update(sites=len(mine), present=step.present)
            logger.info("mains %s for %s at %.1f h", step.present, step.group, now_h)
        elif isinstance(step, PanicStormStep):
            self._spawn(self._storm(step, order, record))
        elif isinstance(step, PowerLossStep):
            self._spawn(self._power_loss(step, order, record))
        elif isinstance(step, NodeOfflineStep):
            self._spawn(self._node_offline(step, order, record))
        elif isinstance(step, NetworkCutStep):
            self._spawn(self._network_cut(step, order, record))
        else:
            self._spawn(self._broker_restart(step, order, record))

    def _targets(self, step: _Targeted, order: int, *, buttons: bool) -> list[SimSite]:
        """This process's share of `pick_targets` (all of it without shards)."""
        picked = (
            self.sites.get(self.scenario.node_id(g.group, i))
            for g, i in pick_targets(self.scenario, step, order, buttons=buttons)
        )
        return [site for site in picked if site is not None]

    @staticmethod
    def _where(step: _Targeted) -> str:
        parts = [f"district {step.district}" if step.district else "", step.group or ""]
        if step.index is not None:
            parts.append(f"#{step.index}")
        return " ".join(p for p in parts if p) or "the fleet"

    async def _sleep_until(self, sim_s: float) -> None:
        delay = sim_s - self.clock.elapsed()
        if delay > 0:
            await sleep_on(self.clock, delay)

    async def _storm(self, step: PanicStormStep, order: int, record: dict[str, Any]) -> None:
        pool = self._targets(step, order, buttons=True)
        record.update(target=self._where(step), pillars=len(pool), within_s=step.within_s)
        self._windows[order] = (step.district, step.at_s, step.at_s + step.within_s)
        self._active[order] = f"panic_storm {self._where(step)}"
        presses = []
        for offset, node_id in storm_plan(self.scenario, step, order):
            site = self.sites.get(node_id)
            if site is None:
                continue  # another shard's pillar
            await self._sleep_until(step.at_s + offset)
            presses.append(asyncio.ensure_future(self._press(site, self.sim_hours, order)))
        await asyncio.gather(*presses)
        self._active.pop(order, None)

    async def _power_loss(self, step: PowerLossStep, order: int, record: dict[str, Any]) -> None:
        sites = self._targets(step, order, buttons=False)
        now = self.clock.now()
        grid = []
        for site in sites:
            site.site.advance(now)
            if site.site.mains_present:  # a solar-only site has no mains to lose
                site.site.set_mains(False)
                grid.append(site)
        record.update(target=self._where(step), sites=len(sites), grid_tied=len(grid))
        record["nodes"] = [s.node_id for s in grid] if len(grid) <= 50 else len(grid)
        end = step.at_s + (step.duration_s or 0.0)
        self._windows[order] = (step.district, step.at_s, end if step.duration_s else -1.0)
        if step.duration_s is None:
            return
        self._active[order] = f"power_loss {self._where(step)}"
        await self._sleep_until(end)
        now = self.clock.now()
        for site in grid:
            site.site.advance(now)
            site.site.set_mains(True)
        self._active.pop(order, None)

    async def _node_offline(
        self, step: NodeOfflineStep, order: int, record: dict[str, Any]
    ) -> None:
        sites = [
            s for s in self._targets(step, order, buttons=False) if s.running and not s.offline
        ]
        self._windows[order] = (step.district, step.at_s, step.at_s + step.duration_s)
        self._window_nodes[order] = {s.node_id for s in sites}
        self._active[order] = f"node_offline {len(sites)} in {self._where(step)}"
        depth = 0
        for site in sites:
            site.offline = True
            if site.agent is not None:
                depth += site.agent.outbox_depth
                site.agent.stop()
        await asyncio.gather(
            *(asyncio.wait_for(s.task, 10) for s in sites if s.task is not None),
            return_exceptions=True,
        )
        record.update(
            target=self._where(step),
            nodes=[s.node_id for s in sites] if len(sites) <= 50 else len(sites),
            stopped=len(sites),
            outbox_at_stop=depth,
        )
        await self._sleep_until(step.at_s + step.duration_s)
        for site in sites:
            site.offline = False
            self._boot(site)
        self._active[order] = f"node_offline {len(sites)} restarting"
        restarted = time.monotonic()

        def drained() -> bool:
            return all(s.connected and s.agent and not s.agent.outbox_depth for s in sites)

        ok = await _until(drained, timeout=60.0)
        record.update(
            restarted=len(sites),
            drained=ok,
            drained_after_s=round(time.monotonic() - restarted, 2) if ok else None,
            outbox_after=sum(s.agent.outbox_depth for s in sites if s.running and s.agent),
        )
        self._active.pop(order, None)

    async def _network_cut(self, step: NetworkCutStep, order: int, record: dict[str, Any]) -> None:
        relay = self.relays[step.district]
        sites = [s for s in self.sites.values() if s.district == step.district]
        record.update(
            district=step.district,
            nodes=len(sites),
            connected_before=sum(1 for s in sites if s.connected),
        )
        self._windows[order] = (step.district, step.at_s, step.at_s + step.duration_s)
        self._active[order] = f"network_cut {step.district}"
        refused0 = relay.connections_refused
        relay.cut()
        await self._sleep_until(step.at_s + step.duration_s)
        relay.restore()
        record["refused_connects"] = relay.connections_refused - refused0
        self._active[order] = f"network restored {step.district}"
        restored = time.monotonic()
        ok = await _until(
            lambda: all(s.connected for s in sites if s.running and not s.offline), timeout=60.0
        )
        record["reconnected_after_s"] = round(time.monotonic() - restored, 2) if ok else None
        self._active.pop(order, None)

    async def _broker_restart(
        self, step: BrokerRestartStep, order: int, record: dict[str, Any]
    ) -> None:
        broker = self.broker
        assert broker is not None  # check_runnable refused the scenario otherwise
        self._windows[order] = (None, step.at_s, step.at_s + step.down_s)
        self._active[order] = "broker down"
        record["connected_before"] = sum(1 for s in self.sites.values() if s.connected)
        killed = time.monotonic()
        await asyncio.to_thread(broker.kill)
        await self._sleep_until(step.at_s + step.down_s)
        await asyncio.to_thread(broker.start)
        started = time.monotonic()
        record["down_for_s"] = round(started - killed, 2)
        self._active[order] = "broker back, nodes reconnecting"
        ok = await _until(
            lambda: all(s.connected for s in self.sites.values() if s.running and not s.offline),
            timeout=120.0,
        )
        record["all_reconnected_after_s"] = round(time.monotonic() - started, 2) if ok else None
        self._active.pop(order, None)

    async def _press(self, site: SimSite, now_h: float, order: int | None = None) -> None:
        async with site.press_lock:  # presses on one pillar come one after the other
            await self._press_once(site, now_h, order)

    async def _press_once(self, site: SimSite, now_h: float, order: int | None) -> None:
        agent = site.agent
        at_s = round(now_h * 3600.0, 2)
        if site.offline or not site.running or agent is None:
            reason = "node offline" if site.offline else "node dark"
            self.presses.append(
                PressResult(
                    site.node_id, now_h, None, reason=reason, at_s=at_s, scenario_step=order
                )
            )
            return
        step = agent.power.step if agent.power else 0
        press = PressResult(site.node_id, now_h, step, at_s=at_s, scenario_step=order)
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
        try:
            button.press()
            await asyncio.sleep(0.08)
            button.release()
        except HardwareError:
            pass  # the node shut down (went dark) while the button was held; said below
        await asyncio.sleep(0.05)  # debounce and the outbox write
        if not press.sent and (not site.running or (agent.power is not None and agent.power.dark)):
            press.reason = "went dark during the press"

    def _plates(self, real_dt: float) -> None:
        """Synthetic plate reads on camera nodes, at the groups' rates (simulated time)."""
        if not self._camera_sites or real_dt <= 0:
            return
        self._plate_due += self._plates_per_min * real_dt * self.scenario.speed / 60.0
        due = int(self._plate_due)
        if due <= 0:
            return
        self._plate_due -= due
        if due > _MAX_PLATES_PER_TICK:  # a stalled loop must not come back to a flood
            self.plates_skipped += due - _MAX_PLATES_PER_TICK
            due = _MAX_PLATES_PER_TICK
        for site in self._rng.choices(self._camera_sites, cum_weights=self._camera_cum, k=due):
            agent = site.agent
            if site.offline or not site.running or agent is None or site.scene is None:
                self.plates_skipped += 1  # a camera that is off sees nothing
                continue
            vehicle = site.scene.next_pass(self._rng)
            agent.record_event(
                plate_event_builder(node_id=site.node_id, vehicle=vehicle, now=agent.clock.now)
            )

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
            if site.running or site.offline:
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
        """Let running steps finish, then give unacked events a bounded time to be acked."""
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=max(timeout, 130.0))
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("scenario step failed", exc_info=task.exception())

        def empty() -> bool:
            return not any(
                s.running and s.agent and s.agent.outbox_depth for s in self.sites.values()
            )

        await _until(empty, timeout=timeout)

    async def stop(self) -> None:
        """Stop every running agent and every relay."""
        for site in self.sites.values():
            if site.agent is not None and site.running:
                site.agent.stop()
        for site in self.sites.values():
            if site.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(site.task, 10)
        for relay in self.relays.values():
            await relay.stop()

    # ------------------------------------------------------------- report

    def _report(self, end_h: float, wall_s: float) -> ScenarioReport:
        for site in self.sites.values():
            if site.dark_since_h is not None:
                site.dark_periods.append((site.dark_since_h, None))
                site.dark_since_h = None
        return ScenarioReport(
            scenario=self.scenario.name,
            nodes=len(self.sites),
            speed=self.scenario.speed,
            sim_hours=end_h,
            wall_s=wall_s,
            sites=[self._site_report(s) for s in self.sites.values()],
            presses=[vars(p) for p in self.presses],
            steps=[self._step_report(o, r) for o, r in sorted(self.step_records.items())],
            totals=self.totals(wall_s),
        )

    def totals(self, wall_s: float) -> dict[str, Any]:
        """Fleet-wide figures: presses (recorded, delivered, lost), events, reconnects."""
        kinds: dict[str, int] = {}
        for site in self.sites.values():
            kinds[site.group.kind] = kinds.get(site.group.kind, 0) + 1
        recorded = [p for p in self.presses if p.sent]
        delivered = sum(1 for p in recorded if p.acked)
        return {
            "nodes": len(self.sites),
            "nodes_by_kind": kinds,
            "districts": len(self.scenario.district_names),
            "presses": len(self.presses),
            "presses_recorded": len(recorded),
            "presses_delivered": delivered,
            "presses_lost": len(recorded) - delivered,
            "presses_not_recorded": len(self.presses) - len(recorded),
            "plate_events": sum(s.plates for s in self.sites.values()),
            "plates_skipped": self.plates_skipped,
            "events_written": self.events_written,
            "events_acked": self.events_acked,
            "outbox_depth_end": sum(
                s.agent.outbox_depth for s in self.sites.values() if s.running and s.agent
            ),
            "reconnects": sum(s.reconnects for s in self.sites.values()),
            "boots": sum(s.boots for s in self.sites.values()),
            "duration_s": round(wall_s, 2),
            "sim_seconds": round(self.clock.elapsed(), 1),
        }

    def _step_report(self, order: int, record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        mine = [p for p in self.presses if p.scenario_step == order]
        window = self._windows.get(order)
        if window is not None and not mine:
            district, start, end = window
            if end >= 0:
                mine = [
                    p
                    for p in self.presses
                    if start <= p.at_s <= end
                    and (district is None or self.sites[p.node_id].district == district)
                    and (order not in self._window_nodes or p.node_id in self._window_nodes[order])
                ]
        if mine or isinstance(self.scenario.steps[order], PressStep | PanicStormStep):
            out["presses"] = len(mine)
            out["presses_recorded"] = sum(1 for p in mine if p.sent)
            out["presses_delivered"] = sum(1 for p in mine if p.acked)
        step = self.scenario.steps[order]
        if isinstance(step, PowerLossStep):
            grid = self._targets(step, order, buttons=False)
            out["mains_lost_reported"] = sum(
                1 for s in grid if any(k == "mains_lost" and t >= step.at_s for t, k in s.power_log)
            )
            if step.duration_s is not None:
                back = step.at_s + step.duration_s
                out["mains_restored_reported"] = sum(
                    1
                    for s in grid
                    if any(k == "mains_restored" and t >= back for t, k in s.power_log)
                )
        return out

    def _site_report(self, site: SimSite) -> dict[str, Any]:
        return {
            "node_id": site.node_id,
            "group": site.group.group,
            "kind": site.group.kind,
            "district": site.district,
            "site_id": site.config["site_id"],
            "provisioned": site.group.provisioned,
            "autonomy_target_h": site.group.autonomy_target_h,
            "boots": site.boots,
            "reconnects": site.reconnects,
            "plates": site.plates,
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


_MAX_PLATES_PER_TICK = 2_000


async def _until(check: Callable[[], bool], *, timeout: float, every: float = 0.1) -> bool:
    """Poll `check` until true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True
