"""End to end: a signed OTA rollout over 20 simulated nodes, a failing canary first.

The small version of `nigehbaan bench ota` (simulators/bench_ota.py): a real Mosquitto,
a real `nigehbaan server` with a TUF repository from the key ceremony, campaigns made
through the REST API, and 20 real agents whose OTA client reads the server's repository
routes through python-tuf. Agent 1.1.0 fails its self-test on one hardware batch: the
canary node of that batch rolls back by itself, the campaign aborts and no other wave
starts. Agent 1.2.0 then reaches every node that may take it, by delta; a node with an
active alert waits until the operator resolves it, a node on a low battery keeps
waiting, and the panic press made during the rollout is stored by the server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simulators.bench_ota import OtaBenchConfig, run_ota_bench

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_a_failing_canary_aborts_and_the_good_version_then_reaches_the_fleet_by_delta(
    tmp_path: Path,
) -> None:
    config = OtaBenchConfig(
        nodes=20,
        health_deadline_s=6.0,
        check_interval_s=4.0,
        offer_resend_s=10.0,
        wave_max_s=20.0,
        window_every=0,  # windows are minutes wide: tested on virtual time (test_ota_component)
        resolve_alerts_after_s=60.0,  # a bound: the operator resolves once the node deferred
        phase_timeout_s=150.0,
        agent_kb=60,
        # Presses while the canary runs: beside the idle nodes, on the canary node as it
        # comes back from its restart (as soon as its button loop runs). A
        # press at the moment the agent stops to restart is left to the 1,000-node bench:
        # one not yet past its 30 ms debounce when the panic loop stops is lost today
        # (docs/benchmarks.md, `bench ota`).
        canary_presses=2,
        canary_press_moments=("idle", "restarting", "rolling_back"),
        work_dir=tmp_path,
    )
    result = asyncio.run(asyncio.wait_for(run_ota_bench(config), 400))

    canary = result["canary"]
    assert canary["campaign_state"] == "aborted", canary
    assert "failed or rolled back" in canary["reason"]
    assert not canary["later_waves_started"], canary["nodes_in_waves"]
    assert canary["rolled_back"] == 1  # ota-00000, serial SIM-000000: the broken batch

    rollout = result["rollout"]
    # Node 7 runs on a low battery and keeps deferring; every other node took 1.2.0.
    assert rollout["eligible"] == 19
    assert rollout["healthy"] == 19, rollout["counts"]
    assert rollout["nodes_on_version_locally"] == {"1.2.0": 19, "1.0.0": 1}
    assert rollout["rolled_back"] == 0
    assert rollout["alerts_pressed"] == 1
    assert rollout["alerts_resolved"] == 1
    deferred = result["deferred_events_by_reason"]
    assert deferred.get("alert_active", 0) >= 1
    assert deferred.get("battery_low", 0) >= 1

    moved = result["bytes"]
    assert moved["installs"] == 19
    assert moved["via_delta"] == 19  # including the node that rolled 1.1.0 back (1.0.0 → 1.2.0)
    assert moved["delta_share_of_full"] < 0.10

    assert result["panic"]["presses"] >= 1
    assert result["panic"]["lost"] == 0
    moments = result["panic"]["by_moment"]
    assert moments["idle"] == "2/2"
    assert moments["restarting"] == "1/1"  # the canary node, as its new agent starts
