"""The `nigehbaan` entry point and its proto subcommand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proto.catalog import GOLDEN_DIR, all_kinds


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_job_has_a_subcommand() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for job in ["server", "agent", "sim", "tech", "ota", "bench", "demo", "proto"]:
        assert job in result.stdout


def test_proto_schema_exports_one_schema_per_message_kind(tmp_path: Path) -> None:
    result = _run("proto", "schema", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in tmp_path.glob("*.schema.json")}
    assert names == {f"{k.name}.schema.json" for k in all_kinds()}
    schema = json.loads((tmp_path / "event.panic.schema.json").read_text())
    assert "event_id" in schema["required"]


def test_proto_check_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes((GOLDEN_DIR / "event.panic.json").read_bytes().replace(b'"v":1', b'"v":3'))
    result = _run("proto", "check", "nb/v1/lhr-gulberg-0042/event/panic", str(bad))
    assert result.returncode == 1
    assert "unsupported_schema_version" in result.stderr


def _gpio_loads() -> bool:
    from hardware import BackendUnavailable, RpiBackend

    try:
        RpiBackend().pin_factory.close()
    except BackendUnavailable:
        return False
    return True


def test_agent_with_no_backend_named_and_no_gpio_stops_with_one_clear_line(
    tmp_path: Path,
) -> None:
    """No silent simulator: the node stops, says why in one line, and keeps a node_fault."""
    if _gpio_loads():
        pytest.skip("this machine has real GPIO; the rpi backend loads")
    data_dir = tmp_path / "node"
    config = tmp_path / "agent.toml"
    config.write_text(
        'node_id = "lhr-pillar-0007"\n'
        'serial = "RPI-0007"\n'
        f'data_dir = "{data_dir}"\n'
        "[mqtt]\n"
        'url = "mqtt://127.0.0.1:9"\n'  # nothing listens: the fault stays in the outbox
    )
    env = {k: v for k, v in os.environ.items() if k != "NIGEHBAAN_HW"}
    result = subprocess.run(
        [
            sys.executable, "-m", "edge_agent.console", "--log-level", "CRITICAL",
            "agent", "--config", str(config), "--fault-report-s", "0.3",
        ],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nigehbaan agent: hardware: no hardware backend is named")
    assert "[hardware] type" in lines[0]
    assert "dev_mode" in lines[0]

    from edge_agent.outbox import Outbox

    outbox = Outbox(data_dir / "outbox.sqlite3")
    try:
        (fault,) = outbox.pending()
    finally:
        outbox.close()
    assert fault.event_type == "node_fault"
    event = json.loads(fault.payload)
    assert (event["component"], event["code"], event["active"]) == (
        "hardware",
        "backend_unavailable",
        True,
    )


def test_agent_naming_an_unknown_board_exits_with_the_registered_names(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node_id = "lhr-1"\nserial = "s"\ndata_dir = "{tmp_path}"\n[hardware]\ntype = "arduino"\n'
    )
    result = _run("--log-level", "CRITICAL", "agent", "--config", str(config))
    assert result.returncode == 2
    assert "unknown hardware backend 'arduino'" in result.stderr
    assert "'rpi', 'sim'" in result.stderr
