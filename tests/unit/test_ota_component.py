"""The node's OTA component: it defers for an alert, a low battery and the maintenance window,
installs on trial, reports healthy or rolls back by itself, every state an `ota` event.

A whole node on a `ManualClock` with the edge agent's `MemoryTransport` (the uplink) and
the OTA repository simulator (`ota.memory`) as the HTTPS side.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge_agent.component import ComponentBase, Health, NodeContext
from edge_agent.config import config_from_dict
from edge_agent.memory import MemoryTransport, memory_transport
from edge_agent.node import Node, build_node
from edge_agent.ota import OtaComponent, OtaConfig, deferral_reason
from hardware import ManualClock, SimBackend
from ota.artifacts import ArtifactKind, ArtifactManifest, build_artifact
from ota.memory import SimulatedRepository
from proto.ids import new_request_id
from proto.messages import OtaCheckCommand, OtaEvent
from tests.support.polling import until

NODE = "lhr-ota-0001"
GROUP = "lhr-ota-0001"


def _app(tmp_path: Path, version: str) -> tuple[bytes, ArtifactManifest]:
    src = tmp_path / f"src-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "agent.py").write_text(f"VERSION = {version!r}\n" + "# padding\n" * 2000)
    return build_artifact(
        src, kind=ArtifactKind.APP, name="agent", version=version, hardware=["sim"]
    )


class _Sick(ComponentBase):
    """A component whose health a test sets (a camera with no frames, say)."""

    name = "camera"

    def __init__(self) -> None:
        self.ok = True

    def health(self) -> Health:
        return Health(self.ok, "" if self.ok else "no frames for 30 s")


class _Alert(ComponentBase):
    """Reports an active alert, as the panic component does after a press."""

    name = "alerting"

    async def run(self, ctx: NodeContext) -> None:
        ctx.set_state(alert_active=True)


def _node(
    tmp_path: Path, clock: ManualClock, sim: SimulatedRepository, *extra: Any, **ota: Any
) -> tuple[Node, OtaComponent]:
    config = config_from_dict(
        {
            "node_id": NODE,
            "serial": "SN-OTA-1",
            "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"},
            "outbox": {"synchronous": "normal"},
        }
    )
    settings = OtaConfig.model_validate(
        {
            "enabled": True,
            "first_check_s": 0,
            "maintenance_window": None,
            "restart_for_app": False,
            "health_deadline_s": 600,
            **ota,
        }
    )
    component = OtaComponent(
        settings,
        data_dir=tmp_path / NODE / "ota",
        group=GROUP,
        hardware="sim",
        transport=sim.transport,
    )
    (tmp_path / NODE / "ota").mkdir(parents=True, exist_ok=True)
    (tmp_path / NODE / "ota" / "root.json").write_bytes(sim.trusted_root)
    settings_root = settings.model_copy(
        update={
            "trusted_root": tmp_path / NODE / "ota" / "root.json",
            "repository_url": sim.base_url,
        }
    )
    component.config = settings_root
    node = build_node(
        config,
        backend=SimBackend(clock=clock),
        transport_factory=memory_transport(),
        components=[component, *extra],
        renewal=False,
    )
    return node, component


def _run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


@asynccontextmanager
async def _running(node: Node, clock: ManualClock) -> AsyncIterator[MemoryTransport]:
    task = asyncio.ensure_future(node.run())
    await clock.elapse(0)
    transport = node.uplink.transport
    assert isinstance(transport, MemoryTransport)
    try:
        yield transport
    finally:
        node.stop()
        await asyncio.wait_for(task, 10)


async def _advance_until(
    clock: ManualClock,
    check: Callable[[], bool],
    what: str,
    *,
    step: float = 1.0,
    limit: float = 3600.0,
) -> None:
    """Let virtual time pass one step at a time (worker threads run in real time between)."""
    waited = 0.0
    while not check():
        assert waited <= limit, f"{what}: not within {limit} s of node time"
        await clock.elapse(step)
        waited += step
        await asyncio.sleep(0.01)


def _phases(transport: MemoryTransport) -> list[tuple[str, str | None]]:
    return [(e.phase, e.reason) for e in transport.messages(OtaEvent)]


def _repository(tmp_path: Path) -> SimulatedRepository:
    sim = SimulatedRepository(
        tmp_path / "repo", root_keys=1, root_threshold=1, clock=lambda: datetime.now(timezone.utc)
    )
    return sim


def _preinstall(component: OtaComponent, tmp_path: Path, version: str) -> None:
    blob, _ = _app(tmp_path, version)
    path = tmp_path / f"pre-{version}.tar"
    path.write_bytes(blob)
    component.store("app").install(path)


def _offer(sim: SimulatedRepository, tmp_path: Path, version: str) -> None:
    blob, manifest = _app(tmp_path, version)
    sim.repo.add_artifact(blob)
    sim.repo.assign(GROUP, manifest, campaign_id="c-7")
    sim.publish()


def test_deferral_follows_alert_battery_and_the_sites_own_clock() -> None:
    def why(now: datetime, **kw: Any) -> str | None:
        options: dict[str, Any] = {
            "alert_active": False,
            "power_step": 0,
            "max_power_step": 0,
            "window": "01:00-05:00",
            "timezone": "Asia/Karachi",
            **kw,
        }
        return deferral_reason(now=now, **options)

    night_in_lahore = datetime(2026, 11, 30, 22, 30, tzinfo=timezone.utc)  # 03:30 PKT
    noon_in_lahore = datetime(2026, 11, 30, 7, 0, tzinfo=timezone.utc)  # 12:00 PKT
    assert why(night_in_lahore) is None
    assert why(noon_in_lahore) == "maintenance_window"
    assert why(night_in_lahore, alert_active=True) == "alert_active"
    assert why(night_in_lahore, power_step=1) == "battery_low"
    assert why(night_in_lahore, power_step=1, max_power_step=1) is None
    # A window across midnight, and the same instant in another zone.
    assert why(noon_in_lahore, window="22:00-04:00", timezone="America/New_York") is None
    assert why(noon_in_lahore, window="22:00-04:00") == "maintenance_window"


def test_an_update_is_offered_downloaded_installed_and_committed_once_healthy(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    node, component = _node(tmp_path, clock, sim)
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            await _advance_until(clock, lambda: ("healthy", None) in _phases(transport), "healthy")
            phases = list(dict.fromkeys(p for p, _ in _phases(transport)))  # resends aside
            assert phases == ["offered", "downloading", "installed", "healthy"]
            event = next(e for e in transport.messages(OtaEvent) if e.phase == "healthy")
            assert (event.version, event.campaign_id, event.artifact_kind) == (
                "1.1.0",
                "c-7",
                "app",
            )
        assert component.store("app").status().committed_version == "1.1.0"

    _run(body)


def test_a_version_whose_node_stays_sick_rolls_back_by_itself_and_says_why(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    camera = _Sick()
    node, component = _node(tmp_path, clock, sim, camera)
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            camera.ok = False
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            started = clock.monotonic()
            await _advance_until(
                clock,
                lambda: ("rolled_back", "health") in _phases(transport),
                "rollback",
                step=10.0,
            )
            assert clock.monotonic() - started >= 590  # not before the 600 s deadline
            event = next(e for e in transport.messages(OtaEvent) if e.phase == "rolled_back")
            assert event.detail is not None
            assert "camera: no frames for 30 s" in event.detail
        assert component.store("app").installed_version() == "1.0.0"

    _run(body)


def test_an_update_waits_while_an_alert_is_active_and_says_so(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    node, component = _node(tmp_path, clock, sim, _Alert())
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("deferred", "alert_active") in _phases(transport), "deferred")
            assert "installed" not in [p for p, _ in _phases(transport)]
        assert component.store("app").installed_version() == "1.0.0"

    _run(body)


def test_outside_the_maintenance_window_the_update_is_deferred(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)  # 1970-01-01 00:00 UTC is 05:00 in Lahore
    sim = _repository(tmp_path)
    node, component = _node(tmp_path, clock, sim, maintenance_window="01:00-05:00")
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(
                lambda: ("deferred", "maintenance_window") in _phases(transport), "deferred"
            )
        assert component.store("app").installed_version() == "1.0.0"

    _run(body)


def test_an_ota_check_command_for_another_group_is_refused_as_mix_and_match(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    node, component = _node(tmp_path, clock, sim, first_check_s=3600)
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            transport.deliver(
                OtaCheckCommand(
                    node_id=NODE,
                    ts=clock.now(),
                    request_id=new_request_id(),
                    group="other-group",
                    artifact_kind="app",
                    campaign_id="c-7",
                )
            )
            await until(lambda: ("failed", "mix_and_match") in _phases(transport), "refusal")
            assert "installed" not in [p for p, _ in _phases(transport)]

    _run(body)


def test_a_node_whose_clock_ran_a_year_ahead_still_takes_the_update(tmp_path: Path) -> None:
    real_now = datetime.now(timezone.utc)
    clock = ManualClock(start=0.0, wall=real_now + timedelta(days=400))
    sim = _repository(tmp_path)
    sim.transport.server_date = real_now
    node, component = _node(tmp_path, clock, sim)
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            assert not [e for e in transport.messages(OtaEvent) if e.reason == "clock"]

    _run(body)


def test_a_download_reports_its_progress_in_a_few_events(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    sim.transport.chunk_size = 1024
    node, component = _node(tmp_path, clock, sim)
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            done = sorted(
                {
                    e.bytes_done
                    for e in transport.messages(OtaEvent)
                    if e.phase == "downloading" and e.bytes_done is not None
                }
            )
            total = next(
                e.bytes_total for e in transport.messages(OtaEvent) if e.phase == "offered"
            )
            assert total is not None
            assert len(done) == 4  # the start, then a quarter, a half, three quarters
            assert done[0] == 0
            assert all(0 < d < total for d in done[1:])

    _run(body)
