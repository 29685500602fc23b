"""The fleet's order, its shards, the seeded picks, and how many processes and files it needs.

One runner can play one `Shard` of the fleet — the nodes whose position in
file order is ``index`` modulo ``count`` — so that a fleet too big for one
process's open-files limit runs in several (`simulators.scenario_shards`,
``--processes``). Everything random that picks nodes (`pick_targets`,
`storm_plan`) is a pure function of the whole scenario, so every shard picks
the same global nodes the single process would and acts only on its own;
`plan_processes` chooses how many processes a fleet needs. `scale_fleet`
resizes a scenario (``--nodes``); `ensure_fd_limit` raises RLIMIT_NOFILE or
says how many open files the fleet needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from simulators.scenario.model import (
    PanicStormStep,
    Scenario,
    ScenarioError,
    SiteGroup,
    TargetedStep,
    parse_scenario,
)


@dataclass(frozen=True)
class Shard:
    """The part of the fleet one process runs: nodes at position ≡ `index` (mod `count`).

    Positions are the fleet's file order (group by group, index by index), so
    dealing them out in turn spreads every group and district over the shards.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: give 0..{self.count - 1}")

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def fleet_positions(scenario: Scenario) -> list[tuple[int, SiteGroup, int]]:
    """(position, group, index) of every site, in file order: the order shards are dealt."""
    out, position = [], 0
    for group in scenario.sites:
        for index in range(group.count):
            out.append((position, group, index))
            position += 1
    return out


def pick_targets(
    scenario: Scenario, step: TargetedStep, order: int, *, buttons: bool
) -> list[tuple[SiteGroup, int]]:
    """The sites a targeted step acts on, over the whole fleet (seeded by seed and `order`).

    Pure, so every shard of a multi-process run picks the same global sites as
    one process would, and then acts on the ones it owns.
    """
    matched = scenario.matching(step, buttons=buttons)
    if step.count is not None and step.count < len(matched):
        rng = random.Random(f"{scenario.seed}:{order}")
        picked = sorted(rng.sample(range(len(matched)), step.count))
        matched = [matched[i] for i in picked]
    return matched


def storm_plan(scenario: Scenario, step: PanicStormStep, order: int) -> list[tuple[float, str]]:
    """A storm's presses: (simulated seconds after the step, node id), in time order.

    The same draws, in the same order, as the runner has always made (all the
    offsets, then one pillar per offset), so a seed means the same storm in
    one process or in several.
    """
    pool = pick_targets(scenario, step, order, buttons=True)
    rng = random.Random(f"{scenario.seed}:storm:{order}")
    offsets = sorted(rng.uniform(0.0, step.within_s) for _ in range(step.presses))
    plan = []
    for offset in offsets:
        group, index = rng.choice(pool)
        plan.append((offset, scenario.node_id(group.group, index)))
    return plan


# ----------------------------------------------------------- fleet size, limits

# Open files one simulated node holds: its MQTT socket and its SQLite outbox
# (the database and its -wal; the outbox runs WAL in exclusive locking mode,
# so there is no -shm). A node behind a network-cut relay adds the relay's
# two sockets (the node's side and the broker's side).
FDS_PER_NODE = 3
FDS_PER_RELAYED_NODE = 2
FDS_SPARE = 512
# A multi-process run splits the fleet into at most this many processes, each
# kept this far under the hard limit (files the count above does not see:
# logs, pipes, a reconnect storm's half-closed sockets).
MAX_PROCESSES = 16
FD_HEADROOM = 0.10


def scale_fleet(scenario: Scenario, nodes: int) -> Scenario:
    """The scenario with `nodes` nodes in all, every site group scaled in proportion (≥ 1 each).

    Steps that name a site by index must still fit (the scenario is validated
    again); `ScenarioError` names the step that does not.
    """
    groups = scenario.sites
    if not len(groups) <= nodes <= 100_000:
        raise ScenarioError(
            f"--nodes {nodes}: give 1 node per site group at least ({len(groups)} groups) "
            "and at most 100000"
        )
    total = scenario.node_count
    shares = [g.count * nodes / total for g in groups]
    counts = [max(1, int(share)) for share in shares]
    # Largest remainder, so the counts add up to exactly `nodes`.
    for _ in range(len(groups) * 2 + nodes):
        if sum(counts) < nodes:
            i = max(range(len(groups)), key=lambda k: shares[k] - counts[k])
            counts[i] += 1
        elif sum(counts) > nodes:
            i = max(
                (k for k in range(len(groups)) if counts[k] > 1),
                key=lambda k: counts[k] - shares[k],
            )
            counts[i] -= 1
        else:
            break
    data = scenario.model_dump(mode="json")
    for site, count in zip(data["sites"], counts, strict=True):
        site["count"] = count
    try:
        return parse_scenario(data)
    except ScenarioError as exc:
        raise ScenarioError(f"with --nodes {nodes}: {exc}") from exc


def check_runnable(scenario: Scenario, *, owns_broker: bool) -> None:
    """Refuse steps this run cannot carry out (a broker restart needs a broker we started)."""
    if owns_broker:
        return
    restarts = [f"steps[{i}]" for i, s in enumerate(scenario.steps) if s.action == "broker_restart"]
    if restarts:
        raise ScenarioError(
            f"{', '.join(restarts)} (broker_restart): a scenario can only restart the broker it "
            "started itself, not one given with --broker-url; leave out --broker-url and the "
            "scenario starts its own Mosquitto"
        )


def fds_needed(scenario: Scenario) -> int:
    """Open files this process needs for the scenario (see FDS_PER_NODE)."""
    relayed = sum(scenario.nodes_in(d) for d in scenario.cut_districts)
    return scenario.node_count * FDS_PER_NODE + relayed * FDS_PER_RELAYED_NODE + FDS_SPARE


def shard_fds_needed(scenario: Scenario, shard: Shard) -> int:
    """Open files the process running `shard` needs (its own nodes and relays only)."""
    cut = set(scenario.cut_districts)
    nodes = relayed = 0
    for position, group, index in fleet_positions(scenario):
        if shard.owns(position):
            nodes += 1
            relayed += group.district_of(index) in cut
    return nodes * FDS_PER_NODE + relayed * FDS_PER_RELAYED_NODE + FDS_SPARE


def _shard_budget(hard: int) -> int:
    return int(hard * (1.0 - FD_HEADROOM))


def _worst_shard(scenario: Scenario, processes: int) -> int:
    return max(shard_fds_needed(scenario, Shard(k, processes)) for k in range(processes))


def processes_needed(scenario: Scenario, hard: int) -> int | None:
    """The fewest processes (2..MAX_PROCESSES) whose shards each fit `hard` less the headroom."""
    for processes in range(2, min(MAX_PROCESSES, scenario.node_count) + 1):
        if _worst_shard(scenario, processes) <= _shard_budget(hard):
            return processes
    return None


def plan_processes(scenario: Scenario, *, requested: int | None, hard: int) -> int:
    """How many processes run the fleet: `requested`, or (None: auto) as few as fit.

    Auto is 1 whenever the whole fleet fits the hard limit (today's single
    process, untouched); otherwise the fewest shards that each fit with
    `FD_HEADROOM` to spare. An explicit 1 is checked later by `ensure_fd_limit`,
    whose refusal names the processes that would do. `ScenarioError` names the
    numbers when nothing fits.
    """
    if requested is None:
        if fds_needed(scenario) <= hard:
            return 1
        found = processes_needed(scenario, hard)
        if found is None:
            raise ScenarioError(_too_big(scenario, hard))
        return found
    if not 1 <= requested <= MAX_PROCESSES:
        raise ScenarioError(f"--processes {requested}: give 1 to {MAX_PROCESSES}, or auto")
    if requested > scenario.node_count:
        raise ScenarioError(
            f"--processes {requested}: the fleet has only {scenario.node_count} nodes"
        )
    if requested == 1:
        return 1
    worst = _worst_shard(scenario, requested)
    if worst > _shard_budget(hard):
        found = processes_needed(scenario, hard)
        hint = f"use --processes {found} or more" if found else _too_big(scenario, hard)
        raise ScenarioError(
            f"--processes {requested}: each process would hold up to "
            f"{-(-scenario.node_count // requested)} nodes and need up to {worst} open files, "
            f"more than {_shard_budget(hard)} (the hard limit {hard}, ulimit -Hn, less "
            f"{FD_HEADROOM:.0%} headroom); {hint}"
        )
    return requested


def _too_big(scenario: Scenario, hard: int) -> str:
    worst = _worst_shard(scenario, min(MAX_PROCESSES, scenario.node_count))
    return (
        f"{scenario.node_count} nodes need {fds_needed(scenario)} open files; even "
        f"{MAX_PROCESSES} processes would need up to {worst} each, more than "
        f"{_shard_budget(hard)} (the hard limit {hard}, ulimit -Hn, less {FD_HEADROOM:.0%} "
        "headroom): raise the hard limit or use fewer --nodes"
    )


def ensure_fd_limit(scenario: Scenario) -> int:
    """Raise RLIMIT_NOFILE for the scenario; `ScenarioError` when the hard limit is too low."""
    from simulators.bench_harness import raise_fd_limit

    needed = fds_needed(scenario)
    got = raise_fd_limit(needed)
    if got < needed:
        per = FDS_PER_NODE
        fits = _largest_fleet(scenario, got)
        split = processes_needed(scenario, got)
        split_hint = (
            f", split it over processes (--processes {split}, or leave --processes out: auto does)"
            if split is not None
            else ""
        )
        raise ScenarioError(
            f"{scenario.node_count} nodes need {needed} open files ({per} per node: MQTT socket "
            f"and SQLite outbox + -wal; {FDS_PER_RELAYED_NODE} more behind a network-cut "
            f"relay), but the hard limit (ulimit -Hn) is {got}. Raise it (ulimit -Hn {needed}, "
            f"systemd LimitNOFILE=, /etc/security/limits.conf){split_hint} or run with "
            f"--nodes {fits} or fewer"
        )
    return got


def _largest_fleet(scenario: Scenario, files: int) -> int:
    """The largest --nodes whose scaled scenario fits in `files` open files (0: none)."""
    low, high = 0, scenario.node_count
    for _ in range(40):  # bisection; 40 halvings cover any fleet size we accept
        if high - low <= 1:
            break
        middle = (low + high) // 2
        try:
            fits = fds_needed(scale_fleet(scenario, middle)) <= files
        except ScenarioError:
            fits = False  # too small for its groups or its steps' indices
        low, high = (middle, high) if fits else (low, middle)
    return low
