"""The camera pipeline as a node component, on a node with virtual time and an in-memory uplink.

The node runs on a `ManualClock` with a `MemoryTransport`; the pipeline's
capture and analysis threads are real threads (that is the point: inference
is off the loop), so the tests poll for what the node published instead of
sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.memory import memory_transport
from edge_agent.node import Node, build_node
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.messages import Birth, Capability, NodeFaultEvent, PlateEvent, Telemetry
from tests.support.camera import HeldDetector, ScriptedReader, WhiteRectDetector, moving_plate
from tests.support.node import running
from tests.support.polling import until

NODE = "lhr-cam-0001"


def settings(**extra: Any) -> CameraAnalyticsConfig:
    return CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 64, **extra})


def make_node(tmp_path: Path, clock: ManualClock, pipeline: CameraPipeline, **extra: Any) -> Node:
    config = config_from_dict(
        {
            "node_id": NODE,
            "serial": "SN-CAM-1",
            "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"},
            "outbox": {"synchronous": "normal"},
            **extra,
        }
    )
    return build_node(
        config,
        backend=SimBackend(clock=clock),
        transport_factory=memory_transport(),
        components=[pipeline],
        renewal=False,
    )


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def pipeline_of(node: Node) -> CameraPipeline:
    pipeline = node.component("camera")
    assert isinstance(pipeline, CameraPipeline)
    return pipeline


def test_a_vehicle_pass_is_one_plate_event_through_the_outbox(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    reader = ScriptedReader(["LEB6881", "LEB6B81", "LEB6881"])
    feed = CameraFeed.of(camera, settings(), detector=WhiteRectDetector(), reader=reader)
    node = make_node(tmp_path, clock, CameraPipeline([feed]))

    async def body() -> None:
        async with running(node, clock) as transport:
            assert Capability.ANPR in transport.messages(Birth)[0].capabilities
            for frame in moving_plate():
                camera.push_frame(frame)
            events = await until(lambda: transport.messages(PlateEvent), "a plate event")
            await until(lambda: pipeline_of(node).stats()["cameras"]["gate"]["queued"] == 0)
            event = events[0]
            assert event.plate == "LEB6881"
            assert event.camera_id == "gate"
            assert event.frames >= 3
            assert event.snapshot_sha256 is not None
            evidence = tmp_path / NODE / "evidence" / f"{event.snapshot_sha256}.jpg"
            assert evidence.is_file()
            assert node.health()["camera"].ok
            # Every frame analysed and the vehicle gone: still the one event.
            assert {e.event_id for e in transport.messages(PlateEvent)} == {event.event_id}

    run(body)


def test_several_cameras_on_one_node_each_send_their_own_pass(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    cameras = [SimCamera(camera_id=c, clock=clock, max_queued=256) for c in ("north", "south")]
    feeds = [
        CameraFeed.of(cam, settings(), detector=WhiteRectDetector(), reader=ScriptedReader([t]))
        for cam, t in zip(cameras, ("AAA111", "BBB222"), strict=True)
    ]
    node = make_node(tmp_path, clock, CameraPipeline(feeds))

    async def body() -> None:
        async with running(node, clock) as transport:
            for cam, text in zip(cameras, ("AAA111", "BBB222"), strict=True):
                for frame in moving_plate(text):
                    cam.push_frame(frame)
            await until(lambda: len(transport.messages(PlateEvent)) == 2, "two plate events")
            got = {(e.camera_id, e.plate) for e in transport.messages(PlateEvent)}
            assert got == {("north", "AAA111"), ("south", "BBB222")}

    run(body)


def test_a_camera_that_fails_is_retried_and_reported_as_a_node_fault_then_recovered(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock)
    camera.fail_next = 2
    feed = CameraFeed.of(camera, settings(retry_min_s=0.05, retry_max_s=0.1))
    node = make_node(tmp_path, clock, CameraPipeline([feed]))

    async def body() -> None:
        async with running(node, clock) as transport:
            faults = await until(lambda: transport.messages(NodeFaultEvent), "a node fault")
            assert (faults[0].component, faults[0].code, faults[0].active) == (
                "camera",
                "camera_lost",
                True,
            )
            assert "gate" in (faults[0].detail or "")
            assert not node.health()["camera"].ok
            camera.push_frame(np.zeros((120, 160, 3), np.uint8))
            await until(lambda: len(transport.messages(NodeFaultEvent)) == 2, "the recovery")
            recovered = transport.messages(NodeFaultEvent)[1]
            assert (recovered.code, recovered.active) == ("camera_lost", False)
            assert node.health()["camera"].ok
            assert node.health()["panic"].ok  # the node carried on

    run(body)


def test_a_stalled_stream_is_one_fault(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock)
    feed = CameraFeed.of(camera, settings(stall_after_s=0.2))
    node = make_node(tmp_path, clock, CameraPipeline([feed]))

    async def body() -> None:
        async with running(node, clock) as transport:
            camera.push_frame(np.zeros((120, 160, 3), np.uint8))
            faults = await until(lambda: transport.messages(NodeFaultEvent), "a stall fault")
            assert (faults[0].code, faults[0].active) == ("camera_stalled", True)
            await asyncio.sleep(0.5)  # still stalled: still one fault
            assert len(transport.messages(NodeFaultEvent)) == 1

    run(body)


def test_a_corrupt_frame_is_counted_and_skipped(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    feed = CameraFeed.of(
        camera, settings(), detector=WhiteRectDetector(), reader=ScriptedReader(["ABC123"])
    )
    node = make_node(tmp_path, clock, CameraPipeline([feed]))

    async def body() -> None:
        async with running(node, clock) as transport:
            camera.push_frame(np.zeros((360, 640, 3), np.float32))
            camera.push_frame(np.zeros((360, 640, 4), np.uint8))
            for frame in moving_plate("ABC123"):
                camera.push_frame(frame)
            await until(lambda: transport.messages(PlateEvent), "the plate after the bad frames")
            assert pipeline_of(node).stats()["cameras"]["gate"]["frames_corrupt"] == 2

    run(body)


def test_a_full_queue_drops_frames_counts_them_and_reports_them_in_telemetry(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    held = HeldDetector()
    feed = CameraFeed.of(
        camera, settings(queue_size=2), detector=held, reader=ScriptedReader(["A1"])
    )
    node = make_node(tmp_path, clock, CameraPipeline([feed]), telemetry={"interval_s": 1.0})

    async def body() -> None:
        async with running(node, clock) as transport:
            worker = pipeline_of(node).workers["gate"]
            frames = list(moving_plate())
            for taken, frame in enumerate(frames[:4], start=1):
                camera.push_frame(frame)

                def analysed(n: int = taken) -> bool:
                    return worker.stats.frames_analysed == n

                await until(analysed, "analysis to take the frame")
            await until(held.entered.is_set, "the detector to be busy")
            for frame in frames[4:14]:
                camera.push_frame(frame)
            # Two wait in the queue, the other eight are dropped: capture went on.
            await until(lambda: worker.stats.frames_dropped == 8, "eight frames dropped")
            assert worker.stats.frames_in == 14
            assert worker.queued == 2
            held.release.set()
            await until(lambda: worker.queued == 0, "the queue drained")
            await clock.elapse(2.0)
            telemetry = transport.messages(Telemetry)
            assert telemetry
            assert telemetry[-1].frames_dropped == 8

    run(body)


def test_the_power_steps_lower_the_analytics_rate_then_stop_the_cameras(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    pipeline = CameraPipeline([CameraFeed.of(camera, settings())])
    node = make_node(tmp_path, clock, pipeline)

    async def body() -> None:
        async with running(node, clock):
            worker = pipeline.workers["gate"]
            node.set_state(power_step=1)  # analytics_reduced
            await clock.elapse(1.0)
            assert worker.analytics_rate == 0.5
            assert pipeline.shed == "analytics at 50% (analytics_reduced)"
            for _ in range(20):
                camera.push_frame(np.zeros((120, 160, 3), np.uint8))
            await until(lambda: worker.stats.frames_analysed + worker.stats.frames_skipped == 20)
            assert worker.stats.frames_analysed == 10
            node.set_state(power_step=3)  # cameras_off
            await clock.elapse(1.0)
            assert not worker.cameras_on
            assert pipeline.shed == "cameras off (cameras_off)"
            health = node.health()["camera"]
            assert health.ok
            assert "shed: cameras off" in health.detail
            await until(lambda: not worker.capturing, "capture to stop")
            read_before = camera.frames_read
            camera.push_frame(np.zeros((120, 160, 3), np.uint8))
            await asyncio.sleep(0.3)
            assert camera.frames_read == read_before  # capture stopped
            node.set_state(power_step=0)
            await clock.elapse(1.0)
            await until(lambda: camera.frames_read == read_before + 1, "capture to resume")
            assert pipeline.shed == ""

    run(body)


def test_an_unknown_detector_plugin_is_the_component_s_fault_not_the_node_s(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock)
    feed = CameraFeed.of(camera, settings(detector="no-such-detector"))
    node = make_node(tmp_path, clock, CameraPipeline([feed]))

    async def body() -> None:
        async with running(node, clock) as transport:
            faults = transport.messages(NodeFaultEvent)
            assert [(f.component, f.code) for f in faults] == [("camera", "crashed")]
            assert "no detector plugin called 'no-such-detector'" in (faults[0].detail or "")
            assert not node.health()["camera"].ok
            assert node.health()["panic"].ok

    run(body)


def test_build_node_runs_the_configured_cameras_without_being_told(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    config = config_from_dict(
        {
            "node_id": NODE,
            "serial": "SN-CAM-1",
            "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"},
            "outbox": {"synchronous": "normal"},
            "cameras": [{"type": "sim", "id": "gate"}, {"type": "sim", "id": "road"}],
            "analytics": {"gate": {"max_fps": 5}},
        }
    )
    node = build_node(
        config,
        backend=SimBackend(clock=clock),
        transport_factory=memory_transport(),
        renewal=False,
    )
    pipeline = pipeline_of(node)
    assert [f.camera_id for f in pipeline.feeds] == ["gate", "road"]
    assert pipeline.feeds[0].settings.max_fps == 5.0
    assert pipeline.capabilities == (Capability.CAMERA,)  # no detector named: motion only

    async def body() -> None:
        async with running(node, clock):
            await until(lambda: set(pipeline.workers) == {"gate", "road"}, "both cameras")
            workers = list(pipeline.workers.values())
            await until(lambda: all(w.source is not None for w in workers), "both opened")

    run(body)


class PacedCamera(SimCamera):
    """A camera at `fps` on its own clock: each frame is stamped 1/fps after the last."""

    def __init__(self, *, fps: float, camera_id: str = "gate") -> None:
        super().__init__(camera_id=camera_id, clock=ManualClock(start=0.0), max_queued=512)
        self.fps = fps

    def _grab(self, timeout_s: float | None) -> Any:
        image = super()._grab(timeout_s)
        if image is not None:
            assert isinstance(self.clock, ManualClock)
            self.clock.advance(1.0 / self.fps)
        return image


def test_max_fps_caps_the_analysed_frames_by_their_own_timestamps(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = PacedCamera(fps=30.0)
    feed = CameraFeed.of(camera, settings(max_fps=10.0))
    node = make_node(tmp_path, clock, CameraPipeline([feed]))

    async def body() -> None:
        async with running(node, clock):
            worker = pipeline_of(node).workers["gate"]
            for _ in range(30):  # one second of a 30 fps camera
                camera.push_frame(np.zeros((120, 160, 3), np.uint8))
            stats = worker.stats
            await until(lambda: stats.frames_analysed + stats.frames_skipped == 30, "all taken")
            assert stats.frames_analysed == 10
            assert stats.frames_dropped == 0

    run(body)


def test_a_pass_still_open_when_the_node_stops_is_written_before_it_stops(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    feed = CameraFeed.of(
        camera, settings(), detector=WhiteRectDetector(), reader=ScriptedReader(["KHI4455"])
    )
    pipeline = CameraPipeline([feed])
    node = make_node(tmp_path, clock, pipeline)

    async def body() -> None:
        async with running(node, clock) as transport:
            frames = list(moving_plate("KHI4455", empty_after=0))
            for frame in frames:
                camera.push_frame(frame)
            worker = pipeline.workers["gate"]
            await until(lambda: worker.stats.frames_analysed == len(frames), "all analysed")
            assert not transport.messages(PlateEvent)  # the vehicle is still in view

    run(body)
    from edge_agent.outbox import Outbox

    outbox = Outbox(tmp_path / NODE / "outbox.sqlite3", synchronous="normal")
    try:
        plates = [e for e in outbox.pending() if e.event_type == "plate"]
    finally:
        outbox.close()
    assert len(plates) == 1  # on disk, unacked: the next start sends it
    assert b"KHI4455" in plates[0].payload


def test_a_node_with_cameras_builds_without_importing_numpy_or_opencv() -> None:
    # A pillar without the camera extra must still start: the pipeline loads them in run().
    import subprocess
    import sys

    code = (
        "import sys, edge_agent.camera, edge_agent.camera.pipeline, edge_agent.node;"
        "print('numpy' in sys.modules, 'cv2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_pass_open_when_frames_stop_coming_is_sent_without_waiting_for_more(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    feed = CameraFeed.of(
        camera,
        settings(stall_after_s=0.3),
        detector=WhiteRectDetector(),
        reader=ScriptedReader(["ISB7788"]),
    )
    node = make_node(tmp_path, clock, CameraPipeline([feed]))

    async def body() -> None:
        async with running(node, clock) as transport:
            for frame in moving_plate("ISB7788", empty_after=0):  # the stream stops mid-pass
                camera.push_frame(frame)
            events = await until(lambda: transport.messages(PlateEvent), "the pass")
            assert [e.plate for e in events] == ["ISB7788"]

    run(body)
