"""Scenario files: the packaged power week loads; a bad file is refused, its problem named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulators.scenario import (
    SCENARIO_DIR,
    MainsStep,
    PressStep,
    ScenarioError,
    load_scenario,
    parse_scenario,
    plan_processes,
)

POWER_WEEK = SCENARIO_DIR / "power-week.yaml"


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tiny",
        "start": "2025-12-01T19:00:00Z",
        "duration_h": 24,
        "sites": [{"group": "lhr", "count": 2, "panel_w": 300, "capacity_ah": 100,
                   "provisioned": True}],
    }  # fmt: skip
    data.update(changes)
    return data


def test_the_power_week_is_a_hundred_sites_with_a_cloudy_spell() -> None:
    scenario = load_scenario(POWER_WEEK)
    assert scenario.node_count == 100
    assert scenario.duration_h == 168
    assert scenario.speed * 60 >= 7 * 24 * 3600  # a week in about a minute
    assert [(s.from_day, s.to_day) for s in scenario.weather.spells] == [(2, 5)]
    assert {type(step) for step in scenario.steps} == {PressStep, MainsStep}
    under = {g.group for g in scenario.sites if not g.provisioned}
    assert under == {"lhr-under", "pew-under"}
    assert scenario.node_id("lhr-under", 3) == "pw-lhr-under-003"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"colour": "red"}, "colour"),
        ({"duration_h": 0}, "duration_h"),
        ({"start": "2025-12-01T19:00:00"}, "time zone"),
        ({"steps": [{"action": "explode", "at_h": 1, "group": "lhr"}]}, "action"),
        ({"steps": [{"action": "press", "at_h": 1, "group": "khi"}]}, "no site group 'khi'"),
        ({"steps": [{"action": "press", "at_h": 1, "group": "lhr", "index": 5}]}, "sites 0..1"),
        ({"steps": [{"action": "press", "at_h": 99, "group": "lhr"}]}, "after the end"),
        ({"steps": [{"action": "mains", "at_h": 1, "group": "lhr"}]}, "present"),
        ({"weather": {"spells": [{"from_day": 3, "to_day": 2, "cloud_cover": 1}]}}, "to_day"),
        ({"weather": {"spells": [{"from_day": 1, "to_day": 2, "cloud_cover": 3}]}}, "cloud_cover"),
        (
            {
                "sites": [
                    {
                        "group": "x",
                        "count": 1,
                        "panel_w": 1,
                        "capacity_ah": 1,
                        "provisioned": True,
                        "city": "atlantis",
                    }
                ]
            },
            "unknown city",
        ),
        ({"sites": []}, "sites"),
    ],
)
def test_a_bad_scenario_names_its_problem(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ScenarioError, match="bad scenario") as caught:
        parse_scenario(minimal(**changes))
    assert named in str(caught.value)


def test_bad_files_are_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(listed)


def test_the_sim_command_refuses_a_bad_scenario_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: tiny\nstart: 2025-12-01T19:00:00Z\nduration_h: 1\nsites: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "sim", "--scenario", str(bad),
         "--broker-url", "mqtt://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "bad scenario" in result.stderr
    assert "sites" in result.stderr


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.node_count > 0
    assert scenario.name == path.stem


def test_lahore_full_is_the_city_as_it_stands_and_splits_itself_on_this_limit() -> None:
    scenario = load_scenario(SCENARIO_DIR / "lahore-full.yaml")
    pillars = sum(g.count for g in scenario.sites if g.has_button)
    cameras = sum(g.count * g.cameras for g in scenario.sites if g.has_camera)
    assert (scenario.node_count, pillars) == (8_333, 333)
    assert cameras >= 8_000
    assert plan_processes(scenario, requested=None, hard=20_000) == 2
