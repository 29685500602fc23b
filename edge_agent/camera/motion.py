"""The motion gate: a cheap test on every frame that decides whether the plate detector runs.

It works on a downscaled grey copy of the frame against a running-average
background (`cv2.accumulateWeighted`): pixels that differ from the
background by more than `threshold` grey levels are motion, masks drop the
regions to ignore (a tree, a clock, the sky), a dilation joins a vehicle's
fragments, and connected parts of at least `min_area` of the frame become
motion regions, returned as `Box`es in full-frame pixels with the share of
watched pixels that moved (the motion ratio telemetry reports). The first
frame only seeds the background. Pure: it takes arrays and returns values;
the pipeline around it owns threads and queues. OpenCV is required (the
``camera`` extra) and imported when the first gate is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.anpr.types import Box
from edge_agent.camera.errors import CameraError

if TYPE_CHECKING:
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]
else:
    Image = Any

__all__ = ["MotionGate", "MotionResult", "Polygon", "rect_polygon"]

Polygon = Sequence[tuple[float, float]]


def rect_polygon(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    """A rectangle (fractions of the frame) as the polygon the gate's masks take."""
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


@dataclass(frozen=True)
class MotionResult:
    """What moved in one frame: regions in frame pixels and the share of watched pixels."""

    regions: list[Box]
    ratio: float

    @property
    def moving(self) -> bool:
        return bool(self.regions)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - the camera extra brings it
        raise CameraError(
            f"the motion gate needs OpenCV ({exc}); install nigehbaan[camera]"
        ) from exc
    return cv2


class MotionGate:
    """Running-average background subtraction on a small grey image; see the module docstring.

    `ignore` polygons are in fractions of the frame (0..1, x to the right,
    y down), so one mask serves any resolution the camera is set to.
    """

    def __init__(
        self,
        *,
        width: int = 320,
        threshold: int = 25,
        alpha: float = 0.05,
        blur: int = 5,
        dilate: int = 3,
        min_area: float = 0.002,
        ignore: Sequence[Polygon] = (),
    ) -> None:
        if width < 16:
            raise ValueError("width must be at least 16 pixels")
        if not 0 < threshold < 256:
            raise ValueError("threshold must be 1..255 grey levels")
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        if blur and blur % 2 == 0:
            raise ValueError("blur must be 0 or an odd kernel size")
        self._cv2 = _cv2()
        self.width = width
        self.threshold = threshold
        self.alpha = alpha
        self.blur = blur
        self.min_area = min_area
        self.ignore = [list(p) for p in ignore]
        self._kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8) if dilate > 0 else None
        self._background: npt.NDArray[np.float32] | None = None
        self._keep: Image | None = None  # 255 where watched, 0 where masked
        self._watched = 0
        self._shape: tuple[int, ...] = ()
        self.frames = 0

    def reset(self) -> None:
        """Forget the background (after a camera was reopened or moved)."""
        self._background = None
        self._shape = ()

    def _small_grey(self, frame: Image) -> Image:
        cv2 = self._cv2
        h, w = frame.shape[:2]
        scale = min(1.0, self.width / w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else frame
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        if self.blur:
            grey = cv2.GaussianBlur(grey, (self.blur, self.blur), 0)
        return grey

    def _prepare(self, grey: Image, frame_shape: tuple[int, ...]) -> None:
        sh, sw = grey.shape[:2]
        keep = np.full((sh, sw), 255, np.uint8)
        for polygon in self.ignore:
            points = np.array([[round(x * sw), round(y * sh)] for x, y in polygon], np.int32)
            self._cv2.fillPoly(keep, [points], 0)
        self._keep = keep if (keep == 0).any() else None
        self._watched = int(np.count_nonzero(keep))
        self._background = grey.astype(np.float32)
        self._shape = frame_shape

    def update(self, frame: Image) -> MotionResult:
        """Compare `frame` (HxWx3 BGR or HxW grey, uint8) with the background, then learn it."""
        cv2 = self._cv2
        self.frames += 1
        grey = self._small_grey(frame)
        if self._background is None or self._shape != frame.shape:
            self._prepare(grey, frame.shape)
            return MotionResult([], 0.0)
        background = self._background
        assert background is not None
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(background))
        _, mask = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        if self._keep is not None:
            mask = cv2.bitwise_and(mask, self._keep)
        cv2.accumulateWeighted(grey, background, self.alpha)
        moved = int(cv2.countNonZero(mask))
        ratio = moved / self._watched if self._watched else 0.0
        if not moved:
            return MotionResult([], 0.0)
        if self._kernel is not None:
            mask = cv2.dilate(mask, self._kernel)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        sh, sw = grey.shape[:2]
        fh, fw = frame.shape[:2]
        sx, sy = fw / sw, fh / sh
        min_px = self.min_area * sw * sh
        regions: list[Box] = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i][:5])
            if area < min_px:
                continue
            box = Box(
                x=int(x * sx), y=int(y * sy), w=max(1, round(w * sx)), h=max(1, round(h * sy))
            )
            regions.append(box)
        return MotionResult(regions, min(1.0, ratio))
