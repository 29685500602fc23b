"""`nigehbaan bench ingest --cluster --workers N`: persisted rate and CPU per event, clustered.

One loopback cluster (`fleet_server.cluster.supervisor.Supervisor`: RabbitMQ
node(s), one district Mosquitto per partition bridged into them, N workers,
a PostgreSQL schema of its own). Nodes are spread over the district brokers
and publish pre-encoded plate reads (QoS 1, each node on one connection, so
its order holds). Phases, each with fresh nodes and the same event count:

- ``workers=N`` … ``workers=1``: the events are persisted by the workers;
  between phases one worker is stopped (its partitions move to the others,
  which stand by for every partition). `rate` is events over the time from
  the first publish to the last one stored (read from the database, each
  event id once);
- ``broker``: every worker stopped, a do-nothing AMQP consumer acks the
  partitions' deliveries: what bridge + RabbitMQ carry with no database.

CPU per 1,000 events is read from /proc for each part (workers, RabbitMQ,
district brokers, the publishers = this process), so where the time goes is
in the result. `model` turns the one-worker rate into the workers and
district brokers a 50,000-node province needs under stated assumptions.

`nigehbaan bench panic --cluster` (`run_cluster_panic_bench`, below): press →
operator feed through the same kind of cluster, with background nodes spread
over the district brokers, and the time of every hop on the way, from
observers beside the path (`_HopTaps`) and the workers' own stamps
(docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func
from sqlmodel import Session, col, select

from edge_agent.outbox import PANIC_TYPE, StoredEvent
from fleet_server.cluster.supervisor import Supervisor
from fleet_server.cluster.topology import partition_queue
from fleet_server.db import make_engine
from fleet_server.models import Event
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PlateEvent
from proto.topics import PREFIX as TOPIC_PREFIX
from proto.topics import Channel
from simulators.bench_harness import bench_result, bench_work_dir

if TYPE_CHECKING:
    from simulators.fleet import PressRecord

__all__ = [
    "BACKGROUND_ON",
    "ClusterBenchConfig",
    "ClusterPanicConfig",
    "background_split",
    "hop_breakdown",
    "run_cluster_bench",
    "run_cluster_panic_bench",
]

logger = logging.getLogger(__name__)

T0 = "2026-01-01T00:00:00Z"
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ClusterBenchConfig:
    """What one cluster ingest run does."""

    db_url: str
    workers: int = 3
    events: int = 5_000
    nodes: int = 300
    rabbit_nodes: int = 1
    work_dir: Path | None = None
    timeout_s: float = 300.0


def _group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group `pgid`."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[2]) == pgid:
            total += int(stat[11]) + int(stat[12])
    return total / _TICKS


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class _Publishers:
    """One paho connection per district broker; nodes spread over them round-robin."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.clients: dict[str, mqtt.Client] = {}
        for district, port in ports.items():
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}"
            )
            client.max_inflight_messages_set(100)
            client.connect("127.0.0.1", port)
            client.loop_start()
            self.clients[district] = client

    def send(self, batches: dict[str, list[tuple[str, bytes]]]) -> None:
        """Publish each district's messages from its own thread; wait for every PUBACK."""

        def one(district: str, messages: list[tuple[str, bytes]]) -> None:
            client = self.clients[district]
            infos = [client.publish(t, p, qos=1) for t, p in messages]
            for info in infos:
                info.wait_for_publish(60)

        threads = [threading.Thread(target=one, args=item) for item in batches.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def close(self) -> None:
        for client in self.clients.values():
            client.loop_stop()
            client.disconnect()


def _messages(
    prefix: str, districts: list[str], *, events: int, nodes: int
) -> dict[str, list[tuple[str, bytes]]]:
    """`events` plate reads of `nodes` nodes, node i on district i mod D, seqs in order."""
    out: dict[str, list[tuple[str, bytes]]] = {d: [] for d in districts}
    seqs = [0] * nodes
    for n in range(events):
        node = n % nodes
        seqs[node] += 1
        event = PlateEvent.model_validate(
            {
                "node_id": f"{prefix}-{node:05d}", "ts": T0, "event_id": new_event_id(),
                "seq": seqs[node], "camera_id": "cam-1", "track_id": f"t{n}",
                "plate": "LEA 1234", "confidence": 0.9, "frames": 5,
            }
        )  # fmt: skip
        out[districts[node % len(districts)]].append((topic_for(event), encode(event)))
    return out


def run_cluster_bench(config: ClusterBenchConfig) -> dict[str, Any]:
    """Run the phases (module docstring) and return the result."""
    started = time.time()
    districts = [f"d{i}" for i in range(1, config.workers + 1)]
    phases: list[dict[str, Any]] = []
    with bench_work_dir(config.work_dir, prefix="nb-bench-cluster-") as work:
        supervisor = Supervisor(
            directory=work,
            rabbit_nodes=config.rabbit_nodes,
            districts=tuple(districts),
            workers=config.workers,
            db_url=config.db_url,
            keep_db=False,
            schema=f"nbbench_{uuid.uuid4().hex[:10]}",
            admin_password=uuid.uuid4().hex,
        )
        publishers: _Publishers | None = None
        try:
            logger.info(
                "starting the cluster: %s RabbitMQ, %s workers", config.rabbit_nodes, config.workers
            )
            supervisor.start(timeout=config.timeout_s, should_stop=lambda: False)
            time.sleep(supervisor_standby_wait())
            engine = make_engine(supervisor.database_url)
            publishers = _Publishers({d: b.port for d, b in supervisor.brokers.items()})
            for running in range(config.workers, 0, -1):
                phases.append(
                    _worker_phase(config, supervisor, publishers, engine, districts, running)
                )
                logger.info("workers=%s: %.0f events/s persisted", running, phases[-1]["rate"])
                _stop_worker(supervisor, running - 1)
            phases.append(_broker_phase(config, supervisor, publishers, districts))
            logger.info("broker only: %.0f events/s", phases[-1]["rate"])
            engine.dispose()
        finally:
            if publishers is not None:
                publishers.close()
            supervisor.stop()
    broker_rate = phases[-1]["rate"]
    for phase in phases[:-1]:
        phase["ratio_to_broker"] = round(phase["rate"] / broker_rate, 3) if broker_rate else None
    one = next(p for p in phases if p.get("workers") == 1)
    figures = {
        "cluster": True,
        "events_per_phase": config.events,
        "nodes_per_phase": config.nodes,
        "rabbit_nodes": config.rabbit_nodes,
        "district_brokers": len(districts),
        "phases": phases,
        "lost": sum(p.get("lost", 0) for p in phases),
        "model": _model(one["rate"], broker_rate, one["cpu_s_per_1000_events"]),
    }
    return bench_result("ingest-cluster", figures, started_at=started)


def supervisor_standby_wait() -> float:
    """Until every worker also stands by for the others' partitions (`standby_delay_s`)."""
    return 6.0


def _stop_worker(supervisor: Supervisor, index: int) -> None:
    worker = supervisor.workers[index]
    proc = worker.process
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    worker.process = None


def _cpu(supervisor: Supervisor) -> dict[str, float]:
    workers = sum(
        _group_cpu_s(w.process.pid)
        for w in supervisor.workers
        if w.process is not None and w.process.poll() is None
    )
    rabbit = sum(
        _group_cpu_s(p.pid) for p in supervisor.rabbit._processes.values() if p.poll() is None
    )
    brokers = sum(_group_cpu_s(b.pid) for b in supervisor.brokers.values() if b.pid is not None)
    return {"workers": workers, "rabbitmq": rabbit, "district_brokers": brokers,
            "publishers": _own_cpu_s()}  # fmt: skip


def _per_1000(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) * 1000 / events, 3) for k in before}


def _worker_phase(
    config: ClusterBenchConfig,
    supervisor: Supervisor,
    publishers: _Publishers,
    engine: Any,
    districts: list[str],
    running: int,
) -> dict[str, Any]:
    prefix = f"bw{running}"
    messages = _messages(prefix, districts, events=config.events, nodes=config.nodes)

    def stored() -> int:
        with Session(engine) as session:
            return int(
                session.exec(
                    select(func.count())
                    .select_from(Event)
                    .where(col(Event.node_id).startswith(f"{prefix}-"))
                ).one()
            )

    cpu0 = _cpu(supervisor)
    t0 = time.monotonic()
    publishers.send(messages)
    published_s = time.monotonic() - t0
    deadline = t0 + config.timeout_s
    count = 0
    while time.monotonic() < deadline:
        count = stored()
        if count >= config.events:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    cpu1 = _cpu(supervisor)
    return {
        "workers": running,
        "rate": round(count / elapsed, 1),
        "elapsed_s": round(elapsed, 3),
        "publish_s": round(published_s, 3),
        "stored": count,
        "lost": config.events - count,
        "cpu_s_per_1000_events": _per_1000(cpu0, cpu1, config.events),
    }


def _broker_phase(
    config: ClusterBenchConfig,
    supervisor: Supervisor,
    publishers: _Publishers,
    districts: list[str],
) -> dict[str, Any]:
    """No workers: a do-nothing AMQP consumer on every partition counts and acks."""
    import aio_pika

    messages = _messages("bb", districts, events=config.events, nodes=config.nodes)
    counted = 0
    done = threading.Event()

    async def consume(ready: threading.Event) -> None:
        nonlocal counted
        connection = await aio_pika.connect(supervisor.worker_urls()[0])
        finished = asyncio.Event()
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=500)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal counted
                counted += 1
                if counted % 100 == 0 or counted >= config.events:
                    await message.ack(multiple=True)
                if counted >= config.events:
                    finished.set()

            for district in districts:
                queue = await channel.get_queue(partition_queue(district), ensure=False)
                await queue.consume(on_message)
            ready.set()
            await asyncio.wait_for(finished.wait(), config.timeout_s)
            done.set()
        finally:
            await connection.close()

    ready = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(consume(ready)), daemon=True)
    thread.start()
    ready.wait(30)
    cpu0 = _cpu(supervisor)
    t0 = time.monotonic()
    publishers.send(messages)
    done.wait(config.timeout_s)
    elapsed = time.monotonic() - t0
    cpu1 = _cpu(supervisor)
    thread.join(10)
    return {
        "workers": 0,
        "phase": "broker",
        "rate": round(counted / elapsed, 1),
        "elapsed_s": round(elapsed, 3),
        "delivered": counted,
        "cpu_s_per_1000_events": _per_1000(cpu0, cpu1, config.events),
    }


def _model(
    worker_rate: float, broker_rate: float, cpu_per_1000: dict[str, float]
) -> dict[str, Any]:
    """Workers and district brokers a 50,000-node province needs, with the assumptions.

    Two ways: by the rates measured here (every part sharing this machine's
    cores, so pessimistic), and by CPU per event (cores each part needs,
    which is what sizing separate machines needs).
    """
    nodes = 50_000
    # A camera node's plate reads plus telemetry at a busy hour; panic presses are rare.
    events_per_node_s = 0.2
    headroom = 0.5  # run at half of the measured rate (bursts, failover onto fewer workers)
    load = nodes * events_per_node_s
    workers = math.ceil(load / (worker_rate * headroom)) if worker_rate else None
    per_broker = broker_rate * headroom if broker_rate else None
    return {
        "nodes": nodes,
        "assumed_events_per_node_s": events_per_node_s,
        "headroom": headroom,
        "events_per_s": load,
        "workers": workers,
        # At least one worker more than needed, so a dead one's partitions have a home.
        "workers_with_spare": workers + 1 if workers else None,
        "district_brokers_by_rate": math.ceil(load / per_broker) if per_broker else None,
        "cores_by_cpu_per_event": {
            part: round(load * per_1000 / 1000 / headroom, 1)
            for part, per_1000 in cpu_per_1000.items()
            if part != "publishers"
        },
        "note": "rates measured on this machine with every part on the same cores; "
        "separate machines per part scale each term independently",
    }


# -- `bench panic --cluster`: press → operator feed through the bridge and the cluster ------

PANIC_DISTRICTS = ("north", "south")
BACKGROUND_ON = ("spread", "north")  # `--background-on`: both district brokers, or north only
# Where a panic event is seen on its way, in order; each hop is the time between two points.
HOP_POINTS = ("pressed", "outbox", "district_broker", "rabbitmq", "worker", "committed", "feed")
HOPS = {
    "node": "press on the mock pin → the event written to the node's outbox",
    "to_district_broker": "outbox → the district Mosquitto (a bench subscriber there)",
    "bridge_to_rabbitmq": "district Mosquitto → RabbitMQ, through the bridge (a bench queue "
    "bound beside the partition queue)",
    "to_worker": "RabbitMQ → the worker's batch starting (the event row's received_at): "
    "delivery, the batch loop, the hop to the ingest thread",
    "store_commit": "batch start → the worker's NOTIFY after the commit (its 't'): handlers, "
    "commit, the local feed told",
    "to_feed": "commit → worker 0's SSE feed at the bench's client: its event loop and the "
    "SSE write for a district worker 0 leads; NOTIFY → LISTEN → alert read → SSE for the others",
}


@dataclass(frozen=True)
class ClusterPanicConfig:
    """`nigehbaan bench panic --cluster`: presses on two district brokers, one operator feed.

    Panic nodes are split over districts `north` and `south`. The background
    nodes (telemetry, `simulators.bench_background`) are split over both
    district brokers (`background_on="spread"`, the deployment's shape) or
    all sit on `north` (`"north"`: a busy partition beside a quiet one).
    """

    db_url: str
    nodes: int = 100
    presses: int = 100
    press_rate: float = 20.0
    background_nodes: int = 0
    background_telemetry_s: float = 30.0
    background_on: str = "spread"
    workers: int = 2
    rabbit_nodes: int = 1
    settle_timeout_s: float = 90.0
    timeout_s: float = 240.0
    work_dir: Path | None = None


def background_split(nodes: int, on: str) -> dict[str, int]:
    """Background nodes per district broker: halves (north gets the odd one) or all on north."""
    if on not in BACKGROUND_ON:
        raise ValueError(f"background_on must be one of {BACKGROUND_ON}, not {on!r}")
    if on == "north":
        split = {"north": nodes}
    else:
        split = {"north": nodes - nodes // 2, "south": nodes // 2}
    return {d: n for d, n in split.items() if n > 0}


def run_cluster_panic_bench(config: ClusterPanicConfig) -> dict[str, Any]:
    """Start the cluster, press, measure press → worker 0's SSE feed; the result record."""
    from simulators.bench_background import BackgroundFleet

    started = time.time()
    with bench_work_dir(config.work_dir, prefix="nb-bench-cluster-panic-") as work:
        supervisor = Supervisor(
            directory=work, rabbit_nodes=config.rabbit_nodes, districts=PANIC_DISTRICTS,
            workers=config.workers, db_url=config.db_url, keep_db=False,
            schema=f"nbbench_{uuid.uuid4().hex[:10]}", admin_password=uuid.uuid4().hex,
        )  # fmt: skip
        backgrounds: dict[str, BackgroundFleet] = {}
        try:
            supervisor.start(timeout=config.timeout_s, should_stop=lambda: False)
            time.sleep(supervisor_standby_wait())
            connect_s = 0.0
            split = background_split(config.background_nodes, config.background_on)
            for district, count in split.items():
                fleet = BackgroundFleet(
                    broker_url=supervisor.brokers[district].url,
                    data_dir=work / f"background-{district}", nodes=count,
                    duration_s=600 + config.presses / config.press_rate + config.settle_timeout_s,
                    telemetry_interval_s=config.background_telemetry_s,
                    prefix=f"bg{district[0]}",  # node ids unique across the district brokers
                )  # fmt: skip
                backgrounds[district] = fleet
                logger.info("starting %s background nodes on %s", count, district)
                connect_s += fleet.start(timeout=max(120.0, count / 20))
            figures = asyncio.run(_panic_run(config, supervisor, work, _admin_token(supervisor)))
            if backgrounds:
                summaries = {d: f.summary() for d, f in backgrounds.items()}
                figures["background"] = {
                    "nodes": config.background_nodes,
                    "on": config.background_on,
                    "connect_s": round(connect_s, 1),
                    "min_connected": sum(x["min_connected"] for x in summaries.values()),
                    "per_district": summaries,
                }
        finally:
            for fleet in backgrounds.values():
                fleet.stop()
            supervisor.stop()
    return bench_result("panic-cluster", figures, started_at=started)


def _admin_token(supervisor: Supervisor) -> str:
    import httpx

    response = httpx.post(
        f"{supervisor.workers[0].url}/api/v1/login/access-token",
        data={"username": "admin", "password": supervisor.admin_password},
        timeout=20,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


class _HopTaps:
    """Observers beside a press's path, each noting (wall clock) when a panic event passed.

    - each district Mosquitto: a subscriber to every node's ``event/panic`` (QoS 0);
    - RabbitMQ: a queue of the bench's own (exclusive, auto-delete) bound to
      ``nb.uplink`` with the panic key, so it gets a copy as the partition queue does;
    - PostgreSQL: ``LISTEN`` on the feed channel, as every worker does: each
      worker's NOTIFY after its commit carries the sender's time (`t`) and the
      event id.

    An observer's own delivery adds to its time, so each is when the event had
    passed that point at the latest. Nothing here is on the press's path; the
    taps run in threads of their own.
    """

    def __init__(
        self, *, broker_ports: Sequence[int], amqp_url: str, db_url: str, channel: str
    ) -> None:
        self.broker_ports = list(broker_ports)
        self.amqp_url = amqp_url
        self.db_url = db_url
        self.channel = channel
        self.district_broker: dict[str, float] = {}
        self.rabbitmq: dict[str, float] = {}
        self.announced: dict[str, float] = {}  # the committing worker's NOTIFY time (`t`)
        self.heard: dict[str, float] = {}  # when this LISTEN got it
        self._clients: list[mqtt.Client] = []
        self._subscribed = threading.Semaphore(0)
        self._stop = threading.Event()
        self._ready = {"rabbitmq": threading.Event(), "postgresql": threading.Event()}
        self._threads: list[threading.Thread] = []
        self._amqp_stop: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Connect every tap; raise if one is not listening within `timeout`."""
        deadline = time.monotonic() + timeout
        for port in self.broker_ports:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=f"bench-tap-{uuid.uuid4().hex[:8]}"
            )
            client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(_PANIC_TOPIC, qos=0)
            client.on_subscribe = lambda *_a: self._subscribed.release()
            client.on_message = self._on_mqtt
            client.connect("127.0.0.1", port)
            client.loop_start()
            self._clients.append(client)
        for target in (self._amqp_main, self._listen_main):
            thread = threading.Thread(target=target, name="bench-tap", daemon=True)
            thread.start()
            self._threads.append(thread)
        for _ in self.broker_ports:
            if not self._subscribed.acquire(timeout=max(0.1, deadline - time.monotonic())):
                raise RuntimeError("a district broker tap did not subscribe in time")
        for name, ready in self._ready.items():
            if not ready.wait(max(0.1, deadline - time.monotonic())):
                raise RuntimeError(f"the {name} tap did not start in time")

    def stop(self) -> None:
        self._stop.set()
        if self._amqp_stop is not None:
            loop, event = self._amqp_stop
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        for client in self._clients:
            client.disconnect()
            client.loop_stop()
        for thread in self._threads:
            thread.join(10)

    def _on_mqtt(self, _client: Any, _userdata: Any, message: Any) -> None:
        at = time.time()
        event_id = _event_id_of(bytes(message.payload))
        if event_id:
            self.district_broker.setdefault(event_id, at)

    def _amqp_main(self) -> None:
        try:
            asyncio.run(self._amqp())
        except Exception:
            logger.exception("the RabbitMQ tap stopped")

    async def _amqp(self) -> None:
        import aio_pika

        from fleet_server.cluster.topology import UPLINK_EXCHANGE

        stop = asyncio.Event()
        self._amqp_stop = (asyncio.get_running_loop(), stop)
        connection = await aio_pika.connect(self.amqp_url, timeout=10)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(await channel.get_exchange(UPLINK_EXCHANGE, ensure=False),
                             _PANIC_KEY)  # fmt: skip

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                at = time.time()
                event_id = _event_id_of(message.body)
                if event_id:
                    self.rabbitmq.setdefault(event_id, at)

            await queue.consume(on_message, no_ack=True)
            self._ready["rabbitmq"].set()
            if not self._stop.is_set():
                await stop.wait()
        finally:
            await connection.close()

    def _listen_main(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.db_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'LISTEN "{self.channel}"')
                self._ready["postgresql"].set()
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.2):
                        self._on_notify(note.payload, time.time())
        except Exception:
            logger.exception("the PostgreSQL tap stopped")

    def _on_notify(self, payload: str, at: float) -> None:
        try:
            body = json.loads(payload)
            sent = body.get("t")
            changes = body["c"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        for change in changes:
            if len(change) < 3 or change[1] not in ("created", "joined") or not change[2]:
                continue
            event_id = str(change[2])
            self.heard.setdefault(event_id, at)
            if isinstance(sent, int | float):
                self.announced.setdefault(event_id, float(sent))


_PANIC_TOPIC = f"{TOPIC_PREFIX}/+/{Channel.EVENT.value}/{PANIC_TYPE}"
_PANIC_KEY = f"d.*.{TOPIC_PREFIX.replace('/', '.')}.*.{Channel.EVENT.value}.{PANIC_TYPE}"


def _event_id_of(payload: bytes) -> str | None:
    try:
        value = json.loads(payload).get("event_id")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def hop_breakdown(
    points: Sequence[dict[str, float | None]],
) -> dict[str, Any]:
    """Per-hop latency (ms) over presses, each a dict of `HOP_POINTS` → wall-clock time.

    `hops_ms`: each hop's p50/p95/p99/max over the presses that have both of
    its points; `tail`: over the presses whose whole latency (pressed → feed)
    is at or above its p95, the mean of each hop: where the slow presses'
    time went.
    """
    from simulators.bench_panic import latency_summary, percentile

    names = list(HOPS)
    per_hop: dict[str, list[float]] = {name: [] for name in names}
    rows: list[tuple[float, dict[str, float]]] = []
    for p in points:
        row: dict[str, float] = {}
        for name, start, end in zip(names, HOP_POINTS[:-1], HOP_POINTS[1:], strict=True):
            a, b = p.get(start), p.get(end)
            if a is not None and b is not None:
                row[name] = (b - a) * 1000.0
                per_hop[name].append(row[name])
        first, last = p.get("pressed"), p.get("feed")
        if first is not None and last is not None and len(row) == len(names):
            rows.append(((last - first) * 1000.0, row))
    out: dict[str, Any] = {
        "hops_ms": {
            name: {**latency_summary(samples), "n": len(samples)}
            for name, samples in per_hop.items()
        }
    }
    threshold = percentile(sorted(total for total, _ in rows), 95.0)
    if threshold is not None:
        slow = [row for total, row in rows if total >= threshold]
        out["tail"] = {
            "presses": len(slow),
            "from_ms": round(threshold, 1),
            "mean_hop_ms": {n: round(sum(r[n] for r in slow) / len(slow), 1) for n in names},
        }
    return out


async def _panic_run(
    config: ClusterPanicConfig, supervisor: Supervisor, work: Path, token: str
) -> dict[str, Any]:
    import gc

    from fleet_server.feed_notify import channel_for
    from fleet_server.models import Alert
    from simulators.bench_panic import latency_summary
    from simulators.fleet import SimFleet
    from simulators.sse import FeedItem, alert_feed

    base = supervisor.workers[0].url
    half = max(1, config.nodes // 2)
    fleets = {
        d: SimFleet(
            broker_url=supervisor.brokers[d].url,
            data_dir=work / f"nodes-{d}",
            count=half,
            prefix=f"p{d[0]}",
        )
        for d in PANIC_DISTRICTS
    }
    outboxed: dict[str, float] = {}
    for fleet in fleets.values():
        for node in fleet.nodes:
            node.agent.add_listener(_outbox_listener(outboxed))
        await fleet.start(connect_timeout=max(60.0, config.nodes / 20))
    taps = _HopTaps(
        broker_ports=[supervisor.brokers[d].port for d in PANIC_DISTRICTS],
        amqp_url=supervisor.worker_urls()[0],
        db_url=supervisor.database_url,
        channel=channel_for(supervisor.schema),
    )
    await asyncio.to_thread(taps.start)
    gc.collect()
    gc.freeze()
    arrivals: dict[str, float] = {}
    connected = asyncio.Event()

    async def watch() -> None:
        item: FeedItem
        async for item in alert_feed(base, token, connected=connected):
            event_id = item.data.get("event_id")
            if item.data.get("op") in ("created", "joined") and event_id:
                arrivals.setdefault(str(event_id), item.received_at)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait_for(connected.wait(), 30)
        tasks = []
        begin = time.monotonic()
        for k in range(config.presses):
            delay = begin + k / config.press_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            fleet = fleets[PANIC_DISTRICTS[k % 2]]
            tasks.append(asyncio.ensure_future(fleet.press((k // 2) % half)))
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + config.settle_timeout_s
        while time.monotonic() < deadline:
            ids = [p.event_id for f in fleets.values() for p in f.presses]
            if all(i is not None and i in arrivals for i in ids):
                break
            await asyncio.sleep(0.1)
        workers = await asyncio.to_thread(_worker_health, supervisor)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await asyncio.to_thread(taps.stop)
        for fleet in fleets.values():
            await fleet.stop()
    engine = make_engine(supervisor.database_url)
    try:
        with Session(engine) as session:
            received = {
                event_id: at.timestamp()
                for event_id, at in session.exec(
                    select(Event.event_id, Event.received_at).where(Event.type == "panic")
                ).all()
            }
            alerts = session.exec(select(Alert.node_id).where(Alert.type == "panic")).all()
    finally:
        engine.dispose()
    per_node: dict[str, int] = {}
    for node_id in alerts:
        per_node[node_id] = per_node.get(node_id, 0) + 1
    out: dict[str, Any] = {
        "cluster": True, "nodes": half * 2, "presses": config.presses,
        "press_rate": config.press_rate, "background_nodes": config.background_nodes,
        "background_on": config.background_on if config.background_nodes else None,
        "workers": config.workers, "rabbit_nodes": config.rabbit_nodes,
        "quorum_replicas": min(3, config.rabbit_nodes), "feed_of": "worker 0",
    }  # fmt: skip
    # Monotonic (presses, the feed client) to wall clock (every other point).
    offset = time.time() - time.monotonic()

    def points(p: PressRecord) -> dict[str, float | None]:
        e = p.event_id or ""
        feed = arrivals.get(e)
        return {
            "pressed": p.pressed_at + offset, "outbox": outboxed.get(e),
            "district_broker": taps.district_broker.get(e), "rabbitmq": taps.rabbitmq.get(e),
            "worker": received.get(e), "committed": taps.announced.get(e),
            "feed": None if feed is None else feed + offset,
        }  # fmt: skip

    lost = 0
    pressed_nodes: set[str] = set()
    every: list[float] = []
    all_points: list[dict[str, float | None]] = []
    for district, fleet in fleets.items():
        presses = fleet.presses
        lost += sum(1 for p in presses if p.event_id not in received)
        pressed_nodes.update(p.node_id for p in presses)
        samples = [
            (arrivals[p.event_id] - p.pressed_at) * 1000.0
            for p in presses
            if p.event_id is not None and p.event_id in arrivals
        ]
        every += samples
        district_points = [points(p) for p in presses]
        all_points += district_points
        breakdown = hop_breakdown(district_points)
        out[district] = {
            "latency_ms": latency_summary(samples), "samples": len(samples),
            "led_by_workers": [
                w["index"] for w in workers if w.get("processed", {}).get(district)
            ],
            "hops_ms": breakdown["hops_ms"], "tail": breakdown.get("tail"),
        }  # fmt: skip
    out["latency_ms"] = latency_summary(every)
    out["latency_samples"] = len(every)
    out.update(hop_breakdown(all_points))
    # The deployment's own share: from the district broker on (the hops before it are the
    # simulated pillar, which shares this process with the others and the feed client).
    out["from_district_broker_ms"] = latency_summary(
        [
            (p["feed"] - p["district_broker"]) * 1000.0
            for p in all_points
            if p["feed"] is not None and p["district_broker"] is not None
        ]
    )
    out["hops"] = HOPS
    out["notify_heard_ms"] = latency_summary(
        [(taps.heard[e] - taps.announced[e]) * 1000.0 for e in taps.announced if e in taps.heard]
    )
    out["worker_health"] = workers
    out["lost"] = lost
    # Stored but never shown on worker 0's feed (e.g. its LISTEN path failing): the
    # operator would not have seen the press.
    out["not_on_feed"] = sum(
        1 for f in fleets.values() for p in f.presses if p.event_id not in arrivals
    )
    out["duplicate_alerts"] = sum(max(0, per_node.get(n, 0) - 1) for n in pressed_nodes)
    out["nodes_without_alert"] = sum(1 for n in pressed_nodes if per_node.get(n, 0) == 0)
    return out


def _outbox_listener(into: dict[str, float]) -> Callable[[StoredEvent], None]:
    def on_event(stored: StoredEvent) -> None:
        if stored.is_panic:
            into.setdefault(stored.event_id, time.time())

    return on_event


def _worker_health(supervisor: Supervisor) -> list[dict[str, Any]]:
    """What each worker's /healthz says about its partitions and its feed's NOTIFY hops."""
    import httpx

    out: list[dict[str, Any]] = []
    for worker in supervisor.workers:
        try:
            body = httpx.get(f"{worker.url}/healthz", timeout=10).json()
        except (httpx.HTTPError, ValueError) as exc:
            out.append({"index": worker.index, "error": str(exc)})
            continue
        cluster = body.get("cluster") or {}
        partitions = cluster.get("partitions") or {}
        out.append({
            "index": worker.index,
            "processed": {d: p.get("processed", 0) for d, p in partitions.items()},
            "batches": (cluster.get("stats") or {}).get("batches"),
            "feed_fanout": body.get("feed_fanout"),
        })  # fmt: skip
    return out
