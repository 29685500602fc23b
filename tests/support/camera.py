"""Synthetic camera scenes and small deterministic plate models for the camera pipeline's tests.

A street background (fixed noise), a vehicle (a dark block) carrying a
plate-like white rectangle with black text (drawn with cv2.putText) that
moves across the frame, and stand-ins behind the `edge_agent.anpr.types`
seams: `WhiteRectDetector` finds the white rectangles, `ScriptedReader` says
what a test wants read (mistakes included), `SlowDetector` sleeps on every
call, `HeldDetector` blocks until the test lets it go. Tests never read
../shared: everything here is drawn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edge_agent.anpr.types import Box, PlateRead

__all__ = [
    "HeldDetector",
    "ScriptedReader",
    "SlowDetector",
    "WhiteRectDetector",
    "moving_plate",
    "rendered_pass",
    "street",
]

Image = Any


def street(width: int = 640, height: int = 360, *, seed: int = 3) -> Image:
    """A textured, still background."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 110, size=(height, width, 3), dtype=np.uint8)


def moving_plate(
    text: str = "LEB6881",
    *,
    frames: int = 24,
    width: int = 640,
    height: int = 360,
    start: tuple[int, int] = (20, 200),
    step: tuple[int, int] = (22, -3),
    empty_before: int = 3,
    empty_after: int = 8,
    seed: int = 3,
) -> Iterator[Image]:
    """Frames of one vehicle pass: empty street, the plate crossing, empty street again."""
    import cv2

    background = street(width, height, seed=seed)
    for _ in range(empty_before):
        yield background.copy()
    for i in range(frames):
        frame = background.copy()
        x, y = start[0] + step[0] * i, start[1] + step[1] * i
        cv2.rectangle(frame, (x - 30, y - 60), (x + 170, y + 60), (25, 25, 35), -1)  # the car
        cv2.rectangle(frame, (x, y), (x + 140, y + 40), (245, 245, 245), -1)  # the plate
        cv2.putText(frame, text, (x + 6, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
        yield frame
    for _ in range(empty_after):
        yield background.copy()


def rendered_pass(
    layout: str,
    seed: int,
    *,
    frames: int = 20,
    width: int = 640,
    height: int = 360,
    plate_height: int = 56,
) -> tuple[list[Image], str]:
    """One vehicle pass with a plate drawn by `simulators.plates` (fonts from Debian), and its key.

    The renderer draws the plate face-on; here it rides on a vehicle body across
    a still street, like `moving_plate`.
    """
    import random

    import cv2

    from simulators.plates import random_plate, render_plate

    rows, canonical, _ = random_plate(layout, random.Random(seed))
    face = render_plate(layout, rows)  # drawn large, then scaled: small sizes lose the fonts
    scale = plate_height / face.shape[0]
    plate = cv2.resize(
        face, (round(face.shape[1] * scale), plate_height), interpolation=cv2.INTER_AREA
    )
    ph, pw = plate.shape[:2]
    background = street(width, height)
    out = [background.copy() for _ in range(3)]
    for i in range(frames):
        frame = background.copy()
        x, y = 20 + 20 * i, height - 130 - 3 * i
        cv2.rectangle(frame, (x - 40, y - 70), (x + pw + 40, y + ph + 40), (60, 40, 30), -1)
        frame[y : y + ph, x : x + pw] = plate
        out.append(frame)
    out += [background.copy() for _ in range(8)]
    return out, canonical


class WhiteRectDetector:
    """Finds bright, plate-shaped rectangles (the synthetic plates), inside `regions` if given."""

    name = "white-rect"

    def __init__(self) -> None:
        self.calls = 0
        self.regions_seen: list[list[Box] | None] = []

    def detect(self, frame: Image, regions: list[Box] | None = None) -> list[Box]:
        import cv2

        self.calls += 1
        self.regions_seen.append(regions)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        _, mask = cv2.threshold(grey, 230, 255, cv2.THRESH_BINARY)
        if regions is not None:
            keep = np.zeros_like(mask)
            for r in regions:
                keep[r.y : r.y + r.h, r.x : r.x + r.w] = 255
            mask = cv2.bitwise_and(mask, keep)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i][:5])
            if area >= 400 and 2.0 <= w / max(1, h) <= 6.0:
                boxes.append(Box(x=x, y=y, w=w, h=h, score=0.9))
        return boxes


class ScriptedReader:
    """Reads the texts it was given, one per call, cycling (so a test scripts the mistakes)."""

    name = "scripted"

    def __init__(self, texts: Sequence[str], *, confidence: float = 0.9) -> None:
        self.texts = list(texts)
        self.confidence = confidence
        self.calls = 0

    def read(self, frame: Image, box: Box) -> PlateRead | None:
        text = self.texts[self.calls % len(self.texts)]
        self.calls += 1
        if not text:
            return None
        return PlateRead(text=text, canonical=text, confidence=self.confidence, box=box)


class SlowDetector(WhiteRectDetector):
    """A detector that takes `delay_s` per call (a slow model on a small CPU)."""

    name = "slow"

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def detect(self, frame: Image, regions: list[Box] | None = None) -> list[Box]:
        time.sleep(self.delay_s)
        return super().detect(frame, regions)


class HeldDetector(WhiteRectDetector):
    """A detector whose every call blocks until the test releases it: the pipeline is busy."""

    name = "held"

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.busy = False

    def detect(self, frame: Image, regions: list[Box] | None = None) -> list[Box]:
        self.busy = True
        self.entered.set()
        try:
            self.release.wait(30.0)
            return super().detect(frame, regions)
        finally:
            self.busy = False
