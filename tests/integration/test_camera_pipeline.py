"""The camera pipeline on a node connected to the real Mosquitto, with a fleet stand-in acking.

A `SimCamera` plays a drawn vehicle pass (a plate-like rectangle with text
moving across a street, or a plate rendered by `simulators.plates`); the
detector and reader are the deterministic stand-ins of
tests/support/camera.py, or the real ones (`edge_agent.anpr`) named in the
camera's settings. The stories: one vehicle pass is
exactly one plate event at the server, and a press while the pipeline is
busy (its detector blocked in a call) still reaches the server, as fast as
the node's own timestamps say a press on an idle node does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2")

from edge_agent.anpr.types import PlateDetector, PlateReader
from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.node import Node, build_node
from edge_agent.panic import PanicComponent
from fleet_server.broker import ManagedBroker
from hardware import Pattern, SimBackend, SimButton
from hardware.camera import SimCamera
from hardware.indicator import SimIndicator
from proto.messages import Birth, PanicEvent, PlateEvent
from tests.support.camera import (
    HeldDetector,
    ScriptedReader,
    WhiteRectDetector,
    moving_plate,
    rendered_pass,
)
from tests.support.fleet_standin import FleetStandIn, node_config, run
from tests.support.polling import until

pytestmark = pytest.mark.broker

SETTINGS = CameraAnalyticsConfig(max_fps=0, queue_size=64)


def camera_node(
    broker: ManagedBroker,
    tmp_path: Path,
    camera: SimCamera,
    detector: PlateDetector,
    reader: PlateReader | None = None,
) -> tuple[Node, dict[str, Any]]:
    config = node_config(broker, tmp_path)
    reader = reader if reader is not None else ScriptedReader(["LEB6881"])
    feed = CameraFeed.of(camera, SETTINGS, detector=detector, reader=reader)
    node = build_node(
        config_from_dict(config),
        backend=SimBackend(),
        components=[CameraPipeline([feed])],
        renewal=False,
    )
    return node, config


@asynccontextmanager
async def running(node: Node) -> AsyncIterator[Node]:
    task = asyncio.ensure_future(node.run())
    try:
        yield node
    finally:
        node.stop()
        await asyncio.wait_for(task, 10)


def parts(node: Node) -> tuple[SimButton, SimIndicator]:
    panic = node.component("panic")
    assert isinstance(panic, PanicComponent)
    assert isinstance(panic.button, SimButton)
    assert isinstance(panic.indicator, SimIndicator)
    return panic.button, panic.indicator


async def press_latency(node: Node, server: FleetStandIn, presses_before: int) -> float:
    """Press once; seconds from the press edge to the light showing `sent`, on the node's clock."""
    button, indicator = parts(node)
    sent_before = len([c for c in indicator.history if c.pattern is Pattern.SENT])
    edges_before = len(button.edges)
    button.press()
    await until(lambda: len(server.of_type(PanicEvent)) > presses_before, "the panic at the server")
    button.release()
    await until(lambda: node.outbox.depth == 0, "the ack")
    sent = [c for c in indicator.history if c.pattern is Pattern.SENT][sent_before:]
    pressed = button.edges[edges_before]
    assert pressed.pressed
    return sent[0].t - pressed.t


@pytest.mark.parametrize("reader_name", ["scripted", "rapidocr"])
def test_one_vehicle_pass_is_exactly_one_plate_event_at_the_server(
    broker: ManagedBroker, tmp_path: Path, reader_name: str
) -> None:
    reader: PlateReader | None = None
    if reader_name == "rapidocr":  # the real reader, as a camera's settings would name it
        pytest.importorskip("rapidocr")
        from edge_agent.camera.plugins import load_reader

        reader = load_reader("edge_agent.anpr.reader:RapidOcrReader")
    camera = SimCamera(camera_id="gate", max_queued=256)
    node, config = camera_node(broker, tmp_path, camera, WhiteRectDetector(), reader)
    server = FleetStandIn(broker, config["node_id"])

    async def body() -> None:
        async with running(node):
            await until(lambda: server.of_type(Birth), "birth")
            camera.play(moving_plate())
            await until(lambda: server.of_type(PlateEvent), "the plate event")
            await until(lambda: node.outbox.depth == 0, "the ack")
            pipeline = node.component("camera")
            assert isinstance(pipeline, CameraPipeline)
            await until(lambda: pipeline.workers["gate"].queued == 0, "the frames analysed")

    try:
        run(body)
    finally:
        server.close()
    plates = server.of_type(PlateEvent)
    assert len({p.event_id for p in plates}) == 1
    assert plates[0].plate == "LEB6881"
    assert plates[0].camera_id == "gate"
    assert plates[0].snapshot_sha256 is not None


def test_a_press_while_the_detector_is_busy_reaches_the_server_as_fast_as_when_idle(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    camera = SimCamera(camera_id="gate", max_queued=256)
    detector = HeldDetector()
    node, config = camera_node(broker, tmp_path, camera, detector)
    server = FleetStandIn(broker, config["node_id"])
    latencies: dict[str, float] = {}

    async def body() -> None:
        async with running(node):
            await until(lambda: server.of_type(Birth), "birth")
            latencies["idle"] = await press_latency(node, server, 0)
            camera.play(moving_plate())
            await until(detector.entered.is_set, "the detector to be in a call")
            latencies["busy"] = await press_latency(node, server, 1)
            # The detector never returned while the press went through: inference is
            # off the node's loop, so nothing the pipeline does can hold a press.
            assert detector.busy
            detector.release.set()

    try:
        run(body)
    finally:
        detector.release.set()
        server.close()
    # The proof is `detector.busy` above: the held detector never returned, so a pipeline
    # on the node's loop could not have let the press through at all. The two latencies
    # (the node's own clock: button edge → light `sent`) are for `bench pipeline`, not
    # for a timed assertion on a shared machine.
    assert set(latencies) == {"idle", "busy"}
    assert len(server.of_type(PanicEvent)) == 2


@pytest.mark.parametrize(("layout", "seed"), [("punjab-district", 1), ("sindh", 2)])
def test_the_configured_real_detector_and_reader_read_a_rendered_plate_once_per_pass(
    broker: ManagedBroker, tmp_path: Path, layout: str, seed: int
) -> None:
    """The whole path a pillar runs: [[cameras]] and [analytics.<id>] naming the plugins."""
    pytest.importorskip("rapidocr")
    pytest.importorskip("PIL")
    from simulators.plates import PlateRenderError

    try:
        frames, truth = rendered_pass(layout, seed)
    except PlateRenderError as exc:
        pytest.skip(f"cannot render plates here: {exc}")
    config = node_config(broker, tmp_path)
    config["cameras"] = [{"type": "sim", "id": "gate", "max_queued": 256}]
    config["analytics"] = {
        "gate": {
            "max_fps": 0,
            "queue_size": 64,
            "detector": "edge_agent.anpr.detector:OcrLineDetector",
            "reader": "edge_agent.anpr.reader:RapidOcrReader",
        }
    }
    node = build_node(config_from_dict(config), backend=SimBackend(), renewal=False)
    server = FleetStandIn(broker, config["node_id"])

    async def body() -> None:
        async with running(node):
            birth = await until(lambda: server.of_type(Birth), "birth")
            assert {"camera", "anpr"} <= {c.value for c in birth[0].capabilities}
            pipeline = node.component("camera")
            assert isinstance(pipeline, CameraPipeline)
            await until(lambda: "gate" in pipeline.workers, "the camera worker")
            worker = pipeline.workers["gate"]
            camera = await until(lambda: worker.source, "the camera opened from its config")
            assert isinstance(camera, SimCamera)
            camera.play(iter(frames))
            await until(lambda: server.of_type(PlateEvent), "the plate event", timeout=60)
            await until(lambda: worker.queued == 0, "the frames analysed", timeout=60)
            await until(lambda: node.outbox.depth == 0, "the ack")

    try:
        asyncio.run(asyncio.wait_for(body(), 120))  # real models on a shared CPU
    finally:
        server.close()
    plates = server.of_type(PlateEvent)
    assert len({p.event_id for p in plates}) == 1
    assert plates[0].plate == truth
    assert plates[0].frames >= 3
