"""The standards check on connect: is a third-party camera good enough to analyse?

A private camera (a hotel's, a plaza's, a school's; docs/privacy.md) joins
with whatever its owner installed. Before its frames are analysed, each time
the node connects to it, the node measures over the first frames — at most
`Standards.sample_frames` frames and at most `Standards.sample_s` seconds,
whichever ends first — and compares with the minimums in the camera's
private terms:

- resolution: the smallest frame seen (a stream that switches down mid-way
  is judged by its worst);
- effective frame rate: frames delivered per second of the node's monotonic
  clock between the first and the last frame of the sample (what the
  analysis would get, not what the stream advertises);
- clock: the source's own wall time for a frame, when it gives one
  (`CameraSource.source_time`), against the node's clock. A camera
  registered by its ONVIF address (`edge_agent.camera.onvif`) gives one: its
  ``GetSystemDateAndTime`` (UTC, whole seconds) is read at connect, at the
  middle of the request's round trip, and each frame is stamped with the
  node's time plus that offset — so its clock is judged against
  `Standards.max_clock_skew_s` (the figure carries up to ~0.5 s from the
  camera's whole seconds plus half the round trip). Other sources (OpenCV
  over RTSP/HTTP, files) give none, and the clock is then reported as
  ``unknown`` and does not fail the check.

A camera that fails is **live view only** until it is connected again and
passes: the pipeline analyses none of its frames, and the verdict with its
reasons goes out as a ``node_fault`` event (code ``camera_below_standard``)
and in telemetry (the camera's ``fault``). Pure logic, no threads: the
camera's capture thread feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FAULT_CODE", "Standards", "StandardsCheck", "Verdict"]

FAULT_CODE = "camera_below_standard"


class Standards(BaseModel):
    """The minimums a private camera must meet before its frames are analysed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min_width: int = Field(default=1280, ge=16, le=8192, description="narrowest frame allowed")
    min_height: int = Field(default=720, ge=16, le=8192, description="lowest frame allowed")
    min_fps: float = Field(default=10.0, ge=0.0, le=240.0, description="slowest effective rate")
    max_clock_skew_s: float = Field(
        default=2.0, gt=0.0, le=3600.0, description="largest source-vs-node clock difference"
    )
    sample_frames: int = Field(default=50, ge=2, le=1000, description="frames measured")
    sample_s: float = Field(default=10.0, gt=0.0, le=120.0, description="longest the check takes")


@dataclass(frozen=True)
class Verdict:
    """What the check measured and whether the camera passed (reasons when not)."""

    passed: bool
    frames: int
    width: int | None
    height: int | None
    fps: float | None
    clock: str  # "unknown", or the largest skew seen, e.g. "skew 0.3 s"
    reasons: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line for logs, the fault's detail and the console."""
        size = f"{self.width}x{self.height}" if self.width else "no frame"
        fps = f"{self.fps:.1f} fps" if self.fps is not None else "fps unknown"
        head = f"{size}, {fps}, clock {self.clock} over {self.frames} frames"
        return head if self.passed else f"{head}: {'; '.join(self.reasons)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 2) if self.fps is not None else None,
            "clock": self.clock,
            "reasons": list(self.reasons),
            "summary": self.summary(),
        }


class StandardsCheck:
    """One measurement, from the moment the source was opened (`started`, monotonic s)."""

    def __init__(self, standards: Standards, *, started: float) -> None:
        self.standards = standards
        self.started = started
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._frames = 0
        self._width: int | None = None
        self._height: int | None = None
        self._skew: float | None = None  # largest |source - node| seen, seconds

    def add(
        self,
        *,
        width: int,
        height: int,
        t: float,
        source_time: datetime | None = None,
        node_time: datetime | None = None,
    ) -> Verdict | None:
        """Count one frame (its size, monotonic time, and wall times when known).

        Returns the verdict once the sample is complete, else None.
        """
        self._frames += 1
        self._first_t = t if self._first_t is None else self._first_t
        self._last_t = t
        self._width = width if self._width is None else min(self._width, width)
        self._height = height if self._height is None else min(self._height, height)
        if source_time is not None and node_time is not None:
            skew = abs((source_time - node_time).total_seconds())
            self._skew = skew if self._skew is None else max(self._skew, skew)
        if self._frames >= self.standards.sample_frames:
            return self.verdict()
        return self.poll(t)

    def poll(self, now: float) -> Verdict | None:
        """The verdict when the check's time is up (also with no frame at all), else None."""
        if now - self.started >= self.standards.sample_s:
            return self.verdict()
        return None

    def verdict(self) -> Verdict:
        """Judge what was measured so far against the minimums."""
        s = self.standards
        reasons: list[str] = []
        fps: float | None = None
        if self._frames == 0:
            reasons.append(f"no frame within {s.sample_s:g}s")
        elif self._frames >= 2 and self._first_t is not None and self._last_t is not None:
            span = self._last_t - self._first_t
            fps = (self._frames - 1) / span if span > 0 else None
        width, height = self._width, self._height
        if (
            width is not None
            and height is not None
            and (width < s.min_width or height < s.min_height)
        ):
            reasons.append(f"resolution {width}x{height} below {s.min_width}x{s.min_height}")
        if self._frames == 1:
            reasons.append(f"one frame within {s.sample_s:g}s: frame rate below {s.min_fps:g} fps")
        elif fps is not None and fps < s.min_fps:
            reasons.append(f"frame rate {fps:.1f} fps below {s.min_fps:g} fps")
        if self._skew is None:
            clock = "unknown"
        else:
            clock = f"skew {self._skew:.1f} s"
            if self._skew > s.max_clock_skew_s:
                reasons.append(f"clock off by {self._skew:.1f} s (over {s.max_clock_skew_s:g} s)")
        return Verdict(
            passed=not reasons,
            frames=self._frames,
            width=self._width,
            height=self._height,
            fps=fps,
            clock=clock,
            reasons=tuple(reasons),
        )
