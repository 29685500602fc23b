"""`nigehbaan sim --scenario FILE --broker-url URL [--report OUT.json]`.

Loads the scenario (a bad file exits 2 naming every problem), runs it
against the broker, prints a line per simulated day on stderr, and writes the
JSON report (`simulators.scenario.ScenarioReport`) to ``--report`` or stdout.
With ``NIGEHBAAN_API_URL`` and ``NIGEHBAAN_API_TOKEN`` set, each site's
autonomy target is first set on the fleet server (``PUT
/api/v1/power/sites/{site_id}``), so the server alerts against the
scenario's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from simulators.scenario import Scenario, ScenarioError, ScenarioRunner, load_scenario

logger = logging.getLogger(__name__)


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


def run_scenario_command(args: argparse.Namespace) -> int:
    """The `--scenario` branch of `nigehbaan sim`."""
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"nigehbaan sim: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(_play(args, scenario))
    text = json.dumps(report, sort_keys=True, indent=1)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text + "\n", encoding="utf-8")
        print(f"nigehbaan sim: report written to {args.report}", file=sys.stderr)
    else:
        print(text)
    return 0


async def _play(args: argparse.Namespace, scenario: Scenario) -> dict[str, Any]:
    from simulators.bench_cli import raise_fd_limit

    raise_fd_limit(scenario.node_count * 4 + 1024)
    runner = ScenarioRunner(scenario, broker_url=args.broker_url, data_dir=args.data_dir)
    api_url = os.environ.get("NIGEHBAAN_API_URL")
    token = os.environ.get("NIGEHBAAN_API_TOKEN")
    if api_url and token:
        count = await asyncio.to_thread(
            push_site_targets, api_url=api_url, token=token, targets=runner.site_targets()
        )
        print(f"nigehbaan sim: set {count} site targets on {api_url}", file=sys.stderr)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = await runner.run(progress=progress)
    return result.to_json()
