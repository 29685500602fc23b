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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func
from sqlmodel import Session, col, select

from fleet_server.cluster.supervisor import Supervisor
from fleet_server.cluster.topology import partition_queue
from fleet_server.db import make_engine
from fleet_server.models import Event
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PlateEvent
from simulators.bench_harness import bench_result, bench_work_dir

__all__ = [
    "ClusterBenchConfig",
    "ClusterPanicConfig",
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


@dataclass(frozen=True)
class ClusterPanicConfig:
    """`nigehbaan bench panic --cluster`: presses on two district brokers, one operator feed.

    Panic nodes are split over districts `north` and `south`; the background
    nodes (telemetry, `simulators.bench_background`) all sit on `north`, so
    the result compares a busy partition with a quiet one.
    """

    db_url: str
    nodes: int = 100
    presses: int = 100
    press_rate: float = 20.0
    background_nodes: int = 0
    background_telemetry_s: float = 30.0
    workers: int = 2
    rabbit_nodes: int = 1
    settle_timeout_s: float = 90.0
    timeout_s: float = 240.0
    work_dir: Path | None = None


def run_cluster_panic_bench(config: ClusterPanicConfig) -> dict[str, Any]:
    """Start the cluster, press, measure press → worker 0's SSE feed; the result record."""
    from simulators.bench_background import BackgroundFleet

    started = time.time()
    districts = ("north", "south")
    with bench_work_dir(config.work_dir, prefix="nb-bench-cluster-panic-") as work:
        supervisor = Supervisor(
            directory=work, rabbit_nodes=config.rabbit_nodes, districts=districts,
            workers=config.workers, db_url=config.db_url, keep_db=False,
            schema=f"nbbench_{uuid.uuid4().hex[:10]}", admin_password=uuid.uuid4().hex,
        )  # fmt: skip
        background: BackgroundFleet | None = None
        try:
            supervisor.start(timeout=config.timeout_s, should_stop=lambda: False)
            time.sleep(supervisor_standby_wait())
            if config.background_nodes:
                background = BackgroundFleet(
                    broker_url=supervisor.brokers["north"].url, data_dir=work / "background",
                    nodes=config.background_nodes,
                    duration_s=600 + config.presses / config.press_rate + config.settle_timeout_s,
                    telemetry_interval_s=config.background_telemetry_s,
                )  # fmt: skip
                background.start(timeout=max(120.0, config.background_nodes / 20))
            figures = asyncio.run(_panic_run(config, supervisor, work, _admin_token(supervisor)))
            if background is not None:
                figures["background"] = background.summary()
        finally:
            if background is not None:
                background.stop()
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


async def _panic_run(
    config: ClusterPanicConfig, supervisor: Supervisor, work: Path, token: str
) -> dict[str, Any]:
    import gc

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
        for d in ("north", "south")
    }
    for fleet in fleets.values():
        await fleet.start(connect_timeout=max(60.0, config.nodes / 20))
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
    order = ("north", "south")
    try:
        await asyncio.wait_for(connected.wait(), 30)
        tasks = []
        begin = time.monotonic()
        for k in range(config.presses):
            delay = begin + k / config.press_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            fleet = fleets[order[k % 2]]
            tasks.append(asyncio.ensure_future(fleet.press((k // 2) % half)))
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + config.settle_timeout_s
        while time.monotonic() < deadline:
            ids = [p.event_id for f in fleets.values() for p in f.presses]
            if all(i is not None and i in arrivals for i in ids):
                break
            await asyncio.sleep(0.1)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for fleet in fleets.values():
            await fleet.stop()
    engine = make_engine(supervisor.database_url)
    try:
        with Session(engine) as session:
            stored = set(session.exec(select(Event.event_id).where(Event.type == "panic")).all())
            alerts = session.exec(select(Alert.node_id).where(Alert.type == "panic")).all()
    finally:
        engine.dispose()
    per_node: dict[str, int] = {}
    for node_id in alerts:
        per_node[node_id] = per_node.get(node_id, 0) + 1
    out: dict[str, Any] = {
        "cluster": True, "nodes": half * 2, "presses": config.presses,
        "press_rate": config.press_rate, "background_nodes": config.background_nodes,
        "background_on": "north", "workers": config.workers,
        "rabbit_nodes": config.rabbit_nodes, "feed_of": "worker 0",
    }  # fmt: skip
    lost = 0
    pressed_nodes: set[str] = set()
    for district, fleet in fleets.items():
        presses = fleet.presses
        lost += sum(1 for p in presses if p.event_id not in stored)
        pressed_nodes.update(p.node_id for p in presses)
        samples = [
            (arrivals[p.event_id] - p.pressed_at) * 1000.0
            for p in presses
            if p.event_id is not None and p.event_id in arrivals
        ]
        out[district] = {"latency_ms": latency_summary(samples), "samples": len(samples)}
    every = [
        (arrivals[p.event_id] - p.pressed_at) * 1000.0
        for f in fleets.values()
        for p in f.presses
        if p.event_id is not None and p.event_id in arrivals
    ]
    out["latency_ms"] = latency_summary(every)
    out["latency_samples"] = len(every)
    out["lost"] = lost
    out["duplicate_alerts"] = sum(max(0, per_node.get(n, 0) - 1) for n in pressed_nodes)
    out["nodes_without_alert"] = sum(1 for n in pressed_nodes if per_node.get(n, 0) == 0)
    return out
