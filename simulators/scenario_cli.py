"""`nigehbaan sim --scenario FILE [--nodes N] [--broker-url URL | --with-server] [--report OUT]`.

Loads the scenario (a bad file, a step this run cannot carry out, or an
open-files limit too low for the fleet exits 2 naming the problem), scales
the fleet to ``--nodes`` when given, raises RLIMIT_NOFILE, and runs it:

- without ``--broker-url`` the run starts its own loopback Mosquitto (so
  ``broker_restart`` steps can kill it), and with ``--with-server`` a real
  ``nigehbaan server`` process on it (`simulators.scenario_stack`);
- with ``--broker-url`` it runs against that broker; ``broker_restart`` steps
  are refused.

``--processes N|auto`` (default auto): a fleet whose open files do not fit
the hard RLIMIT_NOFILE in one process is split over N child processes
(`simulators.scenario_shards`); the run keeps the broker and the server
here and merges the children's reports, which then carry ``processes``.
Auto is one process whenever the fleet fits, exactly as before.

A one-line summary goes to stderr every ``--summary-every`` seconds; the JSON
report (`simulators.scenario.ScenarioReport`, plus the server check with
``--with-server``) goes to ``--report`` or stdout. Exit 0 when every recorded
press was delivered (and the server stored exactly those), 1 otherwise.
With ``NIGEHBAAN_API_URL`` and ``NIGEHBAAN_API_TOKEN`` set, each site's
autonomy target is first set on that fleet server (``PUT
/api/v1/power/sites/{site_id}``), so the server alerts against the
scenario's targets; ``--with-server`` does the same on its own server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulators.scenario import (
    FDS_SPARE,
    Scenario,
    ScenarioError,
    ScenarioRunner,
    check_runnable,
    ensure_fd_limit,
    load_scenario,
    plan_processes,
    scale_fleet,
)

if TYPE_CHECKING:
    from simulators.scenario_stack import ScenarioStack

logger = logging.getLogger(__name__)

# Per-node log lines (connected, cannot connect, …) drown the live summary; --node-logs keeps them.
_NODE_LOGGERS = ("edge_agent", "hardware", "simulators.netcut", "httpx")


def push_site_targets(*, api_url: str, token: str, targets: dict[str, float]) -> int:
    """Set every site's autonomy target on the server; returns how many were set."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=10) as client:
        for site_id, hours in targets.items():
            response = client.put(
                f"/api/v1/power/sites/{site_id}", json={"autonomy_target_h": hours}
            )
            response.raise_for_status()
    return len(targets)


def hard_fd_limit() -> int:
    """The hard RLIMIT_NOFILE (what an unprivileged process can raise its soft limit to)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 30 if hard == resource.RLIM_INFINITY else int(hard)


def requested_processes(text: str) -> int | None:
    """``--processes`` → a number, or None for auto; `ScenarioError` for anything else."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ScenarioError(f"--processes {text!r}: give a number of processes or auto") from None


def prepare(args: argparse.Namespace) -> tuple[Scenario, int]:
    """File → scenario scaled to --nodes, checked for this run, and how many processes run it.

    `ScenarioError` (exit 2) for a bad file or step, or a fleet the open-files
    limit cannot hold in the processes asked for.
    """
    scenario = load_scenario(args.scenario)
    if args.nodes is not None:
        scenario = scale_fleet(scenario, args.nodes)
    owns_broker = args.broker_url is None
    check_runnable(scenario, owns_broker=owns_broker)
    requested = requested_processes(str(getattr(args, "processes", "auto")))
    processes = plan_processes(scenario, requested=requested, hard=hard_fd_limit())
    if processes == 1:
        ensure_fd_limit(scenario)
    else:
        _ensure_broker_fd_limit(scenario, owns_broker=owns_broker)
    return scenario, processes


def _ensure_broker_fd_limit(scenario: Scenario, *, owns_broker: bool) -> None:
    """The broker this run starts inherits our limit and holds one socket per node."""
    from simulators.bench_harness import raise_fd_limit

    needed = scenario.node_count + FDS_SPARE
    got = raise_fd_limit(needed)
    if owns_broker and got < needed:
        raise ScenarioError(
            f"{scenario.node_count} nodes: the Mosquitto this run starts needs {needed} open "
            f"files (a connection per node), but the hard limit (ulimit -Hn) is {got}; raise it "
            "or give a broker with --broker-url"
        )


def run_scenario_command(args: argparse.Namespace) -> int:
    """The `--scenario` branch of `nigehbaan sim`."""
    try:
        scenario, processes = prepare(args)
    except ScenarioError as exc:
        print(f"nigehbaan sim: {exc}", file=sys.stderr)
        return 2
    if not args.node_logs:
        for name in _NODE_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    from simulators.scenario_stack import ScenarioStack

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    work_dir: Path = args.data_dir / f"{scenario.name}-{stamp}"
    stack = ScenarioStack(
        work_dir=work_dir, broker_url=args.broker_url, with_server=args.with_server
    )
    split = f" in {processes} processes" if processes > 1 else ""
    print(
        f"nigehbaan sim: scenario {scenario.name}: {scenario.node_count} nodes{split}, "
        f"{len(scenario.steps)} steps, {scenario.duration_h * 3600:g} simulated s at "
        f"{scenario.speed:g}x; state in {work_dir}",
        file=sys.stderr,
        flush=True,
    )
    from simulators.scenario_shards import ShardError

    try:
        stack.start()
        if stack.server is not None:
            print(f"nigehbaan sim: server at {stack.server.base_url}", file=sys.stderr)
        if processes > 1:
            report = asyncio.run(_play_sharded(args, scenario, stack, processes))
        else:
            report = asyncio.run(_play(args, scenario, stack))
        if stack.server is not None:
            report["server"] = _check_server(stack, report)
    except ShardError as exc:
        print(f"nigehbaan sim: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        if not args.keep_data:
            shutil.rmtree(work_dir, ignore_errors=True)
    text = json.dumps(report, sort_keys=True, indent=1)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    totals = report["totals"]
    server = report.get("server")
    print(
        f"nigehbaan sim: {totals['presses_recorded']} presses recorded, "
        f"{totals['presses_delivered']} delivered, {totals['presses_lost']} lost; "
        f"{totals['plate_events']} plate events; {totals['reconnects']} reconnects; "
        f"{totals['duration_s']:.0f} s"
        + (f"; {processes} processes" if processes > 1 else "")
        + (f"; server check {'ok' if server['matches'] else 'FAILED'}" if server else "")
        + (f"; report written to {args.report}" if args.report is not None else ""),
        file=sys.stderr,
    )
    ok = totals["presses_lost"] == 0 and (server is None or bool(server["matches"]))
    return 0 if ok else 1


def _check_server(stack: ScenarioStack, report: dict[str, Any]) -> dict[str, Any]:
    """`server_check`, or (the server answered badly) a failed check saying why, with its log.

    A city-sized run takes minutes; its report is still written when the check
    itself cannot be made.
    """
    import httpx

    from simulators.scenario_stack import server_check

    try:
        with stack.api() as api:
            check = server_check(api, report)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        print(
            f"nigehbaan sim: the server check could not be made: {exc}\n"
            f"--- server log (errors) ---\n{_server_errors(stack)}",
            file=sys.stderr,
        )
        return {"matches": False, "error": f"{type(exc).__name__}: {exc}"}
    if check["server_errors_retried"]:
        print(
            f"nigehbaan sim: the server answered {check['server_errors_retried']} of the check's "
            f"reads with an error before it answered them (first: {check['first_server_error']})"
            f"\n--- server log (errors) ---\n{_server_errors(stack)}",
            file=sys.stderr,
        )
    return check


def _server_errors(stack: ScenarioStack, *, lines: int = 60) -> str:
    """The server log's first traceback or ERROR lines: why it answered badly."""
    log = stack.server.log_text(tail=1_000_000) if stack.server is not None else ""
    rows = log.splitlines()
    start = next((i for i, r in enumerate(rows) if "Traceback" in r or " ERROR " in r), None)
    return "\n".join(rows[start : start + lines]) if start is not None else log[-4000:]


async def _play(
    args: argparse.Namespace, scenario: Scenario, stack: ScenarioStack
) -> dict[str, Any]:
    runner = ScenarioRunner(
        scenario,
        broker_url=stack.broker_url,
        data_dir=stack.work_dir / "nodes",
        broker=stack.broker,
        summary_every_s=args.summary_every,
        freeze_gc=True,
    )
    await _push_targets(scenario, stack)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = await runner.run(progress=progress)
    return result.to_json()


async def _play_sharded(
    args: argparse.Namespace, scenario: Scenario, stack: ScenarioStack, processes: int
) -> dict[str, Any]:
    from simulators.scenario_shards import ShardedRun

    await _push_targets(scenario, stack)
    run = ShardedRun(
        scenario,
        processes=processes,
        broker_url=stack.broker_url,
        broker=stack.broker,
        work_dir=stack.work_dir,
        summary_every_s=args.summary_every,
        log_level=str(getattr(args, "log_level", "INFO")),
        node_logs=args.node_logs,
    )
    return await run.run()


async def _push_targets(scenario: Scenario, stack: ScenarioStack) -> None:
    """Set the scenario's autonomy targets on the server it alerts against (when not 8 h)."""
    api_url = os.environ.get("NIGEHBAAN_API_URL")
    token = os.environ.get("NIGEHBAAN_API_TOKEN")
    if stack.server is not None and stack.token is not None:
        api_url, token = stack.server.base_url, stack.token
    if api_url and token and any(g.autonomy_target_h != 8.0 for g in scenario.sites):
        count = await asyncio.to_thread(
            push_site_targets, api_url=api_url, token=token, targets=scenario.site_targets()
        )
        print(f"nigehbaan sim: set {count} site targets on {api_url}", file=sys.stderr)
