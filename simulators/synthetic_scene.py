"""Synthetic street scenes for simulated camera nodes: vehicle passes → real `PlateEvent`s.

The camera/ANPR pipeline (capture → motion gate → detector → tracker → plate
OCR → multi-frame voting, ARCHITECTURE.md "Edge analytics") does not exist
yet. Until it does, a simulated camera node's plate reads come from here: a
`SyntheticScene` makes up vehicle passes (a plausible Pakistani registration,
an OCR confidence, how many frames agreed), and `plate_event_builder` turns
one pass into a `proto.messages.PlateEvent` that the node's real agent writes
to its real durable outbox (`Agent.record_event`), publishes, and deletes on
the server's ack — exactly the path the real pipeline's events will take. No
pixels are made or looked at: this measures the messaging, not the vision.

`SyntheticScene` is pure (it takes a `random.Random` and returns values);
the loop that decides *when* passes happen lives in the scenario runner.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from proto.messages import EventBase, PlateEvent

__all__ = ["SyntheticScene", "VehiclePass", "plate_event_builder"]

# Registration series seen on Punjab, Sindh, KP and Islamabad plates.
_SERIES = ("LEA", "LEB", "LEC", "LED", "LEE", "LEF", "LHR", "RIM", "FDA", "GAA", "MNA",
           "BKA", "BKB", "KAA", "PSH", "PRA", "ICT", "AAA")  # fmt: skip


@dataclass(frozen=True)
class VehiclePass:
    """One vehicle read by one camera after voting over `frames` frames."""

    camera_id: str
    track_id: str
    plate: str
    confidence: float
    frames: int


class SyntheticScene:
    """Vehicle passes in front of one node's cameras (no images; see the module docstring)."""

    def __init__(self, *, node_id: str, cameras: int = 1) -> None:
        if cameras < 1:
            raise ValueError("a camera node has at least one camera")
        self.node_id = node_id
        self.camera_ids = tuple(f"cam-{i + 1}" for i in range(cameras))
        self._tracks = 0

    def next_pass(self, rng: random.Random) -> VehiclePass:
        """The next vehicle: a registration, the confidence of its read, frames that agreed."""
        self._tracks += 1
        camera_id = rng.choice(self.camera_ids)
        series = rng.choice(_SERIES)
        shape = rng.random()
        if shape < 0.6:
            plate = f"{series}-{rng.randint(1, 9999)}"
        elif shape < 0.85:
            plate = f"{series}-{rng.randint(0, 25):02d}-{rng.randint(1, 9999)}"
        else:
            plate = f"{series[:2]} {rng.randint(100, 9999)}"
        return VehiclePass(
            camera_id=camera_id,
            track_id=f"{camera_id}-{self._tracks}",
            plate=plate,
            confidence=round(rng.uniform(0.62, 0.995), 3),
            frames=rng.randint(3, 24),
        )


def plate_event_builder(
    *, node_id: str, vehicle: VehiclePass, now: Callable[[], datetime]
) -> Callable[[str, int], EventBase]:
    """The `build(event_id, seq)` the agent's outbox calls to write `vehicle` as a PlateEvent."""

    def build(event_id: str, seq: int) -> EventBase:
        return PlateEvent(
            node_id=node_id,
            ts=now(),
            event_id=event_id,
            seq=seq,
            camera_id=vehicle.camera_id,
            track_id=vehicle.track_id,
            plate=vehicle.plate,
            confidence=vehicle.confidence,
            frames=vehicle.frames,
        )

    return build
