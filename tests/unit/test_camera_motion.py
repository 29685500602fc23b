"""The motion gate on plain arrays: a still street is quiet, a moving block is found where it is."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.camera.motion import MotionGate, rect_polygon


def street(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 120, size=(720, 1280, 3), dtype=np.uint8)
    return base


def with_block(frame: np.ndarray, x: int, y: int, w: int = 200, h: int = 120) -> np.ndarray:
    out = frame.copy()
    out[y : y + h, x : x + w] = 250
    return out


def test_the_first_frame_only_seeds_the_background() -> None:
    gate = MotionGate()
    result = gate.update(street())
    assert result.regions == []
    assert result.ratio == 0.0
    assert not result.moving


def test_a_still_street_with_sensor_noise_shows_no_motion() -> None:
    gate = MotionGate()
    base = street()
    rng = np.random.default_rng(7)
    for _ in range(10):
        noise = rng.integers(-4, 5, size=base.shape)
        frame = np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        result = gate.update(frame)
    assert result.regions == []
    assert result.ratio < 0.001


def test_a_moving_block_is_one_region_around_it_in_frame_pixels() -> None:
    gate = MotionGate()
    base = street()
    gate.update(base)
    result = gate.update(with_block(base, 600, 300))
    assert result.moving
    assert len(result.regions) == 1
    box = result.regions[0]
    # The region covers the block, give or take the downscale and the dilation.
    assert box.x <= 600
    assert box.y <= 300
    assert box.x + box.w >= 790
    assert box.y + box.h >= 410
    assert box.w < 300
    assert box.h < 220
    assert 0.01 < result.ratio < 0.05  # 200x120 of 1280x720 is 2.6 %


def test_motion_inside_an_ignore_mask_does_not_count() -> None:
    gate = MotionGate(ignore=[rect_polygon(0.4, 0.3, 0.3, 0.4)])
    base = street()
    gate.update(base)
    result = gate.update(with_block(base, 600, 300))  # inside the mask
    assert result.regions == []
    assert result.ratio == 0.0
    result = gate.update(with_block(base, 50, 50))  # outside it
    assert result.moving


def test_a_polygon_mask_and_a_grey_frame_work_too() -> None:
    gate = MotionGate(ignore=[[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]])  # the upper-left triangle
    base = street()[:, :, 0]
    gate.update(base)
    assert gate.update(with_block(base[..., None], 40, 40, 100, 80)[..., 0]).regions == []
    assert gate.update(with_block(base[..., None], 1100, 560, 100, 80)[..., 0]).moving


def test_small_specks_are_below_min_area() -> None:
    gate = MotionGate(min_area=0.01)
    base = street()
    gate.update(base)
    result = gate.update(with_block(base, 100, 100, 20, 20))
    assert result.regions == []
    assert result.ratio > 0.0  # it moved, but too little to wake the detector


def test_the_background_learns_a_change_that_stays() -> None:
    gate = MotionGate(alpha=0.5)
    base = street()
    parked = with_block(base, 600, 300)
    gate.update(base)
    assert gate.update(parked).moving
    for _ in range(10):
        result = gate.update(parked)
    assert not result.moving


def test_a_new_resolution_reseeds_the_background() -> None:
    gate = MotionGate()
    gate.update(street())
    assert gate.update(street()[:360, :640]).regions == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="blur"):
        MotionGate(blur=4)
    with pytest.raises(ValueError, match="threshold"):
        MotionGate(threshold=0)
