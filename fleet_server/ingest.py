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

import logging
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerts import (
    AlertNotice,
    AlertRows,
    Notifier,
    Policies,
    PolicyCache,
    join_alert,
    notice,
    open_alert,
)
from fleet_server.crud import add_rejections, mark_offline_pending, mark_online
from fleet_server.models import (
    OPEN_STATES,
    Alert,
    AlertType,
    Event,
    Node,
    PowerState,
    SequenceGap,
    utcnow,
)
from fleet_server.node_commands import store_reply
from fleet_server.power import record_offline, record_power_event, record_telemetry
from proto.codec import Envelope, decode_uplink, encode, encode_canonical
from proto.errors import ProtoError
from proto.messages import (
    Ack,
    Birth,
    EventBase,
    PanicEvent,
    PowerEvent,
    Reply,
    Status,
    TamperEvent,
    Telemetry,
)
from proto.topics import ack_topic

logger = logging.getLogger(__name__)

ACK_MAX_IDS = 500  # proto.messages.Ack.event_ids max_length


class Publisher(Protocol):
    """Where acks and commands go (the MQTT link, or a list in unit tests)."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...


Rejections = dict[tuple[str, str], tuple[int, str, str]]


def decode_all(raw: Iterable[tuple[str, bytes]]) -> tuple[list[Envelope], Rejections]:
    """Decode every message; refusals are tallied by (reason, node_id), never raised."""
    envelopes: list[Envelope] = []
    rejections: Rejections = {}
    for topic, payload in raw:
        try:
            envelopes.append(decode_uplink(topic, payload))
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
    node_ids = {e.topic.node_id for e in envelopes}
    nodes = {
        n.node_id: n for n in session.exec(select(Node).where(col(Node.node_id).in_(node_ids)))
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
        # third of the worker's time in `bench ingest`). Kept in `session.info` because
        # the identity map holds clean objects weakly.
        session.info["ingest_power_states"] = session.exec(
            select(PowerState).where(col(PowerState.node_id).in_(powered))
        ).all()

    event_rows: list[dict[str, object]] = []
    alert_rows = AlertRows()
    for envelope in envelopes:
        message = envelope.message
        node_id = envelope.topic.node_id
        node = nodes.get(node_id)
        if node is None:
            node = Node(node_id=node_id, created_at=now)
            session.add(node)
            nodes[node_id] = node
            fresh.add(node_id)
            logger.info("new node %s", node_id)
        node.last_seen_at = now
        if isinstance(message, EventBase):
            acked = out.acks.setdefault(node_id, [])
            if message.event_id not in acked:
                acked.append(message.event_id)
            if message.event_id in known:
                out.duplicates += 1
                continue
            known.add(message.event_id)
            out.inserted += 1
            event_rows.append(
                _store_event(session, node, message, now=now, policies=policies,
                             open_alerts=open_alerts, out=out, rows=alert_rows)
            )  # fmt: skip
        elif isinstance(message, Birth):
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
    if event_rows:
        # Plain executemany: building an ORM object per event costs more than the insert.
        session.flush()
        session.execute(insert(Event), event_rows)
    alert_rows.insert(session)
    return out


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
    node: Node,
    message: EventBase,
    *,
    now: datetime,
    policies: Policies,
    open_alerts: dict[tuple[str, str], Alert],
    out: BatchOutcome,
    rows: AlertRows | None = None,
) -> dict[str, object]:
    """Sequence check, alert open/join; returns the `event` row to insert."""
    if node.last_seq is not None and message.seq > node.last_seq + 1:
        session.add(
            SequenceGap(
                node_id=node.node_id,
                first_missing=node.last_seq + 1,
                last_missing=message.seq - 1,
                detected_at=now,
                event_id=message.event_id,
            )
        )
        logger.warning(
            "node %s sequence gap: %s..%s missing",
            node.node_id,
            node.last_seq + 1,
            message.seq - 1,
        )
    if node.last_seq is None or message.seq > node.last_seq:
        node.last_seq = message.seq
    event: dict[str, object] = {
        "event_id": message.event_id,
        "node_id": node.node_id,
        "type": str(getattr(message, "type", "unknown")),
        "seq": message.seq,
        "ts": message.ts,
        "received_at": now,
        "payload": encode(message).decode(),
        "alert_id": None,
    }

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


def publish_acks(publisher: Publisher, acks: dict[str, list[str]], *, now: datetime) -> None:
    """One `Ack` per node (split at the wire limit) for events now committed.

    A batch acks hundreds of nodes at the same `now`: one `Ack` is built and
    validated, and the others reuse its canonical dump with their node id and
    event ids (both validated when the events were decoded), which is what
    `encode(Ack(...))` would give, at a fifth of the cost.
    """
    template: dict[str, object] | None = None
    for node_id, ids in acks.items():
        for start in range(0, len(ids), ACK_MAX_IDS):
            chunk = ids[start : start + ACK_MAX_IDS]
            if template is None:
                template = Ack(node_id=node_id, ts=now, event_ids=chunk).model_dump(
                    mode="json", exclude_none=True
                )
            payload = encode_canonical({**template, "node_id": node_id, "event_ids": chunk})
            publisher.publish(ack_topic(node_id), payload, qos=1)


@dataclass
class IngestStats:
    """Counters for logs, /healthz and benchmarks."""

    received: int = 0
    batches: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0


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
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.notify = notify
        self.ack_timeout_s = ack_timeout_s
        self.batch_max = batch_max
        self.policies = PolicyCache(ack_timeout_s=ack_timeout_s)
        self.stats = IngestStats()
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=queue_max)
        self._thread: threading.Thread | None = None

    def submit(self, topic: str, payload: bytes) -> None:
        """Hand one message over; blocks (TCP backpressure) while the queue is full."""
        self._queue.put((topic, payload))

    @property
    def backlog(self) -> int:
        """Messages waiting for the worker."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="nigehbaan-ingest", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("ingest worker did not stop within %ss", timeout)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.batch_max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            try:
                self.process(batch)
            except Exception:
                logger.exception("ingest batch of %s failed", len(batch))

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
                outcome.inserted += one.inserted
                outcome.duplicates += one.duplicates
            if rejections:
                self._commit([], rejections, now)
        self.stats.inserted += outcome.inserted
        self.stats.duplicates += outcome.duplicates
        publish_acks(self.publisher, outcome.acks, now=now)
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
