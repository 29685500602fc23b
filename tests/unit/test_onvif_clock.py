"""An ONVIF camera's clock in the standards check: skew below and above `max_clock_skew_s`."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.camera.onvif import DeviceInfo, OnvifCamera, Profile, Resolved
from edge_agent.camera.standards import Standards, StandardsCheck, Verdict
from hardware import ManualClock
from hardware.camera import SimCamera


def judged(skew_s: float | None, *, max_skew_s: float = 2.0) -> Verdict:
    """Five 1280x720 frames through an ONVIF camera whose clock is `skew_s` off the node's."""
    clock = ManualClock(start=0.0)
    inner = SimCamera(camera_id="plaza", clock=clock)
    resolved = Resolved(
        stream_uri="rtsp://admin:pw@127.0.0.1:554/live",
        stream_shown="rtsp://***@127.0.0.1:554/live",
        profile=Profile("p1", "main", 1280, 720, 25.0),
        device=DeviceInfo(),
        clock_skew_s=skew_s,
    )
    camera = OnvifCamera(inner, resolved, camera_id="plaza")
    check = StandardsCheck(
        Standards(sample_frames=5, max_clock_skew_s=max_skew_s, min_fps=1), started=0.0
    )
    verdict = None
    for _ in range(5):
        inner.push_frame(np.zeros((720, 1280, 3), np.uint8))
        frame = camera.read(timeout_s=0.1)
        assert frame is not None
        verdict = check.add(
            width=1280, height=720, t=clock.monotonic(),
            source_time=camera.source_time, node_time=camera.clock.now(),
        )  # fmt: skip
        clock.advance(0.1)
    assert verdict is not None
    return verdict


def test_a_camera_clock_within_the_limit_passes_with_its_figure() -> None:
    verdict = judged(-1.5)
    assert verdict.passed
    assert verdict.clock == "skew 1.5 s"


def test_a_camera_clock_beyond_the_limit_is_below_standard_with_the_reason() -> None:
    verdict = judged(7.4)
    assert not verdict.passed
    assert verdict.clock == "skew 7.4 s"
    assert verdict.reasons == ("clock off by 7.4 s (over 2 s)",)
    assert "clock off" in verdict.summary()


@pytest.mark.parametrize("skew", [2.0, -2.0])
def test_exactly_at_the_limit_passes(skew: float) -> None:
    assert judged(skew).passed


def test_a_camera_that_gave_no_utc_time_is_unknown_and_not_failed() -> None:
    verdict = judged(None)
    assert verdict.passed
    assert verdict.clock == "unknown"
