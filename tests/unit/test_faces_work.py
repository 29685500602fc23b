"""One camera's face work follows the loop's plan: nothing before it, new templates, shed, back.

Fakes stand in for YuNet and SFace (the real models run in
test_faces_pipeline.py): this checks the bookkeeping — no model is loaded
until a plan lets faces run, a plan withdrawn drops the open tracks, new
templates are matched without losing the track, and a still frame with no
open track is not looked at.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.faces.matching import Template
from edge_agent.faces.models import ARCFACE_TEMPLATE, DetectedFace
from edge_agent.faces.work import FacePlan, FaceWork, plan_for


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v)
    return out


class Detector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        self.calls += 1
        x = 100.0 + 8 * self.calls
        landmarks = ARCFACE_TEMPLATE * 1.5 + np.array([x, 40.0])
        return [DetectedFace(box=(x, 40.0, 168.0, 168.0), landmarks=landmarks, score=0.9)]


class Embedder:
    dim = 128
    model = "fake"

    def embed(self, frame: np.ndarray, face: DetectedFace) -> np.ndarray:
        return unit(1)


FRAME = np.random.default_rng(1).integers(0, 256, size=(360, 640, 3)).astype(np.uint8)
ALI = Template("ali", "wanted_person", unit(1), watchlist_id="wanted-lhr", version=3)
SANA = Template("sana", "missing_person", unit(2), watchlist_id="missing-lhr", version=1)


def work() -> tuple[FaceWork, list[int]]:
    loads: list[int] = []
    detector = Detector()

    def models() -> tuple[Detector, Embedder]:
        loads.append(1)
        return detector, Embedder()

    return FaceWork("gate", models=models), loads


def test_nothing_is_loaded_or_looked_at_until_a_plan_lets_faces_run() -> None:
    w, loads = work()
    assert w.process(FRAME, moving=True) == []
    w.set_plan(plan_for(site_allows_faces=True, templates=[], generation=1,
                        power_allows_faces=True))  # fmt: skip
    assert w.skip == "no face watchlist in scope"
    assert w.process(FRAME, moving=True) == []
    assert loads == []
    assert w.frames == 0


def test_a_hit_quotes_its_list_and_a_withdrawn_plan_drops_the_tracks() -> None:
    w, loads = work()
    w.set_plan(plan_for(site_allows_faces=True, templates=[SANA], generation=1,
                        power_allows_faces=True))  # fmt: skip
    assert w.process(FRAME, moving=True) == []  # a track opens, matching nobody
    # new templates (a new bundle): the open track is matched against them
    w.set_plan(FacePlan(templates=(ALI, SANA), generation=2, skip=None))
    hits = [h for _ in range(3) for h in w.process(FRAME, moving=True)]
    assert [(h.hit.entry_id, h.hit.watchlist_id, h.hit.version) for h in hits] == [
        ("ali", "wanted-lhr", 3)
    ]
    assert loads == [1]  # the models loaded once
    # shed by power: the stage and its tracks go; a still frame is then not looked at
    w.set_plan(plan_for(site_allows_faces=True, templates=[ALI], generation=2,
                        power_allows_faces=False))  # fmt: skip
    assert w.skip == "shed by the power policy"
    frames = w.frames
    assert w.process(FRAME, moving=True) == []
    assert w.frames == frames
    w.set_plan(FacePlan(templates=(ALI,), generation=2, skip=None))
    assert w.process(FRAME, moving=False) == []  # no motion and no open track
    assert w.frames == frames
    assert w.stats()["hits"] == 1
