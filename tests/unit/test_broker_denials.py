"""Counting the broker's ACL refusals: what a Mosquitto 2.0.11 denial line says, and bursts.

The story: a node that probes other nodes' topics is seen — each refusal is
counted against its client id, and a burst (the threshold within the window)
is reported once per threshold's worth, not once per packet; refusals spread
thinner than the window never make a burst.
"""

from __future__ import annotations

from fleet_server.broker.denials import Denial, DenialBurst, DenialCounter, parse_denial
from fleet_server.broker.process import is_packet_trace

# Verbatim from mosquitto 2.0.11 with `log_type debug` and our timestamp format.
DENIED = (
    "2026-11-30T13:43:44: Denied PUBLISH from lhr-acl-0002 "
    "(d0, q1, r0, m3, 'nb/v1/lhr-acl-0009/event/panic', ... (171 bytes))\n"
)


def test_a_denied_publish_line_names_the_client_and_topic() -> None:
    assert parse_denial(DENIED) == Denial("lhr-acl-0002", "nb/v1/lhr-acl-0009/event/panic")
    assert parse_denial("2026-11-30T13:43:43: New client connected as lhr-1 (p5)") is None
    assert parse_denial("2026-11-30T13:43:44: Denied PUBLISH from x (garbled") is None


def test_packet_traces_are_told_from_lines_worth_keeping() -> None:
    assert is_packet_trace("2026-11-30T13:43:44: Sending PUBACK to c9 (m1, rc135)")
    assert is_packet_trace("2026-11-30T13:43:44: Received PUBLISH from c9 (d0, q1, r0, m1)")
    assert is_packet_trace("2026-11-30T13:43:44: \tnb/v1/# (QoS 1)")
    assert not is_packet_trace(DENIED)
    assert not is_packet_trace("2026-11-30T13:43:45: Client lhr-acl-0002 disconnected.")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_reported_once_per_threshold_within_the_window() -> None:
    clock = _Clock()
    counter = DenialCounter(threshold=3, window_s=60.0, clock=clock)
    bursts: list[DenialBurst] = []
    counter.on_burst = bursts.append
    probe = Denial("lhr-0002", "nb/v1/lhr-0009/event/panic")
    results = []
    for _ in range(7):
        clock.now += 1.0
        results.append(counter.record(probe))
    assert [r is not None for r in results] == [False, False, True, False, False, True, False]
    assert [(b.client_id, b.count, b.total) for b in bursts] == [
        ("lhr-0002", 3, 3),
        ("lhr-0002", 3, 6),
    ]
    assert bursts[0].topics == ("nb/v1/lhr-0009/event/panic",)
    assert counter.totals() == {"lhr-0002": 7}


def test_refusals_thinner_than_the_window_never_burst_but_still_count() -> None:
    clock = _Clock()
    counter = DenialCounter(threshold=3, window_s=60.0, clock=clock)
    for _ in range(10):
        clock.now += 31.0
        assert counter.record(Denial("lhr-0003", "nb/v1/x/status")) is None
    assert counter.totals() == {"lhr-0003": 10}


def test_a_failing_burst_handler_does_not_stop_the_counting() -> None:
    counter = DenialCounter(threshold=1, window_s=60.0)

    def broken(_burst: DenialBurst) -> None:
        raise RuntimeError("database down")

    counter.on_burst = broken
    assert counter.record(Denial("lhr-0004", "nb/v1/y/status")) is not None
    assert counter.totals() == {"lhr-0004": 1}
