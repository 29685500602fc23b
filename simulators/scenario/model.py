"""The scenario file: its model (pydantic, unknown keys refused) and loading it.

A scenario is YAML (or JSON) validated by `Scenario`, loaded file → text →
dict (`load_scenario` → `parse_scenario`) so tests pass plain dicts; the
format reference is docs/simulator.md. Every step is a `StepModel` subclass
with a literal ``action``; `Step` is the discriminated union of them. A step
checks its own fit to the scenario (`StepModel.check_in`), says how long it
lasts and whether it repeats, so `Scenario` validates any step kind without
knowing it. What a step *does* is registered apart, in
`simulators.scenario.steps` (see `simulators.scenario.registry`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hardware.solar import CITIES
from hardware.solar_site import DEFAULT_LOADS_W
from proto.topics import NAME_PATTERN

# The shipped scenario files (simulators/scenarios/).
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message names every problem found."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NodeKind = Literal["panic_pillar", "camera_node", "mixed"]
MAX_RENDERED_CAMERAS = 16  # real detector and reader per camera: a few on one machine


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
    scenes: Literal["synthetic", "rendered"] = Field(
        default="synthetic",
        description="camera nodes' plates: synthetic reads with no pixels (city-sized runs) | "
        "rendered street scenes through the real camera pipeline (anpr extra; a few nodes)",
    )

    @model_validator(mode="after")
    def _place(self) -> SiteGroup:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if self.lat is None and self.city not in CITIES:
            raise ValueError(f"unknown city {self.city!r}: use one of {sorted(CITIES)} or lat/lon")
        if self.district is not None and self.districts:
            raise ValueError("give district or districts, not both")
        if self.scenes == "rendered" and not self.has_camera:
            raise ValueError("scenes = rendered needs a camera_node or mixed group")
        if self.scenes == "rendered" and self.count * self.cameras > MAX_RENDERED_CAMERAS:
            raise ValueError(
                f"scenes = rendered runs the real models: at most {MAX_RENDERED_CAMERAS} "
                "cameras in a group (use synthetic scenes for city-sized groups)"
            )
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


class StepModel(_Model):
    """Every step happens at `at_h` simulated hours (or `at_s` seconds) after the start.

    A new step kind subclasses this (or `TargetedStep`) with a literal
    ``action``, joins `AnyStep`, and registers its handler with
    `simulators.scenario.registry.register_step`; the runner is not edited.
    """

    # True: the step's report always counts its presses (even none).
    reports_presses: ClassVar[bool] = False

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

    def next_at_h(self, at_h: float, *, end_h: float) -> float | None:
        """When the step comes again after firing at `at_h` (None: it does not)."""
        return None

    def check_in(self, scenario: Scenario, where: str) -> None:
        """Raise ValueError when the step cannot act on `scenario` (after the common checks).

        `Scenario` has already checked what every step shares: its group,
        index and district exist and it ends within the run.
        """


class TargetedStep(StepModel):
    """Steps aimed at part of the fleet: a district, a site group (or one site), all."""

    district: str | None = Field(default=None, pattern=NAME_PATTERN)
    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    index: int | None = Field(default=None, ge=0, description="one site of `group`")
    count: int | None = Field(
        default=None, ge=1, le=100_000, description="at most this many of them, picked (seeded)"
    )

    def check_in(self, scenario: Scenario, where: str) -> None:
        if not scenario.matching(self, buttons=False):
            raise ValueError(f"{where}: no node is in both that district and that group")


class PressStep(StepModel):
    """Press node `index` of `group` at `at_h` (and every `every_h` until `until_h`)."""

    reports_presses: ClassVar[bool] = True

    action: Literal["press"]
    group: str = Field(pattern=NAME_PATTERN)
    index: int = Field(default=0, ge=0)
    every_h: float | None = Field(default=None, gt=0.0)
    until_h: float | None = Field(default=None, ge=0.0)

    def next_at_h(self, at_h: float, *, end_h: float) -> float | None:
        if not self.every_h:
            return None
        again = at_h + self.every_h
        return again if again <= min(self.until_h or end_h, end_h) else None

    def check_in(self, scenario: Scenario, where: str) -> None:
        target = scenario.group(self.group)
        if target is not None and not target.has_button:
            raise ValueError(f"{where}: group {self.group!r} is {target.kind}: no panic button")


class MainsStep(StepModel):
    """Mains supply off or on at `at_h` for a group (or one of its sites)."""

    action: Literal["mains"]
    group: str = Field(pattern=NAME_PATTERN)
    index: int | None = Field(default=None, ge=0, description="None: the whole group")
    present: bool


class PanicStormStep(TargetedStep):
    """`presses` presses on random pillars of the target, spread over `within_s` seconds."""

    reports_presses: ClassVar[bool] = True

    action: Literal["panic_storm"]
    presses: int = Field(ge=1, le=100_000)
    within_s: float = Field(gt=0.0, le=86_400.0)

    def check_in(self, scenario: Scenario, where: str) -> None:
        super().check_in(scenario, where)
        if not scenario.matching(self, buttons=True):
            raise ValueError(f"{where}: no panic pillar (panic_pillar or mixed) in the target")

    @property
    def lasts_s(self) -> float:
        return self.within_s


class PowerLossStep(TargetedStep):
    """Mains off for the target's sites; back after `duration_s` (None: stays off)."""

    action: Literal["power_loss"]
    duration_s: float | None = Field(default=None, gt=0.0, le=366 * 86_400.0)

    @property
    def lasts_s(self) -> float:
        return self.duration_s or 0.0


class NodeOfflineStep(TargetedStep):
    """Stop the target's nodes; start them again after `duration_s`, same identity and outbox."""

    action: Literal["node_offline"]
    duration_s: float = Field(gt=0.0, le=366 * 86_400.0)

    @property
    def lasts_s(self) -> float:
        return self.duration_s


class NetworkCutStep(StepModel):
    """Cut a whole district's network (its relay drops and refuses connections), then restore."""

    action: Literal["network_cut"]
    district: str = Field(pattern=NAME_PATTERN)
    duration_s: float = Field(gt=0.0, le=366 * 86_400.0)

    @property
    def lasts_s(self) -> float:
        return self.duration_s


class BrokerRestartStep(StepModel):
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
    """A whole scenario: its sites, weather, simulated time and timed steps."""

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
            step.check_in(self, where)
        return self

    def group(self, name: str) -> SiteGroup | None:
        """The site group called `name` (None: there is none)."""
        return next((g for g in self.sites if g.group == name), None)

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

    def matching(self, step: TargetedStep, *, buttons: bool) -> list[tuple[SiteGroup, int]]:
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
