"""Data functions for nodes, ingest counters and users: no HTTP, no MQTT.

Routes, the ingest worker and the timer loop all call these with a
`Session`; the caller owns the transaction unless a function says it commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from fleet_server.alerts import (
    AlertNotice,
    AlertRows,
    Policies,
    apply_transition,
    find_open_alert,
    notice,
    open_alert,
)
from fleet_server.models import (
    OPEN_STATES,
    Alert,
    AlertState,
    AlertType,
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


def mark_online(
    *, session: Session, node: Node, now: datetime, policies: Policies
) -> list[AlertNotice]:
    """The node is (back) online: cancel a pending outage, resolve an outage alert."""
    node.offline_pending_since = None
    if node.online:
        return []
    node.online = True
    node.online_changed_at = now
    notices = []
    outage = find_open_alert(
        session=session, node_id=node.node_id, alert_type=AlertType.NODE_OFFLINE
    )
    if outage is not None:
        apply_transition(
            session=session,
            alert=outage,
            to=AlertState.RESOLVED,
            actor="system:node_online",
            now=now,
            policies=policies,
            note="node reconnected",
        )
        notices.append(notice("transition", outage, now=now))
    return notices


def mark_offline_pending(*, node: Node, now: datetime) -> None:
    """An offline status arrived; the outage starts only if it lasts the grace period."""
    if node.online and node.offline_pending_since is None:
        node.offline_pending_since = now


OFFLINE_SWEEP_MAX = 200


def settle_offline_nodes(
    *,
    session: Session,
    now: datetime,
    grace_s: float,
    policies: Policies,
    limit: int = OFFLINE_SWEEP_MAX,
) -> list[AlertNotice]:
    """Nodes offline for longer than the grace period become offline, with a P3 alert.

    At most `limit` nodes per call (the longest pending first); the timer loop
    takes the rest on its next ticks. When a whole city drops at once (all
    8,333 nodes at the end of a `sim --nodes 8333` run), one transaction for
    all of them held SQLite's write lock for 36 s, and API reads and ingest
    waited it out into "database is locked". Open outage alerts are looked
    up for the whole chunk in one query, and the alerts' history rows are
    inserted together (`AlertRows`), instead of a query and autoflush per node.
    """
    cutoff = now - timedelta(seconds=grace_s)
    nodes = session.exec(
        select(Node)
        .where(col(Node.offline_pending_since).is_not(None))
        .where(col(Node.offline_pending_since) <= cutoff)
        .order_by(col(Node.offline_pending_since), col(Node.node_id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not nodes:
        return []
    with session.no_autoflush:
        already_out = set(
            session.exec(
                select(Alert.node_id)
                .where(col(Alert.node_id).in_([n.node_id for n in nodes]))
                .where(Alert.type == AlertType.NODE_OFFLINE)
                .where(col(Alert.state).in_(OPEN_STATES))
            )
        )
    notices = []
    rows = AlertRows()
    for node in nodes:
        node.online = False
        node.online_changed_at = node.offline_pending_since
        node.offline_pending_since = None
        logger.warning("node %s is offline (grace %.0fs passed)", node.node_id, grace_s)
        if node.node_id in already_out:
            continue
        alert = open_alert(
            session=session,
            node=node,
            alert_type=AlertType.NODE_OFFLINE,
            now=now,
            policies=policies,
            detail=f"offline since {node.online_changed_at}",
            rows=rows,
        )
        notices.append(notice("created", alert, now=now))
    rows.insert(session)
    return notices


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
