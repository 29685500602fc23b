"""Detector plugins for the inference-process tests, built by name in a child process.

`SpinningDetector` finds the drawn white plates of tests/support/camera.py,
but first burns the CPU in pure Python (holding its interpreter's GIL) until
the test drops a ``release`` file into ``$NB_BUSY_MODEL_DIR``; on entering a
call it writes ``entered-<pid>`` there, and ``returned-<pid>`` on leaving,
so a test sees from outside which process is busy and for how long.
`FailingDetector` raises; `ExitingDetector` kills its own process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edge_agent.anpr.types import Box

_SPIN_LIMIT_S = 60.0  # bounded: a test that forgets to release does not spin for ever


def _folder() -> Path:
    return Path(os.environ["NB_BUSY_MODEL_DIR"])


def _plates(frame: Any) -> list[Box]:
    import cv2

    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    _, mask = cv2.threshold(grey, 230, 255, cv2.THRESH_BINARY)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    boxes = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i][:5])
        if area >= 400 and 2.0 <= w / max(1, h) <= 6.0:
            boxes.append(Box(x=x, y=y, w=w, h=h, score=0.9))
    return boxes


class SpinningDetector:
    """Spins in Python until released; see the module docstring."""

    name = "spinning"

    def detect(self, frame: Any, regions: list[Box] | None = None) -> list[Box]:
        folder, pid = _folder(), os.getpid()
        (folder / f"entered-{pid}").write_text(str(time.time()), encoding="utf-8")
        end = time.monotonic() + _SPIN_LIMIT_S
        while not (folder / "release").exists() and time.monotonic() < end:
            sum(i * i for i in range(20_000))  # pure Python: holds this interpreter's GIL
        (folder / f"returned-{pid}").write_text(str(time.time()), encoding="utf-8")
        return _plates(frame)


class QuickDetector:
    """Answers at once with the plates it sees, and which process it runs in."""

    name = "quick"

    def detect(self, frame: Any, regions: list[Box] | None = None) -> list[Box]:
        return [Box(x=os.getpid() % 1000, y=0, w=1, h=1), *_plates(frame)]


class FailingDetector:
    """Raises on every call (a model that chokes on a frame)."""

    name = "failing"

    def detect(self, frame: Any, regions: list[Box] | None = None) -> list[Box]:
        raise ValueError("this model does not like the frame")


class ExitingDetector:
    """Ends its own process on every call (a native crash)."""

    name = "exiting"

    def detect(self, frame: Any, regions: list[Box] | None = None) -> list[Box]:
        os._exit(3)


class HangingDetector:
    """Never answers within any sane time limit (a hung model)."""

    name = "hanging"

    def detect(self, frame: Any, regions: list[Box] | None = None) -> list[Box]:
        time.sleep(_SPIN_LIMIT_S)
        return []


class ShapeReader:
    """Reads the size of the image it was given as its 'plate' (what crossed the pipe)."""

    name = "shape"

    def read(self, frame: Any, box: Box) -> Any:
        from edge_agent.anpr.types import PlateRead

        height, width = frame.shape[:2]
        crop = frame[box.y : box.y + box.h, box.x : box.x + box.w]
        return PlateRead(
            text=f"{height}x{width}",
            canonical=f"{height}x{width}",
            confidence=float(crop.mean()) / 255.0,
            box=box,
        )
