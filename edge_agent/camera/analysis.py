"""One camera's analysis, frame by frame: motion gate → detector → tracker → reader → vote.

`CameraAnalysis.process(image)` runs synchronously on one frame and returns
the vehicle passes that ended with it (`PlatePass`: voted text, confidence,
agreeing frames, the best read, and the SHA-256 of the best crop once it is
in the evidence store). With a `hit_check` (the node holds a plate hotlist)
a pass whose voted plate is listed is a hit: its best crop *and the frame
that crop came from* (JPEG, downscaled to `FRAME_MAX_SIDE`) are stored
pinned, in the call that writes them, so no eviction can take a hit's
evidence; a store that cannot keep them says so in `PlatePass.evidence_fault`
and the pass (and its hit) still goes on. To have that frame, each track
keeps a reference to the frames of its `FRAMES_KEPT` most confident reads,
only while a hotlist is held. It owns no thread: the pipeline's analysis thread
calls it, and tests and ``bench pipeline`` call it directly on arrays.
A frame that is not an HxWx3 uint8 image is counted and skipped; a detector
or reader that raises is counted and the frame skipped (the camera goes on).
`CameraStats` holds the figures telemetry and health report per camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.anpr.types import Box, PlateDetector, PlateRead, PlateReader
from edge_agent.camera.motion import MotionGate
from edge_agent.camera.tracker import PlateTracker, Track
from edge_agent.camera.voting import Voter

if TYPE_CHECKING:
    import numpy.typing as npt

    from edge_agent.config import CameraAnalyticsConfig
    from edge_agent.evidence import EvidenceStore

    Image = npt.NDArray[np.uint8]
else:
    Image = Any

__all__ = [
    "FRAMES_KEPT",
    "FRAME_MAX_SIDE",
    "CameraAnalysis",
    "CameraStats",
    "PlatePass",
    "encode_frame",
    "percentiles",
    "valid_frame",
]

logger = logging.getLogger(__name__)

_SAMPLES = 512  # timings kept per stage for p50/p95
_REGION_PAD = 0.15  # motion regions grow by this share before the detector looks inside
FRAMES_KEPT = 3  # frames referenced per track (its most confident reads), for a hit's evidence
FRAME_MAX_SIDE = 1280  # a hit's frame is stored at most this wide/high (JPEG)


def percentiles(samples: deque[float] | list[float]) -> dict[str, float] | None:
    """``{"p50", "p95"}`` of `samples` (ms), None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "p50": round(ordered[min(n - 1, int(0.50 * n))], 2),
        "p95": round(ordered[min(n - 1, int(0.95 * n))], 2),
    }


def valid_frame(image: Any) -> bool:
    """An HxWx3 uint8 image of at least 16x16 (what every camera source delivers)."""
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] >= 16
        and image.shape[1] >= 16
    )


@dataclass
class CameraStats:
    """Per-camera figures (the capture thread and the analysis thread each own theirs)."""

    frames_in: int = 0
    frames_dropped: int = 0
    frames_corrupt: int = 0
    frames_skipped: int = 0
    frames_analysed: int = 0
    motion_frames: int = 0
    motion_ratio: float = 0.0  # moving average over analysed frames
    detector_calls: int = 0
    reader_calls: int = 0
    errors: int = 0
    plates: int = 0
    tracks_unread: int = 0
    detector_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    reader_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    motion_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    plate_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def plates_per_hour(self, now: float) -> int:
        """Plates in the last hour of `time.monotonic()`."""
        return sum(1 for t in list(self.plate_times) if now - t <= 3600.0)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """The figures as plain values (the pipeline's `stats()`, the benchmark)."""
        return {
            "frames_in": self.frames_in,
            "frames_dropped": self.frames_dropped,
            "frames_corrupt": self.frames_corrupt,
            "frames_skipped": self.frames_skipped,
            "frames_analysed": self.frames_analysed,
            "motion_frames": self.motion_frames,
            "motion_ratio": round(self.motion_ratio, 4),
            "motion_ms": percentiles(self.motion_ms),
            "detector_ms": percentiles(self.detector_ms),
            "reader_ms": percentiles(self.reader_ms),
            "errors": self.errors,
            "plates": self.plates,
            "plates_per_hour": self.plates_per_hour(time.monotonic() if now is None else now),
            "tracks_unread": self.tracks_unread,
        }


@dataclass(frozen=True)
class PlatePass:
    """One vehicle pass: what becomes one `PlateEvent`."""

    camera_id: str
    track_id: str
    plate: str
    country: str
    confidence: float
    frames: int
    reads: int
    best: PlateRead
    snapshot_sha256: str | None
    # A hit's evidence (the node holds a hotlist that lists the voted plate):
    frame_sha256: str | None = None  # the frame the best crop came from, stored pinned
    hit_evidence: bool = False  # crop (and frame) stored pinned as a hit's evidence
    evidence_fault: tuple[str, str] | None = None  # (code, detail): evidence the store refused
    crop_jpeg: bytes | None = field(default=None, repr=False)  # to pin it later if need be


@dataclass
class _Seen:
    """What a track keeps of one read: the crop, and the frame while it is a top read."""

    crop: Image | None
    confidence: float
    frame: Image | None = None


class CameraAnalysis:
    """See the module docstring; `settings` is the camera's ``[analytics.<id>]``."""

    def __init__(
        self,
        *,
        camera_id: str,
        settings: CameraAnalyticsConfig,
        detector: PlateDetector | None = None,
        reader: PlateReader | None = None,
        evidence: EvidenceStore | None = None,
        stats: CameraStats | None = None,
        track_prefix: str | None = None,
        timer: Callable[[], float] = time.perf_counter,
        hit_check: Callable[[str], bool] | None = None,
    ) -> None:
        motion = settings.motion
        self.camera_id = camera_id
        self.settings = settings
        self.detector = detector
        self.reader = reader
        self.evidence = evidence
        self.hit_check = hit_check  # "is this plate on a hotlist the node holds?"
        self.stats = stats or CameraStats()
        self.gate = MotionGate(
            width=motion.width,
            threshold=motion.threshold,
            alpha=motion.alpha,
            blur=motion.blur,
            dilate=motion.dilate,
            min_area=motion.min_area,
            ignore=[m.corners() for m in motion.ignore],
        )
        prefix = track_prefix or f"{camera_id}-{int(time.time() * 1000):x}-"
        self.tracker = PlateTracker(
            iou_min=settings.iou_min,
            confirm_hits=settings.confirm_hits,
            max_misses=settings.max_misses,
            max_age=(
                None
                if settings.max_track_frames is None
                else max(settings.confirm_hits, settings.max_track_frames)
            ),
            prefix=prefix,
        )
        self._voters: dict[str, Voter[_Seen]] = {}
        self._timer = timer
        self._lock = threading.Lock()  # process() and flush() from different threads at stop

    def process(self, image: Any) -> list[PlatePass]:
        """Analyse one frame; the passes that ended with it (usually none)."""
        stats = self.stats
        if not valid_frame(image):
            stats.frames_corrupt += 1
            return []
        with self._lock:
            stats.frames_analysed += 1
            t0 = self._timer()
            motion = self.gate.update(image)
            stats.motion_ms.append((self._timer() - t0) * 1000.0)
            stats.motion_ratio += 0.05 * (motion.ratio - stats.motion_ratio)
            if motion.moving:
                stats.motion_frames += 1
            if self.detector is None:
                return []
            if not motion.moving and not self.tracker.tracks:
                return []
            boxes: list[Box] = []
            if motion.moving:
                try:
                    boxes = self._detect(image, motion.regions)
                except Exception:
                    stats.errors += 1
                    logger.exception("camera %s: detector failed; frame skipped", self.camera_id)
                    return []
            update = self.tracker.update(boxes)
            for track, box in update.seen:
                self._read(image, track, box)
            return [p for p in (self._finish(t) for t in update.ended) if p is not None]

    def flush(self) -> list[PlatePass]:
        """End every track (the camera is stopping): their passes."""
        with self._lock:
            ended = self.tracker.flush()
            passes = [p for p in (self._finish(t) for t in ended) if p is not None]
            self._voters.clear()
            return passes

    def _detect(self, image: Image, regions: list[Box]) -> list[Box]:
        assert self.detector is not None
        stats = self.stats
        within = _padded(regions, image.shape) if self.settings.detect_in_regions else None
        t0 = self._timer()
        boxes = self.detector.detect(image, within)
        stats.detector_ms.append((self._timer() - t0) * 1000.0)
        stats.detector_calls += 1
        return list(boxes)

    def _read(self, image: Image, track: Track, box: Box) -> None:
        if self.reader is None:
            return
        voter = self._voters.setdefault(track.track_id, Voter())
        if len(voter) >= self.settings.max_reads:
            return
        stats = self.stats
        t0 = self._timer()
        try:
            read = self.reader.read(image, box)
        except Exception:
            stats.errors += 1
            logger.exception("camera %s: reader failed on %s", self.camera_id, track.track_id)
            return
        finally:
            stats.reader_ms.append((self._timer() - t0) * 1000.0)
            stats.reader_calls += 1
        if read is None:
            return
        seen = _Seen(_crop(image, read.box or box), read.confidence)
        if self.hit_check is not None:  # a hotlist is held: a pass may be a hit
            seen.frame = image  # a reference (frames are not reused), no copy
            with_frames = [c for _, c in voter.reads if c is not None and c.frame is not None]
            if len(with_frames) >= FRAMES_KEPT:
                weakest = min(with_frames, key=lambda c: c.confidence)
                if weakest.confidence < seen.confidence:
                    weakest.frame = None
                else:
                    seen.frame = None
        voter.add(read, seen)

    def _finish(self, track: Track) -> PlatePass | None:
        voter = self._voters.pop(track.track_id, None)
        vote = voter.result() if voter is not None else None
        if vote is None:
            if self.reader is not None:
                self.stats.tracks_unread += 1
            return None
        plate = vote.text[:16]
        seen = vote.crop
        hit = self._is_hit(vote.best.canonical or plate)
        digest = frame_digest = fault = crop_jpeg = None
        if self.evidence is not None and seen is not None and seen.crop is not None:
            crop_jpeg = _encode(seen.crop, quality=90)
            if crop_jpeg is not None:
                digest, fault = self._store(crop_jpeg, hit=hit, what="crop")
        if hit and self.evidence is not None and seen is not None and seen.frame is not None:
            frame_jpeg = encode_frame(seen.frame)
            if frame_jpeg is not None:
                frame_digest, frame_fault = self._store(frame_jpeg, hit=True, what="frame")
                fault = fault or frame_fault
        country = vote.best.country if len(vote.best.country) == 2 else "ZZ"
        self.stats.plates += 1
        self.stats.plate_times.append(time.monotonic())
        return PlatePass(
            camera_id=self.camera_id,
            track_id=track.track_id,
            plate=plate,
            country=country.upper(),
            confidence=vote.confidence,
            frames=vote.frames,
            reads=vote.reads,
            best=vote.best,
            snapshot_sha256=digest,
            frame_sha256=frame_digest,
            hit_evidence=hit,
            evidence_fault=fault,
            crop_jpeg=crop_jpeg,
        )

    def _is_hit(self, plate: str) -> bool:
        if self.hit_check is None:
            return False
        try:
            return bool(self.hit_check(plate))
        except Exception:  # a hotlist that cannot be asked: the loop's own match decides
            logger.exception("camera %s: hotlist check failed", self.camera_id)
            return False

    def _store(
        self, data: bytes, *, hit: bool, what: str
    ) -> tuple[str | None, tuple[str, str] | None]:
        """Put `data` (pinned when it is a hit's evidence); its SHA-256, or the fault."""
        from edge_agent.evidence import EvidenceError, EvidenceStoreFull

        assert self.evidence is not None
        try:
            return self.evidence.put(data, pin=hit), None
        except EvidenceError as exc:
            self.stats.errors += 1
            if not hit:
                logger.warning("camera %s: crop not kept: %s", self.camera_id, exc)
                return None, None
            code = (
                "evidence_store_full" if isinstance(exc, EvidenceStoreFull) else "evidence_not_kept"
            )
            logger.error("camera %s: a hit's %s not kept: %s", self.camera_id, what, exc)
            return None, (code, f"{self.camera_id}: a plate hit's {what} not kept: {exc}")
        except Exception as exc:
            self.stats.errors += 1
            logger.exception("camera %s: cannot keep the %s", self.camera_id, what)
            if not hit:
                return None, None
            return None, ("evidence_not_kept", f"{self.camera_id}: a plate hit's {what}: {exc}")


def _encode(image: Any, *, quality: int) -> bytes | None:
    import cv2

    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return encoded.tobytes() if ok else None


def encode_frame(
    image: Image, *, max_side: int = FRAME_MAX_SIDE, quality: int = 85
) -> bytes | None:
    """A hit's whole frame as JPEG, scaled down (aspect kept) when a side exceeds `max_side`."""
    import cv2

    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return _encode(cv2.resize(image, size, interpolation=cv2.INTER_AREA), quality=quality)
    return _encode(image, quality=quality)


def _padded(regions: list[Box], shape: tuple[int, ...]) -> list[Box]:
    height, width = shape[:2]
    out = []
    for r in regions:
        px, py = int(r.w * _REGION_PAD), int(r.h * _REGION_PAD)
        x0, y0 = max(0, r.x - px), max(0, r.y - py)
        x1, y1 = min(width, r.x + r.w + px), min(height, r.y + r.h + py)
        out.append(Box(x=x0, y=y0, w=x1 - x0, h=y1 - y0, score=r.score))
    return out


def _crop(image: Image, box: Box) -> Image | None:
    height, width = image.shape[:2]
    px, py = int(box.w * 0.1), int(box.h * 0.2)
    x0, y0 = max(0, box.x - px), max(0, box.y - py)
    x1, y1 = min(width, box.x + box.w + px), min(height, box.y + box.h + py)
    if x1 <= x0 or y1 <= y0:
        return None
    crop: Image = image[y0:y1, x0:x1].copy()
    return crop
