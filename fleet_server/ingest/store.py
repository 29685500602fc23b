"""Storing one decoded batch in the database: the loop every message goes through.

`store_batch` reads what the batch needs in as few queries as it can (the
nodes' `last_seq`, which event ids are already stored, the node rows and
preloads its handlers asked for), then applies every message in arrival
order through its handler (`fleet_server.ingest.registry`) and writes the
events and node touches in bulk (`fleet_server.ingest.writer`). Events are
inserted by `event_id`: a redelivery is dropped, counted, and acked again.
Nothing is committed here; the worker commits, then acks and announces.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

import fleet_server.ingest.handlers  # registers the built-in handlers
import fleet_server.ingest.plate_reads  # noqa: F401 - registers the plate read handler
from fleet_server.alerting import Policies
from fleet_server.device_clock import DeviceTimeRules
from fleet_server.ingest.batch import Batch, BatchOutcome
from fleet_server.ingest.decode import received_payload
from fleet_server.ingest.registry import handler_for
from fleet_server.ingest.watchlist_hits import register as _register_watchlists  # noqa: F401
from fleet_server.ingest.writer import write_events_and_nodes
from fleet_server.models import Event, Node, SequenceGap
from fleet_server.presence import prove_connected
from fleet_server.privacy.ingest import register as _register_privacy  # noqa: F401 - wraps last
from proto.codec import Envelope, encode
from proto.messages import Birth, EventBase, Status

__all__ = ["store_batch"]

logger = logging.getLogger(__name__)

_NODE_TABLE: Table = Node.__table__  # type: ignore[attr-defined]
# Events with an implausible device time, added to each node's count (rare: no bulk form).
_COUNT_IMPLAUSIBLE = (
    update(_NODE_TABLE)
    .where(_NODE_TABLE.c.node_id == bindparam("b_node_id"))
    .values(implausible_device_times=_NODE_TABLE.c.implausible_device_times + bindparam("b_n"))
)
# Birth and status settle presence by their own rules (fleet_server.presence);
# any other message from a node proves its connection is alive.
_PRESENCE_MESSAGES = (Birth, Status)


def store_batch(
    *,
    session: Session,
    envelopes: Sequence[Envelope],
    now: datetime,
    policies: Policies,
    device_time: DeviceTimeRules | None = None,
) -> BatchOutcome:
    """Apply decoded messages to the database (not committed) and say what to announce.

    `now` is the receive time: every event's `received_at`, from which
    response times are measured; `device_time` says which device times are
    implausible (default `DeviceTimeRules()`).
    """
    batch = Batch(session=session, now=now, policies=policies)
    if device_time is not None:
        batch.device_time = device_time
    out = batch.out
    if not envelopes:
        return out
    # One pass: which nodes, which event ids, which nodes need their ORM row and
    # which batched preloads the handlers want. Nodes that only sent plain events
    # (a plate read, a cleared tamper) need no ORM object: their `last_seq` is read
    # with one Core query and `last_seen_at`/`last_seq` of every node in the batch
    # are written by one statement at the end. Loading and flushing a `Node` per
    # node was a quarter of the worker in `bench ingest`. Only ingest writes these
    # two columns (one worker thread per process).
    node_ids: set[str] = set()
    needs_row: set[str] = set()
    event_ids: list[str] = []
    for envelope in envelopes:
        message = envelope.message
        node_id = envelope.topic.node_id
        node_ids.add(node_id)
        handler = handler_for(type(message))
        if handler.is_event:
            event_ids.append(message.event_id)  # type: ignore[attr-defined]
        if handler.scan(batch, node_id, message):
            needs_row.add(node_id)
    # The same query says which nodes are not known to be online: their next
    # message that proves a live connection brings them back (presence), so
    # their row is needed. Online nodes with only plain events still need none.
    seqs = batch.seqs
    for node_id, last_seq, online, pending, created_at in session.execute(
        sa_select(
            col(Node.node_id), col(Node.last_seq), col(Node.online),
            col(Node.offline_pending_since), col(Node.created_at),
        ).where(col(Node.node_id).in_(node_ids))
    ):  # fmt: skip
        seqs[node_id] = last_seq
        batch.node_since[node_id] = created_at
        if not online or pending is not None:
            batch.absent.add(node_id)
    needs_row |= node_ids - seqs.keys()  # new nodes are made as ORM objects
    needs_row |= batch.absent
    nodes: dict[str, Node] = {}
    if existing := needs_row & seqs.keys():
        nodes = {
            n.node_id: n for n in session.exec(select(Node).where(col(Node.node_id).in_(existing)))
        }
    known: set[str] = set()
    if event_ids:
        known = set(session.exec(select(Event.event_id).where(col(Event.event_id).in_(event_ids))))
    for preload, wanted in batch.preloads.items():
        preload(batch, wanted)

    event_rows: list[dict[str, object]] = []
    for envelope in envelopes:
        message = envelope.message
        node_id = envelope.topic.node_id
        node = nodes.get(node_id)
        if node is None and node_id in needs_row:
            node = Node(node_id=node_id, created_at=now)
            session.add(node)
            nodes[node_id] = node
            seqs[node_id] = None
            batch.fresh.add(node_id)
            batch.absent.add(node_id)
            logger.info("new node %s", node_id)
        if node is not None and node_id in batch.absent:
            _presence(batch, node, message)
        handler = handler_for(type(message))
        if not handler.is_event:
            handler.handle(batch, node, message, None)
            if node is not None and isinstance(message, _PRESENCE_MESSAGES):
                _note_presence(batch, node)
            continue
        assert isinstance(message, EventBase)
        acked = out.acks.setdefault(node_id, [])
        if handler.urgent_ack:
            out.urgent.add(node_id)  # the pillar's "delivered" light waits for this ack
        if message.event_id not in acked:
            acked.append(message.event_id)
        if message.event_id in known:
            out.duplicates += 1
            continue
        known.add(message.event_id)
        out.inserted += 1
        event = _event_row(batch, node_id, message, received_payload(envelope))
        if node is not None or getattr(handler, "rowless", False):
            handler.handle(batch, node, message, event)
        event_rows.append(event)
    session.flush()  # new nodes first: events and the UPDATE below refer to them
    raced = write_events_and_nodes(session, event_rows, {n: seqs.get(n) for n in node_ids}, now)
    if raced:
        _drop_raced(batch, raced)
    if late := [(n, seq) for n, seq, event_id in batch.late if event_id not in raced]:
        out.late += len(late)
        _close_gaps(session, late)
    if batch.implausible:
        session.execute(
            _COUNT_IMPLAUSIBLE,
            [{"b_node_id": n, "b_n": count} for n, count in batch.implausible.items()],
        )
    batch.alert_rows.insert(session)
    batch.write_bulk()
    return out


def _close_gaps(session: Session, late: list[tuple[str, int]]) -> None:
    """Late events shrink, split or close their node's recorded gaps.

    A gap records a forward jump in a node's `seq`; the events it skipped can
    still come: an MQTT hop that lost or reordered a message (Mosquitto's
    bridge after a cut link does both, docs/cluster.md) and the node's outbox
    re-sending it later. What is left of the gap rows is what never arrived.
    Gaps made earlier in this same batch are pending in the session and found
    too (autoflush).
    """
    by_node: dict[str, list[int]] = {}
    for node_id, seq in late:
        by_node.setdefault(node_id, []).append(seq)
    gaps = session.exec(
        select(SequenceGap)
        .where(col(SequenceGap.node_id).in_(by_node))
        .where(col(SequenceGap.first_missing) <= max(max(v) for v in by_node.values()))
        .where(col(SequenceGap.last_missing) >= min(min(v) for v in by_node.values()))
    ).all()
    open_gaps: dict[str, list[SequenceGap]] = {}
    for row in gaps:
        open_gaps.setdefault(row.node_id, []).append(row)
    for node_id, seq_list in by_node.items():
        rows = open_gaps.get(node_id, [])
        for seq in sorted(seq_list):
            gap = next((g for g in rows if g.first_missing <= seq <= g.last_missing), None)
            if gap is None:
                continue  # below the node's highest seq but never recorded missing
            if gap.first_missing == gap.last_missing:
                rows.remove(gap)
                session.delete(gap)
            elif seq == gap.first_missing:
                gap.first_missing += 1
            elif seq == gap.last_missing:
                gap.last_missing -= 1
            else:
                rest = SequenceGap(
                    node_id=node_id, first_missing=seq + 1, last_missing=gap.last_missing,
                    detected_at=gap.detected_at, event_id=gap.event_id,
                )  # fmt: skip
                gap.last_missing = seq - 1
                session.add(rest)
                rows.append(rest)
        logger.info("node %s: %s late events arrived", node_id, len(seq_list))


def _drop_raced(batch: Batch, raced: set[str]) -> None:
    """Events another worker stored between our read and our write: duplicates after all.

    A redelivery racing a partition handover. They are still acked; the rows
    their handlers collected per event (a plate read) are not written twice.
    An alert such an event opened in this batch stays (docs/scaling-postgresql.md).
    """
    batch.out.inserted -= len(raced)
    batch.out.duplicates += len(raced)
    for writer, rows in batch.bulk_rows.items():
        batch.bulk_rows[writer] = [r for r in rows if r.get("event_id") not in raced]
    logger.warning("%s events of this batch were stored by another writer first", len(raced))


def _presence(batch: Batch, node: Node, message: object) -> None:
    """A message from a node not known to be online: anything but a will proves it is there."""
    if isinstance(message, _PRESENCE_MESSAGES):
        return  # their handlers apply the birth/death rules
    batch.out.notices += prove_connected(
        session=batch.session, node=node, now=batch.now, policies=batch.policies,
        fresh=node.node_id in batch.fresh,
    )  # fmt: skip
    batch.absent.discard(node.node_id)


def _note_presence(batch: Batch, node: Node) -> None:
    """After a birth or status: is the node now known to be online?"""
    if node.online and node.offline_pending_since is None:
        batch.absent.discard(node.node_id)
    else:
        batch.absent.add(node.node_id)


def _event_row(
    batch: Batch, node_id: str, message: EventBase, payload: str | None
) -> dict[str, object]:
    """The sequence check, and the `event` row to insert (its handler may set `alert_id`)."""
    seqs = batch.seqs
    last_seq = seqs.get(node_id)
    if last_seq is not None and message.seq > last_seq + 1:
        batch.session.add(
            SequenceGap(
                node_id=node_id,
                first_missing=last_seq + 1,
                last_missing=message.seq - 1,
                detected_at=batch.now,
                event_id=message.event_id,
            )
        )
        logger.warning(
            "node %s sequence gap: %s..%s missing", node_id, last_seq + 1, message.seq - 1
        )
    if last_seq is None or message.seq > last_seq:
        seqs[node_id] = message.seq
    elif message.seq < last_seq:
        batch.late.append((node_id, message.seq, message.event_id))
    # The device time is kept as sent; one that cannot be true is flagged and
    # counted (response times are measured from `received_at` regardless).
    implausible = batch.device_time.implausible(
        message.ts, received_at=batch.now, node_since=batch.node_since.get(node_id)
    )
    if implausible:
        batch.implausible[node_id] = batch.implausible.get(node_id, 0) + 1
        batch.out.implausible += 1
        logger.debug("node %s event %s: implausible device time %s",
                     node_id, message.event_id, message.ts)  # fmt: skip
    return {
        "event_id": message.event_id,
        "node_id": node_id,
        "type": str(getattr(message, "type", "unknown")),
        "seq": message.seq,
        "ts": message.ts,
        "received_at": batch.now,
        "payload": payload if payload is not None else encode(message).decode(),
        "alert_id": None,
        "ts_implausible": implausible,
    }
