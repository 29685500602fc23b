"""The simulated camera's scenes: a vehicle with a rendered plate drives through the frame,
with known truth, the same frames for the same seed, under lighting and blur."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("cv2")
pytest.importorskip("PIL")

import numpy as np

from simulators.camera_scenes import PK_LAYOUTS, ScenePass, camera_analytics, render_pass
from simulators.plates import PlateRenderError


def render_pass_or_skip(seed: int, *, lighting: bool = True, blur: bool = True) -> ScenePass:
    try:
        return render_pass(random.Random(seed), lighting=lighting, blur=blur)
    except PlateRenderError as exc:
        pytest.skip(f"cannot render plates here: {exc}")


def test_a_pass_moves_a_plate_across_a_still_street_with_its_truth() -> None:
    scene = render_pass_or_skip(7)
    frames, truth = scene.frames, scene.truth
    assert len(frames) == 3 + 18 + 6
    assert {(f.shape, f.dtype) for f in frames} == {((360, 640, 3), np.dtype(np.uint8))}
    assert truth.layout in PK_LAYOUTS
    assert truth.canonical.isalnum()
    box = truth.box
    assert 0 <= box.x < box.x + box.w <= 640
    assert 0 <= box.y < box.y + box.h <= 360
    # Street before and after the vehicle, the vehicle moving in between.
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() < 6
    middle = frames[3 + 9].astype(int)
    assert np.abs(middle - frames[0].astype(int)).mean() > 5
    assert not np.array_equal(frames[3], frames[4])


def test_the_same_seed_gives_the_same_frames_and_lighting_changes_them() -> None:
    a, b = render_pass_or_skip(11), render_pass_or_skip(11)
    assert a.truth == b.truth
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    plain = render_pass_or_skip(11, lighting=False, blur=False)
    assert plain.truth == a.truth
    assert not np.array_equal(plain.frames[10], a.frames[10])


def test_camera_analytics_names_the_real_detector_and_reader() -> None:
    sections = camera_analytics("north")
    assert sections["cameras"] == [{"type": "sim", "id": "north", "max_queued": 64}]
    assert sections["analytics"]["north"]["reader"].endswith("RapidOcrReader")
