"""`nigehbaan sim`: run a fleet of simulated panic nodes against a broker.

Each node runs the real edge agent on the `sim` hardware backend (mock pins).
Presses are scripted (`--press 3@10` presses node 3 ten seconds in) or random
(`--presses-per-minute`). A one-line summary is printed every few seconds and
a JSON summary at the end. ``--scenario FILE`` runs a scenario file instead
(`simulators.scenario_cli`; the format is in docs/simulator.md): a fleet of
panic pillars and camera nodes by district, with panic storms, power loss,
nodes going offline, district network cuts and broker restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

_PRESS_RE = re.compile(r"^(\d+)@(\d+(?:\.\d+)?)$")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `sim` subcommand."""
    parser = subparsers.add_parser("sim", help="run simulated panic nodes against a broker")
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="how many nodes (1-20000; default 10); with --scenario: the fleet's size, "
        "every site group scaled in proportion",
    )
    parser.add_argument(
        "--broker-url",
        default=None,
        help="e.g. mqtt://127.0.0.1:1883 (needed without --scenario; with --scenario, "
        "leave it out to let the scenario start its own broker)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("var/sim"), help="node outboxes live here"
    )
    parser.add_argument("--prefix", default="sim", help="node id prefix")
    parser.add_argument(
        "--press",
        action="append",
        default=[],
        metavar="NODE@SECONDS",
        help="press node NODE at SECONDS after start (repeatable)",
    )
    parser.add_argument(
        "--presses-per-minute", type=float, default=0.0, help="random presses across the fleet"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (max 86400)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for presses")
    parser.add_argument(
        "--telemetry-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between each node's telemetry reports (agent default 30)",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=None,
        metavar="FILE",
        help="run a scenario file (simulators/scenarios/*.yaml) instead; see docs/power.md",
    )
    parser.add_argument(
        "--report", type=Path, default=None, metavar="FILE", help="--scenario: JSON report here"
    )
    parser.add_argument(
        "--with-server",
        action="store_true",
        help="--scenario: also run a real fleet server process and check the report against it",
    )
    parser.add_argument(
        "--summary-every", type=float, default=5.0, help="--scenario: seconds between summaries"
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="--scenario: keep outboxes, broker and server state",
    )
    parser.add_argument(
        "--node-logs", action="store_true", help="--scenario: keep the nodes' own log lines"
    )
    parser.add_argument(
        "--processes",
        default="auto",
        metavar="N|auto",
        help="--scenario: split the fleet over N processes (1-16); auto (the default) is 1 "
        "when the fleet's open files fit the hard limit, else the fewest that fit",
    )
    parser.set_defaults(func=_run)


def parse_press(text: str, *, nodes: int) -> tuple[int, float]:
    """`"3@10"` → (3, 10.0); refuses nodes outside the fleet."""
    match = _PRESS_RE.match(text)
    if match is None:
        raise ValueError(f"--press {text!r}: expected NODE@SECONDS, e.g. 3@10")
    node, at = int(match.group(1)), float(match.group(2))
    if node >= nodes:
        raise ValueError(f"--press {text!r}: the fleet has nodes 0..{nodes - 1}")
    return node, at


def _run(args: argparse.Namespace) -> int:
    if args.scenario is not None:
        from simulators.scenario_cli import run_scenario_command

        return run_scenario_command(args)
    if args.broker_url is None:
        print("nigehbaan sim: --broker-url is needed without --scenario", file=sys.stderr)
        return 2
    args.nodes = 10 if args.nodes is None else args.nodes
    if not 1 <= args.nodes <= 20_000 or not 0 < args.duration <= 86_400:
        print("nigehbaan sim: --nodes 1-20000 and --duration 0-86400 s", file=sys.stderr)
        return 2
    try:
        script = sorted((parse_press(p, nodes=args.nodes) for p in args.press), key=lambda x: x[1])
    except ValueError as exc:
        print(f"nigehbaan sim: {exc}", file=sys.stderr)
        return 2
    summary = asyncio.run(_simulate(args, script))
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["outbox_depth"] == 0 else 1


async def _simulate(args: argparse.Namespace, script: list[tuple[int, float]]) -> dict[str, Any]:
    from simulators.bench_harness import raise_fd_limit
    from simulators.fleet import SimFleet

    raise_fd_limit(args.nodes * 4 + 1024)
    rng = random.Random(args.seed)
    interval = args.telemetry_interval
    fleet = SimFleet(
        broker_url=args.broker_url,
        data_dir=args.data_dir,
        count=args.nodes,
        prefix=args.prefix,
        overrides={"telemetry": {"interval_s": interval}} if interval is not None else None,
    )
    await fleet.start(connect_timeout=max(60.0, args.nodes / 20))
    # The agents' objects live as long as the run: keep full collections from walking
    # them (a pause of ~150 ms at 1,000 nodes, felt by every node in this loop).
    gc.collect()
    gc.freeze()
    start = time.monotonic()
    next_report = start
    next_random = start + _gap(rng, args.presses_per_minute)
    pending = list(script)
    tasks = []
    while (now := time.monotonic()) - start < args.duration:
        while pending and pending[0][1] <= now - start:
            node, _ = pending.pop(0)
            tasks.append(asyncio.ensure_future(fleet.press(node)))
        if args.presses_per_minute > 0 and now >= next_random:
            tasks.append(asyncio.ensure_future(fleet.press(rng.randrange(args.nodes))))
            next_random = now + _gap(rng, args.presses_per_minute)
        if now >= next_report:
            connected = sum(1 for n in fleet.nodes if n.agent.connected)
            print(
                f"t={now - start:6.1f}s connected={connected}/{len(fleet.nodes)} "
                f"presses={len(fleet.presses)} unacked={fleet.outbox_depth()}",
                file=sys.stderr,
                flush=True,
            )
            next_report = now + 5.0
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    # Give the last presses a bounded moment to be acknowledged.
    deadline = time.monotonic() + 10.0
    while fleet.outbox_depth() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls agents
        await asyncio.sleep(0.1)
    summary = {
        "nodes": len(fleet.nodes),
        "presses": len(fleet.presses),
        "event_ids": [p.event_id for p in fleet.presses],
        "outbox_depth": fleet.outbox_depth(),
        "duration_s": round(time.monotonic() - start, 1),
    }
    await fleet.stop()
    return summary


def _gap(rng: random.Random, per_minute: float) -> float:
    return rng.expovariate(per_minute / 60.0) if per_minute > 0 else float("inf")
