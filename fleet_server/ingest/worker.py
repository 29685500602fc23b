"""The ingest worker: the thread between the MQTT client and the database.

The paho network thread only hands `(topic, payload)` to a bounded queue (and
blocks when it is full, which pushes back on the broker over TCP instead of
dropping anything). One worker thread drains whatever has accumulated, up to
`batch_max` messages, decodes it (`decode`), stores it in one transaction
(`store`), commits, and only then acknowledges the events to their nodes
(`acks`) and announces the alert changes (SSE, `AlertStateCommand`).

Under light load a batch is a single message, so latency stays low; under a
storm the queue fills while a commit runs and the next batch is larger, so
throughput grows with load instead of one transaction per message. A batch
that fails is retried message by message, so one bad message costs only
itself: it is not acked (its node's outbox sends it again) and is counted as
a `server_error` rejection.

Refused messages are counted in full (`IngestRejection`, `stats.rejected`)
but logged through a `LogGate`: one WARNING per node and reason per
`rejection_log_interval_s`, saying how many more there were, so a node
sending garbage in a loop cannot fill the disk. The same holds for replies
to commands the server never sent (`unknown_request`, see
`fleet_server.node_commands`) and for payloads without ``v`` (accepted as
version 1, counted in `stats.missing_version`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import Notifier, PolicyCache
from fleet_server.crud import add_rejections
from fleet_server.device_clock import DeviceTimeRules
from fleet_server.ingest.acks import AckCoalescer, Publisher
from fleet_server.ingest.batch import BatchOutcome
from fleet_server.ingest.decode import Rejections, decode_all, missing_version
from fleet_server.ingest.queue import BatchQueue
from fleet_server.ingest.store import store_batch
from fleet_server.models import utcnow
from fleet_server.node_commands import SentCommands, unknown_replies
from fleet_server.ratelimit import LogGate
from proto.codec import Envelope
from proto.messages import Reply

__all__ = ["IngestStats", "IngestWorker"]

logger = logging.getLogger(__name__)


@dataclass
class IngestStats:
    """Counters for logs, /healthz and benchmarks."""

    received: int = 0
    batches: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    missing_version: int = 0  # accepted as schema version 1 (docs/protocol.md)
    implausible_device_times: int = 0  # events stored with a device time that cannot be true
    late_events: int = 0  # arrived after a higher seq of their node (a recorded gap closes)
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
        device_time: DeviceTimeRules | None = None,
        sent_commands: SentCommands | None = None,
        rejection_log_interval_s: float = 60.0,
        database_check: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        # Whether the database answers: when a batch fails and it does not, the
        # batch is handed back whole (`process_decoded`) instead of being retried
        # message by message (the cluster consumer returns it to its queue).
        self.database_check = database_check
        self.publisher = publisher
        self.notify = notify
        self.ack_timeout_s = ack_timeout_s
        self.batch_max = batch_max
        self.policies = PolicyCache(ack_timeout_s=ack_timeout_s)
        self.stats = IngestStats()
        self.acks = AckCoalescer(publisher, hold_s=ack_hold_s)
        self.device_time = device_time  # which device times are implausible (None: defaults)
        # None: replies are not screened (a worker built without the server's publisher).
        self.sent_commands = sent_commands
        self.log_gate = LogGate(interval_s=rejection_log_interval_s)
        self._queue: BatchQueue[tuple[str, bytes] | None] = BatchQueue(queue_max)
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
        envelopes, rejections = decode_all(raw)
        self.process_decoded(envelopes, rejections, received=len(raw))

    def process_decoded(
        self, envelopes: Sequence[Envelope], rejections: Rejections, *, received: int
    ) -> list[Envelope]:
        """Store, commit, then ack and announce a batch already decoded; the envelopes not stored.

        The MQTT path (`process`) decodes here; the cluster consumer
        (`fleet_server.cluster.consumer`) decodes each delivery itself, to
        dead-letter the refused ones, and hands the rest in. With a
        `database_check` that says the database is down after the batch failed,
        every envelope comes back unstored and nothing is counted (the caller
        returns the batch to its queue); otherwise a failed batch is retried
        message by message and only the ones that still fail come back.
        """
        self.stats.received += received
        self.stats.batches += 1
        now = utcnow()
        self._note_versionless(envelopes)
        # What was refused, as committed: the decoder's tally plus replies screened out.
        counted: Rejections = dict(rejections)
        unstored: list[Envelope] = []
        try:
            outcome = self._commit(envelopes, rejections, now, counted=counted)
        except Exception:
            if self.database_check is not None and not self.database_check():
                logger.warning("database unreachable: batch of %s handed back", len(envelopes))
                # Not received after all: it comes back, and is counted, when redelivered.
                self.stats.received -= received
                self.stats.batches -= 1
                return list(envelopes)
            logger.exception("batch of %s failed; retrying message by message", received)
            outcome = BatchOutcome()
            for envelope in envelopes:
                try:
                    one = self._commit([envelope], {}, now, counted=counted)
                except Exception as exc:
                    # Not acked: the node's outbox will send it again.
                    self.stats.failed += 1
                    unstored.append(envelope)
                    logger.exception("could not store %s", envelope.topic)
                    self._count_failure(envelope, exc, now)
                    continue
                for node_id, ids in one.acks.items():
                    outcome.acks.setdefault(node_id, []).extend(ids)
                outcome.notices += one.notices
                outcome.urgent |= one.urgent
                outcome.inserted += one.inserted
                outcome.duplicates += one.duplicates
                outcome.implausible += one.implausible
                outcome.late += one.late
            if rejections:
                self._commit([], rejections, now, counted={})
        self.stats.rejected += sum(n for n, _, _ in counted.values())
        self._log_rejections(counted)
        self.stats.inserted += outcome.inserted
        self.stats.duplicates += outcome.duplicates
        self.stats.implausible_device_times += outcome.implausible
        self.stats.late_events += outcome.late
        # Acks go out after the commit; while more is queued, non-panic ones may wait
        # for the next batches (`fleet_server.ingest.acks.AckCoalescer`).
        self.acks.add(outcome.acks, urgent=outcome.urgent, backlog=self.backlog, now=now)
        self.stats.ack_messages, self.stats.acks_held = self.acks.messages, self.acks.held
        if outcome.notices:
            self.notify(outcome.notices)
        return unstored

    def _note_versionless(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            if missing_version(envelope):
                self.stats.missing_version += 1
                node_id = envelope.topic.node_id
                others = self.log_gate.admit((node_id, "missing_version"))
                if others is not None:
                    logger.warning(
                        "node %r sent a payload without 'v' on %s; accepted as schema version 1%s",
                        node_id,
                        envelope.topic,
                        _more(others),
                    )

    def _log_rejections(self, rejections: Rejections) -> None:
        for (reason, node_id), (n, detail, topic) in rejections.items():
            others = self.log_gate.admit((node_id, reason), n)
            if others is not None:
                logger.warning(
                    "rejected %s from node %r on %s: %s%s",
                    reason,
                    node_id,
                    topic,
                    detail,
                    _more(others),
                )

    def _screen_replies(
        self, session: Session, envelopes: Sequence[Envelope], rejections: Rejections
    ) -> Sequence[Envelope]:
        """Drop replies to commands never sent to their node, tallied as `unknown_request`."""
        if self.sent_commands is None:
            return envelopes
        replies = [
            (e.topic.node_id, e.message.request_id)
            for e in envelopes
            if isinstance(e.message, Reply)
        ]
        if not replies:
            return envelopes
        unknown = unknown_replies(session=session, replies=replies, sent=self.sent_commands)
        if not unknown:
            return envelopes
        kept: list[Envelope] = []
        for envelope in envelopes:
            message = envelope.message
            key = (envelope.topic.node_id, getattr(message, "request_id", ""))
            if isinstance(message, Reply) and key in unknown:
                n, _, _ = rejections.get(("unknown_request", key[0]), (0, "", ""))
                rejections[("unknown_request", key[0])] = (
                    n + 1,
                    f"reply to request {key[1]!r}, which this server never sent to {key[0]!r}",
                    str(envelope.topic),
                )
            else:
                kept.append(envelope)
        return kept

    def _commit(
        self,
        envelopes: Sequence[Envelope],
        rejections: Rejections,
        now: datetime,
        *,
        counted: Rejections,
    ) -> BatchOutcome:
        """Store one batch; replies screened out are added to `counted` once committed."""
        screened: Rejections = {}
        with Session(self.engine, expire_on_commit=False) as session:
            envelopes = self._screen_replies(session, envelopes, screened)
            policies = self.policies.get(session)
            outcome = store_batch(
                session=session, envelopes=envelopes, now=now, policies=policies,
                device_time=self.device_time,
            )  # fmt: skip
            if rejections or screened:
                add_rejections(session=session, counts=_merged(rejections, screened), now=now)
            session.commit()
        for key, value in _merged(counted, screened).items():
            counted[key] = value
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


def _merged(a: Rejections, b: Rejections) -> Rejections:
    out = dict(a)
    for key, (n, detail, topic) in b.items():
        m = out.get(key, (0, "", ""))[0]
        out[key] = (m + n, detail, topic)
    return out


def _more(others: int) -> str:
    return f" (+{others} more like it since the last such line)" if others else ""
