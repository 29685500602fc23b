"""A plate inside a privacy mask is never read, and its pixels never reach the evidence store.

The real camera pipeline runs as a node component (virtual time, in-memory
uplink, real capture and analysis threads). Two cameras see the same vehicle
pass; one has a privacy mask over the road. The open camera's pass is read and
its crop kept; the masked camera's detector only ever sees black where the
mask is, its reader is never called, no plate event names it, and no file in
the evidence store holds the plate's white pixels. A policy sent later with
``set_config`` masks the next frames and telemetry reports its version; a
private camera whose agreement has expired gives nothing at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2")

from edge_agent.anpr.types import Box
from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, FacesConfig, config_from_dict
from edge_agent.memory import memory_transport
from edge_agent.node import Node, build_node
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.messages import PlateEvent, Reply, SetConfigCommand, Telemetry
from tests.support.camera import ScriptedReader, WhiteRectDetector, moving_plate
from tests.support.node import running
from tests.support.polling import until

NODE = "lhr-cam-0007"
# The road the plate crosses in `moving_plate` (y 131..240 of 360), with margin.
ROAD = [[0.0, 0.3], [1.0, 0.3], [1.0, 0.75], [0.0, 0.75]]


class SpyDetector(WhiteRectDetector):
    """The synthetic plate detector, remembering the brightest pixel it saw inside the mask."""

    def __init__(self) -> None:
        super().__init__()
        self.brightest_in_mask = 0
        self.frames = 0

    def detect(self, frame: Any, regions: list[Box] | None = None) -> list[Box]:
        self.frames += 1
        height = frame.shape[0]
        band = frame[int(0.3 * height) + 1 : int(0.75 * height) - 1]
        self.brightest_in_mask = max(self.brightest_in_mask, int(band.max()))
        return super().detect(frame, regions)


def settings() -> CameraAnalyticsConfig:
    return CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 64})


def make_node(tmp_path: Path, clock: ManualClock, pipeline: CameraPipeline, **extra: Any) -> Node:
    config = config_from_dict(
        {
            "node_id": NODE, "serial": "SN-CAM-7", "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"}, **extra,
        }
    )  # fmt: skip
    return build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[pipeline], renewal=False,
    )  # fmt: skip


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def pipeline_of(node: Node) -> CameraPipeline:
    pipeline = node.component("camera")
    assert isinstance(pipeline, CameraPipeline)
    return pipeline


def evidence_files(tmp_path: Path) -> list[Path]:
    directory = tmp_path / NODE / "evidence"
    return sorted(directory.glob("*.jpg")) if directory.exists() else []


def white_pixels(path: Path) -> int:
    import cv2

    image = cv2.imread(str(path))
    assert image is not None
    return int((cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) > 230).sum())


def test_a_plate_inside_a_mask_is_never_read_and_never_reaches_the_evidence_store(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    cameras = {c: SimCamera(camera_id=c, clock=clock, max_queued=256) for c in ("open", "masked")}
    detectors = {c: SpyDetector() for c in cameras}
    readers = {c: ScriptedReader(["LEB6881"]) for c in cameras}
    feeds = [
        CameraFeed.of(cameras[c], settings(), detector=detectors[c], reader=readers[c])
        for c in cameras
    ]
    privacy = {"policy": {"version": 3, "cameras": {"masked": {"masks": [ROAD]}}}}
    node = make_node(tmp_path, clock, CameraPipeline(feeds), privacy=privacy)

    async def body() -> None:
        async with running(node, clock) as transport:
            for image in moving_plate():
                for camera in cameras.values():
                    camera.push_frame(image)
            await until(lambda: transport.messages(PlateEvent), "the open camera's pass")
            stats = pipeline_of(node).stats()
            await until(lambda: all(
                c["queued"] == 0 and c["frames_analysed"] >= 35
                for c in pipeline_of(node).stats()["cameras"].values()
            ), "every frame analysed")  # fmt: skip
            await asyncio.sleep(0.2)  # a late pass of the masked camera would be written now
            events = transport.messages(PlateEvent)
            assert [(e.camera_id, e.plate) for e in events] == [("open", "LEB6881")]
            stats = pipeline_of(node).stats()
            assert stats["privacy"]["version"] == 3
            assert stats["privacy"]["frames_masked"] >= 35

    run(body)
    # The open camera saw the plate; the masked one's detector saw only black in the mask.
    assert detectors["open"].brightest_in_mask >= 240
    assert detectors["masked"].frames > 0
    assert detectors["masked"].brightest_in_mask == 0
    assert readers["open"].calls > 0
    assert readers["masked"].calls == 0
    # The evidence store holds the open camera's crop only (with the plate's white in it).
    files = evidence_files(tmp_path)
    assert len(files) == 1
    assert white_pixels(files[0]) > 1000
    # Every frame the node will ever keep of the masked camera came after the mask.
    assert json.loads((tmp_path / NODE / "privacy.json").read_text())["version"] == 3


def test_a_policy_sent_with_set_config_masks_the_next_frames_and_telemetry_reports_it(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    reader = ScriptedReader(["LEB6881"])
    feed = CameraFeed.of(camera, settings(), detector=SpyDetector(), reader=reader)
    node = make_node(tmp_path, clock, CameraPipeline([feed]), telemetry={"interval_s": 5})

    async def body() -> None:
        async with running(node, clock) as transport:
            await clock.elapse(6)
            before = await until(lambda: transport.messages(Telemetry), "telemetry")
            assert before[-1].privacy_version is None
            policy = {"version": 5, "cameras": {"gate": {"masks": [ROAD]}}}
            command = SetConfigCommand(
                node_id=NODE, ts=clock.now(), request_id="01JD0Q60000000000000000001",
                changes={"privacy.policy": json.dumps(policy)},
            )  # fmt: skip
            transport.deliver(command)
            (reply,) = await until(lambda: transport.messages(Reply), "the set_config reply")
            assert reply.ok, reply.error
            for image in moving_plate():
                camera.push_frame(image)
            await until(lambda: pipeline_of(node).stats()["cameras"]["gate"]["frames_analysed"]
                        >= 35, "every frame analysed")  # fmt: skip
            await clock.elapse(6)
            after = await until(
                lambda: [t for t in transport.messages(Telemetry) if t.privacy_version],
                "telemetry with the privacy version",
            )
            assert after[-1].privacy_version == 5
            assert not transport.messages(PlateEvent)

    run(body)
    assert reader.calls == 0


def test_a_private_camera_past_its_agreement_gives_the_analysis_nothing(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="lobby", clock=clock, max_queued=256)
    detector = SpyDetector()
    feed = CameraFeed.of(camera, settings(), detector=detector, reader=ScriptedReader(["X1"]))
    expired = (clock.now() - timedelta(seconds=1)).isoformat()
    terms = {"owner": "Pearl Plaza", "agreement": "KP-DSA-14", "expires_at": expired,
             "allow": ["plates"]}  # fmt: skip
    privacy = {"policy": {"version": 1, "cameras": {"lobby": {"private": terms}}}}
    node = make_node(tmp_path, clock, CameraPipeline([feed]), privacy=privacy)

    async def body() -> None:
        async with running(node, clock):
            for image in moving_plate():
                camera.push_frame(image)
            await until(lambda: pipeline_of(node).stats()["privacy"]["frames_refused"] >= 35,
                        "every frame refused")  # fmt: skip
            stats = pipeline_of(node).stats()["cameras"]["lobby"]
            assert stats["frames_analysed"] == 0

    run(body)
    assert detector.frames == 0
    assert evidence_files(tmp_path) == []


def test_faces_stay_off_on_a_private_camera_whose_agreement_does_not_allow_them() -> None:
    from edge_agent.camera.privacy import PrivacyGuard, PrivacyPolicy
    from edge_agent.config import FacesConfig

    clock = ManualClock(start=0.0)
    feeds = [CameraFeed.of(SimCamera(camera_id=c, clock=clock), settings()) for c in
             ("lobby", "street")]  # fmt: skip
    pipeline = CameraPipeline(feeds, faces=FacesConfig(allowed=True))
    assert pipeline._face_allowed("lobby")  # the site allows faces; no private terms yet
    ends = (clock.now() + timedelta(days=30)).isoformat()
    terms = {"owner": "City School", "agreement": "KP-DSA-9", "expires_at": ends,
             "allow": ["plates"]}  # fmt: skip
    policy = PrivacyPolicy.model_validate({"version": 2, "cameras": {"lobby": {"private": terms}}})
    pipeline.privacy = PrivacyGuard(lambda: policy, now=clock.now)
    assert not pipeline._face_allowed("lobby")
    assert pipeline._face_allowed("street")  # a camera of our own: the site's policy decides


class SpyFaceWork:
    """Stands in for the face stage: counts the frames the pipeline hands it."""

    def __init__(self) -> None:
        self.frames = 0

    def process(self, image: Any, *, moving: bool) -> list[Any]:
        self.frames += 1
        return []

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames}


def test_a_faces_only_private_camera_runs_faces_and_never_the_plate_stage(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    cameras = {c: SimCamera(camera_id=c, clock=clock, max_queued=256) for c in ("lobby", "street")}
    detectors = {c: SpyDetector() for c in cameras}
    readers = {c: ScriptedReader(["LEB6881"]) for c in cameras}
    feeds = [
        CameraFeed.of(cameras[c], settings(), detector=detectors[c], reader=readers[c])
        for c in cameras
    ]
    spies: dict[str, SpyFaceWork] = {}

    class Pipeline(CameraPipeline):
        def _face_work(self, camera_id: str) -> Any:
            if not self._face_allowed(camera_id):
                return None
            spies[camera_id] = SpyFaceWork()
            return spies[camera_id]

    ends = (clock.now() + timedelta(days=30)).isoformat()
    terms = {"owner": "Pearl Plaza", "agreement": "KP-DSA-14", "expires_at": ends,
             "allow": ["faces"]}  # fmt: skip
    privacy = {"policy": {"version": 4, "cameras": {"lobby": {"private": terms}}}}
    pipeline = Pipeline(feeds, faces=FacesConfig(allowed=True))
    node = make_node(tmp_path, clock, pipeline, privacy=privacy)

    async def body() -> None:
        async with running(node, clock) as transport:
            for image in moving_plate():
                for camera in cameras.values():
                    camera.push_frame(image)
            await until(lambda: transport.messages(PlateEvent), "the street camera's pass")
            await until(lambda: all(
                c["queued"] == 0 and c["frames_in"] >= 35
                for c in pipeline_of(node).stats()["cameras"].values()
            ), "every frame taken")  # fmt: skip
            await until(lambda: spies["lobby"].frames >= 35, "the lobby's frames at the faces")
            await asyncio.sleep(0.2)
            events = transport.messages(PlateEvent)
            assert [e.camera_id for e in events] == ["street"]
            stats = pipeline_of(node).stats()
            assert stats["privacy"]["frames_refused"] == 0  # faces may see them
            assert stats["cameras"]["lobby"]["plates_withheld"] >= 35
            assert stats["cameras"]["street"]["plates_withheld"] == 0

    run(body)
    assert detectors["lobby"].frames == 0  # the plate stage never ran on the lobby
    assert readers["lobby"].calls == 0
    assert detectors["street"].frames > 0
    assert readers["street"].calls > 0
    assert len(evidence_files(tmp_path)) == 1  # the street camera's crop only


class SkewedCamera(SimCamera):
    """A simulated camera that stamps its frames with its own wall clock, 30 s behind."""

    def _grab(self, timeout_s: float | None) -> Any:
        image = super()._grab(timeout_s)
        if image is not None:
            self.source_time = self.clock.now() - timedelta(seconds=30)
        return image


def test_minimums_sent_after_connecting_are_checked_and_a_camera_below_is_live_view_only(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    cameras: dict[str, SimCamera] = {
        "small": SimCamera(camera_id="small", clock=clock, max_queued=256),
        "skewed": SkewedCamera(camera_id="skewed", clock=clock, max_queued=256),
    }
    detectors = {c: SpyDetector() for c in cameras}
    feeds = [
        CameraFeed.of(cameras[c], settings(), detector=detectors[c], reader=ScriptedReader([]))
        for c in cameras
    ]
    node = make_node(tmp_path, clock, CameraPipeline(feeds))
    ends = (clock.now() + timedelta(days=30)).isoformat()

    def terms(**standards: Any) -> dict[str, Any]:
        minimums = {"sample_frames": 5, **standards}
        return {"private": {"owner": "Pearl Plaza", "agreement": "KP-DSA-14", "expires_at": ends,
                            "allow": ["plates"], "standards": minimums}}  # fmt: skip

    policy = {"version": 2, "cameras": {
        "small": terms(),  # 1280x720 by default; these frames are 640x360
        "skewed": terms(min_width=320, min_height=180),
    }}  # fmt: skip

    async def body() -> None:
        async with running(node, clock) as transport:
            for image in list(moving_plate())[:5]:  # analysed: no minimums yet
                for camera in cameras.values():
                    camera.push_frame(image)
            await until(lambda: all(c["frames_analysed"] >= 5
                                    for c in pipeline_of(node).stats()["cameras"].values()),
                        "the first frames analysed")  # fmt: skip
            transport.deliver(SetConfigCommand(
                node_id=NODE, ts=clock.now(), request_id="01JD0Q60000000000000000009",
                changes={"privacy.policy": json.dumps(policy)},
            ))  # fmt: skip
            (reply,) = await until(lambda: transport.messages(Reply), "the set_config reply")
            assert reply.ok, reply.error
            for image in moving_plate():
                for camera in cameras.values():
                    camera.push_frame(image)
            await until(lambda: all(c["standards"] and c["queued"] == 0 and c["frames_in"] >= 40
                                    for c in pipeline_of(node).stats()["cameras"].values()),
                        "both judged and every frame taken")  # fmt: skip
            stats = pipeline_of(node).stats()["cameras"]
            assert stats["small"]["standards"]["reasons"] == ["resolution 640x360 below 1280x720"]
            assert stats["skewed"]["standards"]["clock"] == "skew 30.0 s"
            assert stats["skewed"]["standards"]["reasons"] == ["clock off by 30.0 s (over 2 s)"]
            for camera_id in cameras:
                assert stats[camera_id]["frames_analysed"] == 5  # none after the minimums came
            assert not transport.messages(PlateEvent)

    run(body)
