"""The `nigehbaan` entry point and its proto subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from proto.catalog import GOLDEN_DIR, message_kinds


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
    assert names == {f"{k.name}.schema.json" for k in message_kinds()}
    schema = json.loads((tmp_path / "event.panic.schema.json").read_text())
    assert "event_id" in schema["required"]


def test_proto_check_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes((GOLDEN_DIR / "event.panic.json").read_bytes().replace(b'"v":1', b'"v":3'))
    result = _run("proto", "check", "nb/v1/lhr-gulberg-0042/event/panic", str(bad))
    assert result.returncode == 1
    assert "unsupported_schema_version" in result.stderr
