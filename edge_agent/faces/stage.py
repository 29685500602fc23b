"""The face stage of one camera: frame in, watchlist face hits out (no threads, no I/O).

It is what the camera pipeline calls per analysed frame once a face
watchlist is in scope (`skip_reason` says when it must not run at all):
YuNet finds the faces, the IoU tracker the plates use follows them across
frames, each face is gated (size, blur, pose), the ones that pass are
aligned, embedded and matched, and the per-track `TrackVoter` decides.
Faces that fail the gates still count in their track's weight, with no
vote. A hit carries the crop of its track's best frame (highest area x
quality) for the evidence store. Detector and embedder are plugins (the
`Detector`/`Embedder` protocols), so tests run it on fakes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_agent.anpr.types import Box
from edge_agent.camera.tracker import PlateTracker
from edge_agent.faces.matching import FaceHit, FaceMatcher, TrackVoter, VoterConfig
from edge_agent.faces.models import Detector, Embedder, align_face
from edge_agent.faces.quality import QualityConfig, assess

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

__all__ = ["FaceStage", "FaceStageConfig", "StagedHit", "skip_reason"]

logger = logging.getLogger(__name__)


def skip_reason(*, site_allows_faces: bool, templates: int, power_allows_faces: bool) -> str | None:
    """Why face work must not run on this camera now, or None when it may.

    Checked before anything of the face stage is built or run: a site whose
    policy forbids faces, no face watchlist in scope (no templates), and a
    power step that has shed face recognition (before anything of the plates).
    """
    if not site_allows_faces:
        return "site policy forbids faces"
    if templates <= 0:
        return "no face watchlist in scope"
    if not power_allows_faces:
        return "shed by the power policy"
    return None


@dataclass(frozen=True)
class FaceStageConfig:
    """The gates, the vote, and how faces are tracked."""

    quality: QualityConfig = field(default_factory=QualityConfig)
    voter: VoterConfig = field(default_factory=VoterConfig)
    iou_min: float = 0.2
    max_misses: int = 5


@dataclass(frozen=True)
class StagedHit:
    """A hit and the aligned crop of its track's best frame (evidence)."""

    hit: FaceHit
    crop: Array


@dataclass
class _Best:
    weight: float
    frame: int
    crop: Array


class FaceStage:
    """One camera's faces, frame by frame (see the module docstring)."""

    def __init__(
        self,
        *,
        detector: Detector,
        embedder: Embedder,
        matcher: FaceMatcher,
        config: FaceStageConfig | None = None,
        track_prefix: str = "f",
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.matcher = matcher
        self.config = config or FaceStageConfig()
        self.voter = TrackVoter(self.config.voter)
        self.tracker = PlateTracker(
            iou_min=self.config.iou_min,
            confirm_hits=1,  # the voter, not the tracker, decides what counts
            max_misses=self.config.max_misses,
            prefix=track_prefix,
        )
        self._best: dict[str, _Best] = {}
        self.faces_seen = 0
        self.faces_refused = 0

    def process(self, frame: Array, *, frame_no: int) -> list[StagedHit]:
        """Analyse one frame's faces; the hits it completed (usually none)."""
        faces = self.detector.detect(frame)
        boxes = [
            Box(round(f.box[0]), round(f.box[1]), max(1, round(f.box[2])), max(1, round(f.box[3])))
            for f in faces
        ]
        by_box = {id(b): f for b, f in zip(boxes, faces, strict=True)}
        update = self.tracker.update(boxes)
        hits: list[StagedHit] = []
        for track, box in update.seen:
            face = by_box[id(box)]
            self.faces_seen += 1
            crop = align_face(frame, face.landmarks)
            verdict = assess(
                box=face.box, landmarks=face.landmarks, aligned=crop, config=self.config.quality
            )
            match = None
            if verdict.passed:
                match = self.matcher.best(self.embedder.embed(frame, face))
                weight = face.area * verdict.weight
                best = self._best.get(track.track_id)
                if best is None or weight > best.weight:
                    self._best[track.track_id] = _Best(weight, frame_no, crop)
            else:
                self.faces_refused += 1
            hit = self.voter.add(
                track.track_id, frame=frame_no, match=match, area=face.area, quality=verdict.weight
            )
            if hit is not None:
                best = self._best[track.track_id]
                logger.info(
                    "face track %s matched %s (%s) score %.3f over %d frames",
                    hit.track_id,
                    hit.entry_id,
                    hit.category,
                    hit.score,
                    len(hit.frames),
                )
                hits.append(StagedHit(hit=hit, crop=best.crop))
        alive = {t.track_id for t in self.tracker.tracks}
        for track_id in [t for t in self._best if t not in alive]:
            del self._best[track_id]
        for track in update.ended:
            self.voter.end_track(track.track_id)
        self.voter.keep_only(alive)
        return hits
