"""Scenario files for `nigehbaan sim --scenario FILE`: a fleet, its weather, and timed steps.

A scenario is YAML (or JSON) validated by `Scenario`; the format reference
is docs/simulator.md:

- ``sites``: groups of simulated sites: their ``kind`` (``panic_pillar``,
  ``camera_node`` — cameras with synthetic plate reads, see
  `simulators.synthetic_scene` —, or ``mixed``, a pillar with cameras), their
  ``district`` or ``districts`` (sites spread over them in turn), and their
  power (city or lat/lon, panel, battery chemistry and capacity, mains, load
  by step, autonomy target, and ``provisioned``: the designer's verdict);
- ``districts``: the city's districts (steps and groups must use these);
- ``weather``: base cloud cover and cloudy spells;
- ``start``, ``duration_h`` (or ``duration_s``) and ``speed``: simulated
  time shared by every site's physics and every agent's power and telemetry
  loops; ``speed: 1`` is real time;
- ``steps``: timed actions, a discriminated union on ``action``: ``press``,
  ``mains``, ``panic_storm``, ``power_loss``, ``node_offline``,
  ``network_cut``, ``broker_restart``; each takes ``at_h`` or ``at_s``.

The package, one module per job:

- `simulators.scenario.model` — the file model and loading it;
- `simulators.scenario.plan` — the fleet's order, shards, seeded picks,
  fleet size and open-files limits;
- `simulators.scenario.nodes` — the simulated sites, and `start_node`, the
  one place a scenario builds an agent;
- `simulators.scenario.registry` — the step registry keyed by ``action``
  (`register_step`) and what a handler may use of the run (`StepRuntime`);
- `simulators.scenario.steps` — the built-in step kinds;
- `simulators.scenario.report` — the live summary line and the JSON report;
- `simulators.scenario.runner` — `ScenarioRunner`, the run loop.

A new step kind is a `StepModel` subclass in `AnyStep` and a handler
registered for its action; the runner is not edited (docs/simulator.md).

Errors: `ScenarioError` (a bad file or a step the run cannot do, every
problem named), the one root of the package.
"""

from __future__ import annotations

from simulators.scenario.model import (
    SCENARIO_DIR,
    AnyStep,
    BrokerRestartStep,
    MainsStep,
    NetworkCutStep,
    NodeOfflineStep,
    PanicStormStep,
    PowerLossStep,
    PressStep,
    Scenario,
    ScenarioError,
    SiteGroup,
    Step,
    StepModel,
    TargetedStep,
    load_scenario,
    parse_scenario,
)
from simulators.scenario.nodes import KIND_CAPABILITIES, PressResult, SimSite, start_node
from simulators.scenario.plan import (
    FD_HEADROOM,
    FDS_PER_NODE,
    FDS_PER_RELAYED_NODE,
    FDS_SPARE,
    MAX_PROCESSES,
    Shard,
    check_runnable,
    ensure_fd_limit,
    fds_needed,
    fleet_positions,
    pick_targets,
    plan_processes,
    processes_needed,
    scale_fleet,
    shard_fds_needed,
    storm_plan,
)
from simulators.scenario.registry import (
    STEP_KINDS,
    BrokerControl,
    StepBook,
    StepKind,
    StepRuntime,
    register_step,
    step_kind,
)
from simulators.scenario.report import ScenarioReport, format_summary
from simulators.scenario.runner import ScenarioRunner

__all__ = [
    "FDS_PER_NODE",
    "FDS_PER_RELAYED_NODE",
    "FDS_SPARE",
    "FD_HEADROOM",
    "KIND_CAPABILITIES",
    "MAX_PROCESSES",
    "SCENARIO_DIR",
    "STEP_KINDS",
    "AnyStep",
    "BrokerControl",
    "BrokerRestartStep",
    "MainsStep",
    "NetworkCutStep",
    "NodeOfflineStep",
    "PanicStormStep",
    "PowerLossStep",
    "PressResult",
    "PressStep",
    "Scenario",
    "ScenarioError",
    "ScenarioReport",
    "ScenarioRunner",
    "Shard",
    "SimSite",
    "SiteGroup",
    "Step",
    "StepBook",
    "StepKind",
    "StepModel",
    "StepRuntime",
    "TargetedStep",
    "check_runnable",
    "ensure_fd_limit",
    "fds_needed",
    "fleet_positions",
    "format_summary",
    "load_scenario",
    "parse_scenario",
    "pick_targets",
    "plan_processes",
    "processes_needed",
    "register_step",
    "scale_fleet",
    "shard_fds_needed",
    "start_node",
    "step_kind",
    "storm_plan",
]
