"""The node: an app of components around one uplink, one command router and one clock.

`build_node(config, ...)` is the one way a node is assembled — by the
``nigehbaan agent`` CLI, the simulated fleets and the demo: it loads the
hardware backends the config names (`hardware.backends.load_backend`; no
silent simulator outside development mode), opens the durable outbox, and
puts together the uplink, the node's own commands (`edge_agent.system`), the
panic component, power (when ``[power] enabled``), certificate renewal, the
camera pipeline (`edge_agent.camera`, when ``[[cameras]]`` are configured and
the caller did not pass its own ``camera`` component), and any extra
components the caller adds (the OTA client).

`Node` is the `NodeContext` every component sees. It routes each component's
commands, gathers its telemetry and health, puts its capabilities in `Birth`,
and runs each ``component.run(ctx)`` as a task: a component that crashes is
logged, counted, reported as unhealthy and as a `NodeFaultEvent`, and the
rest of the node carries on (the panic path never depends on a camera).

Many nodes share one asyncio loop (the simulator runs thousands), so a node
never blocks for long, never starts a thread per node and never calls
`asyncio.run`: ``await node.run()`` runs it until ``node.stop()``. Every wait
goes through the node's `hardware.clock.Clock`, so on a `ManualClock` a test
drives a whole node in virtual time (see tests/unit/test_edge_components.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

from edge_agent.component import (
    Component,
    EventBuilder,
    Health,
    NodeContext,
    Signal,
)
from edge_agent.config import AgentConfig, apply_changes, config_hash
from edge_agent.outbox import Outbox, StoredEvent
from edge_agent.panic import PanicComponent
from edge_agent.power import PowerComponent, PowerManager
from edge_agent.renewal import CertificateRenewer
from edge_agent.router import CommandRouter
from edge_agent.system import SystemCommands
from edge_agent.telemetry import TelemetryReporter
from edge_agent.uplink import AckListener, EventListener, TransportFactory, Uplink
from hardware.backends import HardwareBackend, load_backend
from hardware.button import PanicButton
from hardware.clock import Clock, SystemClock
from hardware.indicator import Indicator
from proto.messages import Birth, Capability, EventBase, Firmware, NodeFaultEvent, WireModel

__all__ = ["Node", "build_node", "firmware_version", "report_fault"]

logger = logging.getLogger(__name__)


def firmware_version() -> str:
    """The installed agent's version, reported in `Birth`."""
    try:
        return metadata.version("nigehbaan")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class _State:
    """The read-only `NodeState` view of a `Node`."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def connected(self) -> bool:
        return self._node.uplink.connected

    @property
    def outbox_depth(self) -> int:
        return self._node.outbox.depth

    @property
    def panic_pending(self) -> bool:
        return self._node.outbox.has_pending_panic()

    @property
    def alert_active(self) -> bool:
        return self._node._alert_active

    @property
    def power_step(self) -> int:
        return self._node._power_step

    @property
    def test_mode(self) -> bool:
        return self._node.test_mode

    @property
    def uptime_s(self) -> float:
        return self._node.uptime_s

    @property
    def bd_seq(self) -> int:
        return self._node.uplink.bd_seq

    @property
    def last_seq(self) -> int:
        return self._node.outbox.last_seq


class Node:
    """One node's running program; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        outbox: Outbox,
        clock: Clock,
        components: Sequence[Component],
        hardware_name: str = "custom",
        transport_factory: TransportFactory | None = None,
        telemetry_clock: Clock | None = None,
        owned: Iterable[Any] = (),
    ) -> None:
        self._config = config
        self.outbox = outbox
        self._clock = clock
        self.hardware_name = hardware_name
        self._counters: Counter[str] = Counter()
        self._owned = list(owned)
        self._listeners: list[Callable[[Signal], None]] = []
        self._alert_active = False
        self._power_step = 0
        self._test_mode = config.test_mode
        self._test_mode_until: float | None = None
        self._failed: dict[str, str] = {}
        self.capabilities_override: list[Capability] | None = None
        self.router = CommandRouter(
            node_id=config.node_id, clock=clock, counters=self._counters, publish=self.publish
        )
        self.uplink = Uplink(
            config=lambda: self._config,
            outbox=outbox,
            clock=clock,
            counters=self._counters,
            birth=self._birth,
            on_command=self.router.dispatch,
            on_reject=self.router.reject,
            signal=self._emit,
            transport_factory=transport_factory,
        )
        self.system = SystemCommands()
        self.system.bind(self)
        self.components: list[Component] = [self.uplink, self.system, *components]
        names = [c.name for c in self.components]
        if len(names) != len(set(names)):
            raise ValueError(f"component names must be unique: {names}")
        for component in self.components:
            self.router.add(component.name, component.commands())
        self.telemetry = TelemetryReporter(
            clock=telemetry_clock or clock, components=lambda: self.components
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = False
        self._started_at: float | None = None
        self._closed = False

    # ------------------------------------------------------------ NodeContext

    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def config(self) -> AgentConfig:
        return self._config

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def counters(self) -> Counter[str]:
        return self._counters

    @property
    def state(self) -> _State:
        return _State(self)

    def write_event(self, build: EventBuilder) -> StoredEvent | None:
        return self.uplink.write_event(build)

    def publish(self, message: WireModel, *, qos: int = 1) -> bool:
        return self.uplink.publish(message, qos=qos)

    def set_state(self, *, alert_active: bool | None = None, power_step: int | None = None) -> None:
        if alert_active is not None:
            self._alert_active = alert_active
        if power_step is not None:
            self._power_step = power_step

    def subscribe(self, listener: Callable[[Signal], None]) -> None:
        self._listeners.append(listener)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        if self._loop is None:
            return  # not running: there is no one to hand it to (edges before start are lost)
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def request_stop(self) -> None:
        self.stop()

    def apply_config(self, changes: Mapping[str, Any]) -> AgentConfig:
        self._config = apply_changes(self._config, changes)
        self._emit(Signal("config"))
        return self._config

    def set_test_mode(self, *, enabled: bool, duration_s: float) -> None:
        self._test_mode = enabled
        self._test_mode_until = self._clock.monotonic() + duration_s if enabled else None

    def health(self) -> dict[str, Health]:
        report: dict[str, Health] = {}
        for component in self.components:
            if component.name in self._failed:
                report[component.name] = Health(False, self._failed[component.name])
                continue
            try:
                report[component.name] = component.health()
            except Exception as exc:
                report[component.name] = Health(False, f"health check failed: {exc}"[:200])
        return report

    def reload_tls(self) -> None:
        self.uplink.reload_tls()

    # -------------------------------------------------------------- read-outs

    @property
    def test_mode(self) -> bool:
        """True while presses are sent as test presses."""
        if (
            self._test_mode
            and self._test_mode_until is not None
            and self._clock.monotonic() >= self._test_mode_until
        ):
            self._test_mode = False
            self._test_mode_until = None
            logger.info("%s: test mode ended", self.node_id)
        return self._test_mode

    @property
    def uptime_s(self) -> float:
        if self._started_at is None:
            return 0.0
        return max(0.0, self._clock.monotonic() - self._started_at)

    @property
    def capabilities(self) -> list[Capability]:
        """Sent in `Birth`: every component's, in order, unless overridden."""
        if self.capabilities_override is not None:
            return list(self.capabilities_override)
        found: list[Capability] = []
        for component in self.components:
            found.extend(c for c in component.capabilities if c not in found)
        return found

    def component(self, name: str) -> Component:
        """The component called `name` (KeyError if none)."""
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener(stored_event)` after each event is written to the outbox."""
        self.uplink.event_listeners.append(listener)

    def add_ack_listener(self, listener: AckListener) -> None:
        """Call `listener(event_ids)` with the events each server `Ack` removed from the outbox."""
        self.uplink.ack_listeners.append(listener)

    def _birth(self, bd_seq: int) -> Birth:
        return Birth(
            node_id=self.node_id,
            ts=self._clock.now(),
            bd_seq=bd_seq,
            serial=self._config.serial,
            hardware=self.hardware_name,
            firmware=Firmware(version=firmware_version()),
            capabilities=self.capabilities,
            config_hash=config_hash(self._config),
            site_id=self._config.site_id,
            district=self._config.district,
            last_seq=self.outbox.last_seq,
            location=self._config.location,
        )

    def _emit(self, signal: Signal) -> None:
        for listener in list(self._listeners):
            try:
                listener(signal)
            except Exception:
                logger.exception("%s: %s listener failed", self.node_id, signal.kind)

    # -------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Run until `stop()`; closes the outbox (and hardware it made) on the way out."""
        if self._closed:
            raise RuntimeError("a node runs once; build a new one")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        self._started_at = self._clock.monotonic()
        others = [c for c in self.components if c is not self.uplink]
        tasks = [asyncio.ensure_future(self._run_component(c)) for c in others]
        await asyncio.sleep(0)  # each component's set-up runs before the uplink connects
        uplink_task = asyncio.ensure_future(self._run_component(self.uplink))
        telemetry_task = asyncio.ensure_future(self.telemetry.run(self))
        logger.info("%s: node running (hardware %s)", self.node_id, self.hardware_name)
        try:
            await self._stop_event.wait()
        finally:
            for task in [*tasks, telemetry_task]:
                task.cancel()
            for task in [*tasks, telemetry_task]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            uplink_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await uplink_task
            self.close()
            logger.info("%s: node stopped", self.node_id)

    async def _run_component(self, component: Component) -> None:
        try:
            await component.run(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:900]
            self._failed[component.name] = f"crashed: {detail}"
            self._counters["component_failures"] += 1
            logger.exception("%s: component %s crashed", self.node_id, component.name)
            self.write_event(_fault(self, component=component.name, code="crashed", detail=detail))

    def stop(self) -> None:
        """Ask `run()` to finish (from the loop thread or any other)."""
        self._stop_requested = True
        if self._loop is not None and self._stop_event is not None:
            stop_event = self._stop_event
            self.call_soon_threadsafe(stop_event.set)

    def close(self) -> None:
        """Close the outbox and any hardware the node created itself."""
        if self._closed:
            return
        self._closed = True
        self.outbox.close()
        for device in self._owned:
            device.close()


def _fault(ctx: NodeContext, *, component: str, code: str, detail: str) -> EventBuilder:
    node_id = ctx.node_id
    clock = ctx.clock

    def build(event_id: str, seq: int) -> EventBase:
        return NodeFaultEvent(
            node_id=node_id,
            ts=clock.now(),
            event_id=event_id,
            seq=seq,
            component=component,
            code=code,
            active=True,
            detail=detail[:1000],
        )

    return build


def _open_outbox(config: AgentConfig) -> Outbox:
    return Outbox(
        config.data_dir / "outbox.sqlite3",
        max_events=config.outbox.max_events,
        synchronous=config.outbox.synchronous,
    )


def _power_manager(
    config: AgentConfig, backend: HardwareBackend | None, clock: Clock
) -> PowerManager | None:
    """The power manager `config.power` asks for, on the configured or the board's monitor."""
    if not config.power.enabled:
        return None
    from hardware.power import MONITORS

    if config.power.monitor is not None:
        monitor = MONITORS.create(config.power.monitor, clock=clock)
    elif backend is not None:
        monitor = backend.power_monitor()
    else:
        monitor = MONITORS.create({"type": "sim"}, clock=clock)
    return PowerManager(config=config.power, monitor=monitor, clock=clock, node_id=config.node_id)


def build_node(
    config: AgentConfig,
    *,
    backend: HardwareBackend | None = None,
    button: PanicButton | None = None,
    indicator: Indicator | None = None,
    clock: Clock | None = None,
    transport_factory: TransportFactory | None = None,
    power: PowerManager | None = None,
    components: Sequence[Component] = (),
    renewal: bool | CertificateRenewer = True,
    environ: Mapping[str, str] | None = None,
) -> Node:
    """Assemble a node from `config`; see the module docstring.

    `backend` (or `button` + `indicator`) replaces the configured hardware;
    `clock` drives every timer (default: the button's clock); `power` replaces
    the manager ``[power]`` would build; `components` are added after the
    built-in ones; `renewal` False leaves certificate renewal out (or pass
    your own `CertificateRenewer`). Raises `hardware.errors.HardwareError` when
    the hardware cannot load (outside development mode no simulator steps in).
    """
    owned: list[Any] = []
    bundles: Component | None = None
    if config.ota.enabled:
        # The configuration and model bundles OTA installed, and their health (docs/ota.md).
        from edge_agent.ota import use_slots

        config, bundles = use_slots(config)
    if backend is None and (button is None or indicator is None):
        backend = load_backend(
            config=config.hardware, clock=clock, environ=environ, dev_mode=config.dev_mode
        )
    hardware_name = backend.name if backend is not None else "custom"
    try:
        if button is None:
            assert backend is not None
            button = backend.button(pin=config.panic.pin, name=config.panic.button)
            owned.append(button)
        if indicator is None:
            assert backend is not None
            indicator = backend.indicator(
                led_pin=config.indicator.led_pin, buzzer_pin=config.indicator.buzzer_pin
            )
            owned.append(indicator)
        node_clock: Clock = clock or button.clock
        manager = power if power is not None else _power_manager(config, backend, node_clock)
        outbox = _open_outbox(config)
    except BaseException:
        for device in owned:
            device.close()
        raise
    parts: list[Component] = [
        PanicComponent(
            button=button,
            indicator=indicator,
            clock=node_clock,
            config=config.panic,
            panic_pending=outbox.has_pending_panic(),
        )
    ]
    if manager is not None:
        parts.append(PowerComponent(manager))
    if renewal is not False:
        parts.append(renewal if isinstance(renewal, CertificateRenewer) else CertificateRenewer())
    parts.extend(components)
    if config.cameras and not any(part.name == "camera" for part in parts):
        # The camera pipeline runs the [[cameras]] entries; it imports numpy/cv2 only in run().
        from edge_agent.camera.pipeline import CameraPipeline
        from edge_agent.watchlist import WatchlistComponent, watchlist_store_for

        store = watchlist_store_for(config)  # plate hotlists (docs/watchlists.md); None: no CA
        parts.append(CameraPipeline.from_config(config, clock=node_clock, watchlists=store))
        if store is not None and not any(part.name == "watchlist" for part in parts):
            parts.append(WatchlistComponent(store, now=node_clock.now))
    camera = next((part for part in parts if part.name == "camera"), None)
    if camera is not None and not any(part.name == "snapshot" for part in parts):
        # A panic nearby pulls a still from each camera (docs/watchlists-operations.md).
        from edge_agent.snapshot import SnapshotComponent, SnapshotSource

        if isinstance(camera, SnapshotSource):
            parts.append(SnapshotComponent(camera))
    if config.ota.enabled and not any(part.name == "ota" for part in parts):
        # The OTA client (docs/ota.md); it imports python-tuf only when it first checks.
        from edge_agent.ota import OtaComponent

        parts.append(OtaComponent.from_config(config, hardware=hardware_name))
    if bundles is not None and not any(part.name == bundles.name for part in parts):
        parts.append(bundles)
    uploader = None
    wants_upload = config.evidence.upload.url is not None
    if wants_upload and not any(part.name == "evidence_upload" for part in parts):
        # Node-signed evidence upload over HTTPS (docs/evidence.md); one store shared with
        # the camera pipeline, so pins and deletions apply to the files it writes.
        from edge_agent.evidence_upload import EvidenceUploader, evidence_store_for

        evidence = evidence_store_for(config)
        for part in parts:
            if part.name == "camera" and getattr(part, "evidence", None) is None:
                part.evidence = evidence  # type: ignore[attr-defined]
        uploader = EvidenceUploader.from_config(config, store=evidence)
        parts.append(uploader)
    # Telemetry follows the power clock (simulated time in a sped-up fleet).
    node = Node(
        config,
        outbox=outbox,
        clock=node_clock,
        components=parts,
        hardware_name=hardware_name,
        transport_factory=transport_factory,
        telemetry_clock=manager.clock if manager is not None else node_clock,
        owned=owned,
    )
    if uploader is not None:
        node.add_listener(uploader.on_event)
    return node


async def report_fault(
    config: AgentConfig,
    *,
    component: str,
    code: str,
    detail: str,
    wait_s: float = 5.0,
    transport_factory: TransportFactory | None = None,
    clock: Clock | None = None,
) -> bool:
    """Write a `NodeFaultEvent` to the outbox and try to deliver it for `wait_s` seconds.

    For a node that cannot start (its hardware does not load): the event is on
    disk either way, so the next start that connects sends it. True once the
    server acknowledged it.
    """
    clock = clock or SystemClock()
    node = Node(
        config,
        outbox=_open_outbox(config),
        clock=clock,
        components=(),
        hardware_name="unavailable",
        transport_factory=transport_factory,
    )
    node.capabilities_override = []
    stored = node.write_event(_fault(node, component=component, code=code, detail=detail))
    if stored is None:
        node.close()
        return False
    acked = asyncio.Event()
    node.add_ack_listener(lambda ids: acked.set() if stored.event_id in ids else None)
    task = asyncio.ensure_future(node.run())
    try:
        await asyncio.wait_for(acked.wait(), wait_s)
    except asyncio.TimeoutError:
        logger.warning("%s: node_fault not acknowledged within %.0fs", config.node_id, wait_s)
    finally:
        node.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5.0)
    return acked.is_set()
