"""The demo, the simulator CLI and the panic benchmark, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_server.broker import ManagedBroker, free_port
from simulators.bench_panic import latency_summary, percentile
from simulators.cli import parse_press

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0, 99.0, 100.0,
    )  # fmt: skip
    assert percentile([], 50) is None
    assert latency_summary([]) == {"p50": None, "p95": None, "p99": None, "max": None}


@pytest.mark.parametrize("text", ["3", "x@1", "3@", "-1@2", "9@1"])
def test_scripted_press_refuses_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="--press"):
        parse_press(text, nodes=5)


def test_scripted_press_reads_node_and_time() -> None:
    assert parse_press("4@2.5", nodes=5) == (4, 2.5)


@pytest.mark.broker
def test_sim_presses_scripted_buttons_and_every_press_is_published(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    # No server here: nothing acks, so the presses stay in the outboxes — the
    # summary must say so and the command must fail.
    result = subprocess.run(
        [
            *NIGEHBAAN, "sim", "--nodes", "3", "--broker-url", broker.url,
            "--data-dir", str(tmp_path), "--press", "1@0.2", "--press", "2@0.4",
            "--duration", "1.5", "--prefix", "simtest",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["nodes"], summary["presses"]) == (3, 2)
    assert all(summary["event_ids"])
    assert summary["outbox_depth"] == 2
    assert result.returncode == 1


@pytest.mark.slow
def test_bench_panic_prints_one_json_line_and_saves_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *NIGEHBAAN, "bench", "panic", "--nodes", "5", "--presses", "8", "--rate", "20",
            "--json", "--results-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip())
    assert (line["sent"], line["delivered"], line["lost"], line["duplicate_alerts"]) == (8, 8, 0, 0)
    assert line["latency_samples"] == 8
    assert set(line["latency_ms"]) == {"p50", "p95", "p99", "max"}
    saved = list(tmp_path.glob("panic-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["delivered"] == 8


@pytest.mark.slow
def test_demo_runs_a_fleet_and_says_what_is_not_built(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *NIGEHBAAN, "demo", "--nodes", "3", "--port", str(free_port()),
            "--data-dir", str(tmp_path), "--press-every", "0.5", "--duration", "4",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/console/" in result.stdout
    assert "Not built yet" in result.stdout
    assert "pressed the panic button on sim-" in result.stdout
    assert (tmp_path / "admin-password").stat().st_mode & 0o077 == 0
