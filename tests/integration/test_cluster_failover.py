"""A cluster worker killed with SIGKILL mid-stream: its standby takes the partition, nothing lost.

Two `nigehbaan server` processes in cluster mode share one district's
partition (single active consumer: one leads, the other stands by), behind
one RabbitMQ node and the district's bridged Mosquitto, on a PostgreSQL
schema of the module's own. A node streams plate reads; the leader is killed
half-way. Every event is stored exactly once and in the node's order (no
sequence gap is ever recorded), the standby reports the partition as its
own, and the node gets an ack for every event (re-sending, as its outbox
would, whatever the dead worker had committed but not acked).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.alerting import ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.models import Event, Node, SequenceGap
from fleet_server.schema import migrate
from simulators.server_process import ServerProcess
from tests.support.ingest import plate_read, wire
from tests.support.polling import wait_for
from tests.support.rabbit import district_broker, pg_schema, start_cluster

DISTRICT = "east"
NODE = "fo-node-1"
EVENTS = 120


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base: Path = tmp_path_factory.mktemp("failover")
    with pg_schema() as url:
        engine = make_engine(url)
        migrate(engine)  # before the workers: they find the schema at head
        with Session(engine) as session:
            ensure_default_policies(session=session)
        cluster = start_cluster(base / "rabbit", size=1, districts=(DISTRICT,))
        broker = district_broker(base / DISTRICT, cluster.bridge_settings(DISTRICT))
        workers = [
            ServerProcess(
                data_dir=base / f"worker-{i}",
                broker_url=None,
                db_url=url,
                extra_args=("--no-mqtt",),
                env={
                    "NIGEHBAAN_CLUSTER_AMQP_URLS": ",".join(cluster.worker_urls()),
                    "NIGEHBAAN_CLUSTER_DISTRICTS": DISTRICT,
                    "NIGEHBAAN_CLUSTER_WORKER_INDEX": str(i),
                    "NIGEHBAAN_CLUSTER_WORKERS": "2",
                    "NIGEHBAAN_CLUSTER_REPLICAS": "1",
                    "NIGEHBAAN_INGEST_BATCH_MAX": "10",
                },
            )
            for i in range(2)
        ]
        try:
            broker.start()
            with ThreadPoolExecutor(2) as pool:  # two servers start in parallel
                list(pool.map(lambda w: w.start(timeout=90), workers))
            yield {"engine": engine, "workers": workers, "broker": broker}
        except BaseException:
            for worker in workers:
                print(f"--- {worker.data_dir.name} log ---\n{worker.log_text()}")
            raise
        finally:
            for worker in workers:
                worker.stop()
            broker.stop()
            cluster.rabbit.stop()
            engine.dispose()


def _health(worker: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{worker.base_url}/healthz", timeout=5).json()
    return body


def _subscribed(worker: ServerProcess) -> bool:
    return bool(_health(worker)["cluster"]["partitions"][DISTRICT]["subscribed"])


def _processed(worker: ServerProcess) -> int:
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
    node.connect(stack["broker"].host, stack["broker"].port)
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
