"""Reading a plate: crop, find its text rows, recognise them, and let the format rules decide.

`RapidOcrReader` is the `PlateReader` built on rapidocr's PP-OCR models
(Apache-2.0, inside the rapidocr wheel, pinned by the manifests in
`edge_agent.inference.models`). For each box it crops with a margin, runs
the small text detector on the crop to find the text lines, drops the
captions (``PUNJAB``, ``SINDH``, the Mercosur ``BRASIL`` band: lines much
lower than the plate's characters), groups the rest into rows top to bottom
— the layout step that splits a two-row Punjab plate before reading —
recognises every row, and hands the rows to `choose`, which asks the
format rules (`edge_agent.anpr.rules.rank`) for the best reading of every
subset of rows. The rules rank and correct; a read no layout fits is still
returned, with layout ``"unknown"``.

A caption that names a province (``PUNJAB``, ``KARACHI``,
``ICT-ISLAMABAD``: the rules file's ``captions``) or, failing that, the
plate's colours (yellow: Sindh; a green left strip: Punjab; a blue one:
Islamabad) settle layouts of the same shape; with neither, the rules
report a shape several provinces share with no province rather than guess.

The pure parts (`group_rows`, `rows_of`, `caption_province`, `choose`,
`province_hint`) take plain values and are tested without a model.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.anpr.errors import ReaderError
from edge_agent.anpr.rules import PlateRules, Ranked, load_rules, normalise, rank
from edge_agent.anpr.types import Box, PlateRead

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Frame = npt.NDArray[np.uint8]

__all__ = [
    "RapidOcrReader",
    "TextLine",
    "build_ppocr_engine",
    "caption_province",
    "choose",
    "crop_box",
    "group_rows",
    "province_hint",
    "rows_of",
    "settle_province",
    "without_captions",
]

logger = logging.getLogger(__name__)

# A row left out of the reading (a caption the height filter kept) costs this much,
# and more for every digit in it: captions are words, plate numbers are not.
_DROPPED_ROW_COST = 0.3
_DROPPED_DIGIT_COST = 0.3
# Dropping one stray character at a row's end (a bolt, the emblem) costs this much.
_TRIM_COST = 0.6


@dataclass(frozen=True)
class TextLine:
    """One text line the detector found in a crop, with what the recogniser read in it."""

    text: str
    score: float
    x: float
    y: float
    w: float
    h: float


def group_rows(lines: Sequence[TextLine], *, caption_ratio: float = 0.55) -> list[list[TextLine]]:
    """Lines grouped into rows, top to bottom, each left to right; captions dropped.

    A caption is a line lower than `caption_ratio` of the tallest line: the
    province name under a Sindh plate, ``PUNJAB`` in the green strip.
    """
    kept = [line for line in lines if normalise(line.text)]
    if not kept:
        return []
    tallest = max(line.h for line in kept)
    kept = [line for line in kept if line.h >= caption_ratio * tallest]
    kept.sort(key=lambda line: line.y + line.h / 2)
    rows: list[list[TextLine]] = []
    for line in kept:
        centre = line.y + line.h / 2
        if rows:
            last = rows[-1][-1]
            if abs(centre - (last.y + last.h / 2)) < 0.5 * max(line.h, last.h):
                rows[-1].append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda line: line.x) for row in rows]


def _row_variants(text: str) -> list[tuple[str, float]]:
    variants = [(text, 0.0)]
    if len(text) > 2:
        # The end of a row is likelier noise than its start (a year half read, a bolt).
        variants += [(text[:-1], _TRIM_COST), (text[1:], _TRIM_COST + 0.05)]
    return variants


def choose(
    rules: PlateRules,
    rows: Sequence[tuple[str, float]],
    *,
    province_hint: str | None = None,
) -> tuple[Ranked, float]:
    """The best reading of `rows` ((text, score) per row, top first), and its confidence.

    Every contiguous run of rows is tried (a caption or a dealer's line may
    have survived the height filter), at a cost per row left out; a row's
    first or last character may be dropped at a cost (bolts and emblems
    read as characters). With no layout fitting,
    all rows joined come back as ``"unknown"``.
    """
    texts = [normalise(text) for text, _ in rows]
    scores = [score for _, score in rows]
    best: tuple[float, Ranked, list[float]] | None = None
    spans = [
        (start, stop)
        for start in range(len(texts))
        for stop in range(start + 1, len(texts) + 1)
        if any(texts[start:stop])
    ]
    for allow_trim in (False, True):
        for start, stop in spans:
            dropped = sum(
                _DROPPED_ROW_COST + _DROPPED_DIGIT_COST * sum(c.isdigit() for c in text)
                for i, text in enumerate(texts)
                if not start <= i < stop
            )
            options = [_row_variants(t) if allow_trim else [(t, 0.0)] for t in texts[start:stop]]
            for combo in itertools.product(*options):
                parts = [t for t, _ in combo if t]
                part_scores = [s for (t, _), s in zip(combo, scores[start:stop], strict=True) if t]
                confs = [[s] * len(t) for t, s in zip(parts, part_scores, strict=True)]
                ranked = rank(rules, parts, confidences=confs, province_hint=province_hint)[0]
                if ranked.layout == "unknown":
                    continue
                cost = ranked.cost + dropped + sum(c for _, c in combo)
                if best is None or cost < best[0]:
                    best = (cost, ranked, part_scores)
    if best is None:
        joined = "".join(texts)
        unknown = rank(rules, joined)[-1]
        confidence = min(scores) if scores else 0.0
        return unknown, round(confidence * 0.5, 4)
    _, ranked, used = best
    confidence = (sum(used) / len(used) if used else 0.0) * (0.9**ranked.corrections)
    return ranked, round(confidence, 4)


def settle_province(ranked: Ranked, hint: str | None) -> Ranked:
    """`ranked`, with no province when the plate's caption or colours name another one.

    The hint already favours its province's layouts; when the text still
    fits only another province's layout (a Sindh plate of a series the rules
    do not describe, a misread), the layout's shape and the plate's own
    evidence disagree, and a wrong province is worse than none.
    """
    if hint is None or ranked.province is None or ranked.province == hint:
        return ranked
    return dataclasses.replace(ranked, province=None)


def rows_of(lines: Sequence[TextLine]) -> list[tuple[str, float]]:
    """Rows as (text, score), top first: `group_rows` joined, scored by their weakest line."""
    return [
        ("".join(line.text for line in row), min(line.score for line in row))
        for row in group_rows(lines)
    ]


def without_captions(
    rules: PlateRules, rows: Sequence[tuple[str, float]]
) -> list[tuple[str, float]]:
    """Rows that are not a caption word of the rules file (``PUNJAB``, ``SINDH``)."""
    return [(text, score) for text, score in rows if normalise(text) not in rules.captions]


def caption_province(rules: PlateRules, lines: Sequence[TextLine]) -> str | None:
    """The province a caption on the plate names (``PUNJAB``, ``KARACHI``), if one is read.

    A caption of six letters or more also counts with one character wrong
    (``KHYBER PAKHTUNKHWA`` is long and printed small), or as the end of a
    longer line (``ICT-ISLAMABAD``); a short one (``ICT``, ``KPK``) only exactly.
    """
    for line in lines:
        text = normalise(line.text)
        province = rules.captions.get(text)
        if province is not None:
            return province
        for word, named in rules.captions.items():
            if len(word) >= 6 and (text.endswith(word) or _one_edit(text, word)):
                return named
    return None


def _one_edit(a: str, b: str) -> bool:
    """At most one substitution, insertion or deletion apart."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def crop_box(frame: Frame, box: Box, *, margin: float = 0.1) -> Frame:
    """The box's pixels with `margin` (of its height) on every side, clipped to the frame."""
    pad = round(margin * box.h)
    height, width = frame.shape[:2]
    x0, y0 = max(0, box.x - pad), max(0, box.y - pad)
    x1, y1 = min(width, box.x + box.w + pad), min(height, box.y + box.h + pad)
    return frame[y0:y1, x0:x1]


def province_hint(crop: Frame) -> str | None:
    """Sindh when the plate is mostly yellow, Punjab / Islamabad by a green / blue left strip.

    Colour separates layouts the text cannot (Punjab's, Sindh's and
    Islamabad's ``AAA 999`` share a shape); the rules file decides how much
    it weighs. Sindh's yellow runs to orange under sodium light and on older
    plates (hue 8-35 of OpenCV's 0-180). Islamabad's newer plates carry a
    blue strip (the Faisal Mosque) where Punjab's carry a green one.
    """
    import cv2
    import numpy as np

    if crop.size == 0:
        return None
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    colourful = (sat > 80) & (val > 60)
    yellow = float(np.mean(colourful & (hue >= 8) & (hue <= 35)))
    if yellow > 0.35:
        return "Sindh"
    strip = hsv[:, : max(1, crop.shape[1] // 5)]
    strip_colour = (strip[..., 1] > 60) & (strip[..., 2] > 40)
    green = float(np.mean(strip_colour & (strip[..., 0] >= 40) & (strip[..., 0] <= 90)))
    if green > 0.3:
        return "Punjab"
    blue = float(np.mean(strip_colour & (strip[..., 0] > 95) & (strip[..., 0] <= 130)))
    return "Islamabad" if blue > 0.3 else None


class RapidOcrReader:
    """Plate reader on rapidocr's PP-OCR detector and recogniser (ONNX Runtime, CPU).

    `rules` is a rules name (``pk``, ``br``, ``generic``) or loaded rules;
    `threads` is ONNX Runtime's per-call thread count (1: one core per
    camera worker); `det_side` bounds the crop's longer side for the line
    detector; `rec_width` is the narrowest the recogniser pads a line to
    (rapidocr's 320 pads a plate row of 3:1 to over twice its width, and the
    padding costs as much as the row). 224 / 128 measured against 320 / 320
    on the PK crops and BR sets: as exact, a third less CPU (docs/anpr.md).
    """

    name = "rapidocr"

    def __init__(
        self,
        *,
        rules: PlateRules | str = "pk",
        threads: int = 1,
        margin: float = 0.1,
        det_side: int = 224,
        rec_width: int = 128,
        use_colour: bool = True,
    ) -> None:
        self.rules = load_rules(rules) if isinstance(rules, str) else rules
        self.margin = margin
        self.caption_ratio = 0.55
        self.use_colour = use_colour and self.rules.country == "PK"
        self._engine = build_ppocr_engine(threads=threads, det_side=det_side, rec_width=rec_width)

    def read(self, frame: Frame, box: Box) -> PlateRead | None:
        """Read the plate in `box`; None when no text is legible there."""
        crop = crop_box(frame, box, margin=self.margin)
        if crop.size == 0 or min(crop.shape[:2]) < 8:
            return None
        hint = province_hint(crop) if self.use_colour else None
        lines = self.read_lines(crop, captions=hint is None and bool(self.rules.captions))
        rows = without_captions(self.rules, rows_of(lines))
        if not rows:
            return None  # nothing but a caption (PUNJAB in a green strip) is no plate
        hint = caption_province(self.rules, lines) or hint
        ranked, confidence = choose(self.rules, rows, province_hint=hint)
        if not ranked.canonical:
            return None
        ranked = settle_province(ranked, hint)
        return PlateRead(
            text="".join(normalise(text) for text, _ in rows),
            canonical=ranked.canonical,
            confidence=confidence,
            box=box,
            country=self.rules.country,
            province=ranked.province,
            layout=ranked.layout,
            year=ranked.attributes.get("year"),
        )

    def read_lines(self, crop: Frame, *, captions: bool = True) -> list[TextLine]:
        """The crop's text lines, found and then read; the whole crop as one line if none are.

        Lines much lower than the tallest are captions: they are read only
        when `captions` is set (to name the province when colour could not),
        since recognition is most of a read's cost.
        """
        found = self._find_lines(crop)
        lines: list[TextLine] = []
        if found:
            tallest = max(h for _, _, _, h in found)
            for x, y, w, h in found:
                if h < self.caption_ratio * tallest and not captions:
                    continue
                text, score = self._recognise(crop[y : y + h, x : x + w])
                if normalise(text):
                    lines.append(TextLine(text=text, score=score, x=x, y=y, w=w, h=h))
        if any(line.h >= self.caption_ratio * max(ln.h for ln in lines) for line in lines):
            return lines
        # No lines found (a small or blurred crop): recognise the whole crop as one line.
        text, score = self._recognise(crop)
        if normalise(text):
            height, width = crop.shape[:2]
            return [TextLine(text=text, score=score, x=0, y=0, w=width, h=height)]
        return []

    def _find_lines(self, crop: Frame) -> list[tuple[int, int, int, int]]:
        result = self._engine(crop, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(result, "boxes", None)
        if boxes is None:
            return []
        height, width = crop.shape[:2]
        found = []
        for quad in boxes.tolist():
            xs = [p[0] for p in quad]
            ys = [p[1] for p in quad]
            x0, y0 = max(0, int(min(xs))), max(0, int(min(ys)))
            x1, y1 = min(width, int(max(xs)) + 1), min(height, int(max(ys)) + 1)
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                found.append((x0, y0, x1 - x0, y1 - y0))
        return found

    def _recognise(self, image: Frame) -> tuple[str, float]:
        result = self._engine(image, use_det=False, use_cls=False, use_rec=True)
        if not result.txts:
            return "", 0.0
        return str(result.txts[0]), float(result.scores[0])


def build_ppocr_engine(*, threads: int, det_side: int, rec_width: int = 320) -> Any:
    """rapidocr pointed at its own bundled models, verified against our manifests first.

    `det_side` bounds the longer side of what the text detector sees;
    `rec_width` is the recogniser's narrowest input (a line is padded to it).
    """
    from edge_agent.inference import InferenceError, builtin_manifest, verify_model

    try:
        from rapidocr import RapidOCR
    except ImportError as exc:
        raise ReaderError("rapidocr is not installed (pip install nigehbaan[anpr])") from exc
    try:
        det = verify_model(builtin_manifest("ppocr-det"))
        rec = verify_model(builtin_manifest("ppocr-rec"))
        cls = verify_model(builtin_manifest("ppocr-cls"))
    except InferenceError as exc:
        raise ReaderError(str(exc)) from exc
    # Every model path is given, so rapidocr never looks for (or downloads) a default model.
    params: dict[str, Any] = {
        "Global.log_level": "error",  # "no text found" is a normal answer here
        "Global.use_cls": False,
        "Det.model_path": str(det),
        "Det.limit_side_len": det_side,
        "Det.limit_type": "max",
        "Rec.model_path": str(rec),
        "Rec.rec_img_shape": [3, 48, rec_width],
        "Cls.model_path": str(cls),
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    return RapidOCR(params=params)
