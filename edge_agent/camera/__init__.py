"""The camera pipeline on the node: frames → motion gate → plate detector → tracks → reads → votes.

One `CameraPipeline` component (`edge_agent.camera.pipeline`) runs every
``[[cameras]]`` entry of the node's config: per camera a capture thread
reads the `hardware.camera` source into a bounded queue (full: the frame is
dropped and counted; capture never blocks), and an analysis thread runs the
pure parts on it — `MotionGate` on every frame, the plate detector only on
frames with motion, `PlateTracker`, the reader on confirmed tracks, `Voter`
per track (`edge_agent.camera.analysis`) — and hands one
`proto.messages.PlateEvent` per vehicle pass to the node's loop, which writes
it through the durable outbox. Detectors and readers are plugins behind
`edge_agent.anpr.types`. See docs/edge-agent.md, "Camera pipeline".

Importing this package imports neither numpy nor OpenCV (a node with no
camera extra still builds): the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CameraAnalysis",
    "CameraError",
    "CameraFeed",
    "CameraPipeline",
    "MotionGate",
    "MotionResult",
    "PlatePass",
    "PlateTracker",
    "PluginError",
    "Track",
    "TrackerUpdate",
    "Vote",
    "Voter",
    "iou",
    "rect_polygon",
]

_HOME = {
    "CameraAnalysis": "analysis",
    "PlatePass": "analysis",
    "CameraError": "errors",
    "PluginError": "errors",
    "CameraFeed": "pipeline",
    "CameraPipeline": "pipeline",
    "MotionGate": "motion",
    "MotionResult": "motion",
    "rect_polygon": "motion",
    "PlateTracker": "tracker",
    "Track": "tracker",
    "TrackerUpdate": "tracker",
    "iou": "tracker",
    "Vote": "voting",
    "Voter": "voting",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
