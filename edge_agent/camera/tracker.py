"""Plate tracks: the same plate's boxes across frames, so one vehicle pass is one event.

`PlateTracker.update(boxes)` matches this frame's detections to the live
tracks by IoU against each track's predicted box (its last box moved by its
last step, so a plate that moves a fair part of its width between analysed
frames still matches), greedily, best overlap first. A track is confirmed
after `confirm_hits` matched frames (a single false detection never becomes
an event) and ends after `max_misses` analysed frames without a match; only
confirmed tracks are reported as ended. Pure: boxes in, tracks out.

Track age. A plate that never leaves the view — a parked car inside a
motion region (people walking past keep the detector running) — would keep
its track alive for ever, and its pass would never become an event. So a
track has a `max_age` (analysed frames since its first sighting; None: no
limit): a confirmed track that reaches it is reported as ended *once*, then
stays as a ``reported`` track that still claims its box (so the parked car
does not start a second track and a second event), is never read again,
and is not reported a second time when it finally leaves or at `flush`. A
reported track holds only its box and counters, so a camera watching a car
park for a week uses no more memory than for one minute. If the plate is
lost for more than `max_misses` frames and seen again, that is a new track
and a new event: one event per pass, where a pass is an unbroken track.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.anpr.types import Box

__all__ = ["PlateTracker", "Track", "TrackerUpdate", "iou"]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    if not inter:
        return 0.0
    return inter / float(a.w * a.h + b.w * b.h - inter)


@dataclass
class Track:
    """One plate followed across frames."""

    track_id: str
    box: Box
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    first_frame: int = 0
    last_frame: int = 0
    step: tuple[int, int] = (0, 0)
    # Ended at `max_age` and still in view: claims its box, never read or reported again.
    reported: bool = False

    def age(self, frame: int) -> int:
        """Analysed frames from the first sighting to `frame`, both included."""
        return frame - self.first_frame + 1

    def predicted(self) -> Box:
        """Where the box should be next, moving as it moved last (scaled by frames missed)."""
        k = self.misses + 1
        dx, dy = self.step
        b = self.box
        return Box(x=b.x + dx * k, y=b.y + dy * k, w=b.w, h=b.h, score=b.score)


@dataclass(frozen=True)
class TrackerUpdate:
    """One frame's outcome: confirmed tracks matched now (with their box) and tracks that ended."""

    seen: list[tuple[Track, Box]]
    ended: list[Track]


class PlateTracker:
    """IoU tracker; see the module docstring."""

    def __init__(
        self,
        *,
        iou_min: float = 0.2,
        confirm_hits: int = 3,
        max_misses: int = 5,
        max_age: int | None = None,
        reach: float = 1.0,
        prefix: str = "t",
    ) -> None:
        if not 0.0 < iou_min <= 1.0 or confirm_hits < 1 or max_misses < 0:
            raise ValueError("iou_min in (0, 1], confirm_hits >= 1, max_misses >= 0")
        if max_age is not None and max_age < confirm_hits:
            raise ValueError("max_age must be at least confirm_hits (or None: no limit)")
        self.max_age = max_age
        self.iou_min = iou_min
        self.confirm_hits = confirm_hits
        self.max_misses = max_misses
        self.reach = reach
        self.prefix = prefix
        self.tracks: list[Track] = []
        self.frame = 0
        self._next = 1

    def update(self, boxes: Sequence[Box]) -> TrackerUpdate:
        """Match `boxes` (this frame's detections) to tracks; see the module docstring."""
        self.frame += 1
        pairs = sorted(
            (
                (self._score(track.predicted(), box), ti, bi)
                for ti, track in enumerate(self.tracks)
                for bi, box in enumerate(boxes)
            ),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        seen: list[tuple[Track, Box]] = []
        for score, ti, bi in pairs:
            if score <= 0.0:
                break
            if ti in used_tracks or bi in used_boxes:
                continue
            used_tracks.add(ti)
            used_boxes.add(bi)
            track, box = self.tracks[ti], boxes[bi]
            frames = track.misses + 1
            track.step = (
                round((box.x - track.box.x) / frames),
                round((box.y - track.box.y) / frames),
            )
            track.box = box
            track.hits += 1
            track.misses = 0
            track.last_frame = self.frame
            if track.hits >= self.confirm_hits:
                track.confirmed = True
            if track.confirmed and not track.reported:
                seen.append((track, box))
        ended: list[Track] = []
        alive: list[Track] = []
        for ti, track in enumerate(self.tracks):
            if ti not in used_tracks:
                track.misses += 1
                if track.misses > self.max_misses:
                    if track.confirmed and not track.reported:
                        ended.append(track)
                    continue
            if (
                self.max_age is not None
                and track.confirmed
                and not track.reported
                and track.age(self.frame) >= self.max_age
            ):
                track.reported = True  # its pass is reported now; it stays to claim its box
                ended.append(track)
            alive.append(track)
        for bi, box in enumerate(boxes):
            if bi in used_boxes:
                continue
            track = Track(
                track_id=f"{self.prefix}{self._next}",
                box=box,
                first_frame=self.frame,
                last_frame=self.frame,
            )
            self._next += 1
            if self.confirm_hits <= 1:
                track.confirmed = True
                seen.append((track, box))
            alive.append(track)
        self.tracks = alive
        return TrackerUpdate(seen=seen, ended=ended)

    def _score(self, predicted: Box, box: Box) -> float:
        """How well `box` continues a track: its IoU, else a small nearness score, else 0."""
        overlap = iou(predicted, box)
        if overlap >= self.iou_min:
            return 1.0 + overlap
        if not 0.5 <= box.w / max(1, predicted.w) <= 2.0:
            return 0.0
        dx = (box.x + box.w / 2) - (predicted.x + predicted.w / 2)
        dy = (box.y + box.h / 2) - (predicted.y + predicted.h / 2)
        distance = (dx * dx + dy * dy) ** 0.5
        limit = self.reach * predicted.w
        return 1.0 - distance / limit if distance < limit else 0.0

    def flush(self) -> list[Track]:
        """End every track now (the camera stopped): the confirmed, unreported ones are returned."""
        ended = [t for t in self.tracks if t.confirmed and not t.reported]
        self.tracks = []
        return ended
