"""`bench panic --background-nodes` keeps other nodes connected while presses are timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]


@pytest.mark.slow
def test_presses_are_all_delivered_with_background_nodes_in_child_processes(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [*NIGEHBAAN, "bench", "panic", "--nodes", "3", "--presses", "6", "--rate", "20",
         "--background-nodes", "12", "--background-telemetry", "1", "--json",
         "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip())
    assert (line["sent"], line["delivered"], line["lost"], line["duplicate_alerts"]) == (6, 6, 0, 0)
    assert line["background_nodes"] == 12
    assert line["background"]["min_connected"] == 12
    assert set(line["latency_ms"]) == {"p50", "p95", "p99", "max"}
