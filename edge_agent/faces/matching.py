"""Matching embeddings against watchlist templates, and the per-track vote that makes a hit.

One frame's best match is never a hit: faces in a street camera are small,
blurred and turned, and one lucky frame of a stranger can score above any
threshold. A hit needs several frames of one track (the tracker's id) that
agree on the same watchlist entry above that entry's category threshold,
and those frames must carry most of the track's weight, where a frame
weighs its face area times its quality weight (so a big sharp frontal face
counts more than a small blurred one). Thresholds are per watchlist
category because the cost of a false accept differs (a wanted person
versus a missing child); the shipped table (`proto.watchlist.FACE_THRESHOLDS`)
comes from the false-accept rates `nigehbaan bench faces --impostors all`
measured (docs/faces.md). A list's signed bundle carries its threshold, so
a template carries it here and wins over the node's table; a threshold
outside `proto.watchlist.FACE_THRESHOLD_RANGE` is refused
(`check_threshold`), never applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.faces.errors import FaceError
from proto.watchlist import FACE_THRESHOLD_RANGE, FACE_THRESHOLDS

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

__all__ = [
    "DEFAULT_THRESHOLD",
    "FaceHit",
    "FaceMatcher",
    "Match",
    "Template",
    "TrackVoter",
    "VoterConfig",
    "check_threshold",
]

# SFace cosine similarity for a category the table does not know (the table's "other").
DEFAULT_THRESHOLD = FACE_THRESHOLDS["other"]


def check_threshold(value: float, *, where: str = "threshold") -> float:
    """`value` if it is a sane face threshold (FACE_THRESHOLD_RANGE), else `FaceError`."""
    low, high = FACE_THRESHOLD_RANGE
    if not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise FaceError(f"{where} {value!r} is outside {low}..{high}")
    return float(value)


@dataclass(frozen=True)
class Template:
    """One enrolled face: its watchlist entry, the watchlist's category, its vector.

    `watchlist_id` and `version` name the signed bundle it came from, so a
    hit can quote them (empty/0 for templates built by hand in tests);
    `threshold` is the bundle's threshold for the list (None: the voter's
    table by category).
    """

    entry_id: str
    category: str
    vector: Array
    watchlist_id: str = ""
    version: int = 0
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None:
            check_threshold(self.threshold, where=f"template {self.entry_id}: threshold")


@dataclass(frozen=True)
class Match:
    """The best template for one embedding and its cosine similarity."""

    entry_id: str
    category: str
    score: float
    watchlist_id: str = ""
    version: int = 0
    threshold: float | None = None


class FaceMatcher:
    """Cosine similarity of an embedding against every template (one matrix product)."""

    def __init__(self, templates: Sequence[Template], *, dim: int = 128) -> None:
        self.templates = list(templates)
        if not self.templates:
            self._matrix: Array = np.zeros((0, dim), dtype=np.float32)
            return
        rows = []
        for template in self.templates:
            vec = np.asarray(template.vector, dtype=np.float32).reshape(-1)
            if vec.shape[0] != dim:
                raise FaceError(
                    f"template {template.entry_id}: {vec.shape[0]} dimensions, expected {dim}"
                )
            norm = float(np.linalg.norm(vec))
            if norm < 1e-12:
                raise FaceError(f"template {template.entry_id}: an all-zero vector")
            rows.append(vec / norm)
        self._matrix = np.stack(rows)

    def best(self, embedding: Array) -> Match | None:
        """The closest template, or None when there are none."""
        if not self.templates:
            return None
        vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vec))
        scores = self._matrix @ (vec / norm if norm > 1e-12 else vec)
        i = int(np.argmax(scores))
        best = self.templates[i]
        return Match(
            best.entry_id,
            best.category,
            float(scores[i]),
            best.watchlist_id,
            best.version,
            best.threshold,
        )


@dataclass(frozen=True)
class VoterConfig:
    """How a track's frames turn into a hit; thresholds per watchlist category."""

    min_frames: int = 3
    min_weight_share: float = 0.6
    default_threshold: float = DEFAULT_THRESHOLD
    category_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(FACE_THRESHOLDS))
    max_frames_per_track: int = 50

    def threshold(self, category: str) -> float:
        """The cosine threshold for a watchlist category (the default if not configured)."""
        return float(self.category_thresholds.get(category, self.default_threshold))

    def threshold_for(self, match: Match) -> float:
        """The threshold `match` must reach: its list's (from the bundle), else its category's."""
        return match.threshold if match.threshold is not None else self.threshold(match.category)


@dataclass(frozen=True)
class FaceHit:
    """A track that agreed on one entry: the frames that agreed and the weighted score."""

    track_id: str
    entry_id: str
    category: str
    score: float
    frames: tuple[int, ...]
    best_frame: int
    watchlist_id: str = ""
    version: int = 0


@dataclass
class _Vote:
    frame: int
    match: Match | None
    weight: float


class TrackVoter:
    """Collects each track's per-frame matches; says when (and once) a track is a hit."""

    def __init__(self, config: VoterConfig | None = None) -> None:
        self.config = config or VoterConfig()
        self._votes: dict[str, list[_Vote]] = {}
        self._hit: set[str] = set()

    def add(
        self, track_id: str, *, frame: int, match: Match | None, area: float, quality: float
    ) -> FaceHit | None:
        """Record one frame of a track (match None: no face passed the gates); a new hit or None.

        A frame with no usable face still counts in the track's weight, so a
        track that is mostly unusable needs more agreeing frames to win.
        """
        votes = self._votes.setdefault(track_id, [])
        votes.append(_Vote(frame=frame, match=match, weight=max(0.0, area) * max(0.0, quality)))
        if len(votes) > self.config.max_frames_per_track:
            del votes[0]
        if track_id in self._hit:
            return None
        hit = self._decide(track_id, votes)
        if hit is not None:
            self._hit.add(track_id)
        return hit

    def _decide(self, track_id: str, votes: list[_Vote]) -> FaceHit | None:
        total = sum(v.weight for v in votes)
        if total <= 0:
            return None
        by_entry: dict[str, list[_Vote]] = {}
        for vote in votes:
            m = vote.match
            if m is not None and vote.weight > 0 and m.score >= self.config.threshold_for(m):
                by_entry.setdefault(m.entry_id, []).append(vote)
        best: FaceHit | None = None
        for entry_id, agreeing in by_entry.items():
            weight = sum(v.weight for v in agreeing)
            if len(agreeing) < self.config.min_frames:
                continue
            if weight / total < self.config.min_weight_share:
                continue
            score = sum(v.weight * v.match.score for v in agreeing if v.match) / weight
            top = max(agreeing, key=lambda v: v.weight)
            first = agreeing[0].match
            hit = FaceHit(
                track_id=track_id,
                entry_id=entry_id,
                category=first.category if first else "",
                score=score,
                frames=tuple(v.frame for v in agreeing),
                best_frame=top.frame,
                watchlist_id=first.watchlist_id if first else "",
                version=first.version if first else 0,
            )
            if best is None or hit.score > best.score:
                best = hit
        return best

    def end_track(self, track_id: str) -> None:
        """Forget a track the tracker has closed."""
        self._votes.pop(track_id, None)
        self._hit.discard(track_id)

    def keep_only(self, track_ids: set[str]) -> None:
        """Forget every track not in `track_ids` (the tracker dropped it without an end)."""
        for track_id in [t for t in self._votes if t not in track_ids]:
            self.end_track(track_id)
