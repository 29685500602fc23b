"""City scenario files: fleets by kind and district, the new steps, and what is refused.

A scenario with a step the run cannot carry out, a district that does not
exist or a time outside the run is refused before anything starts, with the
problem named and exit code 2; so is a fleet the open-files limit cannot hold.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulators.scenario import (
    FDS_PER_NODE,
    SCENARIO_DIR,
    BrokerRestartStep,
    NetworkCutStep,
    NodeOfflineStep,
    PanicStormStep,
    PowerLossStep,
    PressStep,
    ScenarioError,
    check_runnable,
    ensure_fd_limit,
    fds_needed,
    load_scenario,
    parse_scenario,
    scale_fleet,
)

SMOKE = SCENARIO_DIR / "smoke.yaml"
LAHORE = SCENARIO_DIR / "lahore-city.yaml"


def city(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tiny-city",
        "start": "2025-12-01T07:00:00Z",
        "duration_s": 60,
        "districts": ["gulberg", "ravi"],
        "sites": [
            {"group": "pillar", "kind": "panic_pillar", "count": 4,
             "districts": ["gulberg", "ravi"], "panel_w": 100, "capacity_ah": 60,
             "provisioned": True},
            {"group": "cam", "kind": "camera_node", "count": 2, "district": "ravi",
             "panel_w": 300, "capacity_ah": 150, "provisioned": True},
        ],
    }  # fmt: skip
    data.update(changes)
    return data


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return city(steps=list(items))


def test_the_smoke_scenario_has_every_kind_of_node_and_step() -> None:
    scenario = load_scenario(SMOKE)
    assert {g.kind for g in scenario.sites} == {"panic_pillar", "camera_node", "mixed"}
    assert {type(s) for s in scenario.steps} == {
        PressStep, NetworkCutStep, PanicStormStep, NodeOfflineStep, BrokerRestartStep,
        PowerLossStep,
    }  # fmt: skip
    assert scenario.duration_h * 3600 == pytest.approx(26)
    assert scenario.cut_districts == ("lahore-gulberg",)


def test_lahore_has_333_pillars_and_camera_nodes_across_ten_districts() -> None:
    scenario = load_scenario(LAHORE)
    pillars = sum(g.count for g in scenario.sites if g.has_button)
    assert pillars == 333
    assert scenario.node_count == 3000
    assert len(scenario.district_names) == 10
    assert {s.action for s in scenario.steps} >= {
        "panic_storm", "network_cut", "broker_restart", "power_loss", "node_offline",
    }  # fmt: skip


def test_sites_are_spread_over_their_districts_in_turn() -> None:
    scenario = parse_scenario(city())
    pillar = scenario.sites[0]
    assert [pillar.district_of(i) for i in range(4)] == ["gulberg", "ravi", "gulberg", "ravi"]
    assert scenario.nodes_in("ravi") == 4
    storm = PanicStormStep(action="panic_storm", at_h=0, district="ravi", presses=3, within_s=1)
    # Camera nodes have no panic button: a storm only presses pillars.
    assert [(g.group, i) for g, i in scenario.matching(storm, buttons=True)] == [
        ("pillar", 1), ("pillar", 3),
    ]  # fmt: skip


def test_nodes_scales_every_group_in_proportion() -> None:
    scenario = load_scenario(LAHORE)
    bigger = scale_fleet(scenario, 8333)
    assert bigger.node_count == 8333
    assert [g.count for g in bigger.sites] == [647, 278, 7408]
    smaller = scale_fleet(load_scenario(SMOKE), 13)
    assert smaller.node_count == 13


def test_seconds_and_hours_both_work_but_not_together() -> None:
    scenario = parse_scenario(steps({"action": "press", "group": "pillar", "at_s": 36}))
    assert scenario.steps[0].at_h == pytest.approx(0.01)
    with pytest.raises(ScenarioError, match="give at_h or at_s, not both"):
        parse_scenario(steps({"action": "press", "group": "pillar", "at_s": 1, "at_h": 0}))


@pytest.mark.parametrize(
    ("step", "named"),
    [
        ({"action": "meteor", "at_s": 1}, "action"),
        ({"action": "network_cut", "district": "atlantis", "at_s": 1, "duration_s": 5},
         "no district 'atlantis'"),
        ({"action": "power_loss", "district": "ravi", "group": "nope", "at_s": 1}, "no site group"),
        ({"action": "panic_storm", "district": "gulberg", "group": "cam", "presses": 3,
          "at_s": 1, "within_s": 2}, "no node is in both"),
        ({"action": "panic_storm", "group": "cam", "presses": 3, "at_s": 1, "within_s": 2},
         "no panic pillar"),
        ({"action": "press", "group": "cam", "at_s": 1}, "no panic button"),
        ({"action": "press", "group": "pillar", "at_s": 61}, "after the end"),
        ({"action": "press", "group": "pillar", "at_s": -1}, "must not be negative"),
        ({"action": "press", "group": "pillar", "at_s": "soon"}, "number of seconds"),
        ({"action": "network_cut", "district": "ravi", "at_s": 50, "duration_s": 20},
         "ends at 70 s, after the scenario's end (60 s)"),
        ({"action": "node_offline", "group": "pillar", "at_s": 50, "duration_s": 30}, "ends at"),
        ({"action": "broker_restart", "at_s": 59, "down_s": 5}, "ends at 64 s"),
        ({"action": "panic_storm", "presses": 5, "at_s": 50, "within_s": 20}, "ends at"),
        ({"action": "node_offline", "group": "pillar", "at_s": 5}, "duration_s"),
        ({"action": "node_offline", "index": 1, "at_s": 5, "duration_s": 1}, "index needs a group"),
        ({"action": "network_cut", "at_s": 5, "duration_s": 1}, "district"),
        ({"action": "panic_storm", "presses": 0, "at_s": 1, "within_s": 2}, "presses"),
    ],
)  # fmt: skip
def test_a_bad_step_is_refused_naming_the_problem(step: dict[str, Any], named: str) -> None:
    with pytest.raises(ScenarioError, match="bad scenario") as caught:
        parse_scenario(steps(step))
    assert named in str(caught.value)


def test_a_site_group_outside_the_declared_districts_is_refused() -> None:
    data = city()
    data["sites"][1]["district"] = "model-town"
    with pytest.raises(ScenarioError, match="'model-town' is not one of the scenario's districts"):
        parse_scenario(data)
    data = city()
    data["sites"][1]["districts"] = ["ravi"]
    with pytest.raises(ScenarioError, match="district or districts, not both"):
        parse_scenario(data)


def test_a_broker_restart_needs_a_broker_the_scenario_owns() -> None:
    scenario = parse_scenario(steps({"action": "broker_restart", "at_s": 5, "down_s": 2}))
    check_runnable(scenario, owns_broker=True)
    with pytest.raises(ScenarioError, match=r"steps\[0\] \(broker_restart\).*--broker-url"):
        check_runnable(scenario, owns_broker=False)


def test_too_few_open_files_names_how_many_are_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = scale_fleet(load_scenario(LAHORE), 8333)
    needed = fds_needed(scenario)
    assert needed >= 8333 * FDS_PER_NODE
    monkeypatch.setattr("simulators.bench_harness.raise_fd_limit", lambda wanted: 20_000)
    with pytest.raises(ScenarioError) as caught:
        ensure_fd_limit(scenario)
    message = str(caught.value)
    assert f"need {needed} open files" in message
    assert "hard limit (ulimit -Hn) is 20000" in message
    assert "split it over processes (--processes 2" in message  # what auto would do
    fits = int(re.search(r"--nodes (\d+) or fewer", message).group(1))  # type: ignore[union-attr]
    assert fds_needed(scale_fleet(load_scenario(LAHORE), fits)) <= 20_000
    assert fds_needed(scale_fleet(load_scenario(LAHORE), fits + 1)) > 20_000


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "sim", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_sim_command_refuses_a_broker_restart_on_an_external_broker_with_exit_2() -> None:
    result = _sim("--scenario", str(SMOKE), "--broker-url", "mqtt://127.0.0.1:1")
    assert result.returncode == 2
    assert "broker_restart" in result.stderr
    assert "--broker-url" in result.stderr


def test_the_sim_command_refuses_a_bad_district_and_a_bad_time_with_exit_2(tmp_path: Path) -> None:
    text = SMOKE.read_text(encoding="utf-8")
    bad_district = tmp_path / "district.yaml"
    bad_district.write_text(text.replace("district: lahore-gulberg, at_s: 3",
                                         "district: lahore-nowhere, at_s: 3"))  # fmt: skip
    result = _sim("--scenario", str(bad_district))
    assert result.returncode == 2
    assert "no district 'lahore-nowhere'" in result.stderr
    bad_time = tmp_path / "time.yaml"
    bad_time.write_text(text.replace("duration_s: 26", "duration_s: 10"))
    result = _sim("--scenario", str(bad_time))
    assert result.returncode == 2
    assert "after the end" in result.stderr or "after the scenario's end" in result.stderr
    result = _sim("--scenario", str(SMOKE), "--nodes", "2")
    assert result.returncode == 2
    assert "--nodes 2" in result.stderr
