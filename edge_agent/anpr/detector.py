"""Finding plates: text lines from PP-OCR's detector, merged and kept where they look like plates.

`OcrLineDetector` is the licence-clean `PlateDetector` that ships first:
rapidocr's PP-OCR DB text detector (Apache-2.0) runs on the frame, or only
inside the motion regions the pipeline passes, and its text lines go
through a plate-shape heuristic (`plate_boxes`): lines stacked one above
the other with overlapping extents merge into one plate (a Punjab district
plate's two rows, a Brazilian plate's city line over its characters), and
what is left is kept when its size and aspect ratio could be a plate. The
reader decides what the box says; text that is not a plate (a shop sign,
a bumper sticker) reads as layout "unknown" or not at all.

The geometry (`merge_lines`, `plate_boxes`) is pure and tested on boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.anpr.types import Box

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Frame = npt.NDArray[np.uint8]

__all__ = ["OcrLineDetector", "PlateShape", "join_pieces", "merge_lines", "plate_boxes", "reach"]


@dataclass(frozen=True, kw_only=True)
class PlateShape:
    """What a plate's box may look like, in frame pixels."""

    min_height: int = 10
    max_height_ratio: float = 0.95
    min_aspect: float = 0.9
    max_aspect: float = 12.0
    # Lines merge when their horizontal extents overlap by this much of the narrower
    # one and the gap between them is under this much of the taller one's height.
    merge_overlap: float = 0.5
    merge_gap: float = 0.6
    max_rows: int = 3
    # Pieces of one row (the detector splits at a dash or a wide space, and a
    # year sits apart) join when one is at least 0.4 of the other's height, they
    # overlap vertically by half the lower one, and the gap between them is
    # under this much of the taller one's height.
    join_gap: float = 0.8
    # A one-line box (aspect above `reach_aspect`) reaches up by this much of its
    # height: the letter row of a two-row plate the frame-level detector missed
    # (small, low-contrast letters) is then inside the reader's crop, where the
    # detector sees it magnified. Sideways it reaches by `reach_side` of its width.
    reach_up: float = 0.7
    reach_side: float = 0.05
    reach_aspect: float = 2.2


def _overlap_x(a: Box, b: Box) -> float:
    inter = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    return max(0, inter) / max(1, min(a.w, b.w))


def _union(boxes: Sequence[Box]) -> Box:
    x0 = min(b.x for b in boxes)
    y0 = min(b.y for b in boxes)
    x1 = max(b.x + b.w for b in boxes)
    y1 = max(b.y + b.h for b in boxes)
    return Box(x0, y0, x1 - x0, y1 - y0, score=max(b.score for b in boxes))


def join_pieces(lines: Sequence[Box], shape: PlateShape | None = None) -> list[Box]:
    """Pieces of one text row side by side joined into one line."""
    shape = shape or PlateShape()
    rows = sorted(lines, key=lambda b: b.x)
    joined = True
    while joined:
        joined = False
        for i, a in enumerate(rows):
            for j in range(i + 1, len(rows)):
                b = rows[j]
                overlap_y = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
                gap = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
                similar = min(a.h, b.h) >= 0.4 * max(a.h, b.h)
                if (
                    similar
                    and overlap_y >= 0.5 * min(a.h, b.h)
                    and gap < shape.join_gap * max(a.h, b.h)
                ):
                    rows[i] = _union([a, b])
                    del rows[j]
                    joined = True
                    break
            if joined:
                break
    return rows


def merge_lines(lines: Sequence[Box], shape: PlateShape | None = None) -> list[Box]:
    """Text lines joined into rows and rows stacked into plates (up to `max_rows` each)."""
    shape = shape or PlateShape()
    groups: list[list[Box]] = []
    for line in sorted(join_pieces(lines, shape), key=lambda b: b.y):
        for group in groups:
            last = group[-1]
            gap = line.y - (last.y + last.h)
            if (
                len(group) < shape.max_rows
                and _overlap_x(line, last) >= shape.merge_overlap
                and gap < shape.merge_gap * max(line.h, last.h)
            ):
                group.append(line)
                break
        else:
            groups.append([line])
    return [_union(group) for group in groups]


def plate_boxes(
    lines: Sequence[Box], frame_height: int, shape: PlateShape | None = None
) -> list[Box]:
    """The merged lines that could be plates, largest first."""
    shape = shape or PlateShape()
    kept = [
        box
        for box in merge_lines(lines, shape)
        if shape.min_height <= box.h <= shape.max_height_ratio * frame_height
        and shape.min_aspect <= box.w / box.h <= shape.max_aspect
    ]
    return sorted(kept, key=lambda b: b.w * b.h, reverse=True)


def reach(box: Box, width: int, height: int, shape: PlateShape | None = None) -> Box:
    """A one-line box grown upwards and sideways (`PlateShape.reach_up`), clipped to the frame."""
    shape = shape or PlateShape()
    if box.w / box.h <= shape.reach_aspect:
        return box
    up = round(shape.reach_up * box.h)
    side = round(shape.reach_side * box.w)
    x0, y0 = max(0, box.x - side), max(0, box.y - up)
    x1, y1 = min(width, box.x + box.w + side), min(height, box.y + box.h)
    return Box(x0, y0, x1 - x0, y1 - y0, score=box.score)


class OcrLineDetector:
    """Plate detector on PP-OCR's text detector (rapidocr, ONNX Runtime, CPU).

    `det_side` bounds the longer side of the image the text detector sees
    (960 for a 1280x720 frame keeps plates of ~15 px characters legible);
    `threads` is ONNX Runtime's per-call thread count.
    """

    name = "ocr-lines"

    def __init__(
        self, *, det_side: int = 960, threads: int = 1, shape: PlateShape | None = None
    ) -> None:
        from edge_agent.anpr.reader import build_ppocr_engine

        self.shape = shape or PlateShape()
        self._engine: Any = build_ppocr_engine(threads=threads, det_side=det_side)

    def detect(self, frame: Frame, regions: list[Box] | None = None) -> list[Box]:
        """Plate boxes in the frame, or only inside `regions` (motion) when given."""
        height, width = frame.shape[:2]
        areas = regions or [Box(0, 0, width, height)]
        lines: list[Box] = []
        for area in areas:
            x0, y0 = max(0, area.x), max(0, area.y)
            x1, y1 = min(width, area.x + area.w), min(height, area.y + area.h)
            if x1 - x0 < 16 or y1 - y0 < 16:
                continue
            lines.extend(self._lines(frame[y0:y1, x0:x1], x0, y0))
        return [reach(b, width, height, self.shape) for b in plate_boxes(lines, height, self.shape)]

    def _lines(self, image: Frame, dx: int, dy: int) -> list[Box]:
        result = self._engine(image, use_det=True, use_cls=False, use_rec=False)
        if result.boxes is None:
            return []
        scores = getattr(result, "scores", None) or [1.0] * len(result.boxes)
        lines = []
        for quad, score in zip(result.boxes.tolist(), scores, strict=False):
            xs = [p[0] for p in quad]
            ys = [p[1] for p in quad]
            x, y = round(min(xs)), round(min(ys))
            w, h = round(max(xs)) - x, round(max(ys)) - y
            if w > 0 and h > 0:
                lines.append(Box(x + dx, y + dy, w, h, score=float(score)))
        return lines
