"""The built-in step kinds: press, mains, panic_storm, power_loss, node_offline, network_cut,
broker_restart — each a handler registered by its ``action``.

Each handler acts on this process's share of the fleet (a shard holds only
its own sites; the picks are global, see `simulators.scenario.plan`) and
writes what happened into its step's record. Steps that last (a storm, a
cut, a restart) return a coroutine that waits in simulated time; the runner
spawns it. How to add a kind: `simulators.scenario.registry`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from simulators.scenario.model import (
    BrokerRestartStep,
    MainsStep,
    NetworkCutStep,
    NodeOfflineStep,
    PanicStormStep,
    PowerLossStep,
    PressStep,
    TargetedStep,
)
from simulators.scenario.plan import storm_plan
from simulators.scenario.registry import StepRuntime, StepWork, register_step, until

logger = logging.getLogger(__name__)


def where(step: TargetedStep) -> str:
    """The step's target in words: district, group, site index; or the whole fleet."""
    parts = [f"district {step.district}" if step.district else "", step.group or ""]
    if step.index is not None:
        parts.append(f"#{step.index}")
    return " ".join(p for p in parts if p) or "the fleet"


@register_step("press")
def press(
    run: StepRuntime, step: PressStep, *, order: int, now_h: float, record: dict[str, Any]
) -> StepWork | None:
    """Press one pillar (again at each repeat)."""
    site = run.sites.get(run.scenario.node_id(step.group, step.index))
    if site is None:
        return None  # another shard's pillar: that process presses it
    record["node_id"] = site.node_id
    record["times"] = record.get("times", 0) + 1
    return run.press(site, now_h, order)


@register_step("mains")
def mains(
    run: StepRuntime, step: MainsStep, *, order: int, now_h: float, record: dict[str, Any]
) -> None:
    """Switch mains off or on for a group (or one of its sites) at once."""
    group = run.scenario.group(step.group)
    assert group is not None  # the scenario was validated
    indices = range(group.count) if step.index is None else range(step.index, step.index + 1)
    mine = [
        run.sites[node_id]
        for index in indices
        if (node_id := run.scenario.node_id(step.group, index)) in run.sites
    ]
    for site in mine:
        site.site.advance(run.clock.now())
        site.site.set_mains(step.present)
    record.update(sites=len(mine), present=step.present)
    logger.info("mains %s for %s at %.1f h", step.present, step.group, now_h)


@register_step("panic_storm")
async def panic_storm(
    run: StepRuntime, step: PanicStormStep, *, order: int, now_h: float, record: dict[str, Any]
) -> None:
    """Presses on the target's pillars at the storm plan's times (seeded, global)."""
    pool = run.targets(step, order, buttons=True)
    record.update(target=where(step), pillars=len(pool), within_s=step.within_s)
    run.book.windows[order] = (step.district, step.at_s, step.at_s + step.within_s)
    run.book.active[order] = f"panic_storm {where(step)}"
    presses = []
    for offset, node_id in storm_plan(run.scenario, step, order):
        site = run.sites.get(node_id)
        if site is None:
            continue  # another shard's pillar
        await run.sleep_until(step.at_s + offset)
        presses.append(asyncio.ensure_future(run.press(site, run.sim_hours, order)))
    await asyncio.gather(*presses)
    run.book.active.pop(order, None)


def _power_loss_report(
    run: StepRuntime, step: PowerLossStep, *, order: int, out: dict[str, Any]
) -> None:
    """How many grid-tied sites reported the loss (and the return) of mains."""
    grid = run.targets(step, order, buttons=False)
    out["mains_lost_reported"] = sum(
        1 for s in grid if any(k == "mains_lost" and t >= step.at_s for t, k in s.power_log)
    )
    if step.duration_s is not None:
        back = step.at_s + step.duration_s
        out["mains_restored_reported"] = sum(
            1 for s in grid if any(k == "mains_restored" and t >= back for t, k in s.power_log)
        )


@register_step("power_loss", report=_power_loss_report)
async def power_loss(
    run: StepRuntime, step: PowerLossStep, *, order: int, now_h: float, record: dict[str, Any]
) -> None:
    """Mains off for the target's grid-tied sites; back after `duration_s` if given."""
    sites = run.targets(step, order, buttons=False)
    now = run.clock.now()
    grid = []
    for site in sites:
        site.site.advance(now)
        if site.site.mains_present:  # a solar-only site has no mains to lose
            site.site.set_mains(False)
            grid.append(site)
    record.update(target=where(step), sites=len(sites), grid_tied=len(grid))
    record["nodes"] = [s.node_id for s in grid] if len(grid) <= 50 else len(grid)
    end = step.at_s + (step.duration_s or 0.0)
    run.book.windows[order] = (step.district, step.at_s, end if step.duration_s else -1.0)
    if step.duration_s is None:
        return
    run.book.active[order] = f"power_loss {where(step)}"
    await run.sleep_until(end)
    now = run.clock.now()
    for site in grid:
        site.site.advance(now)
        site.site.set_mains(True)
    run.book.active.pop(order, None)


@register_step("node_offline")
async def node_offline(
    run: StepRuntime, step: NodeOfflineStep, *, order: int, now_h: float, record: dict[str, Any]
) -> None:
    """Stop the target's running nodes; boot them again after `duration_s` and time the drain."""
    sites = [s for s in run.targets(step, order, buttons=False) if s.running and not s.offline]
    run.book.windows[order] = (step.district, step.at_s, step.at_s + step.duration_s)
    run.book.window_nodes[order] = {s.node_id for s in sites}
    run.book.active[order] = f"node_offline {len(sites)} in {where(step)}"
    depth = 0
    for site in sites:
        site.offline = True
        if site.agent is not None:
            depth += site.agent.outbox_depth
            site.agent.stop()
    await asyncio.gather(
        *(asyncio.wait_for(s.task, 10) for s in sites if s.task is not None),
        return_exceptions=True,
    )
    record.update(
        target=where(step),
        nodes=[s.node_id for s in sites] if len(sites) <= 50 else len(sites),
        stopped=len(sites),
        outbox_at_stop=depth,
    )
    await run.sleep_until(step.at_s + step.duration_s)
    for site in sites:
        site.offline = False
        run.boot(site)
    run.book.active[order] = f"node_offline {len(sites)} restarting"
    restarted = time.monotonic()

    def drained() -> bool:
        return all(s.connected and s.agent and not s.agent.outbox_depth for s in sites)

    ok = await until(drained, timeout=60.0)
    record.update(
        restarted=len(sites),
        drained=ok,
        drained_after_s=round(time.monotonic() - restarted, 2) if ok else None,
        outbox_after=sum(s.agent.outbox_depth for s in sites if s.running and s.agent),
    )
    run.book.active.pop(order, None)


@register_step("network_cut")
async def network_cut(
    run: StepRuntime, step: NetworkCutStep, *, order: int, now_h: float, record: dict[str, Any]
) -> None:
    """Cut the district's relay, restore it after `duration_s`, time the reconnection."""
    relay = run.relays[step.district]
    sites = [s for s in run.sites.values() if s.district == step.district]
    record.update(
        district=step.district,
        nodes=len(sites),
        connected_before=sum(1 for s in sites if s.connected),
    )
    run.book.windows[order] = (step.district, step.at_s, step.at_s + step.duration_s)
    run.book.active[order] = f"network_cut {step.district}"
    refused0 = relay.connections_refused
    relay.cut()
    await run.sleep_until(step.at_s + step.duration_s)
    relay.restore()
    record["refused_connects"] = relay.connections_refused - refused0
    run.book.active[order] = f"network restored {step.district}"
    restored = time.monotonic()
    ok = await until(
        lambda: all(s.connected for s in sites if s.running and not s.offline), timeout=60.0
    )
    record["reconnected_after_s"] = round(time.monotonic() - restored, 2) if ok else None
    run.book.active.pop(order, None)


@register_step("broker_restart")
async def broker_restart(
    run: StepRuntime, step: BrokerRestartStep, *, order: int, now_h: float, record: dict[str, Any]
) -> None:
    """SIGKILL the scenario's broker, start it after `down_s`, time the fleet's reconnection."""
    broker = run.broker
    assert broker is not None  # check_runnable refused the scenario otherwise
    run.book.windows[order] = (None, step.at_s, step.at_s + step.down_s)
    run.book.active[order] = "broker down"
    record["connected_before"] = sum(1 for s in run.sites.values() if s.connected)
    killed = time.monotonic()
    await asyncio.to_thread(broker.kill)
    await run.sleep_until(step.at_s + step.down_s)
    await asyncio.to_thread(broker.start)
    started = time.monotonic()
    record["down_for_s"] = round(started - killed, 2)
    run.book.active[order] = "broker back, nodes reconnecting"
    ok = await until(
        lambda: all(s.connected for s in run.sites.values() if s.running and not s.offline),
        timeout=120.0,
    )
    record["all_reconnected_after_s"] = round(time.monotonic() - started, 2) if ok else None
    run.book.active.pop(order, None)
