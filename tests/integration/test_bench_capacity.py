"""`nigehbaan bench sim-capacity` measures each fleet size in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]


@pytest.mark.slow
def test_sim_capacity_reports_memory_cpu_and_files_per_node(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NIGEHBAAN, "bench", "sim-capacity", "--sizes", "5,10", "--idle", "1", "--json",
         "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip())
    assert line["max_nodes_held"] == 10
    assert [s["nodes"] for s in line["steps"]] == [5, 10]
    for step in line["steps"]:
        assert step["connected"] == step["nodes"]
        assert {"rss_kb_per_node", "idle_cpu_percent", "open_files_per_node"} <= set(step)
    assert line["fd_ceiling_nodes"] > 0
    assert len(list(tmp_path.glob("sim-capacity-*.json"))) == 1


def test_sim_capacity_refuses_sizes_out_of_range(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NIGEHBAAN, "bench", "sim-capacity", "--sizes", "0,99999", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
