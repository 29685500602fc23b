"""A fleet too big for one process's open files runs in several, and means the same.

`nigehbaan sim --scenario F --processes N|auto` deals the fleet's nodes out to
N child processes. The stories here: the shards between them hold every node
once; a storm, an offline wave or a power cut with ``count`` picks the same
global nodes in any number of processes as in one; auto picks one process
whenever the fleet fits and the fewest that fit otherwise; a bad
``--processes`` is refused with exit 2 and the numbers; the reports merge
into one that reads like a single process's; a shard that dies stops the run
naming itself; and a small city through a storm, a network cut and a broker
restart in two processes loses no press and agrees with the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet_server.broker import ManagedBroker
from simulators.scenario import (
    FDS_SPARE,
    SCENARIO_DIR,
    NodeOfflineStep,
    PanicStormStep,
    Scenario,
    ScenarioError,
    ScenarioRunner,
    Shard,
    fds_needed,
    fleet_positions,
    load_scenario,
    parse_scenario,
    pick_targets,
    plan_processes,
    scale_fleet,
    shard_fds_needed,
    storm_plan,
)
from simulators.scenario_merge import merge_active, merge_reports, merge_step
from simulators.scenario_shards import ShardedRun, ShardError

LAHORE = SCENARIO_DIR / "lahore-city.yaml"
NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]


def tiny_city(**changes: Any) -> dict[str, Any]:
    """Ten nodes in two districts: a storm with `count`, a cut, a broker restart, a wave."""
    data: dict[str, Any] = {
        "name": "tiny-shards",
        "start": "2025-12-01T07:00:00Z",
        "duration_s": 12,
        "seed": 11,
        "node_prefix": "tiny",
        "power_interval_s": 2,
        "telemetry_interval_s": 5,
        "districts": ["gulberg", "ravi"],
        "sites": [
            {"group": "pillar", "kind": "panic_pillar", "count": 6,
             "districts": ["gulberg", "ravi"], "panel_w": 100, "capacity_ah": 60,
             "mains": True, "provisioned": True},
            {"group": "cam", "kind": "camera_node", "count": 4, "districts": ["gulberg", "ravi"],
             "plates_per_min": 30, "panel_w": 300, "capacity_ah": 150, "mains": True,
             "provisioned": True},
        ],
        "steps": [
            {"action": "panic_storm", "count": 4, "presses": 6, "at_s": 1, "within_s": 2},
            {"action": "network_cut", "district": "gulberg", "at_s": 2, "duration_s": 2.5},
            {"action": "panic_storm", "district": "gulberg", "presses": 2, "at_s": 2.5,
             "within_s": 1},
            {"action": "broker_restart", "at_s": 7.5, "down_s": 1.5},
            {"action": "press", "group": "pillar", "index": 3, "at_s": 8},
            {"action": "node_offline", "group": "cam", "count": 2, "at_s": 2, "duration_s": 2},
        ],
    }  # fmt: skip
    data.update(changes)
    return data


def _runner(scenario: Scenario, shard: Shard | None, tmp_path: Path) -> ScenarioRunner:
    """A runner that is built but never started: its sites are what a process would run."""
    return ScenarioRunner(
        scenario,
        broker_url="mqtt://127.0.0.1:1",
        data_dir=tmp_path,
        broker=ManagedBroker.loopback(tmp_path / "unused"),
        shard=shard,
    )


# ------------------------------------------------------------- dealing


def test_the_shards_hold_every_node_exactly_once_and_count_their_own_files() -> None:
    scenario = scale_fleet(load_scenario(LAHORE), 8333)
    positions = [p for p, _, _ in fleet_positions(scenario)]
    assert positions == list(range(8333))
    shards = [Shard(k, 2) for k in range(2)]
    owned = [[p for p in positions if shard.owns(p)] for shard in shards]
    assert sorted(owned[0] + owned[1]) == positions
    assert [len(o) for o in owned] == [4167, 4166]
    files = [shard_fds_needed(scenario, shard) for shard in shards]
    assert sum(files) == fds_needed(scenario) + FDS_SPARE  # each process keeps its own spare
    assert shard_fds_needed(scenario, Shard(0, 1)) == fds_needed(scenario)
    with pytest.raises(ValueError, match="shard 2 of 2"):
        Shard(2, 2)


def test_a_storm_picks_the_same_pillars_at_the_same_moments_in_any_number_of_processes(
    tmp_path: Path,
) -> None:
    scenario = parse_scenario(tiny_city())
    order = 0
    storm = scenario.steps[order]
    assert isinstance(storm, PanicStormStep)
    plan = storm_plan(scenario, storm, order)
    # What one process has always drawn: `count` pillars (seeded by seed and step), then
    # all the moments, then one of those pillars per moment.
    pool = scenario.matching(storm, buttons=True)
    rng = random.Random(f"{scenario.seed}:{order}")
    pool = [pool[i] for i in sorted(rng.sample(range(len(pool)), 4))]
    rng = random.Random(f"{scenario.seed}:storm:{order}")
    offsets = sorted(rng.uniform(0.0, storm.within_s) for _ in range(storm.presses))
    single = []
    for offset in offsets:
        group, index = rng.choice(pool)
        single.append((offset, scenario.node_id(group.group, index)))
    assert plan == single
    assert {node for _, node in plan} <= {scenario.node_id(g.group, i) for g, i in pool}
    # Each of three shards presses exactly its own part of the plan.
    runners = [_runner(scenario, Shard(k, 3), tmp_path / str(k)) for k in range(3)]
    mine = [[(o, n) for o, n in plan if n in r.sites] for r in runners]
    assert sorted(p for part in mine for p in part) == sorted(plan)
    assert all(not set(a) & set(b) for a in mine for b in mine if a is not b)


def test_a_wave_with_count_is_the_same_global_set_split_between_the_shards(
    tmp_path: Path,
) -> None:
    scenario = parse_scenario(tiny_city())
    order, wave = 5, scenario.steps[5]
    assert isinstance(wave, NodeOfflineStep)
    picked = {scenario.node_id(g.group, i) for g, i in pick_targets(scenario, wave, order,
                                                                    buttons=False)}  # fmt: skip
    assert len(picked) == 2
    whole = _runner(scenario, None, tmp_path / "one")
    assert {s.node_id for s in whole.targets(wave, order, buttons=False)} == picked
    parts = [
        {s.node_id for s in _runner(scenario, Shard(k, 2), tmp_path / str(k)).targets(
            wave, order, buttons=False)}
        for k in range(2)
    ]  # fmt: skip
    assert parts[0] | parts[1] == picked
    assert not parts[0] & parts[1]


# ----------------------------------------------------------- how many


def test_auto_is_one_process_when_the_fleet_fits_and_the_fewest_that_fit_otherwise() -> None:
    lahore = load_scenario(LAHORE)
    assert plan_processes(lahore, requested=None, hard=20_000) == 1
    city = scale_fleet(lahore, 8333)
    assert fds_needed(city) > 20_000
    assert plan_processes(city, requested=None, hard=20_000) == 2
    # The fewest that fit, each under the hard limit less 10 %: here 5, as 4 do not.
    assert plan_processes(city, requested=None, hard=8_000) == 5
    assert max(shard_fds_needed(city, Shard(k, 5)) for k in range(5)) <= 7_200
    assert max(shard_fds_needed(city, Shard(k, 4)) for k in range(4)) > 7_200
    assert plan_processes(city, requested=3, hard=20_000) == 3


@pytest.mark.parametrize(
    ("requested", "hard", "named"),
    [
        (0, 20_000, "--processes 0: give 1 to 16"),
        (17, 20_000, "--processes 17: give 1 to 16"),
        (2, 8_000, "use --processes 5 or more"),
        (None, 1_000, "even 16 processes would need up to"),
    ],
)
def test_processes_that_cannot_hold_the_fleet_are_refused_with_the_numbers(
    requested: int | None, hard: int, named: str
) -> None:
    city = scale_fleet(load_scenario(LAHORE), 8333)
    with pytest.raises(ScenarioError) as caught:
        plan_processes(city, requested=requested, hard=hard)
    assert named in str(caught.value)


def _sim_with_hard_limit(hard: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`nigehbaan sim` with its hard open-files limit lowered (anyone may lower it)."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return subprocess.run(
        [*NIGEHBAAN, "sim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lower,
    )


@pytest.mark.parametrize(
    ("processes", "named"),
    [
        ("0", "--processes 0: give 1 to 16"),
        ("17", "--processes 17: give 1 to 16"),
        ("lots", "--processes 'lots': give a number"),
        ("2", "--processes 2: each process would hold up to 1500 nodes"),
        ("1", "split it over processes (--processes 4"),
    ],
)
def test_the_sim_command_refuses_bad_processes_with_exit_2(processes: str, named: str) -> None:
    result = _sim_with_hard_limit(4096, "--scenario", str(LAHORE), "--processes", processes)
    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------- merge


def test_step_records_merge_as_one_process_would_write_them() -> None:
    positions = {"n-a": 0, "n-b": 1, "n-c": 2}
    merged = merge_step(
        [
            {"step": 3, "action": "node_offline", "at_s": 2.0, "target": "cam", "stopped": 1,
             "nodes": ["n-c"], "drained": True, "drained_after_s": 0.4, "outbox_after": 0},
            {"step": 3, "action": "node_offline", "at_s": 2.0, "target": "cam", "stopped": 2,
             "nodes": ["n-b", "n-a"], "drained": False, "drained_after_s": None,
             "outbox_after": 3},
        ],
        positions,
    )  # fmt: skip
    assert merged == {
        "step": 3, "action": "node_offline", "at_s": 2.0, "target": "cam", "stopped": 3,
        "nodes": ["n-a", "n-b", "n-c"], "drained": False, "drained_after_s": None,
        "outbox_after": 3,
    }  # fmt: skip
    many = merge_step([{"step": 1, "nodes": [f"x{i}" for i in range(30)]}] * 2, {})
    assert many["nodes"] == 60  # listed up to 50, counted beyond
    restart = merge_step(
        [{"step": 5, "connected_before": 4, "all_reconnected_after_s": 1.5, "down_for_s": 1.6},
         {"step": 5, "connected_before": 6, "all_reconnected_after_s": 2.5, "down_for_s": 1.5}],
        {},
    )  # fmt: skip
    assert (restart["connected_before"], restart["all_reconnected_after_s"]) == (10, 2.5)
    assert restart["down_for_s"] == 1.6


def test_steps_in_progress_are_shown_once_with_their_counts_added() -> None:
    merged = merge_active(
        [
            [[2, "node_offline 48 in district ravi cam"], [1, "network_cut gulberg"]],
            [[1, "network_cut gulberg"], [2, "node_offline 52 in district ravi cam"]],
        ]
    )
    assert merged == [[1, "network_cut gulberg"], [2, "node_offline 100 in district ravi cam"]]


def test_reports_merge_into_the_shape_of_one_with_processes(tmp_path: Path) -> None:
    scenario = parse_scenario(tiny_city())

    def shard_report(nodes: list[str], presses: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "nodes": len(nodes), "sim_hours": 0.0033, "wall_s": 20.0,
            "sites": [{"node_id": n, "dark_periods": []} for n in nodes],
            "presses": presses,
            "steps": [{"step": 0, "action": "panic_storm", "pillars": len(nodes)}],
            "totals": {"nodes": len(nodes), "nodes_by_kind": {"panic_pillar": len(nodes)},
                       "districts": 2, "presses_recorded": len(presses),
                       "duration_s": 20.0, "sim_seconds": 12.0},
        }  # fmt: skip

    press = {"node_id": "tiny-pillar-001", "at_s": 1.5, "sent": True, "step": 0}
    early = {"node_id": "tiny-pillar-000", "at_s": 1.2, "sent": True, "step": 0}
    report = merge_reports(
        scenario,
        [
            shard_report(["tiny-pillar-000", "tiny-pillar-002"], [early]),
            shard_report(["tiny-pillar-001"], [press]),
        ],
        wall_s=25.0,
        parent_steps=[{"step": 3, "action": "broker_restart", "at_s": 7.5, "down_for_s": 1.7}],
        shards=[{"shard": 0}, {"shard": 1}],
    )
    assert report["processes"] == 2
    assert [s["node_id"] for s in report["sites"]] == [
        "tiny-pillar-000", "tiny-pillar-001", "tiny-pillar-002",
    ]  # fmt: skip
    assert [p["node_id"] for p in report["presses"]] == ["tiny-pillar-000", "tiny-pillar-001"]
    assert report["presses_sent"] == 2
    assert report["steps"] == [
        {"step": 0, "action": "panic_storm", "pillars": 3},
        # The broker the parent restarted: its own measurement.
        {"step": 3, "action": "broker_restart", "at_s": 7.5, "down_for_s": 1.7},
    ]
    assert report["totals"]["nodes_by_kind"] == {"panic_pillar": 3}
    assert report["totals"]["districts"] == 2
    assert report["totals"]["duration_s"] == 25.0
    assert {"scenario", "nodes", "speed", "sim_hours", "wall_s", "went_dark", "totals",
            "steps", "sites", "presses"} <= set(report)  # fmt: skip


# -------------------------------------------------------- failing shards


class _BrokenScenarioRun(ShardedRun):
    """Hands the children a file they cannot load: each fails as soon as it starts."""

    def _write_scenario(self) -> Path:
        path = self.work_dir / "broken.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}", encoding="utf-8")
        return path


def test_a_shard_that_fails_ends_the_run_naming_itself_and_its_stderr(tmp_path: Path) -> None:
    scenario = parse_scenario(tiny_city(steps=[]))
    lines: list[str] = []
    run = _BrokenScenarioRun(
        scenario,
        processes=2,
        broker_url="mqtt://127.0.0.1:1",
        broker=None,
        work_dir=tmp_path,
        echo=lines.append,
    )
    with pytest.raises(ShardError) as caught:
        asyncio.run(run.run())
    message = str(caught.value)
    assert "shard 1/2" in message or "shard 2/2" in message
    assert "bad scenario" in message  # the end of its stderr, with the reason
    assert all(c.process.poll() is not None for c in run.children)  # none left running


@pytest.mark.broker
def test_a_shard_that_dies_mid_run_stops_the_others(broker: ManagedBroker, tmp_path: Path) -> None:
    scenario = parse_scenario(tiny_city(steps=[], duration_s=30))
    run = ShardedRun(
        scenario,
        processes=2,
        broker_url=broker.url,
        broker=None,
        work_dir=tmp_path,
        summary_every_s=1.0,
        echo=lambda line: None,
    )

    async def kill_the_second_once_time_runs() -> None:
        task = asyncio.ensure_future(run.run())
        for _ in range(1200):  # bounded: 60 s for the shards to connect
            if not run.clock.paused or task.done():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        run.children[1].process.kill()
        await task

    with pytest.raises(ShardError, match=r"shard 2/2 \(pid \d+\) exited with code -9"):
        asyncio.run(kill_the_second_once_time_runs())
    assert all(c.process.poll() is not None for c in run.children)


# ---------------------------------------------------------- end to end


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_small_city_in_two_processes_loses_no_press_and_agrees_with_the_server(
    tmp_path: Path,
) -> None:
    scenario_file = tmp_path / "tiny.json"
    scenario_file.write_text(json.dumps(tiny_city()), encoding="utf-8")
    report_file = tmp_path / "report.json"
    result = subprocess.run(
        [*NIGEHBAAN, "sim", "--scenario", str(scenario_file), "--processes", "2",
         "--with-server", "--report", str(report_file), "--data-dir", str(tmp_path / "run"),
         "--summary-every", "2"],
        capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    print(result.stderr[-4000:])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_file.read_text(encoding="utf-8"))
    totals = report["totals"]
    assert report["processes"] == 2
    assert [s["nodes"] for s in report["shards"]] == [5, 5]
    assert report["nodes"] == totals["nodes"] == 10
    assert totals["presses_recorded"] == totals["presses_delivered"] >= 6
    assert totals["presses_lost"] == 0
    assert report["server"]["matches"], report["server"]
    assert report["server"]["panic_events"] == totals["presses_recorded"]
    # Stderr carries one combined summary line per tick, not one per shard.
    summaries = [line for line in result.stderr.splitlines() if line.startswith("t=")]
    assert summaries
    assert all("connected" in line and "/10 " in line for line in summaries)

    # The storm pressed the pillars one process would have, at the same moments.
    scenario = parse_scenario(tiny_city())
    storm = scenario.steps[0]
    assert isinstance(storm, PanicStormStep)
    planned = storm_plan(scenario, storm, 0)
    pressed = [p for p in report["presses"] if p["scenario_step"] == 0]
    assert sorted(p["node_id"] for p in pressed) == sorted(n for _, n in planned)
    assert {p["node_id"] for p in pressed} <= {
        scenario.node_id(g.group, i) for g, i in pick_targets(scenario, storm, 0, buttons=True)
    }

    steps = {s["step"]: s for s in report["steps"]}
    assert steps[0]["pillars"] == 4  # the `count`, summed over the shards
    cut, restart, press, wave = steps[1], steps[3], steps[4], steps[5]
    assert cut["nodes"] == 5  # gulberg: pillars 0, 2, 4 and cams 0, 2
    assert cut["refused_connects"] >= 1
    assert cut["reconnected_after_s"] is not None
    assert restart["down_for_s"] >= 1.5  # done once, by the parent
    assert restart["all_reconnected_after_s"] is not None
    assert 0 < restart["connected_before"] <= 10  # counted by each shard, added up
    assert (press["node_id"], press["times"], press["presses_recorded"]) == (
        "tiny-pillar-003", 1, 1,
    )  # fmt: skip
    assert wave["stopped"] == 2
    assert wave["drained"] is True
