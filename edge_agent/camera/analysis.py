"""One camera's analysis, frame by frame: motion gate → detector → tracker → reader → vote.

`CameraAnalysis.process(image)` runs synchronously on one frame and returns
the vehicle passes that ended with it (`PlatePass`: voted text, confidence,
agreeing frames, the best read, and the SHA-256 of the best crop once it is
in the evidence store). It owns no thread: the pipeline's analysis thread
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

__all__ = ["CameraAnalysis", "CameraStats", "PlatePass", "percentiles", "valid_frame"]

logger = logging.getLogger(__name__)

_SAMPLES = 512  # timings kept per stage for p50/p95
_REGION_PAD = 0.15  # motion regions grow by this share before the detector looks inside


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
    ) -> None:
        motion = settings.motion
        self.camera_id = camera_id
        self.settings = settings
        self.detector = detector
        self.reader = reader
        self.evidence = evidence
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
        self._voters: dict[str, Voter[Image]] = {}
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
        if read is not None:
            voter.add(read, _crop(image, read.box or box))

    def _finish(self, track: Track) -> PlatePass | None:
        voter = self._voters.pop(track.track_id, None)
        vote = voter.result() if voter is not None else None
        if vote is None:
            if self.reader is not None:
                self.stats.tracks_unread += 1
            return None
        plate = vote.text[:16]
        digest = None
        if self.evidence is not None and vote.crop is not None:
            digest = self._store(vote.crop)
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
        )

    def _store(self, crop: Image) -> str | None:
        assert self.evidence is not None
        import cv2

        ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        try:
            return self.evidence.put(encoded.tobytes())
        except Exception:
            self.stats.errors += 1
            logger.exception("camera %s: cannot keep the crop", self.camera_id)
            return None


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
