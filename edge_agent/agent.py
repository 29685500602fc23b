"""Compatibility facade: `Agent` is a `edge_agent.node.Node` built by `build_node`.

Simulators and tests written before the node became an app of components
use this surface: `Agent.from_dict(config_dict, backend=SimBackend())`, press
``agent.button.press()``, read ``agent.indicator_history``,
``agent.last_panic_event_id``, ``agent.counters``, write other events with
`Agent.record_event`, set ``agent.capabilities`` for `Birth`, and hear acks
through `add_ack_listener`. New code builds the node with
`edge_agent.node.build_node` and adds components instead. An `Agent` leaves
certificate renewal out (callers run a `CertificateRenewer` beside it, as
before).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from edge_agent.component import CommandRefused
from edge_agent.config import AgentConfig, config_from_dict
from edge_agent.mqtt import Transport
from edge_agent.node import Node, build_node
from edge_agent.outbox import Outbox, StoredEvent
from edge_agent.panic import AlertPhase, PanicComponent
from edge_agent.power import PowerComponent, PowerManager
from edge_agent.press import PressInterpreter
from edge_agent.uplink import AckListener, EventListener, TransportFactory
from hardware.backends import HardwareBackend
from hardware.button import PanicButton
from hardware.clock import Clock
from hardware.indicator import Indicator, IndicatorChange, Pattern, SimIndicator
from proto.messages import Capability, EventBase

__all__ = ["AckListener", "Agent", "AlertPhase", "CommandRefused", "EventListener"]


class Agent:
    """The program one node runs, as one object; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        backend: HardwareBackend | None = None,
        button: PanicButton | None = None,
        indicator: Indicator | None = None,
        clock: Clock | None = None,
        transport_factory: TransportFactory | None = None,
        power: PowerManager | None = None,
    ) -> None:
        self._attach(
            build_node(
                config,
                backend=backend,
                button=button,
                indicator=indicator,
                clock=clock,
                transport_factory=transport_factory,
                power=power,
                renewal=False,
            )
        )

    def _attach(self, node: Node) -> None:
        panic = node.component("panic")
        assert isinstance(panic, PanicComponent)
        self.node: Node = node
        self.panic: PanicComponent = panic

    @classmethod
    def wrap(cls, node: Node) -> Agent:
        """This surface over a node `build_node` made (with its renewal and extra components)."""
        agent = cls.__new__(cls)
        agent._attach(node)
        return agent

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        backend: HardwareBackend | None = None,
        button: PanicButton | None = None,
        indicator: Indicator | None = None,
        clock: Clock | None = None,
        transport_factory: TransportFactory | None = None,
        power: PowerManager | None = None,
    ) -> Agent:
        """An agent from a plain config dict (what simulators and tests use)."""
        return cls(
            config_from_dict(data),
            backend=backend,
            button=button,
            indicator=indicator,
            clock=clock,
            transport_factory=transport_factory,
            power=power,
        )

    # ------------------------------------------------------------ read-outs

    @property
    def config(self) -> AgentConfig:
        return self.node.config

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def hardware_name(self) -> str:
        return self.node.hardware_name

    @property
    def clock(self) -> Clock:
        return self.node.clock

    @property
    def button(self) -> PanicButton:
        return self.panic.button

    @property
    def indicator(self) -> Indicator:
        return self.panic.indicator

    @property
    def interpreter(self) -> PressInterpreter:
        return self.panic.interpreter

    @property
    def outbox(self) -> Outbox:
        return self.node.outbox

    @property
    def counters(self) -> Counter[str]:
        return self.node.counters

    @property
    def rejections(self) -> Counter[str]:
        return self.node.router.rejections

    @property
    def transport(self) -> Transport | None:
        return self.node.uplink.transport

    @property
    def power(self) -> PowerManager | None:
        for component in self.node.components:
            if isinstance(component, PowerComponent):
                return component.manager
        return None

    @property
    def capabilities(self) -> list[Capability]:
        return self.node.capabilities

    @capabilities.setter
    def capabilities(self, value: list[Capability]) -> None:
        self.node.capabilities_override = list(value)

    @property
    def last_panic_event_id(self) -> str | None:
        return self.panic.last_panic_event_id

    @property
    def panic_event_ids(self) -> list[str]:
        return self.panic.panic_event_ids

    @property
    def alert_phase(self) -> AlertPhase:
        return self.panic.alert_phase

    @property
    def connected(self) -> bool:
        return self.node.uplink.connected

    @property
    def bd_seq(self) -> int:
        return self.node.uplink.bd_seq

    @property
    def outbox_depth(self) -> int:
        return self.node.outbox.depth

    @property
    def test_mode(self) -> bool:
        return self.node.test_mode

    @property
    def uptime_s(self) -> float:
        return self.node.uptime_s

    @property
    def indicator_history(self) -> list[IndicatorChange]:
        """The simulated indicator's history; only for `SimIndicator`."""
        if not isinstance(self.indicator, SimIndicator):
            raise TypeError("indicator history is only recorded by SimIndicator")
        return list(self.indicator.history)

    def desired_pattern(self) -> Pattern:
        return self.panic.desired_pattern()

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener(stored_event)` after each event is written to the outbox."""
        self.node.add_listener(listener)

    def add_ack_listener(self, listener: AckListener) -> None:
        """Call `listener(event_ids)` with the events each server `Ack` removed from the outbox."""
        self.node.add_ack_listener(listener)

    def record_event(self, build: Callable[[str, int], EventBase]) -> StoredEvent | None:
        """Write an event to the durable outbox and publish it (any event source; loop thread)."""
        return self.node.write_event(build)

    def tick(self) -> None:
        """Let the press interpreter decide what is due now."""
        self.panic.tick()

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until `stop()`."""
        await self.node.run()

    def stop(self) -> None:
        self.node.stop()

    def close(self) -> None:
        self.node.close()
