"""The standards check on connect, with sources this machine really runs.

A node's camera pipeline opens real OpenCV sources: a video file (1280x720,
read as fast as it decodes), and MJPEG over HTTP from a server this test
starts on 127.0.0.1 (640x360 at 20 fps; 1280x720 at 3 fps). No RTSP server
is installed here, so RTSP itself is not exercised; OpenCV opens ``rtsp://``
through the same FFmpeg path as ``http://``. The good camera is analysed;
each poor one is live view only with the reason in a ``node_fault`` event,
its stats and telemetry; an unreachable one is retried with backoff and
reported as ``camera_lost`` while the node runs on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

cv2 = pytest.importorskip("cv2")

import numpy as np  # noqa: E402

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline  # noqa: E402
from edge_agent.config import CameraAnalyticsConfig, config_from_dict  # noqa: E402
from edge_agent.memory import MemoryTransport, memory_transport  # noqa: E402
from edge_agent.node import Node, build_node  # noqa: E402
from hardware import ManualClock, SimBackend  # noqa: E402
from hardware.camera import CameraSource, OpenCvCamera, SimCamera  # noqa: E402
from proto.messages import NodeFaultEvent, Reply, SetConfigCommand  # noqa: E402
from tests.support.camera import ScriptedReader, WhiteRectDetector  # noqa: E402
from tests.support.polling import until  # noqa: E402

NODE = "psh-gw-0002"
SERVE_S = 40.0  # an MJPEG stream ends after this long, whatever the test does


def settings() -> CameraAnalyticsConfig:
    return CameraAnalyticsConfig.model_validate(
        {"max_fps": 0, "queue_size": 8, "retry_min_s": 0.2, "retry_max_s": 0.8}
    )


@contextmanager
def mjpeg_server(width: int, height: int, fps: float) -> Iterator[str]:
    """MJPEG over HTTP (multipart/x-mixed-replace) on 127.0.0.1, `fps` frames a second."""
    image = np.full((height, width, 3), 90, np.uint8)
    cv2.putText(image, "PLAZA", (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    body = encoded.tobytes()
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            end = time.monotonic() + SERVE_S
            head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(body)
            try:
                while not stop.is_set() and time.monotonic() < end:
                    self.wfile.write(head + body + b"\r\n")
                    stop.wait(1.0 / fps)
            except OSError:
                pass  # the node closed the stream

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def video_file(path: Path, width: int, height: int, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((height, width, 3), 40, np.uint8)
        x = 40 + i * (width - 300) // frames  # a white plate crossing: motion for the detector
        cv2.rectangle(image, (x, height // 2), (x + 160, height // 2 + 40), (255, 255, 255), -1)
        writer.write(image)
    writer.release()
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingOpener:
    """Opens an OpenCV source, counting the attempts (the retry's backoff is what is tested)."""

    def __init__(self, camera_id: str, **source: Any) -> None:
        self.camera_id = camera_id
        self.source = source
        self.attempts: list[float] = []

    def __call__(self) -> CameraSource:
        self.attempts.append(time.monotonic())
        return OpenCvCamera(camera_id=self.camera_id, **self.source)


def terms(**standards: Any) -> dict[str, Any]:
    ends = "2099-01-01T00:00:00+00:00"
    return {"owner": "Pearl Plaza", "agreement": "KP-DSA-14", "expires_at": ends,
            "allow": ["plates"], "standards": standards}  # fmt: skip


def make_node(tmp_path: Path, clock: ManualClock, pipeline: CameraPipeline, policy: Any) -> Node:
    config = config_from_dict(
        {
            "node_id": NODE, "serial": "SN-GW-2", "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"},
            **({"privacy": {"policy": policy}} if policy else {}),
        }
    )  # fmt: skip
    return build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[pipeline], renewal=False,
    )  # fmt: skip


@asynccontextmanager
async def running(node: Node, clock: ManualClock) -> AsyncIterator[MemoryTransport]:
    task = asyncio.ensure_future(node.run())
    await clock.elapse(0)
    transport = node.uplink.transport
    assert isinstance(transport, MemoryTransport)
    try:
        yield transport
    finally:
        assert not task.done(), "the node stopped by itself"
        node.stop()
        await asyncio.wait_for(task, 15)


def run(body: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(body(), 90))


def faults(transport: MemoryTransport, code: str) -> list[NodeFaultEvent]:
    return [e for e in transport.messages(NodeFaultEvent) if e.code == code]


def test_good_small_slow_and_unreachable_sources_on_connect(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    port = closed_port()
    with mjpeg_server(640, 360, 20.0) as small_url, mjpeg_server(1280, 720, 3.0) as slow_url:
        openers = {
            "lobby": CountingOpener(
                "lobby", file=video_file(tmp_path / "lobby.avi", 1280, 720, 30), loop=True
            ),
            "gate": CountingOpener("gate", url=small_url),
            "garage": CountingOpener("garage", url=slow_url),
            "roof": CountingOpener("roof", url=f"http://127.0.0.1:{port}/stream.mjpg"),
        }
        detectors = {c: WhiteRectDetector() for c in openers}
        feeds = [
            CameraFeed(c, open=opener, settings=settings(), detector=detectors[c],
                       reader=ScriptedReader(["X1"]))
            for c, opener in openers.items()
        ]  # fmt: skip
        minimums = {"sample_frames": 6, "sample_s": 8.0}
        policy = {"version": 1, "cameras": {c: {"private": terms(**minimums)} for c in openers}}
        pipeline = CameraPipeline(feeds)
        node = make_node(tmp_path, clock, pipeline, policy)

        async def body() -> None:
            async with running(node, clock) as transport:

                def cameras() -> dict[str, Any]:
                    figures: dict[str, Any] = pipeline.stats()["cameras"]
                    return figures

                await until(lambda: all(cameras()[c]["standards"] for c in openers if c != "roof"),
                            "three verdicts", timeout=30)  # fmt: skip
                await until(lambda: len(faults(transport, "camera_below_standard")) >= 2,
                            "the two poor cameras reported")  # fmt: skip
                await until(lambda: cameras()["lobby"]["frames_analysed"] > 0, "the lobby analysed")
                await until(lambda: len(openers["roof"].attempts) >= 3, "the roof retried")
                await until(lambda: faults(transport, "camera_lost"), "the roof reported lost")
                stats = cameras()
                gate_frames = stats["gate"]["frames_in"]
                await until(lambda: cameras()["gate"]["frames_in"] > gate_frames + 5,
                            "the gate still streams (live view)")  # fmt: skip
                stats = cameras()
                telemetry = {c["camera_id"]: c for c in pipeline.telemetry()["cameras"]}
                health = pipeline.health().detail
                below = {
                    (e.detail or "").split(":")[0]: e
                    for e in faults(transport, "camera_below_standard")
                }
                lost = faults(transport, "camera_lost")

            # The good camera passed and is analysed.
            lobby = stats["lobby"]["standards"]
            assert lobby["passed"]
            assert (lobby["width"], lobby["height"]) == (1280, 720)
            assert lobby["fps"] >= 10
            assert lobby["clock"] == "unknown"
            assert telemetry["lobby"]["fault"] is None
            # The small one: its reason, live view only (nothing analysed), in telemetry.
            gate = stats["gate"]["standards"]
            assert not gate["passed"]
            assert gate["reasons"] == ["resolution 640x360 below 1280x720"]
            assert stats["gate"]["frames_analysed"] == 0
            assert detectors["gate"].calls == 0
            assert detectors["garage"].calls == 0
            assert detectors["lobby"].calls > 0
            assert telemetry["gate"]["fault"] == "camera_below_standard"
            assert "gate: below standard, live view only" in health
            assert below["gate"].active
            assert "640x360" in (below["gate"].detail or "")
            # The slow one: full resolution, but 3 fps.
            garage = stats["garage"]["standards"]
            assert not garage["passed"]
            assert (garage["width"], garage["height"]) == (1280, 720)
            assert len(garage["reasons"]) == 1
            assert garage["reasons"][0].startswith("frame rate ")
            assert garage["fps"] < 10
            assert stats["garage"]["frames_analysed"] == 0
            assert "frame rate" in (below["garage"].detail or "")
            # The unreachable one: lost, retried with a growing wait, no verdict, no crash.
            assert [(e.detail or "").split(":")[0] for e in lost] == ["roof"]
            assert "cannot open" in (lost[0].detail or "")
            tries = openers["roof"].attempts
            waits = [b - a for a, b in itertools.pairwise(tries)]
            assert waits[0] >= 0.2  # the first retry waits retry_min_s, the next twice that
            assert waits[1] >= 0.4
            assert stats["roof"]["standards"] is None
            assert stats["roof"]["fault"] == "camera_lost"

        run(body)


def test_a_third_party_source_sent_in_the_policy_becomes_a_camera_of_the_node(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    own = SimCamera(camera_id="street", clock=clock)
    detectors: dict[str, WhiteRectDetector] = {}

    class Pipeline(CameraPipeline):
        def _private_feed(self, ctx: Any, camera_id: str, source: str) -> CameraFeed:
            feed = super()._private_feed(ctx, camera_id, source)
            detectors[camera_id] = WhiteRectDetector()
            return dataclasses.replace(
                feed, settings=settings(), detector=detectors[camera_id],
                reader=ScriptedReader(["X1"]),
            )  # fmt: skip

    street = CameraFeed.of(own, settings(), detector=WhiteRectDetector(), reader=ScriptedReader([]))
    pipeline = Pipeline([street])
    node = make_node(tmp_path, clock, pipeline, None)
    port = closed_port()
    with mjpeg_server(640, 360, 20.0) as url, mjpeg_server(800, 450, 20.0) as moved:
        plaza = url.replace("http://", "http://plaza:s3cret-pw@")
        policy = {"version": 7, "cameras": {
            "plaza": {"masks": [[[0.0, 0.0], [1.0, 0.0], [1.0, 0.5], [0.0, 0.5]]],
                      "private": {**terms(min_width=640, min_height=360, sample_frames=5),
                                  "source": plaza}},
            "roof": {"private": {**terms(), "source":
                                 f"rtsp://roof:s3cret-pw@127.0.0.1:{port}/live"}},
        }}  # fmt: skip

        async def body() -> None:
            async with running(node, clock) as transport:
                transport.deliver(
                    SetConfigCommand(
                        node_id=NODE,
                        ts=clock.now(),
                        request_id="01JD0Q60000000000000000007",
                        changes={"privacy.policy": json.dumps(policy)},
                    )
                )
                (reply,) = await until(lambda: transport.messages(Reply), "the set_config reply")
                assert reply.ok, reply.error

                def cameras() -> dict[str, Any]:
                    figures: dict[str, Any] = pipeline.stats()["cameras"]
                    return figures

                for _ in range(100):  # the pipeline adopts sources at its next poll
                    await clock.elapse(1.0)
                    if {"plaza", "roof"} <= set(cameras()):
                        break
                await until(lambda: cameras()["plaza"]["frames_analysed"] > 0, "plaza analysed")
                await until(lambda: faults(transport, "camera_lost"), "the roof reported lost")
                stats = cameras()
                lost = faults(transport, "camera_lost")
                snapshot = pipeline.latest_still("plaza")

                # The owner moves the stream: the node reconnects to the new source and
                # judges it again (800x450 now), without a restart.
                policy["version"] = 8
                policy["cameras"]["plaza"]["private"]["source"] = moved  # type: ignore[index]
                transport.deliver(
                    SetConfigCommand(
                        node_id=NODE,
                        ts=clock.now(),
                        request_id="01JD0Q60000000000000000008",
                        changes={"privacy.policy": json.dumps(policy)},
                    )
                )

                def moved_verdict() -> bool:
                    verdict = cameras()["plaza"]["standards"]
                    return verdict is not None and verdict["width"] == 800

                for _ in range(100):
                    await clock.elapse(1.0)
                    if moved_verdict():
                        break
                    await asyncio.sleep(0.05)
                await until(moved_verdict, "the plaza judged on its new stream")
                assert cameras()["plaza"]["standards"]["passed"]

            assert stats["plaza"]["standards"]["passed"]
            assert pipeline.stats()["privacy"]["frames_masked"] > 0
            assert not isinstance(snapshot, str)
            assert int(snapshot.image[: 360 // 2 - 1].max()) == 0  # the mask is black
            assert int(snapshot.image[360 // 2 + 2 :].max()) > 0
            assert stats["plaza"]["frames_analysed"] > 0  # a still view: no motion, no detector
            assert "roof" in (lost[0].detail or "")
            assert all("s3cret" not in (e.detail or "") for e in transport.messages(NodeFaultEvent))
            assert "s3cret" not in json.dumps(pipeline.stats())
            assert "s3cret" not in str(pipeline.health())

        run(body)
