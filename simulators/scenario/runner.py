"""The run loop: boot the fleet, play the steps in simulated time, drain, stop, report.

`ScenarioRunner` connects every site's node to a real broker — through a
`simulators.netcut.NetCut` relay (one per district) when a ``network_cut``
step names its district — and starts simulated time (a
`hardware.sim_clock.ScaledClock`, shared by every site's physics and every
agent's power and telemetry loops) once all are up. It then plays the steps
as they fall due, dispatching each by its ``action`` through the step
registry (`simulators.scenario.registry`), and meanwhile drives the
synthetic plate reads, watches charge and dark sites, and prints the summary
line. The panic path runs in real time. A node that sheds its last step
stops (it is dark); the runner boots it again (same data directory, so its
outbox survives) when its site's charge controller would reconnect the load.
Every loop is bounded: the run by ``duration``, the drain and each step's
wait for reconnection by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import simulators.scenario.steps  # noqa: F401  (registers the built-in step kinds)
from edge_agent.outbox import StoredEvent
from hardware.battery import CHEMISTRIES, reserve_fraction
from hardware.button import SimButton
from hardware.errors import HardwareError
from hardware.sim_clock import ScaledClock, sleep_on
from simulators.netcut import NetCut
from simulators.scenario.model import AnyStep, Scenario, ScenarioError, TargetedStep
from simulators.scenario.nodes import (
    PressResult,
    SimSite,
    build_weather,
    make_site,
    start_node,
    stop_scene_players,
)
from simulators.scenario.plan import Shard, check_runnable, fleet_positions, pick_targets
from simulators.scenario.registry import BrokerControl, StepBook, StepWork, step_kind, until
from simulators.scenario.report import ScenarioReport, build_report, format_summary
from simulators.scenario.report import totals as fleet_totals
from simulators.synthetic_scene import plate_event_builder

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
# Awaited once every node is connected, before simulated time starts: a shard
# waits there for the other processes (`simulators.scenario_shards`).
Gate = Callable[[], Awaitable[None]]

_MAX_PLATES_PER_TICK = 2_000


class ScenarioRunner:
    """Runs a `Scenario` against a broker; see the module docstring."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        broker_url: str,
        data_dir: Path,
        agent_overrides: Mapping[str, Any] | None = None,
        tick_s: float = 0.02,
        broker: BrokerControl | None = None,
        summary_every_s: float = 5.0,
        drain_s: float = 30.0,
        freeze_gc: bool = False,
        shard: Shard | None = None,
    ) -> None:
        check_runnable(scenario, owns_broker=broker is not None)
        for step in scenario.steps:
            step_kind(step.action)  # refuse an action with no handler before anything starts
        self.scenario = scenario
        self.shard = shard
        self.broker_url = broker_url
        self.broker = broker
        self.data_dir = data_dir
        self.tick_s = tick_s
        self.summary_every_s = summary_every_s
        self.drain_s = drain_s
        self.freeze_gc = freeze_gc
        # Paused until every node is connected: the week starts with the fleet up.
        self.clock = ScaledClock(start=scenario.start, speed=scenario.speed, paused=True)
        self.weather = build_weather(scenario)
        # One relay per district that a network_cut step names; its nodes connect through it.
        parts = urlsplit(broker_url)
        self.relays: dict[str, NetCut] = {
            district: NetCut(
                target_host=parts.hostname or "127.0.0.1",
                target_port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            )
            for district in scenario.cut_districts
        }
        self.sites: dict[str, SimSite] = {}
        for position, group, index in fleet_positions(scenario):
            if shard is None or shard.owns(position):
                relay = self.relays.get(group.district_of(index))
                site = make_site(
                    scenario,
                    group,
                    index,
                    clock=self.clock,
                    weather=self.weather,
                    broker_url=broker_url,
                    relay_port=relay.port if relay is not None else None,
                    data_dir=data_dir,
                    overrides=agent_overrides or {},
                )
                self.sites[site.node_id] = site
        self.presses: list[PressResult] = []
        self._press_by_event: dict[str, PressResult] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Plate reads only (node picks are `pick_targets`/`storm_plan`); shards draw
        # apart so that two processes do not replay the same vehicles.
        split = shard is not None and shard.count > 1
        self._rng = random.Random(f"{scenario.seed}:plates:{shard}" if split else scenario.seed)
        self.book = StepBook()
        self.events_written = 0
        self.events_acked = 0
        self.plates_skipped = 0
        self._camera_sites = [s for s in self.sites.values() if s.scene is not None]
        cumulative, total = [], 0.0
        for site in self._camera_sites:
            total += site.group.plates_per_min
            cumulative.append(total)
        self._camera_cum = cumulative
        self._plates_per_min = total
        self._plate_due = 0.0
        # Watching thousands of sites every 20 ms would eat the loop; scale the interval.
        self._watch_every_s = max(tick_s, len(self.sites) * 5e-5)

    @property
    def step_records(self) -> dict[int, dict[str, Any]]:
        """Each fired step's report record, by its index in `steps`."""
        return self.book.records

    # ----------------------------------------------------------- nodes

    def boot(self, site: SimSite) -> None:
        """Start (or start again) the site's node; the node itself is built by `start_node`."""
        start_node(site, clock=self.clock, on_event=self._listener(site), on_ack=self._on_ack)

    def _listener(self, site: SimSite) -> Callable[[StoredEvent], None]:
        def on_event(stored: StoredEvent) -> None:
            self.events_written += 1
            if stored.event_type == "panic" and site.pending_presses:
                press = site.pending_presses.pop(0)
                press.event_id, press.sent = stored.event_id, True
                self._press_by_event[stored.event_id] = press
            elif stored.event_type == "plate":
                site.plates += 1
            elif stored.event_type == "power":
                kind = json.loads(stored.payload).get("power", "?")
                site.power_events[kind] = site.power_events.get(kind, 0) + 1
                site.power_log.append((self.clock.elapsed(), kind))

        return on_event

    def _on_ack(self, event_ids: list[str]) -> None:
        self.events_acked += len(event_ids)
        for event_id in event_ids:
            press = self._press_by_event.pop(event_id, None)
            if press is not None:
                press.acked = True

    # -------------------------------------------------------------- running

    @property
    def sim_hours(self) -> float:
        return self.clock.elapsed() / 3600.0

    async def start(
        self, *, connect_timeout: float | None = None, gate: Gate | None = None
    ) -> None:
        """Boot every node and wait for all to connect (then for `gate`); time starts then."""
        for relay in self.relays.values():
            await relay.start()
        for site in self.sites.values():
            self.boot(site)
        timeout = connect_timeout or max(60.0, len(self.sites) / 20)
        deadline = time.monotonic() + timeout
        while any(s.agent is not None and not s.agent.connected for s in self.sites.values()):
            if time.monotonic() > deadline:
                missing = [n for n, s in self.sites.items() if s.agent and not s.agent.connected]
                raise ScenarioError(f"{len(missing)} nodes did not connect, e.g. {missing[:3]}")
            await asyncio.sleep(0.05)
        if self.freeze_gc:
            # Thousands of agents live as long as the run: keep full collections from
            # walking them (a pause felt by every node in this loop). Process-wide, so
            # only the CLI asks for it.
            gc.collect()
            gc.freeze()
        if gate is not None:
            await gate()
        self.clock.restart()
        logger.info("scenario %s: %d nodes up", self.scenario.name, len(self.sites))

    async def run(
        self, *, progress: Progress | None = None, gate: Gate | None = None
    ) -> ScenarioReport:
        """Start, play the steps until the end of simulated time, drain, stop; the report."""
        wall0 = time.monotonic()
        try:
            await self.start(gate=gate)
            end_h = await self._play(progress, wall0)
            await self._drain(timeout=self.drain_s)
            if progress is not None:
                progress(self.summary_line(time.monotonic() - wall0, rate=0.0) + "  (drained)")
            report = build_report(self, end_h=end_h, wall_s=time.monotonic() - wall0)
        finally:
            await self.stop()
        return report

    async def _play(self, progress: Progress | None, wall0: float) -> float:
        steps = sorted(
            ((s.at_h, i, s) for i, s in enumerate(self.scenario.steps)), key=lambda x: x[:2]
        )
        queue: list[tuple[float, int, AnyStep]] = list(steps)
        end = self.scenario.duration_h
        next_watch = next_summary = last_tick = last_summary = time.monotonic()
        last_events = 0
        while (now_h := self.sim_hours) < end:
            while queue and queue[0][0] <= now_h:
                at_h, order, step = queue.pop(0)
                self._apply(step, now_h, order)
                again = step.next_at_h(at_h, end_h=end)
                if again is not None:
                    queue.append((again, order, step))
                    queue.sort(key=lambda x: x[:2])
            wall = time.monotonic()
            self._plates(wall - last_tick)
            last_tick = wall
            if wall >= next_watch:
                self._watch(now_h)
                next_watch = wall + self._watch_every_s
            if progress is not None and wall >= next_summary:
                rate = (self.events_written - last_events) / max(1e-3, wall - last_summary)
                last_events, last_summary = self.events_written, wall
                progress(self.summary_line(wall - wall0, rate=rate))
                next_summary = wall + self.summary_every_s
            await asyncio.sleep(self.tick_s)
        return self.sim_hours

    def summary_line(self, elapsed_s: float, *, rate: float) -> str:
        """One line: connected/total, presses sent/acked, outbox depth, events/s, what is on."""
        return format_summary(
            self.status(), elapsed_s=elapsed_s, rate=rate, speed=self.scenario.speed
        )

    def status(self) -> dict[str, Any]:
        """The summary's figures as numbers (a shard sends them to its parent to add up)."""
        sites = self.sites.values()
        return {
            "sim_s": self.clock.elapsed(),
            "nodes": len(self.sites),
            "connected": sum(1 for s in sites if s.connected),
            "sent": sum(1 for p in self.presses if p.sent),
            "acked": sum(1 for p in self.presses if p.acked),
            "outbox": sum(s.agent.outbox_depth for s in sites if s.running and s.agent is not None),
            "events": self.events_written,
            "reconnects": sum(s.reconnects for s in sites),
            "dark": sum(1 for s in sites if s.dark_since_h is not None),
            "offline": sum(1 for s in sites if s.offline),
            "active": [[order, text] for order, text in self.book.active.items()],
        }

    # ------------------------------------------------------------ steps

    def _apply(self, step: AnyStep, now_h: float, order: int) -> None:
        """Do a step that fell due: its registered handler; spawn what it leaves waiting."""
        record = self.book.record(order, step)
        work = step_kind(step.action).handler(self, step, order=order, now_h=now_h, record=record)
        if work is not None:
            self._spawn(work)

    def _spawn(self, work: StepWork) -> None:
        self._tasks.append(asyncio.ensure_future(work))

    def targets(self, step: TargetedStep, order: int, *, buttons: bool) -> list[SimSite]:
        """This process's share of `pick_targets` (all of it without shards)."""
        picked = (
            self.sites.get(self.scenario.node_id(g.group, i))
            for g, i in pick_targets(self.scenario, step, order, buttons=buttons)
        )
        return [site for site in picked if site is not None]

    async def sleep_until(self, sim_s: float) -> None:
        """Sleep until `sim_s` simulated seconds after the start (at once if past)."""
        delay = sim_s - self.clock.elapsed()
        if delay > 0:
            await sleep_on(self.clock, delay)

    async def press(self, site: SimSite, now_h: float, order: int | None = None) -> None:
        """Press the site's button once, as a citizen would, and record what became of it."""
        async with site.press_lock:  # presses on one pillar come one after the other
            await self._press_once(site, now_h, order)

    async def _press_once(self, site: SimSite, now_h: float, order: int | None) -> None:
        agent = site.agent
        at_s = round(now_h * 3600.0, 2)
        if site.offline or not site.running or agent is None:
            reason = "node offline" if site.offline else "node dark"
            self.presses.append(
                PressResult(
                    site.node_id, now_h, None, reason=reason, at_s=at_s, scenario_step=order
                )
            )
            return
        step = agent.power.step if agent.power else 0
        press = PressResult(site.node_id, now_h, step, at_s=at_s, scenario_step=order)
        self.presses.append(press)
        site.pending_presses.append(press)
        button = agent.button
        if not isinstance(button, SimButton):
            press.reason = "no simulated button"
            return
        if agent.uptime_s == 0.0 or not agent.panic.running:
            # Booted but its button loop has not started (at the scenario's speed a node's
            # start-up spans simulated minutes): a real pillar's button is dead then too.
            press.reason = "node booting"
            site.pending_presses.remove(press)
            return
        try:
            button.press()
            await asyncio.sleep(0.08)
            button.release()
        except HardwareError:
            pass  # the node shut down (went dark) while the button was held; said below
        await asyncio.sleep(0.05)  # debounce and the outbox write
        if not press.sent and (not site.running or (agent.power is not None and agent.power.dark)):
            press.reason = "went dark during the press"

    # ------------------------------------------------- between the steps

    def _plates(self, real_dt: float) -> None:
        """Synthetic plate reads on camera nodes, at the groups' rates (simulated time)."""
        if not self._camera_sites or real_dt <= 0:
            return
        self._plate_due += self._plates_per_min * real_dt * self.scenario.speed / 60.0
        due = int(self._plate_due)
        if due <= 0:
            return
        self._plate_due -= due
        if due > _MAX_PLATES_PER_TICK:  # a stalled loop must not come back to a flood
            self.plates_skipped += due - _MAX_PLATES_PER_TICK
            due = _MAX_PLATES_PER_TICK
        for site in self._rng.choices(self._camera_sites, cum_weights=self._camera_cum, k=due):
            agent = site.agent
            if site.offline or not site.running or agent is None or site.scene is None:
                self.plates_skipped += 1  # a camera that is off sees nothing
                continue
            vehicle = site.scene.next_pass(self._rng)
            agent.record_event(
                plate_event_builder(node_id=site.node_id, vehicle=vehicle, now=agent.clock.now)
            )

    def _watch(self, now_h: float) -> None:
        for site in self.sites.values():
            agent = site.agent
            if agent is not None and agent.power is not None:
                manager = agent.power
                if manager.charge is not None:
                    site.min_soc = min(site.min_soc, manager.charge.soc)
                if manager.autonomy is not None:
                    site.min_autonomy_h = min(site.min_autonomy_h or 1e9, manager.autonomy)
                site.max_step = max(site.max_step, manager.step)
            if site.running or site.offline:
                continue
            if site.dark_since_h is None:
                site.dark_since_h = now_h
                logger.info("%s went dark at %.1f h", site.node_id, now_h)
            state = site.site.advance(self.clock.now())
            battery = CHEMISTRIES[site.group.chemistry]
            if reserve_fraction(battery, state.soc) >= self.scenario.wake_reserve or (
                state.mains_present
            ):
                site.dark_periods.append((site.dark_since_h, now_h))
                site.dark_since_h = None
                logger.info("%s boots again at %.1f h", site.node_id, now_h)
                self.boot(site)

    async def _drain(self, *, timeout: float = 10.0) -> None:
        """Let running steps finish, then give unacked events a bounded time to be acked."""
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=max(timeout, 130.0))
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("scenario step failed", exc_info=task.exception())

        def empty() -> bool:
            return not any(
                s.running and s.agent and s.agent.outbox_depth for s in self.sites.values()
            )

        await until(empty, timeout=timeout)

    async def stop(self) -> None:
        """Stop every scene player, running agent and relay."""
        for site in self.sites.values():
            stop_scene_players(site)
        for site in self.sites.values():
            if site.agent is not None and site.running:
                site.agent.stop()
        for site in self.sites.values():
            if site.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(site.task, 10)
        for relay in self.relays.values():
            await relay.stop()

    # ------------------------------------------------------------- report

    def totals(self, wall_s: float) -> dict[str, Any]:
        """Fleet-wide figures: presses (recorded, delivered, lost), events, reconnects."""
        return fleet_totals(self, wall_s)

    def site_targets(self) -> dict[str, float]:
        """Every site id and its autonomy target (to set on the server)."""
        return {s.config["site_id"]: s.group.autonomy_target_h for s in self.sites.values()}
