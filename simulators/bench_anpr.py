"""`nigehbaan bench anpr`: how many plates the detector and reader get right, and at what cost.

The truth is either a folder of per-image ``.txt`` files in the
openalpr/benchmarks style (``file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``, one
line per plate) or a CSV (``file,plate``) where no boxes are known. Each
image is loaded from ``--images``; a truth file naming ``x.png`` when only
``x.jpg`` exists is matched by its stem (the dev set has such names).

Per image the detector runs on the whole frame and the reader on every box
it returns — except for images from a CSV that are small enough to be plate
crops already (``--detect auto``), which the reader reads as one box, as it
does a CSV image in which the detector found nothing. A
truth plate counts as read exactly when any read's canonical key equals it,
compared without spaces and dashes; every read that equals no truth plate
on its image is a false read (another car's plate in the photo counts too:
the dev set labels one plate per photo); `false_reads_known_layout` counts
only those a layout matched (a shop sign or a car's model name reads as
"unknown"). Times are wall-clock per frame and
per read (p50/p95) plus the CPU time of this process, from which
`frames_per_s_per_core` follows; ONNX Runtime runs one thread per call. The
result records the machine's load average, which the figures depend on.

Where the truth names a province (a CSV ``province`` column, or
``--province`` for a folder of one province's plates; a CSV row may leave
``plate`` blank to count only the province), the image's plate read — the
exact one, else the most confident with a layout — is scored:
`province_right_rate`, `province_wrong_rate` and `province_unknown_rate`
(the reader named no province). A wrong province is worse than none.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.anpr.rules import normalise
from edge_agent.anpr.types import Box, PlateDetector, PlateRead, PlateReader
from simulators.bench_harness import bench_result

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Frame = npt.NDArray[np.uint8]

__all__ = [
    "AnprBenchError",
    "TruthImage",
    "evaluate",
    "load_truth",
    "percentiles",
    "run_anpr_bench",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# A CSV image no larger than this on its long side is taken as a plate crop (--detect auto).
_CROP_MAX_SIDE = 640
_MAX_MISSES_LISTED = 40


class AnprBenchError(Exception):
    """The truth or the images cannot be used."""


@dataclass
class TruthImage:
    """One image and the plates on it (with boxes where the truth has them)."""

    file: str
    plates: list[str]
    boxes: list[Box] = field(default_factory=list)
    # The province the plate belongs to, where the truth says (a CSV `province`
    # column, or `--province` for a folder that is one province).
    province: str | None = None


def load_truth(path: Path) -> list[TruthImage]:
    """Truth from a folder of openalpr-style ``.txt`` files or from a ``file,plate`` CSV."""
    if path.is_dir():
        images: list[TruthImage] = []
        for txt in sorted(path.glob("*.txt")):
            entry: TruthImage | None = None
            for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 6:
                    raise AnprBenchError(f"{txt} line {number}: want file, x, y, w, h, plate")
                name, x, y, w, h, plate = parts
                try:
                    box = Box(int(x), int(y), int(w), int(h))
                except ValueError as exc:
                    raise AnprBenchError(f"{txt} line {number}: box is not integers") from exc
                if entry is None:
                    entry = TruthImage(file=name.strip(), plates=[])
                entry.plates.append(normalise(plate))
                entry.boxes.append(box)
            if entry is not None:
                images.append(entry)
        if not images:
            raise AnprBenchError(f"no truth .txt files in {path}")
        return images
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise AnprBenchError(f"cannot read truth {path}: {exc}") from exc
    if not rows or not {"file", "plate"} <= set(rows[0]):
        raise AnprBenchError(f"{path}: want a CSV with a file,plate header")
    by_file: dict[str, TruthImage] = {}
    for row in rows:
        name = row["file"].strip()
        entry = by_file.setdefault(name, TruthImage(file=name, plates=[]))
        plate = normalise(row["plate"] or "")
        if plate:  # a blank plate: the image is there for its province only
            entry.plates.append(plate)
        province = (row.get("province") or "").strip()
        if province:
            entry.province = province
    return list(by_file.values())


def image_path(images: Path, name: str) -> Path:
    """The image a truth line names, or one with its stem and another image suffix."""
    path = images / name
    if path.is_file():
        return path
    for suffix in _IMAGE_SUFFIXES:
        other = path.with_suffix(suffix)
        if other.is_file():
            return other
    raise AnprBenchError(f"image {name} not found in {images}")


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 and p95 of `values` (milliseconds, rounded), None when there are none."""
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2)}


def _covers(found: Box, truth: Box) -> bool:
    # A detection counts when the truth plate's centre is inside it and it is not
    # wildly larger than the plate (a box around the whole car does not count).
    cx, cy = truth.x + truth.w / 2, truth.y + truth.h / 2
    inside = found.x <= cx <= found.x + found.w and found.y <= cy <= found.y + found.h
    return inside and found.w * found.h <= 16 * truth.w * truth.h


@dataclass
class _Tally:
    images: int = 0
    plates: int = 0
    exact: int = 0
    boxes_known: int = 0
    detected: int = 0
    reads: int = 0
    false_reads: int = 0
    false_reads_known_layout: int = 0
    frame_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    frame_cpu_s: list[float] = field(default_factory=list)
    read_cpu_ms: list[float] = field(default_factory=list)
    misses: list[dict[str, Any]] = field(default_factory=list)
    province_truth: int = 0
    province_right: int = 0
    province_wrong: int = 0
    province_unknown: int = 0
    province_misses: list[dict[str, Any]] = field(default_factory=list)

    def judge_province(self, entry: TruthImage, reads: list[PlateRead]) -> None:
        """Score the province of the image's plate read: the exact one, else the likeliest."""
        if entry.province is None or not reads:
            return
        exact = [r for r in reads if normalise(r.canonical) in entry.plates]
        known = [r for r in reads if r.layout != "unknown"]
        read = max(exact or known or reads, key=lambda r: r.confidence)
        self.province_truth += 1
        if read.province is None:
            self.province_unknown += 1
        elif read.province.casefold() == entry.province.casefold():
            self.province_right += 1
        else:
            self.province_wrong += 1
        if read.province != entry.province and len(self.province_misses) < _MAX_MISSES_LISTED:
            self.province_misses.append(
                {
                    "file": entry.file,
                    "truth": entry.province,
                    "read": [read.canonical, read.layout, read.province],
                }
            )


def _frames(images: Path, truth: list[TruthImage]) -> Iterator[tuple[TruthImage, Frame]]:
    import cv2

    for entry in truth:
        frame = cv2.imread(str(image_path(images, entry.file)), cv2.IMREAD_COLOR)
        if frame is None:
            raise AnprBenchError(f"cannot decode image {entry.file}")
        yield entry, frame.astype("uint8", copy=False)


def evaluate(
    *,
    images: Path,
    truth: list[TruthImage],
    detector: PlateDetector | None,
    reader: PlateReader,
    detect: str = "auto",
) -> dict[str, Any]:
    """Run detector and reader over the images and count what they got right."""
    tally = _Tally()
    for entry, frame in _frames(images, truth):
        height, width = frame.shape[:2]
        whole = Box(0, 0, width, height)
        as_crop = detect == "never" or (
            detect == "auto" and not entry.boxes and max(height, width) <= _CROP_MAX_SIDE
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        boxes = [whole] if as_crop or detector is None else detector.detect(frame)
        if not boxes and not entry.boxes and detect == "auto":
            boxes = [whole]  # a large crop or a close-up: the plate may be the image
        reads: list[PlateRead] = []
        for box in boxes:
            read_started, read_cpu = time.perf_counter(), time.process_time()
            read = reader.read(frame, box)
            tally.read_ms.append((time.perf_counter() - read_started) * 1000)
            tally.read_cpu_ms.append((time.process_time() - read_cpu) * 1000)
            if read is not None:
                reads.append(read)
        tally.frame_ms.append((time.perf_counter() - started) * 1000)
        tally.frame_cpu_s.append(time.process_time() - cpu_started)
        tally.images += 1
        tally.plates += len(entry.plates)
        keys = {normalise(read.canonical) for read in reads}
        hit = [plate for plate in entry.plates if plate in keys]
        tally.exact += len(hit)
        tally.reads += len(reads)
        tally.false_reads += sum(1 for key in keys if key not in entry.plates)
        tally.false_reads_known_layout += len(
            {
                normalise(r.canonical)
                for r in reads
                if r.layout != "unknown" and normalise(r.canonical) not in entry.plates
            }
        )
        tally.judge_province(entry, reads)
        if entry.boxes and not as_crop:
            tally.boxes_known += len(entry.boxes)
            tally.detected += sum(1 for t in entry.boxes if any(_covers(b, t) for b in boxes))
        if len(hit) < len(entry.plates) and len(tally.misses) < _MAX_MISSES_LISTED:
            tally.misses.append(
                {
                    "file": entry.file,
                    "truth": entry.plates,
                    "reads": [[r.text, r.canonical, r.layout] for r in reads][:5],
                }
            )
    cpu_per_frame = statistics.median(tally.frame_cpu_s) if tally.frame_cpu_s else 0.0
    return {
        "images": tally.images,
        "plates": tally.plates,
        "exact": tally.exact,
        "exact_rate": round(tally.exact / tally.plates, 4) if tally.plates else None,
        "detect_recall": (
            round(tally.detected / tally.boxes_known, 4) if tally.boxes_known else None
        ),
        "reads": tally.reads,
        "false_reads": tally.false_reads,
        "false_reads_known_layout": tally.false_reads_known_layout,
        "ms_per_frame": percentiles(tally.frame_ms),
        "ms_per_read": percentiles(tally.read_ms),
        "cpu_ms_per_frame": percentiles([s * 1000 for s in tally.frame_cpu_s]),
        "cpu_ms_per_read": percentiles(tally.read_cpu_ms),
        "frames_per_s_per_core": round(1 / cpu_per_frame, 2) if cpu_per_frame > 0 else None,
        "misses": tally.misses,
        **_province_figures(tally),
    }


def _province_figures(tally: _Tally) -> dict[str, Any]:
    """How often the read named the right province, a wrong one, or none (null: no truth)."""
    n = tally.province_truth
    if not n:
        return {"province_reads": 0, "province_right_rate": None, "province_wrong_rate": None}
    return {
        "province_reads": n,
        "province_right_rate": round(tally.province_right / n, 4),
        "province_wrong_rate": round(tally.province_wrong / n, 4),
        "province_unknown_rate": round(tally.province_unknown / n, 4),
        "province_misses": tally.province_misses,
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_anpr_bench(
    *,
    images: Path,
    truth_path: Path,
    rules: str,
    detect: str = "auto",
    det_side: int = 960,
    province: str | None = None,
) -> dict[str, Any]:
    """Build the shipped detector and reader, run them over the images, return the result.

    `province` is the truth province of every image that has none of its
    own (a folder of one province's plates).
    """
    from edge_agent.anpr.detector import OcrLineDetector
    from edge_agent.anpr.reader import RapidOcrReader
    from edge_agent.anpr.rules import load_rules

    started = time.time()
    truth = load_truth(truth_path)
    if province:
        for entry in truth:
            entry.province = entry.province or province
    plate_rules = load_rules(rules)
    reader = RapidOcrReader(rules=plate_rules, threads=1)
    detector = OcrLineDetector(det_side=det_side, threads=1) if detect != "never" else None
    load_before = _loadavg()
    figures = evaluate(images=images, truth=truth, detector=detector, reader=reader, detect=detect)
    return bench_result(
        "anpr",
        {
            **figures,
            "rules": rules,
            "province_truth": province,
            "country": plate_rules.country,
            "detector": detector.name if detector is not None else None,
            "reader": reader.name,
            "onnx_threads": 1,
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        started_at=started,
    )
