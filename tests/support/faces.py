"""Faces drawn in the test, never photos: YuNet finds them and SFace embeds them.

No package ships a photo of a person and tests may not read ../shared, so
the face tests draw one: hair, a skin-toned oval, eyes with irises and
brows, a nose and a mouth, lightly blurred with sensor noise. YuNet finds
these with a score around 0.9 and the enrolment gates pass them. They are
drawings: two drawings with different `Look`s score far apart under SFace
(see test_faces_pipeline), but that says nothing about real faces, which
only `nigehbaan bench faces` measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OTHER", "PERSON", "Look", "face_photo", "walking_face"]

Image = Any


@dataclass(frozen=True)
class Look:
    """What makes one drawn face differ from another."""

    skin: tuple[int, int, int] = (135, 165, 210)
    hair: tuple[int, int, int] = (30, 30, 40)
    eye_gap: int = 42
    face_w: int = 105
    face_h: int = 140
    mouth_w: int = 35
    brow_tilt: int = 3
    beard: bool = False
    glasses: bool = False
    seed: int = 0


PERSON = Look()
OTHER = Look(
    skin=(80, 110, 160), hair=(200, 200, 210), eye_gap=36, face_w=118, face_h=128, mouth_w=26,
    brow_tilt=-8, beard=True, glasses=True, seed=7,
)  # fmt: skip


def face_photo(look: Look = PERSON, *, size: int = 400) -> Image:
    """A square BGR photo with one frontal drawn face filling most of it."""
    import cv2

    rng = np.random.default_rng(look.seed)
    img: Image = np.full((size, size, 3), (90, 110, 120), np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c - 40), (look.face_w + 15, 130), 0, 180, 360, look.hair, -1)
    cv2.ellipse(img, (c, c + 10), (look.face_w, look.face_h), 0, 0, 360, look.skin, -1)
    dark = tuple(int(v * 0.6) for v in look.skin)
    if look.beard:
        cv2.ellipse(img, (c, c + 70), (look.face_w - 10, 75), 0, 0, 180, look.hair, -1)
    ey = c - 20
    for sx in (-1, 1):
        x = c + sx * look.eye_gap
        cv2.ellipse(img, (x, ey), (20, 10), 0, 0, 360, (245, 245, 245), -1)
        cv2.circle(img, (x, ey), 8, (60, 40, 20), -1)
        cv2.circle(img, (x, ey), 4, (10, 10, 10), -1)
        cv2.line(img, (x - 22, ey - 25), (x + 22, ey - 25 - sx * look.brow_tilt), look.hair, 6)
        if look.glasses:
            cv2.circle(img, (x, ey), 27, (20, 20, 20), 3)
    pts = np.array([[c, ey + 5], [c - 14, c + 45], [c + 14, c + 45]])
    cv2.polylines(img, [pts], False, tuple(int(v * 0.7) for v in look.skin), 3)
    cv2.ellipse(img, (c, c + 45), (18, 8), 0, 0, 180, dark, -1)
    cv2.ellipse(img, (c, c + 80), (look.mouth_w, 12), 0, 0, 180, (60, 60, 150), -1)
    smooth = cv2.GaussianBlur(img, (3, 3), 0)
    noisy = smooth + rng.normal(0, 4, img.shape)
    out: Image = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def walking_face(
    look: Look = PERSON, *, frames: int = 8, width: int = 640, height: int = 480, side: int = 300
) -> list[Image]:
    """Frames of a street camera with the face drifting across it, then empty frames."""
    import cv2

    face = cv2.resize(face_photo(look), (side, side), interpolation=cv2.INTER_AREA)
    background = np.full((height, width, 3), (90, 110, 120), np.uint8)
    out = []
    for i in range(frames):
        frame = background.copy()
        x, y = 40 + 12 * i, 60 + 2 * i
        frame[y : y + side, x : x + side] = face
        out.append(frame)
    out += [background.copy() for _ in range(6)]
    return out
