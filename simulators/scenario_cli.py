"""`nigehbaan sim --scenario FILE [--nodes N] [--broker-url URL | --with-server] [--report OUT]`.

Loads the scenario (a bad file, a step this run cannot carry out, or an
open-files limit too low for the fleet exits 2 naming the problem), scales
the fleet to ``--nodes`` when given, raises RLIMIT_NOFILE, and runs it:

- without ``--broker-url`` the run starts its own loopback Mosquitto (so
  ``broker_restart`` steps can kill it), and with ``--with-server`` a real
  ``nigehbaan server`` process on it (`simulators.scenario_stack`);
- with ``--broker-url`` it runs against that broker; ``broker_restart`` steps
  are refused.

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
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulators.scenario import (
    Scenario,
    ScenarioError,
    ScenarioRunner,
    check_runnable,
    ensure_fd_limit,
    load_scenario,
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


def prepare(args: argparse.Namespace) -> Scenario:
    """File → scenario scaled to --nodes, checked for this run; `ScenarioError` otherwise."""
    scenario = load_scenario(args.scenario)
    if args.nodes is not None:
        scenario = scale_fleet(scenario, args.nodes)
    check_runnable(scenario, owns_broker=args.broker_url is None)
    ensure_fd_limit(scenario)
    return scenario


def run_scenario_command(args: argparse.Namespace) -> int:
    """The `--scenario` branch of `nigehbaan sim`."""
    try:
        scenario = prepare(args)
    except ScenarioError as exc:
        print(f"nigehbaan sim: {exc}", file=sys.stderr)
        return 2
    if not args.node_logs:
        for name in _NODE_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    from simulators.scenario_stack import ScenarioStack, server_check

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    work_dir: Path = args.data_dir / f"{scenario.name}-{stamp}"
    stack = ScenarioStack(
        work_dir=work_dir, broker_url=args.broker_url, with_server=args.with_server
    )
    print(
        f"nigehbaan sim: scenario {scenario.name}: {scenario.node_count} nodes, "
        f"{len(scenario.steps)} steps, {scenario.duration_h * 3600:g} simulated s at "
        f"{scenario.speed:g}x; state in {work_dir}",
        file=sys.stderr,
        flush=True,
    )
    try:
        stack.start()
        if stack.server is not None:
            print(f"nigehbaan sim: server at {stack.server.base_url}", file=sys.stderr)
        report = asyncio.run(_play(args, scenario, stack))
        if stack.server is not None:
            with stack.api() as api:
                report["server"] = server_check(api, report)
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
        + (f"; server check {'ok' if server['matches'] else 'FAILED'}" if server else "")
        + (f"; report written to {args.report}" if args.report is not None else ""),
        file=sys.stderr,
    )
    ok = totals["presses_lost"] == 0 and (server is None or bool(server["matches"]))
    return 0 if ok else 1


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
    api_url = os.environ.get("NIGEHBAAN_API_URL")
    token = os.environ.get("NIGEHBAAN_API_TOKEN")
    if stack.server is not None and stack.token is not None:
        api_url, token = stack.server.base_url, stack.token
    if api_url and token and any(g.autonomy_target_h != 8.0 for g in scenario.sites):
        count = await asyncio.to_thread(
            push_site_targets, api_url=api_url, token=token, targets=runner.site_targets()
        )
        print(f"nigehbaan sim: set {count} site targets on {api_url}", file=sys.stderr)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = await runner.run(progress=progress)
    return result.to_json()
