"""The step registry: what each scenario action does, keyed by the step's ``action``.

`ScenarioRunner` knows no step kind. When a step falls due it looks up the
`StepKind` registered for the step's ``action`` and calls its handler with
the run (a `StepRuntime`: the fleet's sites, the simulated clock, the
relays, the broker, and services such as `StepRuntime.press`), the step, its
position in the file and its report record. A handler does its immediate
work and returns None, or returns a coroutine for the part that waits in
simulated time (the runner spawns it and lets it finish before the drain).
A kind may also add figures to its step's report (``report=``).

Adding a step kind: a `simulators.scenario.model.StepModel` subclass with a
literal ``action`` in `AnyStep`, and a handler::

    @register_step("siren")
    def _siren(run: StepRuntime, step: SirenStep, *, order: int, now_h: float,
               record: dict[str, Any]) -> None: ...

The built-in kinds are in `simulators.scenario.steps`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from hardware.sim_clock import ScaledClock
from simulators.netcut import NetCut
from simulators.scenario.model import Scenario, ScenarioError, StepModel, TargetedStep
from simulators.scenario.nodes import PressResult, SimSite

StepWork = Coroutine[Any, Any, None]


class BrokerControl(Protocol):
    """The broker a scenario owns (`fleet_server.broker.ManagedBroker` fits)."""

    def kill(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class StepBook:
    """What the steps leave for the live summary line and the report."""

    # order → the step's report record (action, at_s, and what the handler adds).
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    # order → (district or None: all, start s, end s or -1: open-ended): presses in
    # the window count for a step that pressed nothing itself.
    windows: dict[int, tuple[str | None, float, float]] = field(default_factory=dict)
    # order → the only nodes whose presses count in its window (node_offline).
    window_nodes: dict[int, set[str]] = field(default_factory=dict)
    # order → what the step is doing now, for the summary line.
    active: dict[int, str] = field(default_factory=dict)

    def record(self, order: int, step: StepModel) -> dict[str, Any]:
        """The step's record, made on its first firing (a repeating step keeps one)."""
        action = getattr(step, "action", type(step).__name__)
        return self.records.setdefault(
            order, {"step": order, "action": action, "at_s": round(step.at_s, 2)}
        )


class StepRuntime(Protocol):
    """What a step handler may use of the run (`ScenarioRunner` is one)."""

    @property
    def scenario(self) -> Scenario: ...

    @property
    def sites(self) -> dict[str, SimSite]:
        """This process's sites by node id (a shard holds only its own)."""

    @property
    def clock(self) -> ScaledClock: ...

    @property
    def relays(self) -> dict[str, NetCut]:
        """The network-cut relay of every district a ``network_cut`` step names."""

    @property
    def broker(self) -> BrokerControl | None: ...

    @property
    def book(self) -> StepBook: ...

    @property
    def presses(self) -> list[PressResult]: ...

    @property
    def sim_hours(self) -> float: ...

    def targets(self, step: TargetedStep, order: int, *, buttons: bool) -> list[SimSite]:
        """This process's share of the sites a targeted step picks."""

    async def sleep_until(self, sim_s: float) -> None:
        """Sleep until `sim_s` simulated seconds after the start."""

    async def press(self, site: SimSite, now_h: float, order: int | None = None) -> None:
        """Press the site's panic button once and record what became of it."""

    def boot(self, site: SimSite) -> None:
        """Start the site's node again (same identity and outbox)."""


S_contra = TypeVar("S_contra", contravariant=True)


class StepHandler(Protocol[S_contra]):
    """Does a step when it falls due; returns the part that waits, or None."""

    def __call__(
        self, run: StepRuntime, step: S_contra, *, order: int, now_h: float, record: dict[str, Any]
    ) -> StepWork | None: ...


class StepReporter(Protocol[S_contra]):
    """Adds a step kind's own figures to its report (`out`) after the run."""

    def __call__(
        self, run: StepRuntime, step: S_contra, *, order: int, out: dict[str, Any]
    ) -> None: ...


@dataclass(frozen=True)
class StepKind:
    """One registered action: its handler and, optionally, its report figures."""

    action: str
    handler: StepHandler[Any]
    reporter: StepReporter[Any] | None = None


STEP_KINDS: dict[str, StepKind] = {}

H = TypeVar("H", bound=StepHandler[Any])


def register_step(action: str, *, report: StepReporter[Any] | None = None) -> Callable[[H], H]:
    """Register the decorated function as the handler of `action` (once per action)."""

    def register(handler: H) -> H:
        if action in STEP_KINDS:
            raise ScenarioError(f"step action {action!r} is registered twice")
        STEP_KINDS[action] = StepKind(action=action, handler=handler, reporter=report)
        return handler

    return register


def step_kind(action: str) -> StepKind:
    """The registered kind of `action`, or `ScenarioError` naming the ones there are."""
    try:
        return STEP_KINDS[action]
    except KeyError:
        raise ScenarioError(
            f"no handler registered for step action {action!r}; known: {sorted(STEP_KINDS)}"
        ) from None


async def until(check: Callable[[], bool], *, timeout: float, every: float = 0.1) -> bool:
    """Poll `check` until true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True
