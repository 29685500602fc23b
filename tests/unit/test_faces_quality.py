"""Face quality gates: small, blurred, turned and tilted faces are refused before matching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.faces.models import ARCFACE_TEMPLATE
from edge_agent.faces.quality import (
    QualityConfig,
    assess,
    blur_score,
    inter_eye_distance,
    pose_from_landmarks,
)

SHARP = np.random.default_rng(7).integers(0, 256, size=(112, 112, 3)).astype(np.uint8)
FLAT = np.full((112, 112, 3), 128, dtype=np.uint8)


def frontal(scale: float = 2.0, shift: tuple[float, float] = (100.0, 50.0)) -> np.ndarray:
    """The ArcFace template's landmarks, scaled and moved: a frontal face."""
    points: np.ndarray = ARCFACE_TEMPLATE * scale + np.array(shift)
    return points


def rotated(points: np.ndarray, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    centre = points.mean(axis=0)
    out: np.ndarray = (points - centre) @ np.array([[c, s], [-s, c]]) + centre
    return out


def test_a_frontal_face_has_near_zero_pose() -> None:
    pose = pose_from_landmarks(frontal())
    assert abs(pose.yaw) < 1
    assert abs(pose.pitch) < 2
    assert abs(pose.roll) < 1


def test_roll_is_the_eye_line_angle_and_does_not_leak_into_yaw() -> None:
    pose = pose_from_landmarks(rotated(frontal(), 20))
    assert pose.roll == pytest.approx(20, abs=0.5)
    assert abs(pose.yaw) < 1
    assert abs(pose.pitch) < 2


def test_a_nose_off_the_eye_middle_is_yaw() -> None:
    points = frontal()
    points[2, 0] += 0.35 * inter_eye_distance(points)
    assert pose_from_landmarks(points).yaw > 35


def test_a_nose_near_the_mouth_is_pitch() -> None:
    points = frontal()
    points[2, 1] = points[3, 1] - 2
    assert abs(pose_from_landmarks(points).pitch) > 30


def test_blur_is_high_on_texture_and_zero_on_a_flat_crop() -> None:
    assert blur_score(SHARP) > 1000
    assert blur_score(FLAT) == 0.0
    assert blur_score(np.zeros((2, 2))) == 0.0


def test_a_good_face_passes_with_a_positive_weight() -> None:
    verdict = assess(
        box=(100, 50, 230, 260), landmarks=frontal(), aligned=SHARP, config=QualityConfig()
    )
    assert verdict.passed
    assert verdict.reasons == ()
    assert 0 < verdict.weight <= 1


@pytest.mark.parametrize(
    ("landmarks", "box", "aligned", "reason"),
    [
        (frontal(scale=0.3), (0, 0, 34, 40), SHARP, "too small"),
        (frontal(), (0, 0, 230, 260), FLAT, "blurred"),
        (rotated(frontal(), 45), (0, 0, 230, 260), SHARP, "tilted"),
    ],
)
def test_each_gate_refuses_with_its_reason(
    landmarks: np.ndarray, box: tuple[float, float, float, float], aligned: np.ndarray, reason: str
) -> None:
    verdict = assess(box=box, landmarks=landmarks, aligned=aligned, config=QualityConfig())
    assert not verdict.passed
    assert reason in verdict.reasons
    assert verdict.weight == 0.0


def test_a_turned_face_is_refused() -> None:
    points = frontal()
    points[2, 0] += 0.4 * inter_eye_distance(points)
    verdict = assess(box=(0, 0, 230, 260), landmarks=points, aligned=SHARP, config=QualityConfig())
    assert "turned away" in verdict.reasons


def test_thresholds_come_from_the_config() -> None:
    lenient = QualityConfig(min_eye_distance_px=1, min_box_px=1, min_blur=0)
    verdict = assess(box=(0, 0, 34, 40), landmarks=frontal(scale=0.3), aligned=FLAT, config=lenient)
    assert verdict.passed
