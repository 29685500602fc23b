"""A fleet-server worker's ingest from the RabbitMQ cluster: its district partitions, in order.

`ClusterIngest` consumes the ``nb.ingest.<district>`` quorum queues
(`fleet_server.cluster.topology`), each on a channel of its own with a
prefetch of one batch, and hands each batch to the same ingest pipeline the
one-box server runs (`IngestWorker.process_decoded`: handlers, bulk writer,
alerts). For every batch, in this order:

1. each delivery is decoded; one that cannot be (bad topic, bad payload,
   wrong channel) is counted in the database like any refused MQTT message
   and copied to ``nb.dead`` with the reason in its headers;
2. the rest are stored and committed;
3. the batch is acknowledged to RabbitMQ (one ``basic.ack``, multiple);
4. the application acks (and alert commands) are published to ``amq.topic``
   with the district's prefix, so the district bridge carries them down to
   the node, whose outbox then lets the events go.

A crash between 2 and 3 redelivers the batch to the next worker, which
stores nothing twice (events are inserted by id) and acks again. A crash
between 3 and 4 loses only the application ack; the node re-sends and is
acked then.

When the database cannot be reached the worker stops consuming: it closes
its partition channels (RabbitMQ returns the unacked deliveries to the head
of their queues, and a standby worker becomes the single active consumer),
reports unhealthy (`health`), probes the database every `db_retry_s`, and
subscribes again when it answers. A message that fails while the database
answers is dead-lettered (``server_error``) instead of blocking its
partition.

Spreading partitions: with single-active-consumer the first subscriber is
the active one (RabbitMQ 3.10 has no SAC priorities for quorum queues). A
worker (`worker_index` of `workers`) subscribes at once to its own share of
the districts and to the others only after `standby_delay_s`, so workers
started together each lead their own share and stand by for the rest. A
worker that finds itself leading a partition of another's share (its owner
started late, or came back after a crash) lets go of it between two batches
every `handback_s`, closing that channel and subscribing again at the back of
the line: the owner, if it is waiting, takes over; if nobody waits, the
same worker gets it straight back. Nothing is in flight at that moment (the
batch is acked), and the prefetched deliveries go back to the head of the
queue, so the order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
)
from sqlalchemy import text
from sqlalchemy.engine import Engine

from fleet_server.alerting import AlertNotice, Notifier
from fleet_server.cluster.downlink import NodeDistricts
from fleet_server.cluster.topology import (
    DEAD_EXCHANGE,
    MQTT_EXCHANGE,
    TopologyError,
    dead_letter_message,
    declare_topology,
    downlink_routing_key,
    partition_queue,
    split_routing_key,
)
from fleet_server.cluster.uplink import DistrictUplink
from fleet_server.device_clock import DeviceTimeRules
from fleet_server.ingest.decode import Rejections, decode_all
from fleet_server.ingest.worker import IngestStats, IngestWorker
from proto.codec import Envelope, encode, topic_for

__all__ = ["ClusterIngest", "ClusterStats", "IngestThread"]

logger = logging.getLogger(__name__)


@dataclass
class ClusterStats:
    """What the worker's /healthz and the tests read."""

    batches: int = 0
    broker_acked: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)  # by reason
    handed_back: int = 0  # deliveries returned to their queue (database down)
    downlink_published: int = 0
    database_outages: int = 0
    handbacks: int = 0  # partitions of another worker's share let go of (see the module)


class _Outbox:
    """Collects what the pipeline publishes during a batch; sent after the broker ack."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.pending.append((topic, payload))

    def take(self) -> list[tuple[str, bytes]]:
        pending, self.pending = self.pending, []
        return pending


class _PartitionNotifier:
    """Alert changes of a batch: to `on_notices` (the SSE feed), commands to the outbox."""

    def __init__(
        self, outbox: _Outbox, on_notices: Callable[[Sequence[AlertNotice]], None] | None
    ) -> None:
        self.outbox = outbox
        self.on_notices = on_notices

    def __call__(self, notices: Sequence[AlertNotice]) -> None:
        if self.on_notices is not None:
            self.on_notices(notices)
        for n in notices:
            if n.command is not None:
                self.outbox.publish(topic_for(n.command), encode(n.command))


class DistrictLink:
    """A worker's MQTT connection to one district broker, for the downlink (acks, commands).

    With `ClusterIngest.district_brokers` the worker publishes a district's
    acks and commands straight to its broker instead of through RabbitMQ and
    the bridge, so the bridge only carries traffic up and keeps no
    subscription queue in RabbitMQ (docs/cluster.md: a RabbitMQ node's death
    otherwise pins a district's bridge to that node). paho queues QoS 1
    publishes while the link is down and sends them when it is back.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        tls_files: tuple[str, str, str] | None = None,
        district: str | None = None,
    ) -> None:
        """With `district`, the link also follows that district's uplink bridge state
        (`fleet_server.cluster.uplink`)."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from fleet_server.cluster.uplink import UplinkState, state_topic
        from fleet_server.mqtt import parse_broker_url

        self.url = url
        self.uplink = UplinkState(district) if district else None
        self.host, self.port, tls = parse_broker_url(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if tls:
            if tls_files is not None:
                ca, cert, key = tls_files
                self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
            else:
                self.client.tls_set()
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        uplink = self.uplink
        if uplink is not None:
            topic = state_topic(uplink.district)

            def on_connect(client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
                if not reason.is_failure:
                    uplink.link_connected(True)
                    client.subscribe(topic, qos=1)  # retained: the current state at once

            self.client.on_connect = on_connect
            self.client.on_disconnect = lambda *_a: uplink.link_connected(False)
            self.client.message_callback_add(
                topic, lambda _c, _u, m: uplink.message(bytes(m.payload))
            )

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _Partition:
    """One district's queue as this worker sees it: its pipeline, channel and inbox."""

    def __init__(self, district: str, worker: IngestWorker, outbox: _Outbox) -> None:
        self.district = district
        self.worker = worker
        self.outbox = outbox
        self.active = False  # subscribed (active or standby)
        self.processed = 0
        # Deliveries waiting for the batch loop; None: stop consuming (database down).
        self.inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()


class ClusterIngest:
    """Consumes this worker's district partitions into the database (module docstring)."""

    def __init__(
        self,
        *,
        urls: Sequence[str],
        engine: Engine,
        districts: Sequence[str],
        worker_index: int = 0,
        workers: int = 1,
        replicas: int = 1,
        batch_max: int = 200,
        ack_timeout_s: float = 120.0,
        standby_delay_s: float = 5.0,
        handback_s: float = 30.0,
        db_retry_s: float = 1.0,
        device_time: DeviceTimeRules | None = None,
        on_notices: Callable[[Sequence[AlertNotice]], None] | None = None,
        district_brokers: dict[str, str] | None = None,
        district_tls_files: tuple[str, str, str] | None = None,
    ) -> None:
        """`district_brokers`: district → MQTT URL for the downlink (`DistrictLink`);
        without it acks and commands go through RabbitMQ and the district's bridge."""
        if not urls:
            raise ValueError("ClusterIngest needs at least one AMQP URL")
        if not 0 <= worker_index < workers:
            raise ValueError(f"worker_index {worker_index} not in 0..{workers - 1}")
        self.urls = list(urls)
        self.district_brokers = dict(district_brokers or {})
        # (CA chain, certificate, key) for mqtts:// district brokers: the fleet-server
        # service certificate, as the one-box server's own broker link uses.
        self.district_tls_files = district_tls_files
        self._links: dict[str, DistrictLink] = {}
        self.engine = engine
        self.districts = sorted(set(districts))
        self.worker_index = worker_index
        self.workers = workers
        self.replicas = replicas
        self.batch_max = batch_max
        self.standby_delay_s = standby_delay_s
        self.handback_s = handback_s
        self.db_retry_s = db_retry_s
        self.on_notices = on_notices
        self.stats = ClusterStats()
        self.connected = False
        self.database_up = True
        self._db_ok = asyncio.Event()
        self._probe: asyncio.Task[None] | None = None
        self._partitions: dict[str, _Partition] = {}
        # Node → the partition its messages arrive on, for the downlink of everything that
        # is not a batch's ack (`fleet_server.cluster.downlink`), and that downlink's counters.
        self.node_districts = NodeDistricts()
        self.downlink_health: Callable[[], dict[str, Any]] | None = None
        for district in self.districts:
            outbox = _Outbox()
            self._partitions[district] = _Partition(
                district,
                IngestWorker(
                    engine=engine,
                    publisher=outbox,
                    notify=self._notifier(outbox),
                    ack_timeout_s=ack_timeout_s,
                    batch_max=batch_max,
                    ack_hold_s=0.0,  # acks go out after every batch (after the broker ack)
                    device_time=device_time,
                    database_check=self.database_answers,
                ),
                outbox,
            )

    def _notifier(self, outbox: _Outbox) -> Notifier:
        return _PartitionNotifier(outbox, self.on_notices)

    # -- what /healthz reads ----------------------------------------------------------

    @property
    def own_districts(self) -> list[str]:
        """The districts this worker subscribes to first (it leads them when all start)."""
        return [d for i, d in enumerate(self.districts) if i % self.workers == self.worker_index]

    @property
    def healthy(self) -> bool:
        return self.connected and self.database_up

    def ingest_stats(self) -> IngestStats:
        """The pipeline counters summed over this worker's partitions."""
        total = IngestStats()
        for partition in self._partitions.values():
            for name, value in vars(partition.worker.stats).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def health(self) -> dict[str, Any]:
        """For /healthz: healthy, connection, database, partitions, counters."""
        return {
            "healthy": self.healthy,
            "amqp": "connected" if self.connected else "connecting",
            "database": "ok" if self.database_up else "unreachable: not consuming",
            "partitions": {
                d: {"subscribed": p.active, "processed": p.processed}
                for d, p in self._partitions.items()
            },
            "districts": {u.district: u.public() for u in self.uplinks()},
            "stats": {**vars(self.stats), "dead_lettered": dict(self.stats.dead_lettered)},
            "ingest": vars(self.ingest_stats()),
            "downlink": self.downlink_health() if self.downlink_health is not None else None,
        }

    def link(self, district: str) -> DistrictLink | None:
        """This worker's link to `district`'s broker (None: not linked, or not running)."""
        return self._links.get(district)

    def linked_districts(self) -> list[str]:
        """The districts this worker has a broker link for (once `run` started them)."""
        return sorted(self._links)

    def uplinks(self) -> list[DistrictUplink]:
        """Each linked district's broker link and uplink bridge state.

        Only districts with a `DistrictLink` (`district_brokers`): without one
        this worker cannot see the district broker.
        """
        return [
            link.uplink.snapshot()
            for _district, link in sorted(self._links.items())
            if link.uplink is not None
        ]

    def database_answers(self) -> bool:
        """One `SELECT 1` on a fresh connection from the pool."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def _database_answers_soon(self, timeout_s: float = 5.0) -> bool:
        """`database_answers` off the loop; no answer within `timeout_s` counts as down.

        A database behind a cut link can leave a connect hanging for minutes.
        """
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.database_answers), timeout_s)
        except TimeoutError:
            return False

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (trying each URL in turn), declare, consume; reconnect on loss, forever."""
        self._db_ok.set()
        for district, url in self.district_brokers.items():
            link = DistrictLink(
                url,
                client_id=f"nb-worker-{self.worker_index}-{district}",
                district=district,
                tls_files=self.district_tls_files,
            )
            link.start()
            self._links[district] = link
        try:
            await self._connect_loop()
        finally:
            if self._probe is not None:
                self._probe.cancel()
            for link in self._links.values():
                link.stop()

    async def _connect_loop(self) -> None:
        attempt = 0
        while True:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                connection = await aio_pika.connect(url, timeout=5)
            except Exception as exc:
                logger.warning("AMQP connect to %s failed: %s", _safe(url), exc)
                await asyncio.sleep(min(5.0, 0.5 * attempt))
                continue
            try:
                await self._serve(connection)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("AMQP session on %s ended; reconnecting", _safe(url))
            finally:
                self.connected = False
                for partition in self._partitions.values():
                    partition.active = False
                with contextlib.suppress(Exception):
                    await connection.close()
            await asyncio.sleep(0.5)

    async def _serve(self, connection: aio_pika.abc.AbstractConnection) -> None:
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        setup = await connection.channel()
        await declare_topology(setup, districts=self.districts, replicas=self.replicas)
        await setup.close()
        self.connected = True
        logger.info("AMQP connected; partitions %s (own %s)", self.districts, self.own_districts)
        async with asyncio.TaskGroup() as tasks:
            for district in self.districts:
                delay = 0.0 if district in self.own_districts else self.standby_delay_s
                tasks.create_task(self._partition_loop(connection, district, delay, lost))
            tasks.create_task(self._watch(lost))

    async def _watch(self, lost: asyncio.Event) -> None:
        await lost.wait()
        raise ConnectionError("AMQP connection lost")

    async def _partition_loop(
        self,
        connection: aio_pika.abc.AbstractConnection,
        district: str,
        delay: float,
        lost: asyncio.Event,
    ) -> None:
        """Subscribe (after `delay`), consume until the database fails, wait, subscribe again."""
        partition = self._partitions[district]
        if delay:
            await asyncio.sleep(delay)
        while not lost.is_set():
            await self._db_ok.wait()
            channel = await connection.channel()
            try:
                await channel.set_qos(prefetch_count=self.batch_max)
                queue = await channel.get_queue(partition_queue(district), ensure=False)
                dead = await channel.get_exchange(DEAD_EXCHANGE, ensure=False)
                mqtt = await channel.get_exchange(MQTT_EXCHANGE, ensure=False)
                inbox = partition.inbox = asyncio.Queue()
                await queue.consume(inbox.put)
                partition.active = True
                foreign = district not in self.own_districts
                handback_at = time.monotonic() + self.handback_s
                while self.database_up:
                    batch = await self._next_batch(inbox)
                    if not batch or not await self._handle(partition, batch, dead=dead, mqtt=mqtt):
                        break  # database down: the channel's close hands everything back
                    if foreign and time.monotonic() >= handback_at:
                        self.stats.handbacks += 1
                        break  # to the back of the line: its owner takes it if waiting
            finally:
                partition.active = False
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _next_batch(
        self, inbox: asyncio.Queue[AbstractIncomingMessage | None]
    ) -> list[AbstractIncomingMessage]:
        """What has arrived, up to `batch_max`, waiting for the first; [] means stop."""
        first = await inbox.get()
        if first is None:
            return []
        batch = [first]
        while len(batch) < self.batch_max and not inbox.empty():
            item = inbox.get_nowait()
            if item is None:
                return []
            batch.append(item)
        return batch

    async def _handle(
        self,
        partition: _Partition,
        batch: list[AbstractIncomingMessage],
        *,
        dead: AbstractExchange,
        mqtt: AbstractExchange,
    ) -> bool:
        """Store one batch, ack it, publish its acks. False: database down, batch handed back."""
        envelopes: list[Envelope] = []
        rejections: Rejections = {}
        owner: dict[int, AbstractIncomingMessage] = {}
        refused: list[tuple[AbstractIncomingMessage, str, str]] = []
        for message in batch:
            try:
                _district, topic = split_routing_key(message.routing_key or "")
            except TopologyError as exc:
                refused.append((message, "bad_routing_key", str(exc)))
                continue
            decoded, tally = decode_all([(topic, message.body)])
            if tally:
                for key, (n, detail, where) in tally.items():
                    m, _, _ = rejections.get(key, (0, "", ""))
                    rejections[key] = (m + n, detail, where)
                    refused.append((message, key[0], detail))
                continue
            envelopes.append(decoded[0])
            owner[id(decoded[0])] = message
            self.node_districts.heard(decoded[0].topic.node_id, partition.district)
        try:
            unstored = await asyncio.to_thread(
                partition.worker.process_decoded, envelopes, rejections, received=len(batch)
            )
        except Exception:
            logger.exception("batch of %s for %s failed", len(batch), partition.district)
            unstored = list(envelopes)
        if unstored and not await self._database_answers_soon():
            self._database_down()
            partition.outbox.take()  # whatever was committed is acked on redelivery
            self.stats.handed_back += len(batch)
            return False
        for envelope in unstored:  # failed with the database up: not its partition's problem
            refused.append((owner[id(envelope)], "server_error", f"could not store {envelope}"))
        for message, reason, detail in refused:
            await dead.publish(
                dead_letter_message(
                    message.body, routing_key=message.routing_key or "", reason=reason,
                    detail=detail, district=partition.district,
                ),
                routing_key=message.routing_key or "",  # kept as it came (`nb.dead` is fanout)
            )  # fmt: skip
            self.stats.dead_lettered[reason] = self.stats.dead_lettered.get(reason, 0) + 1
        await batch[-1].ack(multiple=True)
        self.stats.batches += 1
        self.stats.broker_acked += len(batch)
        partition.processed += len(batch)
        link = self._links.get(partition.district)
        for topic, payload in partition.outbox.take():
            self.stats.downlink_published += 1
            if link is not None:
                link.publish(topic, payload)
                continue
            await mqtt.publish(
                aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=downlink_routing_key(partition.district, topic),
            )
        return True

    def _database_down(self) -> None:
        if not self.database_up:
            return
        self.database_up = False
        self.stats.database_outages += 1
        self._db_ok.clear()
        logger.error("database unreachable: not consuming until it answers")
        for partition in self._partitions.values():  # every partition lets go, not only this one
            partition.inbox.put_nowait(None)
        self._probe = asyncio.get_running_loop().create_task(self._probe_database())

    async def _probe_database(self) -> None:
        while not await self._database_answers_soon():  # noqa: ASYNC110 - a poll
            await asyncio.sleep(self.db_retry_s)
        logger.info("database answers again: consuming")
        self.database_up = True
        self._db_ok.set()


def _safe(url: str) -> str:
    """An AMQP URL without its password, for logs."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':')[0]}:***@{tail}"


class IngestThread:
    """Runs a `ClusterIngest` on an event loop of its own in a daemon thread (CLI, tests)."""

    def __init__(self, ingest: ClusterIngest) -> None:
        self.ingest = ingest
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="cluster-ingest", daemon=True)
        self._started = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self.ingest.run())
        self._started.set()
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    def start(self) -> IngestThread:
        self._thread.start()
        self._started.wait(5)
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Cancel the consumer (its channels close: unacked deliveries go back) and join."""
        if self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)
