"""`nigehbaan bench sim-capacity`: how many simulated nodes one process holds, at what cost.

For each fleet size asked for, a fresh child process (so memory freed by an
earlier size does not flatter a later one) raises its open-files limit to
the hard limit, starts that many real agents (`SimFleet`, sim hardware) on a
private loopback Mosquitto, waits until every one is connected, and then
sits idle for `idle_s` seconds while the agents do what idle nodes do
(keepalives, telemetry every 30 s). It reports resident memory per node
(RSS growth over the process before the fleet was built, divided by the
nodes), CPU used while idle (percent of one core) and open files per node.
A size that cannot be reached (open-files limit, connect timeout) is
reported with its error, and larger sizes are not tried.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulators.bench_harness import bench_result, bench_work_dir, emit, loopback_broker, own_cpu_s


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _measure(*, nodes: int, broker_url: str, data_dir: Path, idle_s: float) -> dict[str, Any]:
    from simulators.fleet import SimFleet

    gc.collect()
    rss_before, fds_before = _rss_mb(), _open_files()
    fleet = SimFleet(broker_url=broker_url, data_dir=data_dir, count=nodes)
    started = time.monotonic()
    try:
        await fleet.start(connect_timeout=max(60.0, nodes / 20))
        connect_s = time.monotonic() - started
        gc.collect()
        gc.freeze()
        await asyncio.sleep(2.0)  # let the connect burst (births, statuses) settle
        cpu_before, wall_before = own_cpu_s(), time.monotonic()
        await asyncio.sleep(idle_s)
        cpu_idle = (own_cpu_s() - cpu_before) / (time.monotonic() - wall_before)
        connected = sum(1 for n in fleet.nodes if n.agent.connected)
        rss = _rss_mb() - rss_before
        fds = _open_files() - fds_before
    finally:
        await fleet.stop()
    return {
        "nodes": nodes,
        "connected": connected,
        "connect_s": round(connect_s, 1),
        "rss_mb": round(rss, 1),
        "rss_kb_per_node": round(rss * 1024 / nodes, 1),
        "idle_cpu_percent": round(cpu_idle * 100, 1),
        "idle_cpu_percent_per_1k_nodes": round(cpu_idle * 100 * 1000 / nodes, 2),
        "open_files_per_node": round(fds / nodes, 2),
    }


def step_main(argv: list[str]) -> int:
    """Child process: measure one fleet size and write its JSON line to stdout."""
    parser = argparse.ArgumentParser(prog="bench-sim-capacity-step")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--idle", type=float, required=True)
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        result = asyncio.run(
            _measure(
                nodes=args.nodes, broker_url=args.broker_url, data_dir=args.data_dir,
                idle_s=args.idle,
            )
        )  # fmt: skip
    except Exception as exc:  # reported, not raised: the parent records the ceiling
        result = {"nodes": args.nodes, "error": f"{type(exc).__name__}: {exc}"[:500]}
    result["nofile_limit"] = hard
    emit(json.dumps(result))
    return 0


def run_capacity_bench(
    *, sizes: list[int], idle_s: float, work_dir: Path | None = None
) -> dict[str, Any]:
    """Measure each fleet size in turn; stop at the first that fails."""
    started_at = time.time()
    steps: list[dict[str, Any]] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Mosquitto inherits this limit and needs a socket per node.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        with (
            bench_work_dir(work_dir, prefix="nb-capacity-") as work,
            loopback_broker(work) as broker,
        ):
            for size in sizes:
                # fmt: off
                command = [
                    sys.executable, "-m", "simulators.bench_capacity", "--nodes", str(size),
                    "--broker-url", broker.url, "--data-dir", str(work / f"nodes-{size}"),
                    "--idle", str(idle_s),
                ]
                # fmt: on
                timeout = 120 + size / 10 + idle_s
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout, check=False
                )
                lines = done.stdout.strip().splitlines()
                step = (
                    json.loads(lines[-1]) if lines else {"nodes": size, "error": done.stderr[-500:]}
                )
                steps.append(step)
                if "error" in step or step.get("connected") != size:
                    break
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held = [s["nodes"] for s in steps if "error" not in s and s.get("connected") == s["nodes"]]
    per_node_fds = max((s["open_files_per_node"] for s in steps if "error" not in s), default=0)
    figures = {
        "sizes": sizes,
        "idle_s": idle_s,
        "max_nodes_held": max(held, default=0),
        "nofile_hard_limit": hard,
        "fd_ceiling_nodes": int(hard // per_node_fds) if per_node_fds else None,
        "steps": steps,
    }
    return bench_result("sim-capacity", figures, started_at=started_at)


if __name__ == "__main__":  # one measured fleet size, in its own process
    sys.exit(step_main(sys.argv[1:]))
