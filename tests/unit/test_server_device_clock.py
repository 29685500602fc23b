"""Which device times are implausible, the clock offset's running median, silence timeouts.

Pure rules on plain values (`fleet_server.device_clock`, `fleet_server.presence.Silence`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet_server.device_clock import CLOCK_WINDOW, DeviceTimeRules, record_clock_sample
from fleet_server.models import Node
from fleet_server.presence import Silence, learn_telemetry_interval

NOW = datetime(2026, 3, 1, 9, 0, 0, tzinfo=timezone.utc)
ENROLLED = NOW - timedelta(days=30)
RULES = DeviceTimeRules(future_s=300.0, past_s=86_400.0)


@pytest.mark.parametrize(
    ("device_ts", "implausible"),
    [
        (NOW, False),
        (NOW - timedelta(hours=23), False),  # an outbox held overnight
        (NOW + timedelta(minutes=4), False),  # a clock a little ahead
        (NOW + timedelta(minutes=6), True),
        (NOW - timedelta(hours=25), True),
        (datetime(1970, 1, 1, 0, 0, 7, tzinfo=timezone.utc), True),  # before NTP
    ],
)
def test_device_times_beyond_the_tolerances_are_implausible(
    device_ts: datetime, implausible: bool
) -> None:
    assert RULES.implausible(device_ts, received_at=NOW, node_since=ENROLLED) is implausible


def test_a_device_time_before_the_node_was_enrolled_is_implausible() -> None:
    enrolled = NOW - timedelta(hours=2)
    before = enrolled - timedelta(minutes=10)
    assert RULES.implausible(before, received_at=NOW, node_since=enrolled)
    assert not RULES.implausible(before, received_at=NOW, node_since=None)  # first seen now


def test_the_clock_offset_is_the_median_of_recent_samples() -> None:
    node = Node(node_id="lhr-0001")
    for seconds in (2.0, 2.5, 1.5):
        record_clock_sample(node=node, device_ts=NOW + timedelta(seconds=seconds), received_at=NOW)
    assert node.clock_offset_s == 2.0
    # One stamp taken before NTP answered does not move the median much...
    record_clock_sample(
        node=node, device_ts=datetime(1970, 1, 1, tzinfo=timezone.utc), received_at=NOW
    )
    assert node.clock_offset_s == pytest.approx(1.75)
    # ...and a clock that is wrong for good shows within the window.
    for _ in range(CLOCK_WINDOW):
        record_clock_sample(node=node, device_ts=NOW - timedelta(hours=5), received_at=NOW)
    assert node.clock_offset_s == -5 * 3600
    assert node.clock_samples is not None
    assert len(node.clock_samples) == CLOCK_WINDOW


def test_the_telemetry_interval_is_learned_from_the_nodes_stamps() -> None:
    node = Node(node_id="lhr-0001")
    seen: list[float | None] = []
    for device_ts in (NOW, NOW + timedelta(seconds=120), NOW + timedelta(days=3)):
        learn_telemetry_interval(node=node, device_ts=device_ts)
        seen.append(node.telemetry_interval_s)
    # The first report says nothing yet; a jump of days (a clock set at boot) is no interval.
    assert seen == [None, 120.0, 120.0]


def test_silence_timeouts() -> None:
    silence = Silence(intervals=3.0, default_s=300.0, min_s=60.0)
    assert silence.timeout_s(None) == 300.0
    assert silence.timeout_s(30.0) == 90.0
    assert silence.timeout_s(10.0) == 60.0  # never below the floor
    assert silence.timeout_s(1800.0) == 5400.0
    assert not Silence(intervals=0.0).enabled
