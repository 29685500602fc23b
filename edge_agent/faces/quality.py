"""Quality gates a face passes before it is matched: size, blur, pose.

A face that is too small, blurred or turned away gives an embedding that
matches strangers as readily as the person, so it is never matched at all.
Everything here is a pure function of arrays and the 5 landmarks YuNet
gives (subject's right eye, left eye, nose tip, right and left mouth
corner, in image coordinates), so it is tested without any model. Pose is
an estimate from those five points, good enough to refuse a profile or a
face looking at the ground; it is not a head-pose model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

__all__ = [
    "Pose",
    "QualityConfig",
    "QualityVerdict",
    "assess",
    "blur_score",
    "inter_eye_distance",
    "pose_from_landmarks",
    "quality_weight",
]

# Where the nose tip sits between the eye line and the mouth line on a frontal
# face (the ArcFace 112x112 template: eyes y≈51.6, nose 71.7, mouth 92.3).
_FRONTAL_NOSE_RATIO = (71.7366 - 51.6) / (92.3 - 51.6)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gates (the node's config; defaults from the dev photos)."""

    min_eye_distance_px: float = 24.0
    min_box_px: float = 48.0
    min_blur: float = 60.0
    max_yaw_deg: float = 35.0
    max_pitch_deg: float = 30.0
    max_roll_deg: float = 30.0


@dataclass(frozen=True)
class Pose:
    """Estimated head pose in degrees (0, 0, 0 = looking straight at the camera)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class QualityVerdict:
    """What the gates found: passed or not, why not, and the figures behind it."""

    passed: bool
    reasons: tuple[str, ...]
    eye_distance_px: float
    blur: float
    pose: Pose
    weight: float


def inter_eye_distance(landmarks: Array) -> float:
    """Pixels between the two eye landmarks."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    return float(np.linalg.norm(points[1] - points[0]))


def blur_score(gray: Array) -> float:
    """Variance of the Laplacian of a grey image: low means blurred (or flat)."""
    img = np.asarray(gray, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=2)
    if img.shape[0] < 3 or img.shape[1] < 3:
        return 0.0
    lap = img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:] - 4.0 * img[1:-1, 1:-1]
    return float(lap.var())


def pose_from_landmarks(landmarks: Array) -> Pose:
    """Yaw, pitch and roll estimated from the 5 landmarks.

    Roll is the angle of the eye line. The points are then rotated level;
    yaw is how far the nose tip sits off the middle of the eyes (relative to
    half the eye distance), pitch how far it sits off its frontal height
    between the eye line and the mouth line.
    """
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_vec = p[1] - p[0]
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    rot = np.array([[c, -s], [s, c]])
    q = (p - p[0]) @ rot.T
    eye_d = max(float(q[1, 0]), 1e-6)
    eye_mid = (q[0] + q[1]) / 2.0
    mouth_mid = (q[3] + q[4]) / 2.0
    dx = (q[2, 0] - eye_mid[0]) / (eye_d / 2.0)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, dx))))
    span = mouth_mid[1] - eye_mid[1]
    if span <= 1e-6:
        return Pose(yaw=yaw, pitch=90.0, roll=roll)
    ratio = (q[2, 1] - eye_mid[1]) / span
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, 2.0 * (ratio - _FRONTAL_NOSE_RATIO)))))
    return Pose(yaw=yaw, pitch=pitch, roll=roll)


def quality_weight(*, blur: float, pose: Pose, config: QualityConfig) -> float:
    """0..1: how much one frame's vote counts (sharper and more frontal count more)."""
    sharp = min(1.0, blur / (4.0 * config.min_blur)) if config.min_blur > 0 else 1.0
    frontal = max(0.0, 1.0 - abs(pose.yaw) / 90.0) * max(0.0, 1.0 - abs(pose.pitch) / 90.0)
    return float(sharp * frontal)


def assess(
    *,
    box: tuple[float, float, float, float],
    landmarks: Array,
    aligned: Array,
    config: QualityConfig,
) -> QualityVerdict:
    """Run every gate on one face (box x, y, w, h; its landmarks; its aligned crop)."""
    reasons: list[str] = []
    eyes = inter_eye_distance(landmarks)
    if eyes < config.min_eye_distance_px or min(box[2], box[3]) < config.min_box_px:
        reasons.append("too small")
    blur = blur_score(aligned)
    if blur < config.min_blur:
        reasons.append("blurred")
    pose = pose_from_landmarks(landmarks)
    if abs(pose.yaw) > config.max_yaw_deg:
        reasons.append("turned away")
    if abs(pose.pitch) > config.max_pitch_deg:
        reasons.append("looking up or down")
    if abs(pose.roll) > config.max_roll_deg:
        reasons.append("tilted")
    return QualityVerdict(
        passed=not reasons,
        reasons=tuple(reasons),
        eye_distance_px=eyes,
        blur=blur,
        pose=pose,
        weight=quality_weight(blur=blur, pose=pose, config=config) if not reasons else 0.0,
    )
