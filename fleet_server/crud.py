"""Data functions for reading nodes, events, alerts and ingest counters: no HTTP, no MQTT.

Routes and the ingest worker call these with a `Session`; the caller owns
the transaction unless a function says it commits. The rules that change
alerts live in `fleet_server.alerting`, node presence in `fleet_server.presence`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from sqlmodel import Session, col, func, select

from fleet_server.models import (
    Alert,
    Event,
    IngestRejection,
    IngestRejectionPublic,
    IngestRejectionsPublic,
    Node,
    SequenceGap,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------- nodes


def list_nodes(*, session: Session, offset: int = 0, limit: int = 100) -> tuple[list[Node], int]:
    """A page of nodes by id, and the total count."""
    count = session.exec(select(func.count()).select_from(Node)).one()
    nodes = session.exec(select(Node).order_by(col(Node.node_id)).offset(offset).limit(limit)).all()
    return list(nodes), int(count)


def get_node(*, session: Session, node_id: str) -> Node | None:
    """One node, or None."""
    return session.get(Node, node_id)


# -------------------------------------------------------- ingest counters


def add_rejections(
    *,
    session: Session,
    counts: Mapping[tuple[str, str], tuple[int, str, str]],
    now: datetime,
) -> None:
    """Add `(reason, node_id) → (n, last_detail, last_topic)` to the persisted counters."""
    for (reason, node_id), (n, detail, topic) in counts.items():
        row = session.get(IngestRejection, (reason, node_id))
        if row is None:
            row = IngestRejection(reason=reason, node_id=node_id, count=0)
        row.count += n
        row.last_detail = detail[:1000]
        row.last_topic = topic[:256]
        row.last_at = now
        session.add(row)


def rejection_report(*, session: Session, node_id: str | None = None) -> IngestRejectionsPublic:
    """Every rejection counter with totals by reason and by node."""
    query = select(IngestRejection).order_by(
        col(IngestRejection.reason), col(IngestRejection.node_id)
    )
    if node_id is not None:
        query = query.where(IngestRejection.node_id == node_id)
    rows = session.exec(query).all()
    by_reason: dict[str, int] = {}
    by_node: dict[str, int] = {}
    for row in rows:
        by_reason[row.reason] = by_reason.get(row.reason, 0) + row.count
        by_node[row.node_id] = by_node.get(row.node_id, 0) + row.count
    return IngestRejectionsPublic(
        data=[IngestRejectionPublic.model_validate(r) for r in rows],
        by_reason=by_reason,
        by_node=by_node,
        total=sum(by_reason.values()),
    )


def list_sequence_gaps(*, session: Session, node_id: str) -> list[SequenceGap]:
    """Sequence gaps recorded for a node, oldest first."""
    return list(
        session.exec(
            select(SequenceGap).where(SequenceGap.node_id == node_id).order_by(col(SequenceGap.id))
        ).all()
    )


def list_events(
    *,
    session: Session,
    event_type: str | None = None,
    node_id: str | None = None,
    alert_id: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[Event], int]:
    """Events in arrival order (oldest first), optionally filtered; and how many match."""
    query = select(Event)
    count_query = select(func.count()).select_from(Event)
    filters = ((Event.type, event_type), (Event.node_id, node_id), (Event.alert_id, alert_id))
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
            count_query = count_query.where(column == value)
    ordered = query.order_by(col(Event.received_at), col(Event.event_id))
    events = session.exec(ordered.offset(offset).limit(limit)).all()
    return list(events), int(session.exec(count_query).one())


# ----------------------------------------------------------------- alerts


def list_alerts(
    *,
    session: Session,
    state: str | None = None,
    queue: str | None = None,
    node_id: str | None = None,
    limit: int = 100,
) -> tuple[list[Alert], int]:
    """Newest alerts first, optionally filtered; and how many match."""
    query = select(Alert)
    count_query = select(func.count()).select_from(Alert)
    for column, value in ((Alert.state, state), (Alert.queue, queue), (Alert.node_id, node_id)):
        if value is not None:
            query = query.where(column == value)
            count_query = count_query.where(column == value)
    alerts = session.exec(query.order_by(col(Alert.received_at).desc()).limit(limit)).all()
    return list(alerts), int(session.exec(count_query).one())
