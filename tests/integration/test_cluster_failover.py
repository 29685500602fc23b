"""`nigehbaan cluster up`, a worker and then a RabbitMQ node killed, `cluster status`/`down`.

The cluster is started the way a user starts it (`nigehbaan cluster up`:
three RabbitMQ nodes, one district broker bridged to them, two `nigehbaan
server` workers, a PostgreSQL schema of its own); the two workers share the
district's partition (single active consumer: one leads, the other stands
by). A node streams plate reads; the leader is killed half-way. Every event
is stored exactly once and in the node's order (no sequence gap is ever
recorded), the standby takes the partition, `cluster status` reports the
dead worker, and the node gets an ack for every event (re-sending, as its
outbox would, whatever the dead worker had committed but not acked).
Then the RabbitMQ node that the bridge and the surviving worker are
connected to is killed: a node's next 20 events are still stored once, in
order, and acked (the bridge and the worker move to the other nodes; the
partition is a quorum queue with a member on each). `cluster down` stops
everything and drops the schema.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.db import make_engine
from fleet_server.models import Event, Node, SequenceGap
from tests.support.db import PG_URL, pg_unreachable
from tests.support.ingest import plate_read, wire
from tests.support.polling import wait_for
from tests.support.rabbit import rabbit_missing

DISTRICT = "east"
NODE = "fo-node-1"
EVENTS = 120


def _cluster(directory: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "cluster", *args, "--dir", str(directory)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


class Worker:
    """A worker of the running cluster, as `cluster.json` names it."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.base_url: str = entry["url"]
        self.pid: int = entry["pid"]
        self.log = Path(entry["log"])

    def kill(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for reason in (rabbit_missing(), pg_unreachable()):
        if reason:
            print(reason)
            pytest.skip(reason)
    directory = tmp_path_factory.mktemp("cluster-cli")
    up = _cluster(
        directory, "up", "--rabbit-nodes", "3", "--districts", DISTRICT, "--workers", "2",
        "--db", PG_URL,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr + _logs(directory)
        assert "cluster up under" in up.stdout
        state = json.loads((directory / "cluster.json").read_text())
        engine = make_engine(state["database_url"])
        try:
            yield {
                "dir": directory,
                "state": state,
                "engine": engine,
                "workers": [Worker(w) for w in state["workers"]],
                "district_port": state["districts"][0]["port"],
            }
        finally:
            engine.dispose()
    finally:
        down = _cluster(directory, "down")
        assert down.returncode == 0, down.stderr
        with psycopg.connect(PG_URL) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                (json.loads((directory / "cluster.json").read_text()).get("schema", ""),),
            ).fetchone()
        assert left == (0,), "cluster down left its schema behind"


def _logs(directory: Path) -> str:
    out = []
    for path in sorted(directory.glob("**/*.log")):
        if path.stat().st_size:
            lines = path.read_text(errors="replace").splitlines()[-40:]
            out.append(f"--- {path} ---\n" + "\n".join(lines))
    return "\n".join(out)


def _health(worker: Worker) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{worker.base_url}/healthz", timeout=5).json()
    return body


def _subscribed(worker: Worker) -> bool:
    return bool(_health(worker)["cluster"]["partitions"][DISTRICT]["subscribed"])


def _processed(worker: Worker) -> int:
    return int(_health(worker)["cluster"]["partitions"][DISTRICT]["processed"])


def _stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(
            select(func.count()).select_from(Event).where(Event.node_id == NODE)
        ).one()


def test_a_killed_worker_s_partition_moves_to_its_standby_with_nothing_lost_or_doubled(
    stack: dict[str, Any],
) -> None:
    engine: Engine = stack["engine"]
    leader, standby = stack["workers"]
    wait_for(
        lambda: all(_subscribed(w) for w in (leader, standby)),
        "both workers subscribed (one leading, one standing by)",
        timeout=20,
    )
    acks: queue.Queue[list[str]] = queue.Queue()
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=NODE)
    node.on_message = lambda _c, _u, msg: acks.put(json.loads(msg.payload)["event_ids"])
    subscribed = threading.Event()
    node.on_subscribe = lambda *_a: subscribed.set()
    node.connect("127.0.0.1", stack["district_port"])
    node.loop_start()
    events = [plate_read(NODE, seq) for seq in range(1, EVENTS + 1)]
    try:
        node.subscribe(f"nb/v1/{NODE}/ack", qos=1)
        assert subscribed.wait(5)
        half = EVENTS // 2
        for event in events[:half]:
            node.publish(*wire(event), qos=1).wait_for_publish(5)
        wait_for(lambda: _stored(engine) >= 10, "the leader storing", timeout=20)
        assert _processed(leader) > 0
        assert _processed(standby) == 0
        leader.kill()
        status = _cluster(stack["dir"], "status", "--json", timeout=60)
        assert status.returncode == 1  # not healthy: a worker is down
        report = json.loads(status.stdout)
        assert report["workers"]["0"]["healthy"] is False
        assert report["workers"]["1"]["healthy"] is True
        assert all(report["rabbit"].values())
        assert all(report["districts"].values())
        for event in events[half:]:
            node.publish(*wire(event), qos=1).wait_for_publish(5)
        wait_for(lambda: _stored(engine) == EVENTS, f"all {EVENTS} events stored", timeout=60)
        assert _processed(standby) > 0
        with Session(engine) as session:
            assert session.exec(select(SequenceGap).where(SequenceGap.node_id == NODE)).all() == []
            row = session.get(Node, NODE)
            assert row is not None
            assert row.last_seq == EVENTS
        # The outbox: whatever is not acked yet is sent again, and then acked.
        got: set[str] = set()
        want = {e.event_id for e in events}

        def drained() -> set[str]:
            while not acks.empty():
                got.update(acks.get_nowait())
            return got

        try:
            wait_for(lambda: drained() >= want, "acks for every event", timeout=10)
        except AssertionError:
            for event in events:
                if event.event_id not in drained():
                    node.publish(*wire(event), qos=1).wait_for_publish(5)
            wait_for(lambda: drained() >= want, "acks after the re-send", timeout=20)
        assert _stored(engine) == EVENTS
    finally:
        node.loop_stop()
        node.disconnect()


def test_the_rabbitmq_node_everyone_uses_dies_and_events_still_flow(
    stack: dict[str, Any],
) -> None:
    """After the worker story: the node the bridge and the worker are connected to is killed."""
    engine: Engine = stack["engine"]
    first = stack["state"]["rabbit"][0]
    os.killpg(first["pid"], signal.SIGKILL)
    status = _cluster(stack["dir"], "status", "--json", timeout=60)
    assert json.loads(status.stdout)["rabbit"][first["nodename"]] is False
    node_id = "fo-node-2"
    acks: queue.Queue[list[str]] = queue.Queue()
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
    node.on_message = lambda _c, _u, msg: acks.put(json.loads(msg.payload)["event_ids"])
    subscribed = threading.Event()
    node.on_subscribe = lambda *_a: subscribed.set()
    node.connect("127.0.0.1", stack["district_port"])
    node.loop_start()
    events = [plate_read(node_id, seq) for seq in range(1, 21)]
    try:
        node.subscribe(f"nb/v1/{node_id}/ack", qos=1)
        assert subscribed.wait(5)
        for event in events:
            node.publish(*wire(event), qos=1).wait_for_publish(5)

        def stored() -> int:
            with Session(engine) as session:
                return session.exec(
                    select(func.count()).select_from(Event).where(Event.node_id == node_id)
                ).one()

        wait_for(lambda: stored() == 20, "events through the surviving nodes", timeout=60)
        got: set[str] = set()

        def acked() -> bool:
            while not acks.empty():
                got.update(acks.get_nowait())
            return got >= {e.event_id for e in events}

        wait_for(acked, "acks with a RabbitMQ node down", timeout=20)
        with Session(engine) as session:
            gaps = session.exec(select(SequenceGap).where(SequenceGap.node_id == node_id)).all()
        assert gaps == []
    finally:
        node.loop_stop()
        node.disconnect()


def test_cluster_commands_refuse_what_they_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.console import main

    assert main(["cluster", "status", "--dir", str(tmp_path / "none")]) == 3
    assert "no cluster under" in capsys.readouterr().out
    assert main(["cluster", "down", "--dir", str(tmp_path / "none")]) == 0
    assert "nothing running" in capsys.readouterr().out
    for bad in (["--workers", "0"], ["--db", "sqlite:///x.db"]):
        assert main(["bench", "ingest", "--cluster", *bad]) == 2
        assert "bench ingest --cluster" in capsys.readouterr().err
