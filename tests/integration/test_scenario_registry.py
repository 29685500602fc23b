"""Scenario steps are dispatched by their ``action`` through a registry, not by the runner.

The stories: every step kind a scenario file can name has a handler; an
action registered twice is refused; a run whose step has no handler is
refused before a node boots; and a step kind that only this test knows —
a siren on one pillar — is played by the unchanged runner at its time, its
waiting part spawned, and its figures land in the step's report.
"""

from __future__ import annotations

import asyncio
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from fleet_server.broker import ManagedBroker
from simulators.scenario import (
    STEP_KINDS,
    AnyStep,
    ScenarioError,
    ScenarioRunner,
    StepModel,
    StepRuntime,
    parse_scenario,
    register_step,
)
from simulators.scenario import registry as registry_module


class SirenStep(StepModel):
    """A step kind the scenario package does not ship: sound one pillar's siren."""

    action: Literal["test_siren"]
    group: str
    index: int = 0
    seconds: float = 1.0


def one_pillar(duration_s: float = 3.0) -> dict[str, Any]:
    return {
        "name": "siren-test",
        "start": "2025-12-01T07:00:00Z",
        "duration_s": duration_s,
        "telemetry_interval_s": 60,
        "power_interval_s": 60,
        "sites": [
            {"group": "pillar", "kind": "panic_pillar", "count": 1, "district": "gulberg",
             "panel_w": 100, "capacity_ah": 60, "mains": True, "provisioned": True},
        ],
    }  # fmt: skip


def with_steps(data: dict[str, Any], *steps: StepModel) -> Any:
    """The scenario with `steps` put in unvalidated (a kind the file format does not list)."""
    return parse_scenario(data).model_copy(update={"steps": steps})


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The registry with the built-in kinds, restored after the test."""
    kinds = dict(STEP_KINDS)
    monkeypatch.setattr(registry_module, "STEP_KINDS", kinds)
    return kinds


def test_every_action_a_scenario_file_can_name_has_a_handler() -> None:
    actions = {
        typing.get_args(model.model_fields["action"].annotation)[0]
        for model in typing.get_args(AnyStep)
    }
    assert actions == set(STEP_KINDS)


def test_an_action_registered_twice_is_refused(fresh_registry: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError, match="'press' is registered twice"):

        @register_step("press")
        def _again(
            run: StepRuntime, step: Any, *, order: int, now_h: float, record: dict[str, Any]
        ) -> None:
            pass


def test_a_step_with_no_handler_is_refused_before_any_node_boots(
    tmp_path: Path, fresh_registry: dict[str, Any]
) -> None:
    scenario = with_steps(one_pillar(), SirenStep(action="test_siren", at_h=0.0, group="pillar"))
    with pytest.raises(ScenarioError, match="no handler registered for step action 'test_siren'"):
        ScenarioRunner(scenario, broker_url="mqtt://127.0.0.1:1", data_dir=tmp_path)
    assert not (tmp_path / "sim-pillar-000").exists()


@pytest.mark.broker
def test_a_new_step_kind_runs_by_registering_a_handler_alone(
    broker: ManagedBroker, tmp_path: Path, fresh_registry: dict[str, Any]
) -> None:
    sounded: list[tuple[str, float]] = []

    def siren_report(run: StepRuntime, step: SirenStep, *, order: int, out: dict[str, Any]) -> None:
        out["sounded"] = len(sounded)

    @register_step("test_siren", report=siren_report)
    def siren(
        run: StepRuntime, step: SirenStep, *, order: int, now_h: float, record: dict[str, Any]
    ) -> Any:
        site = run.sites[run.scenario.node_id(step.group, step.index)]
        record["node_id"] = site.node_id

        async def sound() -> None:
            run.book.active[order] = f"siren {site.node_id}"
            sounded.append((site.node_id, run.clock.elapsed()))
            await run.sleep_until(step.at_s + step.seconds)
            record["connected_after"] = site.connected
            run.book.active.pop(order, None)

        return sound()

    scenario = with_steps(
        one_pillar(), SirenStep(action="test_siren", at_h=1.0 / 3600, group="pillar")
    )
    runner = ScenarioRunner(scenario, broker_url=broker.url, data_dir=tmp_path, drain_s=5.0)
    report = asyncio.run(runner.run()).to_json()

    assert [node for node, _ in sounded] == ["sim-pillar-000"]
    assert sounded[0][1] >= 1.0  # simulated seconds: not before its time
    (step,) = report["steps"]
    assert step == {
        "step": 0,
        "action": "test_siren",
        "at_s": 1.0,
        "node_id": "sim-pillar-000",
        "connected_after": True,
        "sounded": 1,
    }
