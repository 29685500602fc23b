"""Ingest through the cluster: district Mosquittos bridged into RabbitMQ, a worker, PostgreSQL.

One RabbitMQ node (the clustering itself is not what these tests check), two
district brokers bridged to it, and one `ClusterIngest` worker whose
database link goes through a relay the tests can cut. Stories:

- events sent through a district bridge reach the database once, in each
  node's order, and each node gets the application acks for its own events;
- a message the worker cannot decode is dead-lettered with its reason and
  counted, and the node's next event behind it is stored;
- while the worker cannot reach the database it acknowledges nothing (to the
  broker or the node), says so in its health, and stores everything once the
  database is back;
- partitions spread over the workers: a worker started late takes over its
  own share from the one that led every district (published here the way
  the MQTT plugin publishes a bridged topic, to two districts of their own,
  on a SQLite database: the pipeline is the same).
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import ensure_default_policies
from fleet_server.broker import ManagedBroker
from fleet_server.cluster.consumer import ClusterIngest, IngestThread
from fleet_server.cluster.topology import (
    DEAD_QUEUE,
    DEAD_REASON_HEADER,
    MQTT_EXCHANGE,
    downlink_routing_key,
)
from fleet_server.db import make_engine
from fleet_server.ingest.batch import Batch
from fleet_server.ingest.registry import MessageHandler, handler_for, register_handler
from fleet_server.models import Event, IngestRejection, Node
from fleet_server.schema import migrate
from proto.messages import PlateEvent
from tests.support.db import PG_URL
from tests.support.ingest import migrated_engine, plate_read, wire
from tests.support.polling import wait_for
from tests.support.rabbit import ClusterRig, CuttableLink, district_broker, pg_schema, start_cluster

DISTRICTS = ("north", "south")
POISON = "cl-poison"  # the recorder fails on this node's events, as a handler bug would
SPREAD = ("east", "west")  # the spreading story's own districts (no bridge: AMQP publishes)


class OrderRecorder:
    """Wraps the plate-read handler; notes (node, seq) of each new event as it is stored."""

    def __init__(self, inner: MessageHandler) -> None:
        self.inner = inner
        self.is_event = inner.is_event
        self.urgent_ack = inner.urgent_ack
        self.rowless = True
        self.seen: list[tuple[str, int]] = []

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        return self.inner.scan(batch, node_id, message)

    def handle(self, batch: Batch, node: Node | None, message: Any, event: Any) -> None:
        if message.node_id == POISON:
            raise RuntimeError("a handler bug this node's events trip")
        if event is not None:
            self.seen.append((message.node_id, message.seq))
        if node is not None or getattr(self.inner, "rowless", False):
            self.inner.handle(batch, node, message, event)

    def seqs(self, node_id: str) -> list[int]:
        return [s for n, s in self.seen if n == node_id]


@dataclass
class Rig:
    cluster: ClusterRig
    brokers: dict[str, ManagedBroker]
    ingest: ClusterIngest
    engine: Engine  # straight to PostgreSQL (the worker's goes through `link`)
    link: CuttableLink
    recorder: OrderRecorder


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base: Path = tmp_path_factory.mktemp("cluster")
    with pg_schema() as url:
        engine = make_engine(url)
        migrate(engine)
        with Session(engine) as session:
            ensure_default_policies(session=session)
        cluster = start_cluster(base / "rabbit", size=1, districts=DISTRICTS + SPREAD)
        link = CuttableLink(("127.0.0.1", 5432))
        worker_engine = make_engine(url.replace("127.0.0.1:5432", f"127.0.0.1:{link.port}"))
        inner = handler_for(PlateEvent)
        recorder = OrderRecorder(inner)
        register_handler(PlateEvent, recorder)
        brokers: dict[str, ManagedBroker] = {}
        ingest = ClusterIngest(
            urls=cluster.worker_urls(), engine=worker_engine, districts=DISTRICTS,
            standby_delay_s=0.0, db_retry_s=0.2, batch_max=50,
        )  # fmt: skip
        thread = IngestThread(ingest).start()
        try:
            wait_for(lambda: ingest.connected, "the worker to declare and subscribe", timeout=30)
            for district in DISTRICTS:
                broker = district_broker(base / district, cluster.bridge_settings(district))
                broker.start()
                brokers[district] = broker
            yield Rig(cluster, brokers, ingest, engine, link, recorder)
        finally:
            thread.stop()
            for broker in brokers.values():
                broker.stop()
            register_handler(PlateEvent, inner)
            cluster.rabbit.stop()
            worker_engine.dispose()
            engine.dispose()
            link.cut()
    assert PG_URL  # the schema above lived in this server


class NodeClient:
    """A node on its district broker: publishes QoS 1, records the acks it is sent."""

    def __init__(self, broker: ManagedBroker, node_id: str) -> None:
        self.node_id = node_id
        self.acks: queue.Queue[list[str]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
        self.client.on_message = lambda _c, _u, msg: self.acks.put(
            json.loads(msg.payload)["event_ids"]
        )
        subscribed = queue.Queue[int]()
        self.client.on_subscribe = lambda *_a: subscribed.put(1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"nb/v1/{node_id}/ack", qos=1)
        subscribed.get(timeout=5)

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def acked(self) -> set[str]:
        out: set[str] = set()
        while not self.acks.empty():
            out.update(self.acks.get_nowait())
        return out

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _wait_acks(client: NodeClient, ids: list[str]) -> set[str]:
    """Every ack `client` gets until all of `ids` are among them."""
    got: set[str] = set()

    def all_acked() -> bool:
        got.update(client.acked())
        return got >= set(ids)

    wait_for(all_acked, f"{client.node_id}'s acks through its district bridge", timeout=15)
    return got


def _stored(engine: Engine, node_ids: list[str]) -> int:
    with Session(engine) as session:
        return session.exec(
            select(func.count()).select_from(Event).where(col(Event.node_id).in_(node_ids))
        ).one()


def test_events_through_a_district_bridge_are_stored_once_in_order_and_acked(rig: Rig) -> None:
    nodes = {"north": ["cl-n1", "cl-n2", "cl-n3"], "south": ["cl-s1", "cl-s2"]}
    clients = {n: NodeClient(rig.brokers[d], n) for d, ns in nodes.items() for n in ns}
    sent: dict[str, list[str]] = {n: [] for n in clients}
    try:
        for seq in range(1, 16):
            for node_id, client in clients.items():
                event = plate_read(node_id, seq)
                sent[node_id].append(event.event_id)
                client.send(*wire(event))
                if seq <= 3:  # an outbox re-send of the same event: stored once
                    client.send(*wire(event))
        every = [n for ns in nodes.values() for n in ns]
        wait_for(lambda: _stored(rig.engine, every) == 75, "75 events stored", timeout=30)
        for node_id, client in clients.items():
            assert rig.recorder.seqs(node_id) == list(range(1, 16)), node_id
            got = _wait_acks(client, sent[node_id])
            assert got <= set(sent[node_id])  # nobody else's acks reach this node
        assert _stored(rig.engine, every) == 75
    finally:
        for client in clients.values():
            client.stop()


async def _dead_letters(url: str) -> list[tuple[str, str]]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        dead = await channel.get_queue(DEAD_QUEUE, ensure=False)
        out = []
        while (message := await dead.get(no_ack=True, fail=False)) is not None:
            out.append((str(message.headers[DEAD_REASON_HEADER]), message.routing_key or ""))
        return out
    finally:
        await connection.close()


def test_an_undecodable_message_is_dead_lettered_counted_and_does_not_block_its_node(
    rig: Rig,
) -> None:
    client = NodeClient(rig.brokers["south"], "cl-bad")
    try:
        client.send("nb/v1/cl-bad/event/plate", b'{"not": "a plate read"')
        good = plate_read("cl-bad", 1)
        client.send(*wire(good))
        wait_for(lambda: _stored(rig.engine, ["cl-bad"]) == 1, "the event behind it stored")
        wait_for(lambda: good.event_id in client.acked(), "its ack")
        with Session(rig.engine) as session:
            counted = session.exec(
                select(IngestRejection).where(IngestRejection.node_id == "cl-bad")
            ).all()
        assert [r.count for r in counted] == [1]
        dead = asyncio.run(_dead_letters(rig.cluster.worker_urls()[0]))
        assert dead == [(counted[0].reason, "d.south.nb.v1.cl-bad.event.plate")]
        assert sum(rig.ingest.stats.dead_lettered.values()) >= 1
    finally:
        client.stop()


def test_a_message_that_fails_with_the_database_up_is_dead_lettered_not_retried_forever(
    rig: Rig,
) -> None:
    poison, good = (
        NodeClient(rig.brokers["north"], POISON),
        NodeClient(rig.brokers["north"], "cl-after-poison"),
    )
    try:
        asyncio.run(_dead_letters(rig.cluster.worker_urls()[0]))  # start from an empty queue
        poison.send(*wire(plate_read(POISON, 1)))
        event = plate_read("cl-after-poison", 1)
        good.send(*wire(event))
        wait_for(lambda: _stored(rig.engine, ["cl-after-poison"]) == 1, "the next event stored")
        wait_for(lambda: event.event_id in good.acked(), "its ack")
        assert _stored(rig.engine, [POISON]) == 0
        dead = asyncio.run(_dead_letters(rig.cluster.worker_urls()[0]))
        assert dead == [("server_error", f"d.north.nb.v1.{POISON}.event.plate")]
        with Session(rig.engine) as session:
            counted = session.get(IngestRejection, ("server_error", POISON))
        assert counted is not None
        assert counted.count == 1
        assert rig.ingest.healthy
    finally:
        poison.stop()
        good.stop()


def test_without_its_database_the_worker_acks_nothing_and_catches_up_when_it_returns(
    rig: Rig,
) -> None:
    client = NodeClient(rig.brokers["north"], "cl-dbcut")
    events = [plate_read("cl-dbcut", seq) for seq in range(1, 6)]
    rig.link.cut()
    try:
        for event in events:
            client.send(*wire(event))
        wait_for(lambda: not rig.ingest.healthy, "the worker to report unhealthy", timeout=15)
        health = rig.ingest.health()
        assert health["database"].startswith("unreachable")
        assert not any(p["subscribed"] for p in health["partitions"].values())
        assert client.acked() == set()
        assert _stored(rig.engine, ["cl-dbcut"]) == 0
    finally:
        rig.link.restore()
    try:
        wait_for(lambda: rig.ingest.healthy, "the worker healthy again", timeout=15)
        wait_for(lambda: _stored(rig.engine, ["cl-dbcut"]) == 5, "the held events stored")
        _wait_acks(client, [e.event_id for e in events])
        assert rig.recorder.seqs("cl-dbcut") == [1, 2, 3, 4, 5]
        assert rig.ingest.stats.handed_back >= 1
    finally:
        client.stop()


def _publish_bridged(url: str, district: str, node: str, seqs: range) -> None:
    """Bridged plate reads of `node` as the MQTT plugin hands them to RabbitMQ."""

    async def send() -> None:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(MQTT_EXCHANGE, ensure=False)
            for seq in seqs:
                topic, payload = wire(plate_read(node, seq))
                await exchange.publish(
                    aio_pika.Message(payload), routing_key=downlink_routing_key(district, topic)
                )
        finally:
            await connection.close()

    asyncio.run(send())


def _all_stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Event)).one()


def _wait_stored(engine: Engine, n: int) -> None:
    wait_for(lambda: _all_stored(engine) == n, f"{n} events stored")


def _leads(worker: ClusterIngest, district: str) -> bool:
    return bool(worker.health()["partitions"][district]["processed"] > 0)


def test_a_worker_started_late_takes_over_its_own_share(rig: Rig, tmp_path: Path) -> None:
    engine = migrated_engine(tmp_path / "fleet.db")  # SQLite: the pipeline is the same
    url = rig.cluster.worker_urls()[0]
    first, second = (
        ClusterIngest(
            urls=[url],
            engine=engine,
            districts=SPREAD,
            worker_index=i,
            workers=2,
            standby_delay_s=0.0,
            handback_s=0.5,
            batch_max=5,
        )
        for i in range(2)
    )
    assert first.own_districts == ["east"]
    assert second.own_districts == ["west"]
    threads = [IngestThread(first).start()]
    try:
        wait_for(lambda: first.connected, "the first worker subscribed")
        _publish_bridged(url, "west", "sp-w1", range(1, 11))
        wait_for(lambda: _all_stored(engine) == 10, "the first worker storing west alone")
        assert _leads(first, "west")
        threads.append(IngestThread(second).start())
        wait_for(lambda: second.health()["partitions"]["west"]["subscribed"], "second subscribed")
        sent = 10
        for _ in range(40):  # bounded: each round sends a few and checks who stored them
            _publish_bridged(url, "west", "sp-w1", range(sent + 1, sent + 6))
            sent += 5
            _wait_stored(engine, sent)
            if _leads(second, "west"):
                break
        assert _leads(second, "west"), "the owner never took its district over"
        assert first.stats.handbacks >= 1
        assert not _leads(second, "east")
        with Session(engine) as session:
            seqs = [e.seq for e in session.exec(select(Event).where(Event.node_id == "sp-w1"))]
        assert sorted(seqs) == list(range(1, sent + 1))
    finally:
        for thread in threads:
            thread.stop()
        engine.dispose()
