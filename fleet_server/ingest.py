"""MQTT ingest: decode uplink messages, store them in batches, ack after commit.

The paho network thread only hands `(topic, payload)` to a bounded queue (and
blocks when it is full, which pushes back on the broker over TCP instead of
dropping anything). One worker thread drains whatever has accumulated, up to
`batch_max` messages, and stores it in one transaction: events are inserted
by `event_id` (a redelivery is dropped but acknowledged again), panic presses
open or join alerts, status/birth/last-will drive node presence, and
sequence gaps are recorded. Only after the commit does the worker publish one
`Ack` per node and announce the alert changes (SSE, `AlertStateCommand`).

Under light load a batch is a single message, so latency stays low; under a
storm the queue fills while a commit runs and the next batch is larger, so
throughput grows with load instead of one transaction per message.

Malformed messages are refused by `proto.codec.decode_uplink`; each refusal
is counted per reason and node in the database (`IngestRejection`) and
logged with the node id, and the rest of the batch carries on.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Generic, TypeVar

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.acks import AckCoalescer, Publisher
from fleet_server.alerting import (
    AlertNotice,
    AlertRows,
    Notifier,
    Policies,
    PolicyCache,
    join_alert,
    notice,
    open_alert,
)
from fleet_server.crud import add_rejections
from fleet_server.models import (
    OPEN_STATES,
    Alert,
    AlertType,
    Event,
    Node,
    SequenceGap,
    utcnow,
)
from fleet_server.node_commands import store_reply
from fleet_server.power import (
    preload_power_states,
    record_offline,
    record_power_event,
    record_telemetry,
)
from fleet_server.presence import mark_offline_pending, mark_online
from proto.codec import Envelope, decode, encode
from proto.errors import BadTopic, ProtoError
from proto.messages import (
    Birth,
    EventBase,
    PanicEvent,
    PowerEvent,
    Reply,
    Status,
    TamperEvent,
    Telemetry,
)
from proto.topics import Topic, parse_topic

logger = logging.getLogger(__name__)
T = TypeVar("T")

Rejections = dict[tuple[str, str], tuple[int, str, str]]


@dataclass(frozen=True)
class Received(Envelope):
    """A decoded message with the payload bytes it was decoded (and validated) from."""

    payload: bytes = b""


@functools.lru_cache(maxsize=65_536)
def _uplink_topic(topic: str) -> Topic:
    """`decode_uplink`'s topic check, cached: a node sends on a handful of topics.

    A refused topic raises and is therefore not cached.
    """
    parsed = parse_topic(topic)
    if not parsed.channel.uplink:
        raise BadTopic(f"{parsed.channel.value!r} is a server→node channel", node_id=parsed.node_id)
    return parsed


def decode_all(raw: Iterable[tuple[str, bytes]]) -> tuple[list[Envelope], Rejections]:
    """Decode every message; refusals are tallied by (reason, node_id), never raised.

    Same checks as `proto.codec.decode_uplink`, with the topic parse cached.
    """
    envelopes: list[Envelope] = []
    rejections: Rejections = {}
    for topic, payload in raw:
        try:
            parsed = _uplink_topic(topic)
            envelopes.append(Received(parsed, decode(parsed, payload), payload))
        except ProtoError as exc:
            node_id = exc.node_id or ""
            logger.warning("rejected %s from node %r on %s: %s", exc.reason, node_id, topic, exc)
            n, _, _ = rejections.get((exc.reason, node_id), (0, "", ""))
            rejections[(exc.reason, node_id)] = (n + 1, str(exc), topic)
    return envelopes, rejections


@dataclass
class BatchOutcome:
    """What one committed batch means for the outside world."""

    acks: dict[str, list[str]] = field(default_factory=dict)
    urgent: set[str] = field(default_factory=set)  # nodes to ack at once (a panic press)
    notices: list[AlertNotice] = field(default_factory=list)
    inserted: int = 0
    duplicates: int = 0


def store_batch(
    *, session: Session, envelopes: Sequence[Envelope], now: datetime, policies: Policies
) -> BatchOutcome:
    """Apply decoded messages to the database (not committed) and say what to announce."""
    out = BatchOutcome()
    if not envelopes:
        return out
    # Nodes that only sent plain events (a plate read, a cleared tamper) need no ORM
    # object: their `last_seq` is read with one Core query and `last_seen_at`/`last_seq`
    # of every node in the batch are written by one statement at the end. Loading
    # and flushing a `Node` per node was a quarter of the worker in `bench ingest`.
    # Only ingest writes these two columns (one worker thread per process).
    node_ids = {e.topic.node_id for e in envelopes}
    seqs: dict[str, int | None] = dict(
        session.exec(
            select(col(Node.node_id), col(Node.last_seq)).where(col(Node.node_id).in_(node_ids))
        ).all()
    )
    needs_row = {e.topic.node_id for e in envelopes if _needs_node_row(e.message)}
    needs_row |= node_ids - seqs.keys()  # new nodes are made as ORM objects
    nodes: dict[str, Node] = {}
    if existing := needs_row & seqs.keys():
        nodes = {
            n.node_id: n for n in session.exec(select(Node).where(col(Node.node_id).in_(existing)))
        }
    fresh: set[str] = set()
    event_ids = [e.message.event_id for e in envelopes if isinstance(e.message, EventBase)]
    known: set[str] = set()
    open_alerts: dict[tuple[str, str], Alert] = {}
    if event_ids:
        known = set(session.exec(select(Event.event_id).where(col(Event.event_id).in_(event_ids))))
    # Only panic and raised tamper events open or join alerts here (power has its own
    # rules); loading every open alert of every node in the batch was a tenth of the
    # worker's time in `bench ingest` with camera nodes that keep a tamper alert open.
    alerting = {e.topic.node_id for e in envelopes if _alert_type(e.message) is not None}
    if alerting:
        for alert in session.exec(
            select(Alert)
            .where(col(Alert.node_id).in_(alerting))
            .where(col(Alert.type).in_((AlertType.PANIC, AlertType.TAMPER)))
            .where(col(Alert.state).in_(OPEN_STATES))
            .order_by(col(Alert.received_at).desc())
        ):
            open_alerts[(alert.node_id, alert.type)] = alert  # oldest wins (ordered desc)
    powered = {e.topic.node_id for e in envelopes if _has_power(e.message)}
    if powered:
        # One query for these nodes' power states instead of a `Session.get` per node in
        # `fleet_server.power`, each of which autoflushed every node touched so far (a
        # third of the worker's time in `bench ingest`). Nodes without a row are
        # remembered too, so their first power message does not miss and autoflush.
        preload_power_states(session, powered)

    event_rows: list[dict[str, object]] = []
    alert_rows = AlertRows()
    for envelope in envelopes:
        message = envelope.message
        node_id = envelope.topic.node_id
        node = nodes.get(node_id)
        if node is None and node_id in needs_row:
            node = Node(node_id=node_id, created_at=now)
            session.add(node)
            nodes[node_id] = node
            seqs[node_id] = None
            fresh.add(node_id)
            logger.info("new node %s", node_id)
        if isinstance(message, EventBase):
            acked = out.acks.setdefault(node_id, [])
            if isinstance(message, PanicEvent):
                out.urgent.add(node_id)  # the pillar's "delivered" light waits for this ack
            if message.event_id not in acked:
                acked.append(message.event_id)
            if message.event_id in known:
                out.duplicates += 1
                continue
            known.add(message.event_id)
            out.inserted += 1
            event_rows.append(
                _store_event(session, node_id, node, message, now=now, policies=policies,
                             open_alerts=open_alerts, out=out, rows=alert_rows, seqs=seqs,
                             payload=_received_payload(envelope))
            )  # fmt: skip
            continue
        assert node is not None  # every non-event message is in `needs_row`
        if isinstance(message, Birth):
            _apply_birth(node, message)
            out.notices += _presence(session, node, message.bd_seq, online=True, now=now,
                                     policies=policies, fresh=node_id in fresh)  # fmt: skip
        elif isinstance(message, Status):
            out.notices += _presence(session, node, message.bd_seq,
                                     online=message.state == "online", now=now,
                                     policies=policies, fresh=node_id in fresh)  # fmt: skip
            if message.state == "offline" and node.bd_seq == message.bd_seq:
                # Dropping off on an empty battery at night is "went dark" (power alert).
                out.notices += record_offline(session=session, node=node, now=now,
                                              policies=policies)  # fmt: skip
        elif isinstance(message, Telemetry):
            node.test_mode = message.test_mode
            out.notices += record_telemetry(session=session, node=node, telemetry=message,
                                            now=now, policies=policies)  # fmt: skip
        elif isinstance(message, Reply):
            # Kept for GET /api/v1/nodes/{id}/replies/{request_id} (commissioning).
            store_reply(session=session, node_id=node_id, reply=message, now=now)
    session.flush()  # new nodes first: events and the UPDATE below refer to them
    _write_events_and_nodes(session, event_rows, {n: seqs.get(n) for n in node_ids}, now)
    alert_rows.insert(session)
    return out


_EVENT_TABLE: Table = Event.__table__  # type: ignore[attr-defined]
_NODE_TABLE: Table = Node.__table__  # type: ignore[attr-defined]
_EVENT_COLUMNS = ("event_id", "node_id", "type", "seq", "ts", "received_at", "payload", "alert_id")
_INSERT_EVENTS = insert(_EVENT_TABLE)
# `last_seen_at` and `last_seq` of every node in a batch, in one executemany.
_TOUCH_NODES = (
    update(_NODE_TABLE)
    .where(_NODE_TABLE.c.node_id == bindparam("b_node_id"))
    .values(last_seen_at=bindparam("b_seen"), last_seq=bindparam("b_seq"))
)
# The same two statements compiled for SQLite (qmark), with their parameter order.
_SQLITE_INSERT = _INSERT_EVENTS.compile(dialect=sqlite_dialect(), column_keys=list(_EVENT_COLUMNS))
_SQLITE_TOUCH = _TOUCH_NODES.compile(dialect=sqlite_dialect())
if tuple(_SQLITE_INSERT.positiontup or ()) != _EVENT_COLUMNS or tuple(
    _SQLITE_TOUCH.positiontup or ()
) != ("b_seq", "b_seen", "b_node_id"):
    raise RuntimeError("ingest's SQLite statements changed parameter order; update the tuples")


# SQLite before 3.32 allows 999 parameters per statement; UPDATE … FROM needs 3.33.
_SQLITE_MAX_PARAMS = 999
_SQLITE_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)
# Multi-row forms (see `_write_events_and_nodes`); only placeholders are formatted in.
_SQLITE_INSERT_HEAD, _SQLITE_INSERT_ROW = str(_SQLITE_INSERT).split(" VALUES ")
_SQLITE_TOUCH_HEAD = "UPDATE node SET last_seq = v.column1, last_seen_at = ? FROM (VALUES "
_SQLITE_TOUCH_TAIL = ") AS v WHERE node.node_id = v.column2"
if _NODE_TABLE.name != "node":
    raise RuntimeError("ingest's SQLite node UPDATE names the wrong table")
MULTI_ROW_WRITES = True  # tests turn it off to compare with the Core statements


@dataclass(frozen=True)
class _MultiRowSql:
    """What differs between SQLite and PostgreSQL in the two multi-row statements."""

    max_params: int  # per statement
    insert_row: str  # "(?, ?, …)" for one event
    touch_head: str  # "UPDATE node … FROM (VALUES "
    touch_pair: str  # one (last_seq, node_id) pair
    touch_tail: str
    stored_time: Callable[[datetime], object]  # a datetime as `UtcDateTime` binds it
    touch_one_by_one: str | None = None  # no UPDATE … FROM here: this, as an executemany


def _write_events_and_nodes(
    session: Session,
    event_rows: list[dict[str, object]],
    seqs: dict[str, int | None],
    now: datetime,
) -> None:
    """Insert the batch's events and set each node's `last_seen_at`/`last_seq`.

    On SQLite and PostgreSQL the rows go to the driver directly, as multi-row
    statements (`INSERT … VALUES (…), (…)` and `UPDATE … FROM (VALUES …)`, as
    many parameters each as the database takes), with the datetimes already
    in the form `UtcDateTime` stores. In `bench ingest` on SQLite,
    SQLAlchemy's per-row parameter processing was a sixth of the worker, and
    an executemany is one `sqlite3_step` per row, each releasing the GIL and
    waiting to get it back from the MQTT thread; on PostgreSQL the Core path
    ran one UPDATE per node. Other databases take the Core executemany
    statements.
    """
    spec = _MULTI_ROW.get(session.get_bind().dialect.name) if MULTI_ROW_WRITES else None
    if spec is None:
        if event_rows:
            session.execute(_INSERT_EVENTS, event_rows)
        session.execute(
            _TOUCH_NODES, [{"b_node_id": n, "b_seen": now, "b_seq": s} for n, s in seqs.items()]
        )
        return
    connection = session.connection()
    seen = spec.stored_time(now)
    rows = [
        tuple(
            seen
            if name == "received_at"
            else spec.stored_time(row[name])  # type: ignore[arg-type]
            if name == "ts"
            else row[name]
            for name in _EVENT_COLUMNS
        )
        for row in event_rows
    ]
    step = spec.max_params // len(_EVENT_COLUMNS)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        sql = _SQLITE_INSERT_HEAD + " VALUES " + ", ".join([spec.insert_row] * len(chunk))
        connection.exec_driver_sql(sql, tuple(v for row in chunk for v in row))
    if spec.touch_one_by_one is not None:
        connection.exec_driver_sql(spec.touch_one_by_one, [(s, seen, n) for n, s in seqs.items()])
        return
    touched = list(seqs.items())
    step = (spec.max_params - 1) // 2
    for start in range(0, len(touched), step):
        pairs = touched[start : start + step]
        sql = spec.touch_head + ", ".join([spec.touch_pair] * len(pairs)) + spec.touch_tail
        connection.exec_driver_sql(sql, (seen, *(v for n, s in pairs for v in (s, n))))


def _naive_utc(value: datetime) -> datetime:
    """An aware datetime as `UtcDateTime` binds it on PostgreSQL: naive, in UTC."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def sqlite_datetime(value: datetime) -> str:
    """An aware datetime as `UtcDateTime` stores it on SQLite (naive UTC, microseconds)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    v = value.astimezone(timezone.utc)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


_MULTI_ROW = {
    "sqlite": _MultiRowSql(
        max_params=_SQLITE_MAX_PARAMS,
        insert_row=_SQLITE_INSERT_ROW,
        touch_head=_SQLITE_TOUCH_HEAD,
        touch_pair="(?, ?)",
        touch_tail=_SQLITE_TOUCH_TAIL,
        stored_time=sqlite_datetime,
        touch_one_by_one=None if _SQLITE_UPDATE_FROM else str(_SQLITE_TOUCH),
    ),
    # PostgreSQL's protocol allows 65,535 parameters per statement.
    "postgresql": _MultiRowSql(
        max_params=65_535,
        insert_row="(" + ", ".join(["%s"] * len(_EVENT_COLUMNS)) + ")",
        touch_head="UPDATE node SET last_seq = v.seq, last_seen_at = %s FROM (VALUES ",
        touch_pair="(%s::integer, %s)",
        touch_tail=") AS v(seq, node_id) WHERE node.node_id = v.node_id",
        stored_time=_naive_utc,
    ),
}


def _needs_node_row(message: object) -> bool:
    """Whether handling `message` reads or changes `Node` beyond `last_seen_at`/`last_seq`."""
    if not isinstance(message, EventBase):
        return True
    return isinstance(message, PowerEvent) or _alert_type(message) is not None


def _received_payload(envelope: Envelope) -> str | None:
    """The payload as received, for the `payload` column (None: re-encode the message).

    `decode_uplink` validated exactly these bytes (strict JSON against the model),
    so they are stored as they came, not re-encoded: nodes send canonical JSON
    (`proto.codec.encode`), and what a node sent is the better record anyway.
    """
    if isinstance(envelope, Received) and envelope.payload:
        try:
            return envelope.payload.decode("utf-8")
        except UnicodeDecodeError:  # JSON is UTF-8; keep the canonical dump if not
            return None
    return None


def _alert_type(message: object) -> str | None:
    """The alert an event opens or joins in `_store_event` (power events: see `power`)."""
    if isinstance(message, PanicEvent):
        return AlertType.PANIC
    if isinstance(message, TamperEvent) and message.active:
        return AlertType.TAMPER
    return None


def _has_power(message: object) -> bool:
    return isinstance(message, PowerEvent) or (
        isinstance(message, Telemetry) and message.power is not None
    )


def _apply_birth(node: Node, birth: Birth) -> None:
    node.serial = birth.serial
    node.hardware = birth.hardware
    node.firmware_version = birth.firmware.version
    node.site_id = birth.site_id
    node.district = birth.district
    if birth.location is not None:
        node.lat, node.lon = birth.location.lat, birth.location.lon


def _presence(
    session: Session,
    node: Node,
    bd_seq: int,
    *,
    online: bool,
    now: datetime,
    policies: Policies,
    fresh: bool,
) -> list[AlertNotice]:
    if node.bd_seq is not None and bd_seq < node.bd_seq:
        # A last-will (or retained status) from an older session arriving late.
        logger.debug("ignoring stale status bd_seq %s < %s for %s", bd_seq, node.bd_seq, node)
        return []
    node.bd_seq = bd_seq
    if not online:
        mark_offline_pending(node=node, now=now)
        return []
    if fresh:
        node.online = True
        node.online_changed_at = now
        return []
    return mark_online(session=session, node=node, now=now, policies=policies)


def _store_event(
    session: Session,
    node_id: str,
    node: Node | None,
    message: EventBase,
    *,
    now: datetime,
    policies: Policies,
    open_alerts: dict[tuple[str, str], Alert],
    out: BatchOutcome,
    seqs: dict[str, int | None],
    rows: AlertRows | None = None,
    payload: str | None = None,
) -> dict[str, object]:
    """Sequence check, alert open/join; returns the `event` row to insert.

    `node` is None for events that need no `Node` object (see `_needs_node_row`);
    `seqs` holds each node's highest seq so far (written back by `store_batch`).
    """
    last_seq = seqs.get(node_id)
    if last_seq is not None and message.seq > last_seq + 1:
        session.add(
            SequenceGap(
                node_id=node_id,
                first_missing=last_seq + 1,
                last_missing=message.seq - 1,
                detected_at=now,
                event_id=message.event_id,
            )
        )
        logger.warning(
            "node %s sequence gap: %s..%s missing", node_id, last_seq + 1, message.seq - 1
        )
    if last_seq is None or message.seq > last_seq:
        seqs[node_id] = message.seq
    event: dict[str, object] = {
        "event_id": message.event_id,
        "node_id": node_id,
        "type": str(getattr(message, "type", "unknown")),
        "seq": message.seq,
        "ts": message.ts,
        "received_at": now,
        "payload": payload if payload is not None else encode(message).decode(),
        "alert_id": None,
    }

    if node is None:
        return event
    if isinstance(message, PowerEvent):
        # One open alert per node per power kind; the rules are in fleet_server.power.
        alert_id, notices = record_power_event(session=session, node=node, event=message,
                                               now=now, policies=policies)  # fmt: skip
        event["alert_id"] = alert_id
        out.notices += notices
        return event
    alert_type = _alert_type(message)
    if alert_type is None:
        return event
    test = isinstance(message, PanicEvent) and message.test
    detail = message.tamper if isinstance(message, TamperEvent) else None
    existing = None if test else open_alerts.get((node.node_id, alert_type))
    if existing is not None:
        join_alert(alert=existing, event_id=message.event_id, now=now)
        event["alert_id"] = existing.id
        out.notices.append(notice("joined", existing, now=now, event_id=message.event_id))
        return event
    alert = open_alert(
        session=session,
        node=node,
        alert_type=alert_type,
        now=now,
        policies=policies,
        event_id=message.event_id,
        pressed_at=message.ts,
        test=test,
        detail=detail,
        rows=rows,
    )
    event["alert_id"] = alert.id
    if not test:
        open_alerts[(node.node_id, alert_type)] = alert
    out.notices.append(notice("created", alert, now=now, event_id=message.event_id))
    return event


class _BatchQueue(Generic[T]):
    """A bounded FIFO whose consumer takes everything waiting (up to a limit) at once.

    `queue.Queue` takes its lock and signals per item on both sides; the worker
    draining it item by item cost a few percent of the process in `bench ingest`.
    `put` blocks while full (TCP backpressure on the broker, never a drop).
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        with self._lock:
            while len(self._items) >= self._maxsize:
                self._not_full.wait()
            self._items.append(item)
            if len(self._items) == 1:
                self._not_empty.notify()

    def get_batch(self, limit: int) -> list[T]:
        """Wait for at least one item; return up to `limit` in order."""
        with self._lock:
            while not self._items:
                self._not_empty.wait()
            items = self._items
            if len(items) <= limit:
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(limit)]
            self._not_full.notify_all()
            return batch


@dataclass
class IngestStats:
    """Counters for logs, /healthz and benchmarks."""

    received: int = 0
    batches: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    refused_closing: int = 0  # arrived while stopping; the nodes re-send them
    ack_messages: int = 0
    acks_held: int = 0  # event ids committed, ack not yet sent (coalescing under backlog)


class IngestWorker:
    """The thread between the MQTT client and the database (see the module docstring)."""

    def __init__(
        self,
        *,
        engine: Engine,
        publisher: Publisher,
        notify: Notifier,
        ack_timeout_s: float,
        batch_max: int = 500,
        queue_max: int = 50_000,
        ack_hold_s: float = 0.5,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.notify = notify
        self.ack_timeout_s = ack_timeout_s
        self.batch_max = batch_max
        self.policies = PolicyCache(ack_timeout_s=ack_timeout_s)
        self.stats = IngestStats()
        self.acks = AckCoalescer(publisher, hold_s=ack_hold_s)
        self._queue: _BatchQueue[tuple[str, bytes] | None] = _BatchQueue(queue_max)
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, topic: str, payload: bytes) -> None:
        """Hand one message over; blocks (TCP backpressure) while the queue is full.

        After `stop` began nothing is taken (or blocked on): the message is not
        stored and not acked, so its node's outbox sends it again later.
        """
        if self._closing:
            self.stats.refused_closing += 1
            return
        self._queue.put((topic, payload))

    @property
    def backlog(self) -> int:
        """Messages waiting for the worker."""
        return len(self._queue)

    def start(self) -> None:
        """Start the worker thread."""
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="nigehbaan-ingest", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop."""
        if self._thread is None:
            return
        self._closing = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("ingest worker did not stop within %ss", timeout)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[str, bytes]] = []
            for item in self._queue.get_batch(self.batch_max):
                if item is None:  # `stop`: what came before it is still processed
                    stopping = True
                    break
                batch.append(item)
            if not batch:
                continue
            try:
                self.process(batch)
            except Exception:
                logger.exception("ingest batch of %s failed", len(batch))
        self._flush_acks()

    def _flush_acks(self) -> None:
        try:
            self.acks.flush(now=utcnow())
        except Exception:
            logger.exception("could not publish held acks; the nodes will re-send")
        self.stats.ack_messages, self.stats.acks_held = self.acks.messages, self.acks.held

    def process(self, raw: Sequence[tuple[str, bytes]]) -> None:
        """Decode, store, commit, then ack and announce one batch."""
        self.stats.received += len(raw)
        self.stats.batches += 1
        now = utcnow()
        envelopes, rejections = decode_all(raw)
        self.stats.rejected += sum(n for n, _, _ in rejections.values())
        try:
            outcome = self._commit(envelopes, rejections, now)
        except Exception:
            logger.exception("batch of %s failed; retrying message by message", len(raw))
            outcome = BatchOutcome()
            for envelope in envelopes:
                try:
                    one = self._commit([envelope], {}, now)
                except Exception as exc:
                    # Not acked: the node's outbox will send it again.
                    self.stats.failed += 1
                    logger.exception("could not store %s", envelope.topic)
                    self._count_failure(envelope, exc, now)
                    continue
                for node_id, ids in one.acks.items():
                    outcome.acks.setdefault(node_id, []).extend(ids)
                outcome.notices += one.notices
                outcome.urgent |= one.urgent
                outcome.inserted += one.inserted
                outcome.duplicates += one.duplicates
            if rejections:
                self._commit([], rejections, now)
        self.stats.inserted += outcome.inserted
        self.stats.duplicates += outcome.duplicates
        # Acks go out after the commit; while more is queued, non-panic ones may wait
        # for the next batches (`fleet_server.acks.AckCoalescer`).
        self.acks.add(outcome.acks, urgent=outcome.urgent, backlog=self.backlog, now=now)
        self.stats.ack_messages, self.stats.acks_held = self.acks.messages, self.acks.held
        if outcome.notices:
            self.notify(outcome.notices)

    def _commit(
        self, envelopes: Sequence[Envelope], rejections: Rejections, now: datetime
    ) -> BatchOutcome:
        with Session(self.engine, expire_on_commit=False) as session:
            policies = self.policies.get(session)
            outcome = store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
            if rejections:
                add_rejections(session=session, counts=rejections, now=now)
            session.commit()
        return outcome

    def _count_failure(self, envelope: Envelope, exc: Exception, now: datetime) -> None:
        try:
            with Session(self.engine) as session:
                add_rejections(
                    session=session,
                    counts={
                        ("server_error", envelope.topic.node_id): (
                            1,
                            repr(exc),
                            str(envelope.topic),
                        )
                    },
                    now=now,
                )
                session.commit()
        except Exception:
            logger.exception("could not count a server_error rejection")
