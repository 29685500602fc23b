"""A node as an app of components, on virtual time and an in-memory transport.

Every node here runs on a `ManualClock` (buttons, press timers, resends,
telemetry and power sampling all wait on it) and a `MemoryTransport` that
plays broker and server, so the tests assert exact virtual times and never
sleep. What the broker does is tested against the real Mosquitto in
tests/integration/test_edge_agent_broker.py; here the node's own behaviour is the story.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

from edge_agent.component import (
    CommandHandler,
    Component,
    ComponentBase,
    Health,
    NodeContext,
)
from edge_agent.config import AgentConfig, config_from_dict
from edge_agent.memory import MemoryTransport, memory_transport
from edge_agent.node import Node, build_node, report_fault
from edge_agent.outbox import Outbox
from edge_agent.panic import PanicComponent
from edge_agent.router import DuplicateCommand
from hardware import ManualClock, Pattern, SimBackend, SimButton
from proto.codec import encode, topic_for
from proto.ids import new_request_id
from proto.messages import (
    Ack,
    AlertStateCommand,
    Birth,
    Capability,
    CommandBase,
    EventBase,
    NodeFaultEvent,
    PanicEvent,
    PingCommand,
    PlateEvent,
    Reply,
    SetConfigCommand,
    Status,
    TamperEvent,
    Telemetry,
)

NODE = "lhr-vt-0001"


def make_config(tmp_path: Path, **extra: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "node_id": NODE,
        "serial": "SN-VT-1",
        "data_dir": str(tmp_path / NODE),
        "hardware": {"type": "sim"},
        "outbox": {"synchronous": "normal", "resend_after_s": 10.0},
        **extra,
    }
    return config_from_dict(data)


def make_node(
    tmp_path: Path,
    clock: ManualClock,
    *,
    components: Sequence[Component] = (),
    **extra: Any,
) -> Node:
    return build_node(
        make_config(tmp_path, **extra),
        backend=SimBackend(clock=clock),
        transport_factory=memory_transport(),
        components=components,
        renewal=False,
    )


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


@asynccontextmanager
async def running(node: Node, clock: ManualClock) -> AsyncIterator[MemoryTransport]:
    task = asyncio.ensure_future(node.run())
    await clock.elapse(0)
    transport = node.uplink.transport
    assert isinstance(transport, MemoryTransport)
    try:
        yield transport
    finally:
        node.stop()
        await asyncio.wait_for(task, 5)


def panic_of(node: Node) -> PanicComponent:
    panic = node.component("panic")
    assert isinstance(panic, PanicComponent)
    return panic


def button_of(node: Node) -> SimButton:
    button = panic_of(node).button
    assert isinstance(button, SimButton)
    return button


async def press(button: SimButton, clock: ManualClock, *, hold_s: float = 0.1) -> None:
    button.press()
    await clock.elapse(hold_s)
    button.release()
    await clock.elapse(0.1)


def ack_all(transport: MemoryTransport) -> None:
    ids = [e.event_id for e in transport.messages(EventBase)]
    transport.deliver(Ack(node_id=NODE, ts=transport.messages(Birth)[0].ts, event_ids=ids))


def command_common(clock: ManualClock) -> dict[str, Any]:
    return {"node_id": NODE, "ts": clock.now(), "request_id": new_request_id()}


def reply_to(transport: MemoryTransport, request_id: str) -> Reply:
    replies = [r for r in transport.messages(Reply) if r.request_id == request_id]
    assert replies, f"no reply to {request_id}"
    return replies[-1]


# ------------------------------------------------------------------ panic path


def test_a_press_on_virtual_time_is_sent_and_the_light_follows_the_ack(tmp_path: Path) -> None:
    clock = ManualClock(start=100.0)
    node = make_node(tmp_path, clock)
    light = panic_of(node).indicator

    async def body() -> None:
        async with running(node, clock) as transport:
            assert [s.state for s in transport.messages(Status)] == ["online"]
            birth = transport.messages(Birth)[0]
            assert birth.capabilities == [Capability.PANIC_BUTTON, Capability.INDICATOR]
            await press(button_of(node), clock)
            events = transport.messages(PanicEvent)
            assert [(e.seq, e.test) for e in events] == [(1, False)]
            assert node.outbox.depth == 1
            assert node.state.alert_active
            ack_all(transport)
            await clock.elapse(0)
            assert node.outbox.depth == 0

    run(body)
    history = [(round(c.t - 100.0, 3), c.pattern) for c in light.history]  # type: ignore[attr-defined]
    # Debounce (30 ms) plus the timer slack, exactly: virtual time has no jitter.
    assert history == [
        (0.0, Pattern.IDLE),
        (0.031, Pattern.SENT),
        (0.2, Pattern.DELIVERED),
    ]


def test_an_unacked_press_is_resent_after_resend_after_s_of_virtual_time(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock)

    async def body() -> None:
        async with running(node, clock) as transport:
            await press(button_of(node), clock)  # published at t = 0.031
            await clock.elapse(9.5)
            assert len(transport.messages(PanicEvent)) == 1
            await clock.elapse(2.0)  # the resend check at t = 11 finds it 10.97 s old
            sent = transport.messages(PanicEvent)
            assert len(sent) == 2
            assert sent[0].event_id == sent[1].event_id
            assert node.counters["resends"] == 1

    run(body)


def test_a_press_while_offline_shows_offline_and_goes_out_on_reconnect(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock)

    async def body() -> None:
        async with running(node, clock) as transport:
            transport.drop()
            await press(button_of(node), clock)
            assert panic_of(node).indicator.pattern is Pattern.OFFLINE
            assert not transport.messages(PanicEvent)
            assert not node.health()["uplink"].ok
            transport.connect()
            assert len(transport.messages(PanicEvent)) == 1
            assert panic_of(node).indicator.pattern is Pattern.SENT
            births = transport.messages(Birth)
            assert [b.bd_seq for b in births] == [1, 2]  # a new connect is a new birth

    run(body)


def test_a_stuck_button_raises_one_tamper_after_stuck_after_s_and_reports_unhealthy(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock, panic={"stuck_after_s": 30.0})

    async def body() -> None:
        async with running(node, clock) as transport:
            button = button_of(node)
            button.press()
            await clock.elapse(29.0)
            assert not transport.messages(TamperEvent)
            await clock.elapse(2.0)
            assert [t.active for t in transport.messages(TamperEvent)] == [True]
            assert panic_of(node).indicator.pattern is Pattern.FAULT
            assert node.health()["panic"] == Health(False, "button stuck")
            await clock.elapse(60.0)
            # One tamper event (resent until acked), not one per timer.
            assert len({t.event_id for t in transport.messages(TamperEvent)}) == 1
            ack_all(transport)
            button.release()
            await clock.elapse(0.1)
            assert [t.active for t in transport.messages(TamperEvent)][-1] is False
            assert node.health()["panic"].ok

    run(body)


def test_test_mode_marks_presses_and_ends_after_its_virtual_duration(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock)
    from proto.messages import TestModeCommand as ModeCommand

    async def body() -> None:
        async with running(node, clock) as transport:
            mode = ModeCommand(**command_common(clock), enabled=True, duration_s=60)
            transport.deliver(mode)
            assert reply_to(transport, mode.request_id).ok
            await press(button_of(node), clock)
            await clock.elapse(61.0)
            await press(button_of(node), clock)
            presses = {p.event_id: p.test for p in transport.messages(PanicEvent)}  # resends too
            assert list(presses.values()) == [True, False]

    run(body)


# ------------------------------------------------------------- commands, router


def test_commands_are_routed_by_name_to_the_component_that_owns_them(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock)
    assert node.router.names == {
        "ping": "system",
        "set_config": "system",
        "test_mode": "system",
        "alert_state": "panic",
    }

    async def body() -> None:
        async with running(node, clock) as transport:
            await press(button_of(node), clock)
            ack_all(transport)
            help_coming = AlertStateCommand(
                **command_common(clock), alert_id="A-1", state="dispatched"
            )
            transport.deliver(help_coming)
            assert reply_to(transport, help_coming.request_id).result == {
                "indicator": "help_coming"
            }
            change = SetConfigCommand(**command_common(clock), changes={"panic.debounce_ms": 5})
            transport.deliver(change)
            assert reply_to(transport, change.request_id).ok
            assert node.config.panic.debounce_ms == 5
            assert panic_of(node).interpreter.debounce_s == pytest.approx(0.005)
            transport.deliver_raw(f"nb/v1/{NODE}/cmd/reboot", b"{}")
            assert node.router.rejections["bad_topic"] == 1

    run(body)


def test_ping_reports_every_components_health(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock, power={"enabled": True, "monitor": {"type": "sim"}})

    async def body() -> None:
        async with running(node, clock) as transport:
            ping = PingCommand(**command_common(clock))
            transport.deliver(ping)
            result = reply_to(transport, ping.request_id).result
            assert result is not None
            health: Any = result["health"]
            assert set(health["components"]) == {"uplink", "system", "panic", "power"}
            assert health["ok"] is True, health
            assert health["components"]["uplink"]["detail"].startswith("MQTT up")
            assert health["components"]["power"]["detail"].startswith("power monitor reading")

    run(body)


def test_power_health_goes_bad_when_the_monitor_stops_reading(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(
        tmp_path, clock, power={"enabled": True, "interval_s": 10.0, "monitor": {"type": "sim"}}
    )
    from hardware.errors import HardwareError
    from hardware.power import PowerReading

    async def body() -> None:
        async with running(node, clock):
            assert node.health()["power"].ok
            power: Any = node.component("power")

            def broken() -> PowerReading:
                raise HardwareError("I2C bus gone")

            power.manager.monitor.read = broken
            await clock.elapse(10.0)
            assert node.health()["power"] == Health(
                False, "power monitor: 1 failed readings in a row"
            )

    run(body)


def test_telemetry_gathers_every_components_fields_on_its_interval(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    node = make_node(
        tmp_path,
        clock,
        telemetry={"interval_s": 30.0},
        power={"enabled": True, "interval_s": 60.0, "monitor": {"type": "sim"}},
    )

    async def body() -> None:
        async with running(node, clock) as transport:
            # The first report comes at a random point d of the first 30 s (the fleet's
            # reports are spread), then every 30 s: in 120 s that is d, d+30, d+60, d+90
            # whatever d is (95 s gave a fourth report whenever d fell under 5 s).
            await clock.elapse(120.0)
            reports = transport.messages(Telemetry)
            assert len(reports) == 4
            last = reports[-1]
            assert last.outbox_depth == 0
            assert last.power is not None
            assert last.power.battery_soc is not None
            gaps = {round(b.uptime_s - a.uptime_s, 6) for a, b in itertools.pairwise(reports)}
            assert gaps == {30.0}

    run(body)


# ------------------------------------------------- adding a component (issue 10)


class SnapshotCommand(CommandBase):
    """A command only the test's camera component answers."""

    name: Literal["snapshot"] = "snapshot"
    camera_id: str


class CameraStub:
    """A new kind of component, written against the protocol and nothing else."""

    name = "camera"

    def __init__(self) -> None:
        self.frames = 0
        self.frames_dropped = 0
        self.running = False

    @property
    def capabilities(self) -> Sequence[Capability]:
        return (Capability.CAMERA, Capability.ANPR)

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"snapshot": self._snapshot}

    def telemetry(self) -> Mapping[str, Any]:
        return {"frames_dropped": self.frames_dropped}

    def health(self) -> Health:
        return Health(self.running and self.frames > 0, f"{self.frames} frames")

    async def run(self, ctx: NodeContext) -> None:
        self.running = True
        try:
            while True:
                await ctx.clock.sleep(1.0)
                self.frames += 25
                self.frames_dropped += 1
                if self.frames == 50:
                    ctx.write_event(self._plate(ctx))
        finally:
            self.running = False

    def _plate(self, ctx: NodeContext) -> Callable[[str, int], EventBase]:
        def build(event_id: str, seq: int) -> EventBase:
            return PlateEvent(
                node_id=ctx.node_id,
                ts=ctx.clock.now(),
                event_id=event_id,
                seq=seq,
                camera_id="cam-1",
                track_id="cam-1-1",
                plate="LEA-1234",
                confidence=0.97,
                frames=9,
            )

        return build

    def _snapshot(self, command: CommandBase) -> Mapping[str, Any]:
        assert isinstance(command, SnapshotCommand)
        return {"camera_id": command.camera_id, "frames": self.frames}


def test_a_new_component_is_added_without_touching_the_uplink_router_or_others(
    tmp_path: Path,
) -> None:
    """The camera pipeline and the OTA client will join the node this way.

    Its command is routed (a new *wire* command also needs its model in
    `proto`'s command catalogue; the router itself needs nothing), its
    telemetry and health show up, its capabilities are in `Birth`, and its
    events go through the same durable outbox.
    """
    clock = ManualClock(start=0.0)
    camera = CameraStub()
    node = make_node(tmp_path, clock, components=[camera], telemetry={"interval_s": 5.0})
    assert node.router.names["snapshot"] == "camera"

    async def body() -> None:
        async with running(node, clock) as transport:
            birth = transport.messages(Birth)[0]
            assert birth.capabilities == [
                Capability.PANIC_BUTTON,
                Capability.INDICATOR,
                Capability.CAMERA,
                Capability.ANPR,
            ]
            await clock.elapse(11.0)
            snapshot = SnapshotCommand(**command_common(clock), camera_id="cam-1")
            node.router.dispatch(snapshot)
            assert reply_to(transport, snapshot.request_id).result == {
                "camera_id": "cam-1",
                "frames": 275,
            }
            assert transport.messages(Telemetry)[-1].frames_dropped is not None
            assert [p.plate for p in transport.messages(PlateEvent)] == ["LEA-1234"]
            ping = PingCommand(**command_common(clock))
            transport.deliver(ping)
            result: Any = reply_to(transport, ping.request_id).result
            assert result["health"]["components"]["camera"] == {"ok": True, "detail": "275 frames"}
            await press(button_of(node), clock)  # the panic path is untouched
            assert len(transport.messages(PanicEvent)) == 1

    run(body)
    assert not camera.running  # cancelled with the node


def test_two_components_cannot_claim_the_same_command(tmp_path: Path) -> None:
    class Impostor(ComponentBase):
        name = "impostor"

        def commands(self) -> Mapping[str, CommandHandler]:
            return {"ping": lambda command: {}}

    with pytest.raises(DuplicateCommand, match="ping"):
        make_node(tmp_path, ManualClock(), components=[Impostor()])


def test_a_crashing_component_reports_a_node_fault_and_the_panic_path_carries_on(
    tmp_path: Path,
) -> None:
    class Flaky(ComponentBase):
        name = "gnss"

        async def run(self, ctx: NodeContext) -> None:
            await ctx.clock.sleep(5.0)
            raise RuntimeError("serial port vanished")

    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock, components=[Flaky()])

    async def body() -> None:
        async with running(node, clock) as transport:
            await clock.elapse(6.0)
            faults = transport.messages(NodeFaultEvent)
            assert [(f.component, f.code, f.active) for f in faults] == [("gnss", "crashed", True)]
            assert "serial port vanished" in (faults[0].detail or "")
            assert not node.health()["gnss"].ok
            await press(button_of(node), clock)
            assert len(transport.messages(PanicEvent)) == 1

    run(body)


def test_a_telemetry_field_the_contract_lacks_is_dropped_not_fatal(tmp_path: Path) -> None:
    class Chatty(ComponentBase):
        name = "chatty"

        def telemetry(self) -> Mapping[str, Any]:
            return {"fan_rpm": 1200, "temperature_c": 41.5}

    clock = ManualClock(start=0.0)
    node = make_node(tmp_path, clock, components=[Chatty()])

    async def body() -> None:
        async with running(node, clock):
            report = node.telemetry.report(node)
            assert report.temperature_c == 41.5
            assert node.counters["telemetry_fields_dropped"] == 1

    run(body)


# -------------------------------------------------------- a node that cannot start


def test_a_startup_fault_is_written_durably_and_delivered_where_an_uplink_exists(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)

    def acking(uplink: Any) -> MemoryTransport:
        transport = MemoryTransport(
            will=uplink.will,
            on_connect=uplink.on_connect,
            on_disconnect=uplink.on_disconnect,
            on_message=uplink.on_message,
        )
        publish = transport.publish

        def publish_and_ack(
            topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
        ) -> bool:
            ok = publish(topic, payload, qos=qos, retain=retain)
            if ok and "/event/" in topic:
                event = transport.published[-1].message()
                ack = Ack(node_id=NODE, ts=event.ts, event_ids=[event.event_id])
                asyncio.get_running_loop().call_soon(
                    transport.deliver_raw, topic_for(ack), encode(ack)
                )
            return ok

        transport.publish = publish_and_ack  # type: ignore[method-assign]
        return transport

    delivered = asyncio.run(
        report_fault(
            config,
            component="hardware",
            code="backend_unavailable",
            detail="no GPIO pin factory can load",
            wait_s=5.0,
            transport_factory=acking,
        )
    )
    assert delivered
    outbox = Outbox(config.data_dir / "outbox.sqlite3")
    try:
        assert outbox.depth == 0
    finally:
        outbox.close()


def test_an_undelivered_startup_fault_stays_in_the_outbox_for_the_next_start(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    delivered = asyncio.run(
        report_fault(
            config,
            component="hardware",
            code="backend_unavailable",
            detail="no GPIO pin factory can load",
            wait_s=0.05,
            transport_factory=memory_transport(connect_on_run=False),
        )
    )
    assert not delivered
    outbox = Outbox(config.data_dir / "outbox.sqlite3")
    try:
        assert [e.event_type for e in outbox.pending()] == ["node_fault"]
    finally:
        outbox.close()


COMPONENT_MODULES = (
    "edge_agent.uplink",
    "edge_agent.router",
    "edge_agent.system",
    "edge_agent.panic",
    "edge_agent.power",
    "edge_agent.renewal",
    "edge_agent.telemetry",
)


@pytest.mark.parametrize("module_name", COMPONENT_MODULES)
def test_components_never_import_each_other_or_the_node(module_name: str) -> None:
    """They share the `NodeContext` only; the node (and the facade) assemble them."""
    import ast
    import importlib

    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    forbidden = (set(COMPONENT_MODULES) - {module_name}) | {"edge_agent.node", "edge_agent.agent"}
    assert imported & forbidden == set()


def test_build_node_with_no_board_named_needs_gpio_or_an_explicit_dev_mode(
    tmp_path: Path,
) -> None:
    import warnings

    from hardware import BackendUnavailable, HardwareFallback, RpiBackend

    try:
        RpiBackend().pin_factory.close()
    except BackendUnavailable:
        pass
    else:
        pytest.skip("this machine has real GPIO; the rpi backend loads")
    base: dict[str, Any] = {"node_id": NODE, "serial": "s", "data_dir": str(tmp_path / "n")}
    with pytest.raises(BackendUnavailable, match="no hardware backend is named"):
        build_node(config_from_dict(base), environ={}, renewal=False)
    assert not (tmp_path / "n" / "outbox.sqlite3").exists()  # nothing half-built
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        node = build_node(config_from_dict({**base, "dev_mode": True}), environ={}, renewal=False)
    try:
        assert node.hardware_name == "sim"
        assert any(issubclass(w.category, HardwareFallback) for w in caught)
    finally:
        node.close()
