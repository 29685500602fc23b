"""Partitions spread over the workers: each ends up leading its own share of the districts.

With single active consumer the first subscriber leads a partition, so a
worker started alone takes every district. Its districts of another
worker's share are let go between two batches every `handback_s`; once that
worker is subscribed, it takes them over. Messages are published the way
RabbitMQ's MQTT plugin publishes a bridged topic (to ``amq.topic`` with the
``d.<district>.`` routing key), so no Mosquitto is needed here; the database
is SQLite (the pipeline is the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.cluster.consumer import ClusterIngest, IngestThread
from fleet_server.cluster.topology import MQTT_EXCHANGE, downlink_routing_key
from fleet_server.models import Event
from tests.support.ingest import migrated_engine, plate_read, wire
from tests.support.polling import wait_for
from tests.support.rabbit import ClusterRig, start_cluster

DISTRICTS = ("east", "west")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    rig = start_cluster(tmp_path_factory.mktemp("spread"), size=1, districts=DISTRICTS)
    try:
        yield rig
    finally:
        rig.rabbit.stop()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = migrated_engine(tmp_path / "fleet.db")
    yield engine
    engine.dispose()


def _publish(url: str, district: str, node: str, seqs: range) -> None:
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


def _stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Event)).one()


def _wait_stored(engine: Engine, n: int) -> None:
    wait_for(lambda: _stored(engine) == n, f"{n} events stored")


def _leads(worker: ClusterIngest, district: str) -> bool:
    return bool(worker.health()["partitions"][district]["processed"] > 0)


def test_a_worker_started_late_takes_over_its_own_share(
    cluster: ClusterRig, engine: Engine
) -> None:
    url = cluster.worker_urls()[0]
    first, second = (
        ClusterIngest(
            urls=[url],
            engine=engine,
            districts=DISTRICTS,
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
        _publish(url, "west", "sp-w1", range(1, 11))
        wait_for(lambda: _stored(engine) == 10, "the first worker storing west alone")
        assert _leads(first, "west")
        threads.append(IngestThread(second).start())
        wait_for(lambda: second.health()["partitions"]["west"]["subscribed"], "second subscribed")
        sent = 10
        for _ in range(40):  # bounded: each round sends a few and checks who stored them
            _publish(url, "west", "sp-w1", range(sent + 1, sent + 6))
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
