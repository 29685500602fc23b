"""What a part of the node is: the `Component` protocol and the `NodeContext` it runs in.

The node (`edge_agent.node.Node`) is an app of components — the uplink, the
panic button and its light, power, certificate renewal, and later the camera
pipeline and the OTA client. A component says what it is (``name``, the
``capabilities`` it adds to `Birth`), which commands it answers (a name →
handler map the command router dispatches on), what it adds to the periodic
`Telemetry` (values for the message's own fields) and how healthy it is
(`Health`, read by OTA's health gate and by the ``ping`` reply), and it
runs as ``await component.run(ctx)`` until the node stops (cancelled then).

Components never import each other. Everything they share goes through the
`NodeContext`: write an event through the durable outbox, publish a message,
the node's clock and counters, the current config, and a read-only
`NodeState` (connected, outbox depth, alert active, power step, test mode).
What a component must tell the others it reports as node state
(`NodeContext.set_state`); what it must hear it gets as a `Signal`
(`NodeContext.subscribe`: connected, disconnected, acked, config changed).

A component's ``run`` does its set-up (subscribing, installing callbacks)
before its first ``await``: the node starts every component before it
connects the uplink, so nothing is missed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from edge_agent.errors import AgentError
from hardware.clock import Clock
from proto.messages import Capability, CommandBase, EventBase, WireModel

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.outbox import StoredEvent

__all__ = [
    "CommandHandler",
    "CommandRefused",
    "Component",
    "ComponentBase",
    "EventBuilder",
    "Health",
    "NodeContext",
    "NodeState",
    "Signal",
    "SignalKind",
]

EventBuilder = Callable[[str, int], EventBase]
CommandHandler = Callable[[CommandBase], Mapping[str, Any] | None]
SignalKind = Literal["connected", "disconnected", "acked", "config"]


class CommandRefused(AgentError):
    """A command was understood but cannot be carried out; the reply says why."""


@dataclass(frozen=True)
class Health:
    """One component's health: ``ok`` and a short reason a technician can read."""

    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Signal:
    """Something happened on the node that components may react to."""

    kind: SignalKind
    event_ids: tuple[str, ...] = ()


class NodeState(Protocol):
    """What any component may read about the node (never write)."""

    @property
    def connected(self) -> bool: ...

    @property
    def outbox_depth(self) -> int: ...

    @property
    def panic_pending(self) -> bool:
        """A panic event is in the outbox waiting for the server's ack."""
        ...

    @property
    def alert_active(self) -> bool: ...

    @property
    def power_step(self) -> int: ...

    @property
    def test_mode(self) -> bool: ...

    @property
    def uptime_s(self) -> float: ...

    @property
    def bd_seq(self) -> int: ...

    @property
    def last_seq(self) -> int: ...


class NodeContext(Protocol):
    """The one door from a component to the rest of the node."""

    @property
    def node_id(self) -> str: ...

    @property
    def config(self) -> AgentConfig:
        """The node's current configuration (a ``set_config`` command replaces it)."""
        ...

    @property
    def clock(self) -> Clock:
        """The node's clock: time stamps, `sleep` and `call_later` go through it."""
        ...

    @property
    def counters(self) -> Counter[str]: ...

    @property
    def state(self) -> NodeState: ...

    def write_event(self, build: EventBuilder) -> StoredEvent | None:
        """Write an event to the durable outbox and publish it; None if the disk refused."""
        ...

    def publish(self, message: WireModel, *, qos: int = 1) -> bool:
        """Publish a non-event message (QoS 0/1); False when it cannot go out now."""
        ...

    def set_state(self, *, alert_active: bool | None = None, power_step: int | None = None) -> None:
        """Report the part of the node state this component owns."""
        ...

    def subscribe(self, listener: Callable[[Signal], None]) -> None:
        """Call `listener` with every `Signal` from now on (in the loop thread)."""
        ...

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the node's loop (from a hardware callback thread or the loop itself)."""
        ...

    def request_stop(self) -> None:
        """Stop the node (the last power step does this)."""
        ...

    def apply_config(self, changes: Mapping[str, Any]) -> AgentConfig:
        """Validate and apply runtime config changes (all or nothing); `ConfigError` if not."""
        ...

    def set_test_mode(self, *, enabled: bool, duration_s: float) -> None:
        """Enter or leave commissioning test mode for `duration_s` of the node's clock."""
        ...

    def health(self) -> dict[str, Health]:
        """Every component's health, by name."""
        ...

    def reload_tls(self) -> None:
        """Make the uplink reconnect with renewed certificate files."""
        ...


@runtime_checkable
class Component(Protocol):
    """A part of the node; see the module docstring."""

    name: str

    @property
    def capabilities(self) -> Sequence[Capability]: ...

    def commands(self) -> Mapping[str, CommandHandler]:
        """Command name (``cmd/<name>``) → handler; the router refuses a second owner."""
        ...

    def telemetry(self) -> Mapping[str, Any]:
        """Values for `proto.messages.Telemetry` fields this component measures."""
        ...

    def health(self) -> Health: ...

    async def run(self, ctx: NodeContext) -> None:
        """Do the component's work until cancelled; set-up before the first await."""
        ...


class ComponentBase:
    """Defaults for a component that has no commands, telemetry or loop of its own."""

    name = "component"

    @property
    def capabilities(self) -> Sequence[Capability]:
        return ()

    def commands(self) -> Mapping[str, CommandHandler]:
        return {}

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def health(self) -> Health:
        return Health(True)

    async def run(self, ctx: NodeContext) -> None:
        return None
