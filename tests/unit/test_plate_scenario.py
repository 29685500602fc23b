"""A scenario mixes camera nodes with rendered scenes through the real pipeline and camera
nodes with cheap synthetic plate reads (`scenes` on a site group)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hardware.sim_clock import ScaledClock
from simulators.scenario import ScenarioError, parse_scenario
from simulators.scenario.nodes import build_weather, make_site


def scenario(**group: Any) -> dict[str, Any]:
    site = {"panel_w": 300, "capacity_ah": 100, "provisioned": True}
    return {
        "name": "plates",
        "start": "2025-12-01T19:00:00Z",
        "duration_h": 1,
        "sites": [
            {"group": "gate", "count": 2, "kind": "camera_node", "scenes": "rendered",
             "cameras": 2, **site},
            {"group": "city", "count": 3, "kind": "camera_node", **site},
            *([{"group": "x", "count": 1, **site, **group}] if group else []),
        ],
    }  # fmt: skip


def test_rendered_groups_run_the_real_pipeline_and_synthetic_groups_keep_the_cheap_path(
    tmp_path: Path,
) -> None:
    plan = parse_scenario(scenario())
    clock = ScaledClock(start=plan.start, speed=1.0)
    weather = build_weather(plan)
    sites = {
        g.group: make_site(
            plan,
            g,
            0,
            clock=clock,
            weather=weather,
            broker_url="mqtt://127.0.0.1:1883",
            relay_port=None,
            data_dir=tmp_path,
            overrides={},
        )
        for g in plan.sites
    }
    rendered, synthetic = sites["gate"], sites["city"]
    assert rendered.scene is None
    assert [c["id"] for c in rendered.config["cameras"]] == ["cam-0", "cam-1"]
    assert rendered.config["analytics"]["cam-1"]["reader"].endswith("RapidOcrReader")
    assert synthetic.scene is not None
    assert "cameras" not in synthetic.config


@pytest.mark.parametrize(
    ("group", "named"),
    [
        ({"kind": "panic_pillar", "scenes": "rendered"}, "camera_node or mixed"),
        ({"kind": "camera_node", "scenes": "rendered", "count": 9, "cameras": 2}, "at most 16"),
    ],
)
def test_rendered_scenes_are_refused_where_they_cannot_run(
    group: dict[str, Any], named: str
) -> None:
    with pytest.raises((ScenarioError, ValueError), match=named):
        parse_scenario(scenario(**group))
