"""`nigehbaan bench ingest`: fleet-server ingest rate against what the broker itself delivers.

One run, one private Mosquitto on loopback, two phases with the same
publishers and the same pre-encoded payloads (real `proto` events with
unique ULIDs and per-node sequence numbers, published QoS 1 from a few paho
connections, each node always on the same connection so its order holds):

(a) broker: a do-nothing paho subscriber in a child process subscribes to
    every node's events (QoS 1) and only counts; `broker_rate` is events
    over the time from the first publish to its last delivery;
(b) server: a real `nigehbaan server` process (own SQLite database) ingests
    the same events; a child process counts the event ids in the `Ack`s the
    server publishes after its commits. `server_rate` is events persisted
    and acknowledged over the time from the first publish to the last ack.
    Afterwards the database is read to check every event id is stored once.

Both sinks run in their own process, like the server, so the publishers'
process is the same in both phases. `ratio` = server_rate / broker_rate.

The events are the outbox kinds a camera pillar sends most (see `MIX`):
ANPR plate reads, power policy steps and camera tamper raised/cleared
(the first raise per node opens a P2 alert, later ones join it). Panic
presses are left to `bench panic`. Before phase (b) every node sends its
retained status and birth (untimed), as a node does on connect.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from fleet_server.db import make_engine
from fleet_server.mqtt import parse_broker_url
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import (
    Birth,
    Capability,
    EventBase,
    Firmware,
    PlateEvent,
    PowerEvent,
    Status,
    TamperEvent,
)
from proto.topics import Channel, channel_filter
from simulators.bench_harness import (
    bench_result,
    bench_server,
    bench_work_dir,
    emit,
    loopback_broker,
    own_cpu_s,
)
from simulators.server_process import ServerProcess

logger = logging.getLogger(__name__)

# Out of every 20 events a node sends: 17 plate reads, 2 power, 1 tamper.
MIX = {"plate": 0.85, "power": 0.10, "tamper": 0.05}
_PATTERN = ["plate"] * 17 + ["power"] * 2 + ["tamper"]
EVENT_FILTER = channel_filter(Channel.EVENT)
ACK_FILTER = channel_filter(Channel.ACK)


class IngestBenchError(RuntimeError):
    """A phase of the ingest benchmark could not run."""


@dataclass(frozen=True)
class IngestBenchConfig:
    """What one run of the ingest benchmark does."""

    events: int = 20_000
    nodes: int = 500
    publishers: int = 4
    inflight: int = 100
    timeout_s: float = 180.0
    work_dir: Path | None = None
    ack_hold_s: float | None = None  # None: the server's default (`ingest_ack_hold_s`)
    db_url: str | None = None  # None: a SQLite file in the work dir; PostgreSQL: a fresh schema


def _event(node_id: str, seq: int, kind: str, ts: datetime) -> EventBase:
    event_id = new_event_id()
    if kind == "plate":
        return PlateEvent(
            node_id=node_id, ts=ts, event_id=event_id, seq=seq, camera_id="cam-1",
            track_id=f"t{seq}", plate=f"LE{seq % 10_000:04d}", confidence=0.93, frames=7,
        )  # fmt: skip
    if kind == "power":
        return PowerEvent(
            node_id=node_id, ts=ts, event_id=event_id, seq=seq, power="policy_step",
            battery_soc=0.62, autonomy_h=30.5, policy_step=seq % 3,
        )  # fmt: skip
    return TamperEvent(
        node_id=node_id, ts=ts, event_id=event_id, seq=seq, tamper="camera_blocked",
        active=(seq // len(_PATTERN)) % 2 == 0,
    )  # fmt: skip


def node_ids(nodes: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(nodes)]


def build_events(*, events: int, nodes: int) -> list[tuple[str, bytes]]:
    """`events` encoded events spread round-robin over `nodes`, in per-node seq order."""
    ts = datetime.now(timezone.utc)
    ids = node_ids(nodes)
    out: list[tuple[str, bytes]] = []
    for k in range(events):
        node_id = ids[k % nodes]
        seq = k // nodes + 1
        # Offset by node so every stretch of the run has the same mix.
        message = _event(node_id, seq, _PATTERN[(seq - 1 + k % nodes) % len(_PATTERN)], ts)
        out.append((topic_for(message), encode(message)))
    return out


def build_hellos(nodes: int) -> list[tuple[str, bytes]]:
    """Each node's online status and birth, as sent on connect."""
    ts = datetime.now(timezone.utc)
    out: list[tuple[str, bytes]] = []
    for i, node_id in enumerate(node_ids(nodes)):
        status = Status(node_id=node_id, ts=ts, state="online", bd_seq=1)
        birth = Birth(
            node_id=node_id, ts=ts, bd_seq=1, serial=f"BENCH-{i:06d}", hardware="bench",
            firmware=Firmware(version="0.1.0"), config_hash="0" * 64,
            capabilities=[Capability.CAMERA, Capability.ANPR, Capability.TAMPER],
            site_id=f"bench-site-{i // 4:04d}", district="lahore-gulberg",
        )  # fmt: skip
        out += [(topic_for(status), encode(status)), (topic_for(birth), encode(birth))]
    return out


def _no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _client(url: str, client_id: str, *, inflight: int = 100) -> mqtt.Client:
    host, port, _tls = parse_broker_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)  # unbounded: every message is published
    client.on_socket_open = _no_delay
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(15):
        client.loop_stop()
        raise IngestBenchError(f"{client_id} could not connect to {url}")
    return client


class Publishers:
    """A few paho connections; a node's messages always go out on the same one."""

    def __init__(self, url: str, *, count: int, inflight: int) -> None:
        tag = secrets.token_hex(3)
        self.clients = [
            _client(url, f"bench-pub-{tag}-{i}", inflight=inflight) for i in range(count)
        ]
        self._done = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._outstanding = 0
        for client in self.clients:
            client.on_publish = self._on_publish

    def _on_publish(self, *_args: Any) -> None:
        with self._lock:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._done.release()

    def publish(self, messages: Sequence[tuple[str, bytes]], *, timeout: float) -> float:
        """Publish all (QoS 1) and wait for the broker's PUBACKs; returns the monotonic start."""
        n = len(self.clients)
        with self._lock:
            self._outstanding += len(messages)
        started = time.monotonic()
        for topic, payload in messages:
            # bench-NNNNN: the node number picks the connection.
            self.clients[int(topic.split("/", 3)[2][6:]) % n].publish(topic, payload, qos=1)
        if not self._done.acquire(timeout=timeout):
            raise IngestBenchError("the broker did not acknowledge every publish in time")
        return started

    def stop(self) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


# ------------------------------------------------------------- sink process


class _Sink:
    """Child process: subscribe, count, report (the do-nothing subscriber or the ack counter)."""

    def __init__(self, *, url: str, mode: str, expect: int) -> None:
        self.mode = mode
        self.expect = expect
        self.count = 0
        self.acked: set[str] = set()
        self.first_at: float | None = None
        self.last_at = 0.0
        self.done = threading.Event()
        self.ready = threading.Event()
        host, port, _tls = parse_broker_url(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-sink-{mode}-{secrets.token_hex(3)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_socket_open = _no_delay
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self.ready.set()
        self.client.on_message = self._count if mode == "events" else self._count_acks
        self.client.connect(host, port, keepalive=60)

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe(EVENT_FILTER if self.mode == "events" else ACK_FILTER, qos=1)

    def _count(self, _c: mqtt.Client, _u: Any, _msg: mqtt.MQTTMessage) -> None:
        # The do-nothing subscriber: no decode, no storage.
        self.count += 1
        self.last_at = time.monotonic()
        if self.count >= self.expect:
            self.done.set()

    def _count_acks(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.last_at = time.monotonic()
        self.count += 1
        self.acked.update(json.loads(msg.payload)["event_ids"])
        if len(self.acked) >= self.expect:
            self.done.set()


def sink_main(argv: Sequence[str]) -> int:
    """`python -m simulators.bench_ingest --url U --mode events|acks --expect N --timeout S`."""
    parser = argparse.ArgumentParser(prog="bench-ingest-sink")
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=["events", "acks"], required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args(argv)
    sink = _Sink(url=args.url, mode=args.mode, expect=args.expect)
    sink.client.loop_start()
    try:
        if not sink.ready.wait(15):
            emit(json.dumps({"error": "not subscribed"}))
            return 1
        emit("ready")
        cpu_before = own_cpu_s()
        sink.done.wait(args.timeout)  # bounded; the parent also terminates us
        cpu_s = own_cpu_s() - cpu_before
    finally:
        sink.client.disconnect()
        sink.client.loop_stop()
    emit(
        json.dumps(
            {
                "messages": sink.count,
                "events": len(sink.acked) if args.mode == "acks" else sink.count,
                "last_at": sink.last_at,
                "cpu_s": round(cpu_s, 3),
            }
        )
    )
    return 0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _sink(url: str, *, mode: str, expect: int, timeout: float) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.bench_ingest", "--url", url, "--mode", mode,
         "--expect", str(expect), "--timeout", str(timeout)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        if _readline(proc.stdout, 30) != "ready":
            raise IngestBenchError(f"{mode} sink did not subscribe")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def _readline(stream: IO[str], timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0].strip() if box else ""


def _sink_result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    line = _readline(proc.stdout, timeout)
    if not line:
        raise IngestBenchError("sink gave no result")
    result: dict[str, Any] = json.loads(line)
    return result


# ------------------------------------------------------------------- phases


def _publish_all(
    config: IngestBenchConfig, url: str, messages: Sequence[tuple[str, bytes]]
) -> float:
    """Publish from fresh publishers until the broker acked all; returns the monotonic start."""
    publishers = Publishers(url, count=config.publishers, inflight=config.inflight)
    try:
        return publishers.publish(messages, timeout=config.timeout_s)
    finally:
        publishers.stop()


def _counted_publish(
    config: IngestBenchConfig, url: str, events: list[tuple[str, bytes]], *, mode: str
) -> tuple[float, dict[str, Any]]:
    """Publish the events while a sink child counts them (``events``) or their acks (``acks``)."""
    with _sink(url, mode=mode, expect=len(events), timeout=config.timeout_s) as proc:
        started = _publish_all(config, url, events)
        return started, _sink_result(proc, config.timeout_s + 10)


def _broker_phase(
    config: IngestBenchConfig, url: str, events: list[tuple[str, bytes]]
) -> dict[str, Any]:
    started, got = _counted_publish(config, url, events, mode="events")
    elapsed = got["last_at"] - started
    return {
        "delivered": got["events"],
        "subscriber_cpu_ms_per_1k": round(got["cpu_s"] * 1e6 / max(got["events"], 1), 1),
        "seconds": round(elapsed, 3),
        "rate": round(got["events"] / elapsed, 1) if elapsed > 0 else None,
    }


def _wait_ingested(server: ServerProcess, *, received: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        ingest: dict[str, Any] = httpx.get(f"{server.base_url}/healthz", timeout=5).json()["ingest"]
        if ingest["received"] >= received and ingest["backlog"] == 0:
            return ingest
        if time.monotonic() > deadline:
            raise IngestBenchError(f"server ingested {ingest} of {received} in {timeout}s")
        time.sleep(0.1)


def _server_phase(
    config: IngestBenchConfig,
    url: str,
    events: list[tuple[str, bytes]],
    hellos: list[tuple[str, bytes]],
    work: Path,
) -> dict[str, Any]:
    env: dict[str, str] = {}
    if config.ack_hold_s is not None:
        env["NIGEHBAAN_INGEST_ACK_HOLD_S"] = str(config.ack_hold_s)
    with bench_database(config.db_url, work) as db_url:
        return _server_run(config, url, events, hellos, work, db_url=db_url, env=env)


def _server_run(
    config: IngestBenchConfig,
    url: str,
    events: list[tuple[str, bytes]],
    hellos: list[tuple[str, bytes]],
    work: Path,
    *,
    db_url: str,
    env: dict[str, str],
) -> dict[str, Any]:
    server = bench_server(work=work, broker_url=url, db_url=db_url, env=env)
    server.start()
    try:
        before = _warm_up(config, server, url, hellos)
        assert server.pid is not None
        cpu_before = process_cpu_s(server.pid)
        started, got = _counted_publish(config, url, events, mode="acks")
        stats = _wait_ingested(server, received=before + len(events), timeout=30)
        cpu_s = process_cpu_s(server.pid) - cpu_before
    finally:
        server.stop()
    stored = _stored(db_url, [_event_id(p) for _, p in events])
    elapsed = got["last_at"] - started
    good = min(got["events"], stored["persisted"])
    batches = stats["batches"]
    return {
        "db_url": make_url(db_url).render_as_string(hide_password=True),
        "acked": got["events"],
        "ack_messages": got["messages"],
        "ack_hold_s": stats["ack_hold_s"],  # as the server reported it
        **stored,
        "rejected": stats["rejected"],
        "failed": stats["failed"],
        "mean_batch": round(stats["received"] / batches, 1) if batches else None,
        "server_cpu_ms_per_1k": round(cpu_s * 1e6 / max(len(events), 1), 1),
        "seconds": round(elapsed, 3),
        "rate": round(good / elapsed, 1) if elapsed > 0 else None,
    }


def _warm_up(
    config: IngestBenchConfig, server: ServerProcess, url: str, hellos: list[tuple[str, bytes]]
) -> int:
    _publish_all(config, url, hellos)
    # Retained statuses of earlier runs may come too; wait for at least ours.
    return int(_wait_ingested(server, received=len(hellos), timeout=60)["received"])


def _event_id(payload: bytes) -> str:
    return str(json.loads(payload)["event_id"])


def _stored(db_url: str, event_ids: list[str]) -> dict[str, int]:
    """How many of `event_ids` the server's database holds (and how many rows in all)."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = {r[0] for r in conn.exec_driver_sql("SELECT event_id FROM event")}
    finally:
        engine.dispose()
    persisted = sum(1 for i in event_ids if i in rows)
    return {"persisted": persisted, "event_rows": len(rows), "missing": len(event_ids) - persisted}


def check_bench_database(db_url: str) -> str:
    """The database kind of `--db`, or `IngestBenchError`: loopback PostgreSQL or SQLite only.

    A benchmark loads what it points at; it must never be a database on
    another machine (the project's rule for load tests: 127.0.0.0/8 only).
    """
    try:
        parsed = make_url(db_url)
    except ArgumentError as exc:
        raise IngestBenchError(f"not a database URL: {db_url!r}") from exc
    kind = parsed.get_backend_name()
    if kind == "sqlite":
        return kind
    if kind != "postgresql":
        raise IngestBenchError(f"--db must be sqlite or postgresql, not {kind!r}")
    host = parsed.host or "localhost"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise IngestBenchError(
            f"--db host {host!r} is not on loopback; benchmarks only load 127.0.0.0/8"
        )
    return kind


@contextlib.contextmanager
def bench_database(db_url: str | None, work: Path) -> Iterator[str]:
    """The URL the server phase uses: a SQLite file, or a throwaway PostgreSQL schema."""
    if db_url is None:
        yield f"sqlite:///{work / 'server' / 'fleet.db'}"
        return
    if check_bench_database(db_url) == "sqlite":
        yield db_url
        return
    schema = f"nbbench_{secrets.token_hex(6)}"
    admin = make_engine(db_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        separator = "&" if "?" in db_url else "?"
        yield f"{db_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def run_ingest_bench(config: IngestBenchConfig) -> dict[str, Any]:
    """Run both phases once and return the result record."""
    started_at = time.time()
    events = build_events(events=config.events, nodes=config.nodes)
    hellos = build_hellos(config.nodes)
    with bench_work_dir(config.work_dir) as work, loopback_broker(work) as broker:
        broker_phase = _broker_phase(config, broker.url, events)
        server_phase = _server_phase(config, broker.url, events, hellos, work)
    broker_rate, server_rate = broker_phase["rate"], server_phase["rate"]
    ratio = round(server_rate / broker_rate, 3) if broker_rate and server_rate else None
    figures = {
        "events": config.events,
        "nodes": config.nodes,
        "publishers": config.publishers,
        "inflight": config.inflight,
        "qos": 1,
        "database": make_url(server_phase["db_url"]).get_backend_name(),
        "mix": MIX,
        "broker_rate": broker_rate,
        "server_rate": server_rate,
        "ratio": ratio,
        "lost": config.events - min(server_phase["acked"], server_phase["persisted"]),
        "broker": broker_phase,
        "server": server_phase,
    }
    return bench_result("ingest", figures, started_at=started_at)


if __name__ == "__main__":  # the sink child process
    sys.exit(sink_main(sys.argv[1:]))
