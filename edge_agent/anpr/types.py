"""The seams of plate recognition: what a detector finds and what a reader reads.

The camera pipeline (`edge_agent.camera`) depends only on these two
protocols, so detectors and readers are plugins that can be swapped by
configuration and measured one against another (`nigehbaan bench anpr`).
Frames are numpy arrays, H x W x 3, uint8, BGR (OpenCV's order), as every
`hardware.camera.CameraSource` delivers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Frame = npt.NDArray[np.uint8]

__all__ = ["Box", "PlateDetector", "PlateRead", "PlateReader"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in frame pixels, with the detector's score in 0..1."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0


@dataclass(frozen=True)
class PlateRead:
    """One reading of one plate in one frame, before per-track voting.

    `text` is what the reader saw (letters and digits, no separators);
    `canonical` is the key the format rules chose (look-alike characters
    corrected for the country's layout); `province`/`layout` say which rule
    matched (None/"unknown" when none did — a read is never dropped for not
    matching a rule). `year` is the registration year a layout carries
    outside the key (Punjab's older district plates), when read.
    """

    text: str
    canonical: str
    confidence: float
    box: Box
    country: str = "PK"
    province: str | None = None
    layout: str = "unknown"
    year: str | None = None


class PlateDetector(Protocol):
    """Finds plate boxes in a frame (optionally only inside `regions`)."""

    name: str

    def detect(self, frame: Frame, regions: list[Box] | None = None) -> list[Box]: ...


class PlateReader(Protocol):
    """Reads the plate inside `box` of `frame`; None when nothing plate-like is legible."""

    name: str

    def read(self, frame: Frame, box: Box) -> PlateRead | None: ...
