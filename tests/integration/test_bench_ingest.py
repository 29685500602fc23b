"""`nigehbaan bench ingest` prints one JSON line with both rates and loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from simulators.bench_ingest import MIX, build_events
from tests.support.db import PG_URL, pg_unreachable

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]


def test_the_events_are_real_unique_proto_events_in_the_stated_mix() -> None:
    events = build_events(events=200, nodes=10)
    payloads = [json.loads(p) for _, p in events]
    assert len({p["event_id"] for p in payloads}) == 200
    kinds = [p["type"] for p in payloads]
    assert {k: kinds.count(k) / 200 for k in MIX} == MIX
    per_node = [p["seq"] for p in payloads if p["node_id"] == "bench-00003"]
    assert per_node == list(range(1, 21))


@pytest.mark.slow
def test_bench_ingest_reports_both_rates_and_every_event_stored_and_acked(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NIGEHBAAN, "bench", "ingest", "--events", "300", "--nodes", "20", "--json",
         "--ack-hold", "0.25", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip())
    assert {"broker_rate", "server_rate", "ratio", "mix"} <= set(line)
    assert line["broker"]["delivered"] == 300
    server = line["server"]
    assert (server["acked"], server["persisted"], server["missing"], line["lost"]) == (
        300,
        300,
        0,
        0,
    )
    assert server["rejected"] == 0
    assert server["ack_hold_s"] == 0.25  # the server really ran with the hold asked for
    assert line["ratio"] == pytest.approx(line["server_rate"] / line["broker_rate"], rel=0.01)
    saved = list(tmp_path.glob("ingest-*.json"))
    assert len(saved) == 1


def test_an_ack_hold_out_of_range_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NIGEHBAAN, "bench", "ingest", "--ack-hold", "9", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--ack-hold 0-5" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_ingest_runs_on_postgresql_in_a_schema_it_removes_afterwards(
    tmp_path: Path,
) -> None:
    reason = pg_unreachable()
    if reason:
        print(reason)
        pytest.skip(reason)
    result = subprocess.run(
        [*NIGEHBAAN, "bench", "ingest", "--events", "200", "--nodes", "10", "--json",
         "--db", PG_URL, "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip())
    assert line["database"] == "postgresql"
    assert (line["server"]["persisted"], line["lost"]) == (200, 0)
    schema = line["server"]["db_url"].rsplit("search_path%3D", 1)[1]
    with psycopg.connect(PG_URL) as conn:
        left = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchall()
    assert left == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://fleet@10.20.30.40/fleet", "not on loopback"),
        ("mysql://fleet@127.0.0.1/fleet", "sqlite or postgresql"),
        ("nonsense", "not a database URL"),
    ],
)
def test_a_database_off_loopback_or_of_another_kind_is_refused(
    tmp_path: Path, url: str, message: str
) -> None:
    result = subprocess.run(
        [*NIGEHBAAN, "bench", "ingest", "--db", url, "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert not list(tmp_path.iterdir())
