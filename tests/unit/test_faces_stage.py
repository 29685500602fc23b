"""The face stage: a watchlist face seen over several frames of one track is one hit.

The detector and embedder are fakes (no photo of a person ships in a
package); what the real models find on real faces is `bench faces`'s.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.faces.matching import FaceMatcher, Template, VoterConfig
from edge_agent.faces.models import ARCFACE_TEMPLATE, DetectedFace
from edge_agent.faces.stage import FaceStage, FaceStageConfig, skip_reason


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v)
    return out


def face_at(x: float, scale: float = 1.5) -> DetectedFace:
    landmarks = ARCFACE_TEMPLATE * scale + np.array([x, 40.0])
    return DetectedFace(box=(x, 40.0, 112 * scale, 112 * scale), landmarks=landmarks, score=0.9)


class FakeDetector:
    def __init__(self, faces: list[list[DetectedFace]]) -> None:
        self.faces = faces
        self.calls = 0

    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        self.calls += 1
        return self.faces[self.calls - 1] if self.calls <= len(self.faces) else []


class FakeEmbedder:
    dim = 128
    model = "fake"

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    def embed(self, frame: np.ndarray, face: DetectedFace) -> np.ndarray:
        return self.vector


FRAME = np.random.default_rng(1).integers(0, 256, size=(360, 640, 3)).astype(np.uint8)
MATCHER = FaceMatcher([Template("ali", "wanted", unit(1)), Template("sana", "missing", unit(2))])


def stage(faces: list[list[DetectedFace]], vector: np.ndarray) -> FaceStage:
    return FaceStage(
        detector=FakeDetector(faces),
        embedder=FakeEmbedder(vector),
        matcher=MATCHER,
        config=FaceStageConfig(voter=VoterConfig(min_frames=3)),
    )


def test_a_watchlisted_face_walking_through_is_one_hit_with_its_crop() -> None:
    frames = [[face_at(100 + 10 * i)] for i in range(6)]
    s = stage(frames, unit(1) * 0.8 + unit(9) * 0.2)
    hits = [h for i in range(6) for h in s.process(FRAME, frame_no=i)]
    assert len(hits) == 1
    assert hits[0].hit.entry_id == "ali"
    assert hits[0].hit.frames == (0, 1, 2)
    assert hits[0].crop.shape == (112, 112, 3)


def test_a_stranger_is_never_a_hit() -> None:
    s = stage([[face_at(100 + 10 * i)] for i in range(10)], unit(7))
    assert [h for i in range(10) for h in s.process(FRAME, frame_no=i)] == []


def test_faces_refused_by_the_gates_never_vote() -> None:
    flat = np.full((360, 640, 3), 90, dtype=np.uint8)  # a blurred (flat) face crop
    s = stage([[face_at(100 + 10 * i)] for i in range(6)], unit(1))
    assert [h for i in range(6) for h in s.process(flat, frame_no=i)] == []
    assert s.faces_refused == 6


@pytest.mark.parametrize(
    ("site", "templates", "power", "reason"),
    [
        (False, 5, True, "site policy forbids faces"),
        (True, 0, True, "no face watchlist in scope"),
        (True, 5, False, "shed by the power policy"),
        (True, 5, True, None),
    ],
)
def test_face_work_is_skipped_without_policy_watchlist_or_power(
    site: bool, templates: int, power: bool, reason: str | None
) -> None:
    assert (
        skip_reason(site_allows_faces=site, templates=templates, power_allows_faces=power) == reason
    )
