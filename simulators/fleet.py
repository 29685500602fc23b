"""Many simulated panic nodes in one process, each running the real agent code.

Every node is built by `edge_agent.node.build_node` — the same assembly the
``nigehbaan agent`` CLI uses, certificate renewal included — with its own
MQTT connection, outbox and identity, on the `sim` hardware backend: its
panic button is a gpiozero device on a MockFactory pin, so a simulated press
goes through the same edge handling as on a pillar. ``SimNode.agent`` is the
`edge_agent.agent.Agent` surface over that node. All nodes share one asyncio
loop; a node starts no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent
from edge_agent.config import config_from_dict
from edge_agent.node import build_node
from edge_agent.outbox import StoredEvent
from hardware.backends import SimBackend
from hardware.button import SimButton
from simulators.enrollment import EnrollmentPlan, enroll_fleet

logger = logging.getLogger(__name__)

# Districts and sites the simulated fleet is spread over (names from the field).
DISTRICTS = (
    "lahore-gulberg",
    "lahore-model-town",
    "lahore-walled-city",
    "karachi-saddar",
    "karachi-clifton",
    "peshawar-cantt",
)


class FleetError(RuntimeError):
    """The simulated fleet could not be brought up as asked."""


@dataclass
class PressRecord:
    """One simulated press: which node, when (monotonic), and its event id."""

    node_id: str
    pressed_at: float
    event_id: str | None = None


@dataclass
class SimNode:
    """One simulated node: its agent, its run task and its mock-pin button."""

    agent: Agent
    task: asyncio.Task[None] | None = None
    presses: list[PressRecord] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.agent.node_id

    @property
    def button(self) -> SimButton:
        button = self.agent.button
        if not isinstance(button, SimButton):
            raise FleetError(f"{self.node_id} has no simulated button")
        return button


def node_config(
    *,
    node_id: str,
    index: int,
    data_dir: Path,
    broker_url: str,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The agent config dict of simulated node number `index`."""
    district = DISTRICTS[index % len(DISTRICTS)]
    config: dict[str, Any] = {
        "node_id": node_id,
        "serial": f"SIM-{index:06d}",
        "site_id": f"{district}-site-{index // len(DISTRICTS):04d}",
        "district": district,
        "data_dir": str(data_dir / node_id),
        "mqtt": {"url": broker_url, "reconnect_min_s": 0.5, "reconnect_max_s": 5.0},
        "hardware": {"type": "sim"},
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


class SimFleet:
    """Builds, runs, presses and stops a fleet of simulated panic nodes."""

    def __init__(
        self,
        *,
        broker_url: str,
        data_dir: Path,
        count: int,
        prefix: str = "sim",
        overrides: dict[str, Any] | None = None,
        node_configs: list[dict[str, Any]] | None = None,
    ) -> None:
        if count < 1:
            raise FleetError("a fleet needs at least one node")
        self.broker_url = broker_url
        self.data_dir = data_dir
        # Plain mode (the panic benchmark): configs made here, plain mqtt://.
        # Enrollment mode (`SimFleet.enrolled`): configs written by enrollment.
        configs = node_configs or [
            node_config(
                node_id=f"{prefix}-{i:05d}",
                index=i,
                data_dir=data_dir,
                broker_url=broker_url,
                overrides=overrides,
            )
            for i in range(count)
        ]
        # Renewal is one of each node's components: idle unless the node has a
        # certificate and an enrollment server (mqtts).
        self.nodes = [
            SimNode(Agent.wrap(build_node(config_from_dict(c), backend=SimBackend())))
            for c in configs
        ]
        self._by_event: dict[str, PressRecord] = {}
        for node in self.nodes:
            node.agent.add_listener(self._listener_for(node))

    @classmethod
    async def enrolled(
        cls,
        plan: EnrollmentPlan,
        *,
        data_dir: Path,
        count: int,
        prefix: str = "sim",
        overrides: dict[str, Any] | None = None,
    ) -> SimFleet:
        """A fleet whose nodes made their keys and enrolled through the server (mqtts).

        See `simulators.enrollment`: ``plan.mode`` is ``preauthorized`` (serial +
        public key CSV imported first) or ``token`` (one enrollment token each).
        """
        if count < 1:
            raise FleetError("a fleet needs at least one node")
        plain = [
            node_config(
                node_id=f"{prefix}-{i:05d}",
                index=i,
                data_dir=data_dir,
                broker_url="mqtt://127.0.0.1:1883",  # replaced by the server's broker_url
                overrides=overrides,
            )
            for i in range(count)
        ]
        configs = await asyncio.to_thread(enroll_fleet, plan, plain)
        for config in configs:  # e.g. today's broker port for nodes enrolled in an earlier run
            for key, value in (overrides or {}).items():
                if isinstance(value, dict) and isinstance(config.get(key), dict):
                    config[key] = {**config[key], **value}
                else:
                    config[key] = value
        return cls(
            broker_url=str(configs[0]["mqtt"]["url"]),
            data_dir=data_dir,
            count=count,
            prefix=prefix,
            node_configs=configs,
        )

    def _listener_for(self, node: SimNode) -> Callable[[StoredEvent], None]:
        def on_event(stored: StoredEvent) -> None:
            if stored.event_type != "panic":
                return
            pending = [p for p in node.presses if p.event_id is None]
            if pending:
                pending[0].event_id = stored.event_id
                self._by_event[stored.event_id] = pending[0]

        return on_event

    def press_for_event(self, event_id: str) -> PressRecord | None:
        """The simulated press that produced `event_id`, if it was one of ours."""
        return self._by_event.get(event_id)

    async def start(self, *, connect_timeout: float = 60.0, stagger_s: float = 0.0) -> None:
        """Start every agent and wait until all are connected to the broker."""
        for node in self.nodes:
            node.task = asyncio.ensure_future(node.agent.run())
            if stagger_s:
                await asyncio.sleep(stagger_s)
        await self.wait_connected(timeout=connect_timeout)

    async def wait_connected(self, *, timeout: float = 60.0) -> None:
        """Wait until every agent has a live MQTT session, or raise FleetError."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [n.node_id for n in self.nodes if not n.agent.connected]
            if not missing:
                return
            for node in self.nodes:
                if node.task is not None and node.task.done() and node.task.exception():
                    raise FleetError(f"{node.node_id} stopped: {node.task.exception()!r}")
            if time.monotonic() > deadline:
                raise FleetError(f"{len(missing)} nodes not connected, e.g. {missing[:3]}")
            await asyncio.sleep(0.05)

    async def press(self, index: int, *, hold_s: float = 0.08) -> PressRecord:
        """Press node `index`'s button on its mock pin, hold, release."""
        node = self.nodes[index]
        record = PressRecord(node.node_id, time.monotonic())
        node.presses.append(record)
        node.button.press()
        await asyncio.sleep(hold_s)
        node.button.release()
        return record

    @property
    def presses(self) -> list[PressRecord]:
        return [p for n in self.nodes for p in n.presses]

    def outbox_depth(self) -> int:
        """Events written by nodes and not yet acknowledged by the server."""
        return sum(n.agent.outbox_depth for n in self.nodes)

    async def stop(self) -> None:
        """Stop every agent and wait for their tasks."""
        for node in self.nodes:
            node.agent.stop()
        for node in self.nodes:
            if node.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.task, 10)
