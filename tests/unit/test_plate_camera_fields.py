"""A camera node's plate event carries box, province, layout and canonical key; telemetry
carries per-camera health (the proto fields the camera issue added).

Same set-up as tests/unit/test_camera_component.py: virtual time, an in-memory
uplink, the pipeline's real threads, polling for what the node published.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2")

from edge_agent.anpr.types import Box, PlateRead
from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.memory import MemoryTransport, memory_transport
from edge_agent.node import build_node
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.messages import PlateEvent, Telemetry
from tests.support.camera import ScriptedReader, WhiteRectDetector, moving_plate
from tests.support.polling import until

NODE = "lhr-cam-0002"


class PunjabReader(ScriptedReader):
    """Reads a Punjab district plate as the rules would: canonical key without the year."""

    def read(self, frame: Any, box: Box) -> PlateRead | None:
        self.calls += 1
        return PlateRead(
            text="LEB096881", canonical="LEB6881", confidence=0.9, box=box,
            province="Punjab", layout="punjab-district", year="09",
        )  # fmt: skip


def test_plate_event_and_telemetry_carry_the_camera_fields(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    settings = CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 64})
    feed = CameraFeed.of(camera, settings, detector=WhiteRectDetector(), reader=PunjabReader([]))
    config = config_from_dict(
        {
            "node_id": NODE, "serial": "SN-CAM-2", "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"},
            "telemetry": {"interval_s": 1.0},
        }
    )  # fmt: skip
    node = build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[CameraPipeline([feed])], renewal=False,
    )  # fmt: skip

    async def body() -> None:
        task = asyncio.ensure_future(node.run())
        await clock.elapse(0)
        transport = node.uplink.transport
        assert isinstance(transport, MemoryTransport)
        try:
            for frame in moving_plate():
                camera.push_frame(frame)
            events = await until(lambda: transport.messages(PlateEvent), "a plate event")
            event = events[0]
            assert event.canonical == "LEB6881"
            assert (event.province, event.layout) == ("Punjab", "punjab-district")
            assert event.box is not None
            assert min(event.box.w, event.box.h) > 0
            await clock.elapse(2.0)
            reports = [t for t in transport.messages(Telemetry) if t.cameras]
            assert reports, "telemetry with the per-camera list"
            (gate,) = reports[-1].cameras or []
            assert gate.camera_id == "gate"
            assert gate.frames_in >= 1
            assert gate.shed == "none"
            assert gate.reader_ms is not None
            assert gate.detector_ms is not None
            assert gate.plates_per_hour == 1
        finally:
            node.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(asyncio.wait_for(body(), 60))
