"""One camera's analysis on drawn frames: one vehicle pass is one voted plate, nothing else.

`CameraAnalysis` is driven frame by frame here, without threads or a node;
the detector and reader are the deterministic stand-ins of
tests/support/camera.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.anpr.types import Box, PlateRead
from edge_agent.camera.analysis import CameraAnalysis, percentiles
from edge_agent.config import CameraAnalyticsConfig
from edge_agent.evidence import EvidenceStore
from tests.support.camera import ScriptedReader, WhiteRectDetector, moving_plate, street


def analysis(
    *,
    reader: ScriptedReader | None = None,
    detector: WhiteRectDetector | None = None,
    evidence: EvidenceStore | None = None,
    **settings: object,
) -> CameraAnalysis:
    return CameraAnalysis(
        camera_id="cam-1",
        settings=CameraAnalyticsConfig.model_validate({"max_fps": 0, **settings}),
        detector=detector if detector is not None else WhiteRectDetector(),
        reader=reader if reader is not None else ScriptedReader(["LEB6881"]),
        evidence=evidence,
        track_prefix="t",
    )


def test_one_vehicle_pass_is_one_voted_plate_with_its_crop_in_the_evidence_store(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path)
    # The reader gets it wrong on some frames; the vote does not.
    reader = ScriptedReader(["LEB6881", "LEB6BB1", "LEB6881", "1EB6881", "LEB6881"])
    cam = analysis(reader=reader, evidence=store)
    passes = [p for frame in moving_plate() for p in cam.process(frame)]
    assert len(passes) == 1
    plate = passes[0]
    assert plate.plate == "LEB6881"
    assert plate.track_id == "t1"
    assert plate.frames >= 3
    assert plate.reads == 12  # max_reads per track
    assert 0.5 < plate.confidence <= 0.9
    assert plate.snapshot_sha256 is not None
    path = store.path(plate.snapshot_sha256)
    assert path is not None
    assert hashlib.sha256(path.read_bytes()).hexdigest() == plate.snapshot_sha256
    assert cam.flush() == []
    assert cam.stats.plates == 1


def test_two_passes_one_after_the_other_are_two_plates() -> None:
    cam = analysis(reader=ScriptedReader(["AAA111"]))
    frames = [*moving_plate("AAA111"), *moving_plate("AAA111", start=(40, 150))]
    passes = [p for frame in frames for p in cam.process(frame)]
    assert [p.track_id for p in passes] == ["t1", "t2"]


def test_a_still_street_never_wakes_the_detector() -> None:
    detector = WhiteRectDetector()
    cam = analysis(detector=detector)
    background = street()
    for _ in range(20):
        assert cam.process(background.copy()) == []
    assert detector.calls == 0
    assert cam.stats.frames_analysed == 20
    assert cam.stats.motion_frames == 0


def test_the_detector_looks_only_inside_the_motion_regions() -> None:
    detector = WhiteRectDetector()
    cam = analysis(detector=detector)
    for frame in moving_plate(frames=6):
        cam.process(frame)
    looked = [r for r in detector.regions_seen if r is not None]
    assert looked
    assert all(r.w < 640 for regions in looked for r in regions)
    whole = WhiteRectDetector()
    cam = analysis(detector=whole, detect_in_regions=False)
    for frame in moving_plate(frames=6):
        cam.process(frame)
    assert whole.regions_seen
    assert all(r is None for r in whole.regions_seen)


def test_corrupt_frames_are_counted_and_skipped() -> None:
    cam = analysis()
    for bad in (
        np.zeros((360, 640, 3), np.float32),
        np.zeros((360, 640), np.uint8),
        np.zeros((360, 640, 4), np.uint8),
        np.zeros((4, 4, 3), np.uint8),
        "not an image",
    ):
        assert cam.process(bad) == []
    assert cam.stats.frames_corrupt == 5
    assert cam.stats.frames_analysed == 0
    passes = [p for frame in moving_plate() for p in cam.process(frame)]
    assert len(passes) == 1  # the camera goes on


def test_a_detector_or_reader_that_raises_costs_frames_not_the_camera() -> None:
    class Flaky(WhiteRectDetector):
        def detect(self, frame: object, regions: list[Box] | None = None) -> list[Box]:
            if self.calls == 0:
                self.calls += 1
                raise RuntimeError("model hiccup")
            return super().detect(frame, regions)

    class Broken(ScriptedReader):
        def read(self, frame: object, box: Box) -> PlateRead | None:
            if self.calls % 2 == 0:
                self.calls += 1
                raise RuntimeError("reader hiccup")
            return super().read(frame, box)

    cam = analysis(detector=Flaky(), reader=Broken(["ABC123"]))
    passes = [p for frame in moving_plate("ABC123") for p in cam.process(frame)]
    assert [p.plate for p in passes] == ["ABC123"]
    assert cam.stats.errors >= 2


def test_a_track_the_reader_never_reads_is_counted_not_sent() -> None:
    cam = analysis(reader=ScriptedReader([""]))
    assert [p for frame in moving_plate() for p in cam.process(frame)] == []
    assert cam.stats.tracks_unread == 1


def test_motion_only_when_no_detector_is_named() -> None:
    cam = CameraAnalysis(camera_id="cam-1", settings=CameraAnalyticsConfig(max_fps=0))
    assert [p for frame in moving_plate() for p in cam.process(frame)] == []
    assert cam.stats.motion_frames > 0
    assert cam.stats.motion_ratio > 0.0


def test_stage_timings_are_kept_as_p50_and_p95() -> None:
    cam = analysis()
    for frame in moving_plate():
        cam.process(frame)
    figures = cam.stats.as_dict()
    assert set(figures["detector_ms"]) == {"p50", "p95"}
    assert figures["reader_ms"]["p50"] >= 0.0
    assert figures["plates_per_hour"] == 1
    assert percentiles([]) is None
    assert percentiles([1.0, 2.0, 3.0, 4.0]) == {"p50": 3.0, "p95": 4.0}


def parked_car_with_passers_by(*, parked_frames: int, leave_after: int = 8) -> list[object]:
    """A car drives in and parks; someone keeps walking about beside it (motion every frame)."""
    import cv2

    background = street()
    frames: list[object] = []
    for i in range(parked_frames + leave_after):
        frame = background.copy()
        if i < parked_frames:
            x, y = (100 + 20 * min(i, 5), 200)
            cv2.rectangle(frame, (x - 30, y - 60), (x + 170, y + 60), (25, 25, 35), -1)
            cv2.rectangle(frame, (x, y), (x + 140, y + 40), (245, 245, 245), -1)
        walker = 380 + (i * 37) % 220
        colour = (10, 90, 10) if i % 2 else (200, 40, 200)
        cv2.rectangle(frame, (walker, 60), (walker + 30, 150), colour, -1)
        frames.append(frame)
    return frames


def test_a_parked_car_among_passers_by_is_one_pass_reported_at_the_age_limit() -> None:
    reader = ScriptedReader(["LEB6881"])
    cam = analysis(reader=reader, detect_in_regions=False, max_track_frames=30, max_reads=5)
    passes_at: list[int] = []
    for i, frame in enumerate(parked_car_with_passers_by(parked_frames=300)):
        passes_at.extend(i for _ in cam.process(frame))
        assert len(cam.tracker.tracks) <= 2
        assert len(cam._voters) <= 1
    assert len(passes_at) == 1
    assert passes_at[0] < 60  # reported while still parked, not when it drove away
    assert reader.calls <= 5
    assert cam.flush() == []


def test_with_no_track_age_limit_the_parked_car_is_reported_when_it_leaves() -> None:
    cam = analysis(detect_in_regions=False, max_track_frames=None)
    frames = parked_car_with_passers_by(parked_frames=120)
    passes_at = [i for i, frame in enumerate(frames) for _ in cam.process(frame)]
    assert len(passes_at) == 1
    assert passes_at[0] >= 120
