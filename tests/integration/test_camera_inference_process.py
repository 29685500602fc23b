"""A press gets through while the camera's model burns the CPU in a child process.

The camera's settings say ``inference = "processes"`` and name a detector
(tests/support/busy_model.py) that spins in pure Python — holding its
interpreter's GIL — until the test releases it. The node is connected to the
real Mosquitto with a fleet stand-in acking. The story: with the detector
busy in *another process* (its pid is not the agent's), a panic press still
reaches the server, and the detector had not returned when it did. Press
latencies idle vs busy are figures for ``nigehbaan bench pipeline``
(``press_processes``), not a timed assertion.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytest.importorskip("cv2")

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.inference.workers import ProcessDetector
from edge_agent.node import Node, build_node
from edge_agent.panic import PanicComponent
from fleet_server.broker import ManagedBroker
from hardware import SimBackend, SimButton
from hardware.camera import SimCamera
from proto.messages import Birth, PanicEvent
from tests.support.camera import moving_plate
from tests.support.fleet_standin import FleetStandIn, node_config, run
from tests.support.polling import until

pytestmark = pytest.mark.broker


@asynccontextmanager
async def running(node: Node) -> AsyncIterator[Node]:
    task = asyncio.ensure_future(node.run())
    try:
        yield node
    finally:
        node.stop()
        await asyncio.wait_for(task, 20)


def test_a_press_gets_through_while_the_model_spins_in_its_own_process(
    broker: ManagedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = tmp_path / "busy-model"
    busy.mkdir()
    monkeypatch.setenv("NB_BUSY_MODEL_DIR", str(busy))  # the child inherits it
    settings = CameraAnalyticsConfig(
        max_fps=0,
        queue_size=64,
        inference="processes",
        detector="tests.support.busy_model:SpinningDetector",
    )
    camera = SimCamera(camera_id="gate", max_queued=256)
    config = node_config(broker, tmp_path)
    pipeline = CameraPipeline([CameraFeed.of(camera, settings)])
    node = build_node(
        config_from_dict(config), backend=SimBackend(), components=[pipeline], renewal=False
    )
    server = FleetStandIn(broker, config["node_id"])
    seen: dict[str, object] = {}

    def entered() -> list[Path]:
        return sorted(busy.glob("entered-*"))

    async def body() -> None:
        async with running(node):
            await until(lambda: server.of_type(Birth), "birth")
            camera.play(moving_plate(frames=60))
            await until(lambda: bool(entered()), "the detector to be in a call", timeout=60.0)
            detector = pipeline.workers["gate"].analysis.detector
            assert isinstance(detector, ProcessDetector)
            child = int(entered()[0].name.removeprefix("entered-"))
            seen["child"] = child
            assert child == detector.process.pid
            assert child != os.getpid()
            panic = node.component("panic")
            assert isinstance(panic, PanicComponent)
            button = panic.button
            assert isinstance(button, SimButton)
            button.press()
            await until(lambda: server.of_type(PanicEvent), "the panic at the server")
            button.release()
            # The model was still spinning when the press arrived: nothing waited for it.
            seen["returned_before_press_arrived"] = any(busy.glob("returned-*"))
            (busy / "release").write_text("go", encoding="utf-8")
            await until(lambda: any(busy.glob("returned-*")), "the detector to return")
            seen["alive"] = detector.process.alive()

    try:
        run(body)
    finally:
        (busy / "release").write_text("go", encoding="utf-8")
        server.close()
    assert seen["returned_before_press_arrived"] is False
    assert seen["alive"] is True
    assert len(server.of_type(PanicEvent)) == 1
    # The pipeline stopped its child with the node.
    detector = pipeline.workers["gate"].analysis.detector
    assert isinstance(detector, ProcessDetector)
    assert not detector.process.alive()
