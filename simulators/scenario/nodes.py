"""The scenario's nodes: a simulated site per node, and the one place an agent is built.

Every site is a real `edge_agent.agent.Agent` on the ``sim`` hardware backend
with a `hardware.power.SimPowerMonitor` over a `hardware.solar_site.SolarSite`
(its physics under the scenario's weather). `make_site` builds a site and the
agent configuration it boots with; `start_node` is the only function that
constructs an agent for a scenario: every boot (the first, after going dark,
after a ``node_offline`` step) goes through it, so the way a node is
assembled changes here and nowhere else.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.agent import Agent
from edge_agent.outbox import StoredEvent
from edge_agent.power import PowerConfig, PowerManager
from hardware.backends import SimBackend
from hardware.power import SimPowerMonitor
from hardware.sim_clock import ScaledClock
from hardware.solar import CITIES
from hardware.solar_site import CloudySpell, SiteSpec, SolarSite, Weather
from proto.messages import Capability
from simulators.scenario.model import Scenario, SiteGroup
from simulators.synthetic_scene import SyntheticScene

KIND_CAPABILITIES: dict[str, tuple[Capability, ...]] = {
    "panic_pillar": (Capability.PANIC_BUTTON, Capability.INDICATOR),
    "camera_node": (Capability.CAMERA, Capability.ANPR),
    "mixed": (Capability.PANIC_BUTTON, Capability.INDICATOR, Capability.CAMERA, Capability.ANPR),
}


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
    # Rendered scenes (``scenes = "rendered"``): one player per camera, started at first boot.
    players: list[Any] = field(default_factory=list)
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
        return self.past_reconnects + max(0, connects(self.agent) - 1)


def connects(agent: Agent | None) -> int:
    """How many times the agent's transport has connected (0: no agent)."""
    return int(getattr(agent.transport, "connects", 0)) if agent is not None else 0


def build_weather(scenario: Scenario) -> Weather:
    """The scenario's weather for every site's physics: base cover and dated spells."""
    start = scenario.start
    return Weather(
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


def make_site(
    scenario: Scenario,
    group: SiteGroup,
    index: int,
    *,
    clock: ScaledClock,
    weather: Weather,
    broker_url: str,
    relay_port: int | None,
    data_dir: Path,
    overrides: Mapping[str, Any],
) -> SimSite:
    """Site `index` of `group`: its solar physics and the agent configuration it boots with.

    `relay_port` is the district's network-cut relay on loopback (None: the
    node connects to `broker_url` itself); `overrides` merge into the agent
    configuration one level deep.
    """
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
    solar = SolarSite(spec=spec, weather=weather, at=scenario.start, soc=group.initial_soc)
    url = broker_url
    if relay_port is not None:
        url = f"{urlsplit(broker_url).scheme}://127.0.0.1:{relay_port}"
    config: dict[str, Any] = {
        "node_id": node_id,
        "serial": f"SIM-{node_id}".upper()[:64],
        "site_id": scenario.site_id(group.group, index),
        "district": district,
        "data_dir": str(data_dir / node_id),
        "location": {"lat": round(lat, 6), "lon": round(lon, 6)},
        "mqtt": {"url": url, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0},
        "hardware": {"type": "sim"},
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
    rendered = group.has_camera and group.scenes == "rendered"
    if rendered:  # the real pipeline: [[cameras]] type sim, [analytics.<id>] with the models
        from simulators.camera_scenes import camera_analytics

        sections = [camera_analytics(f"cam-{n}") for n in range(group.cameras)]
        config["cameras"] = [s["cameras"][0] for s in sections]
        config["analytics"] = {k: v for s in sections for k, v in s["analytics"].items()}
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
        monitor=SimPowerMonitor(site=solar, clock=clock),
        config=config,
        district=district,
        scene=(
            SyntheticScene(node_id=node_id, cameras=group.cameras)
            if group.has_camera and not rendered
            else None
        ),
    )


def start_node(
    site: SimSite,
    *,
    clock: ScaledClock,
    on_event: Callable[[StoredEvent], None],
    on_ack: Callable[[list[str]], None],
) -> None:
    """Build the site's agent from its configuration and start it (a boot).

    The one place the scenario constructs a node: same data directory every
    boot, so the outbox of an earlier boot survives. A press the last boot
    never recorded stays unrecorded.
    """
    if site.agent is not None:
        site.past_reconnects += max(0, connects(site.agent) - 1)
    site.pending_presses.clear()
    power_config = PowerConfig.model_validate(site.config["power"])
    manager = PowerManager(
        config=power_config, monitor=site.monitor, clock=clock, node_id=site.node_id
    )
    agent = Agent.from_dict(site.config, backend=SimBackend(), power=manager)
    agent.capabilities = [*KIND_CAPABILITIES[site.group.kind], Capability.POWER_MONITOR]
    agent.add_listener(on_event)
    agent.add_ack_listener(on_ack)
    site.agent = agent
    site.task = asyncio.ensure_future(agent.run())
    site.boots += 1
    if "cameras" in site.config and not site.players:
        start_scene_players(site)


def start_scene_players(site: SimSite) -> None:
    """Play rendered vehicle passes into each of the site's cameras, whichever boot is running.

    The players look the camera up through the site's current agent, so a
    node that went dark or offline and booted again is fed again; they stop
    with the scenario (`stop_scene_players`).
    """
    from simulators.camera_scenes import ScenePlayer, pipeline_camera

    for n, camera in enumerate(site.config["cameras"]):

        def lookup(camera_id: str = str(camera["id"])) -> Any:
            agent = site.agent
            if agent is None or not site.running:
                return None
            return pipeline_camera(agent.node, camera_id)()

        player = ScenePlayer(lookup, seed=zlib.crc32(f"{site.node_id}:{n}".encode()))
        player.start()
        site.players.append(player)


def stop_scene_players(site: SimSite) -> None:
    """Stop the site's scene players (each after its current frame)."""
    for player in site.players:
        player.stop()
