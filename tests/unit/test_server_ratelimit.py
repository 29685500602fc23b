"""The in-memory limiters on virtual time: token buckets that can be asked without spending,
and the gate that lets one log line per key and interval through."""

from __future__ import annotations

import pytest

from fleet_server.auth import SignInLimits
from fleet_server.ratelimit import LogGate, TokenBucketLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_asking_how_long_to_wait_spends_nothing_and_says_when_a_token_is_back() -> None:
    clock = Clock()
    bucket = TokenBucketLimiter(per_minute=6, burst=2, clock=clock)  # one token per 10 s
    assert bucket.wait_s("k") == 0.0
    assert bucket.wait_s("k") == 0.0  # looking twice spent nothing
    assert bucket.allow("k")
    assert bucket.allow("k")
    assert bucket.wait_s("k") == pytest.approx(10.0)
    clock.now += 4
    assert bucket.wait_s("k") == pytest.approx(6.0)
    clock.now += 6
    assert bucket.wait_s("k") == 0.0
    assert bucket.allow("k")
    assert not bucket.allow("k")


def test_sign_in_limits_name_the_limit_that_ran_dry_and_whole_seconds_to_wait() -> None:
    clock = Clock()
    limits = SignInLimits(
        account=TokenBucketLimiter(per_minute=1, burst=2, clock=clock),
        address=TokenBucketLimiter(per_minute=60, burst=3, clock=clock),
    )
    for _ in range(2):
        assert limits.wait_s(username="Ayesha", address="10.0.0.9") is None
        limits.failed(username="Ayesha", address="10.0.0.9")
    # The account is spent (whatever the case of the name); another account from
    # the same address still has one try before the address limit.
    assert limits.wait_s(username="ayesha", address="10.0.0.7") == ("account", 60)
    assert limits.wait_s(username="bilal", address="10.0.0.9") is None
    limits.failed(username="bilal", address="10.0.0.9")
    assert limits.wait_s(username="bilal", address="10.0.0.9") == ("address", 1)
    clock.now += 60
    assert limits.wait_s(username="ayesha", address="10.0.0.9") is None


def test_the_log_gate_passes_one_line_per_key_and_interval_and_counts_the_rest() -> None:
    clock = Clock()
    gate = LogGate(interval_s=60, clock=clock)
    assert gate.admit(("cam-1", "malformed")) == 0
    assert gate.admit(("cam-1", "malformed")) is None
    assert gate.admit(("cam-1", "malformed"), 5) is None
    assert gate.admit(("cam-1", "too_large")) == 0  # another reason has its own line
    assert gate.admit(("cam-2", "malformed")) == 0  # and another node
    clock.now += 60
    # The next line says how many went unlogged since the last one (1 + 5), plus
    # the other 2 of the 3 it now stands for.
    assert gate.admit(("cam-1", "malformed"), 3) == 8
    assert gate.admit(("cam-1", "malformed")) is None


def test_a_zero_interval_gate_logs_everything() -> None:
    gate = LogGate(interval_s=0, clock=Clock())
    assert [gate.admit("k") for _ in range(3)] == [0, 0, 0]
