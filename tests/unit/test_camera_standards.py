"""The standards check's arithmetic: resolution, effective frame rate, clock, bounded sample."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from edge_agent.camera.standards import Standards, StandardsCheck, Verdict

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def feed(
    check: StandardsCheck, frames: int, *, fps: float, size: tuple[int, int]
) -> Verdict | None:
    verdict = None
    for i in range(frames):
        verdict = check.add(width=size[0], height=size[1], t=i / fps)
        if verdict is not None:
            break
    return verdict


def test_a_good_camera_passes_with_its_measurements() -> None:
    check = StandardsCheck(Standards(sample_frames=20), started=0.0)
    verdict = feed(check, 20, fps=25.0, size=(1920, 1080))
    assert verdict is not None
    assert verdict.passed
    assert verdict.width == 1920
    assert verdict.height == 1080
    assert verdict.fps == pytest.approx(25.0)
    assert verdict.clock == "unknown"


def test_low_resolution_and_low_frame_rate_each_fail_with_the_reason() -> None:
    small = feed(
        StandardsCheck(Standards(sample_frames=10), started=0.0), 10, fps=25, size=(640, 360)
    )
    assert small is not None
    assert not small.passed
    assert small.reasons == ("resolution 640x360 below 1280x720",)
    slow = feed(
        StandardsCheck(Standards(sample_frames=10), started=0.0), 10, fps=4, size=(1280, 720)
    )
    assert slow is not None
    assert not slow.passed
    assert slow.reasons == ("frame rate 4.0 fps below 10 fps",)


def test_the_worst_frame_decides_the_resolution() -> None:
    check = StandardsCheck(Standards(sample_frames=3, min_fps=0), started=0.0)
    check.add(width=1920, height=1080, t=0.0)
    check.add(width=1024, height=576, t=0.1)
    verdict = check.add(width=1920, height=1080, t=0.2)
    assert verdict is not None
    assert verdict.reasons == ("resolution 1024x576 below 1280x720",)


def test_the_sample_is_bounded_in_time_even_with_no_frame() -> None:
    check = StandardsCheck(Standards(sample_s=5.0), started=100.0)
    assert check.poll(104.9) is None
    verdict = check.poll(105.0)
    assert verdict is not None
    assert not verdict.passed
    assert verdict.reasons == ("no frame within 5s",)
    one = StandardsCheck(Standards(sample_s=5.0), started=0.0)
    assert one.add(width=1280, height=720, t=0.5) is None
    late = one.poll(5.0)
    assert late is not None
    assert "one frame within 5s" in late.reasons[0]


def test_a_source_clock_is_compared_when_given_else_unknown() -> None:
    check = StandardsCheck(Standards(sample_frames=2, min_fps=0), started=0.0)
    check.add(
        width=1280, height=720, t=0.0, source_time=NOW + timedelta(seconds=0.4), node_time=NOW
    )
    off = check.add(
        width=1280, height=720, t=0.1, source_time=NOW - timedelta(seconds=7), node_time=NOW
    )
    assert off is not None
    assert not off.passed
    assert off.clock == "skew 7.0 s"
    assert off.reasons == ("clock off by 7.0 s (over 2 s)",)
    assert "clock skew 7.0 s" in off.summary()


def test_bad_minimums_are_refused() -> None:
    with pytest.raises(ValidationError):
        Standards(sample_frames=1)
    with pytest.raises(ValidationError):
        Standards(min_width=0)
    with pytest.raises(ValidationError):
        Standards(sample_s=float("inf"))
