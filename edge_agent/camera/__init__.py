"""The camera pipeline on the node: frames → motion gate → plate detector → tracks → reads → votes.

One `CameraPipeline` component runs every ``[[cameras]]`` entry of the
node's config: per camera a capture thread reads the `hardware.camera`
source into a bounded queue (full: the frame is dropped and counted; capture
never blocks), and an analysis thread runs the pure parts on it —
`MotionGate` on every frame, the plate detector only on frames with motion,
`PlateTracker`, the reader on confirmed tracks, `Voter` per track — and hands
one `proto.messages.PlateEvent` per vehicle pass to the node's loop, which
writes it through the durable outbox. Detectors and readers are plugins
behind `edge_agent.anpr.types`. See docs/edge-agent.md, "Camera pipeline".
"""

from __future__ import annotations

from edge_agent.camera.errors import CameraError, PluginError
from edge_agent.camera.motion import MotionGate, MotionResult, rect_polygon
from edge_agent.camera.tracker import PlateTracker, Track, TrackerUpdate, iou
from edge_agent.camera.voting import Vote, Voter

__all__ = [
    "CameraError",
    "MotionGate",
    "MotionResult",
    "PlateTracker",
    "PluginError",
    "Track",
    "TrackerUpdate",
    "Vote",
    "Voter",
    "iou",
    "rect_polygon",
]
