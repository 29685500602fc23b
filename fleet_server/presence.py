"""Node presence: online, offline after a grace period, and the outage alert.

A node's retained status (`online`/`offline`, with the session's `bd_seq`)
and its birth say whether it is there. An `offline` starts a grace period
(`offline_pending_since`) rather than an outage, because a node that
reconnects within seconds (an LTE hand-over, a broker restart) is not an
incident; the timer loop's presence job (`settle_offline_nodes`) turns a
pending outage that outlived the grace period into `online = False` and a P3
`node_offline` alert, and the node coming back resolves that alert.

Data functions with a `Session`; the caller commits, then announces the
returned notices.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from fleet_server.alerting import (
    AlertNotice,
    AlertRows,
    Policies,
    apply_transition,
    find_open_alert,
    notice,
    open_alert,
)
from fleet_server.models import OPEN_STATES, Alert, AlertState, AlertType, Node

__all__ = [
    "OFFLINE_SWEEP_MAX",
    "apply_presence",
    "mark_offline_pending",
    "mark_online",
    "settle_offline_nodes",
]

logger = logging.getLogger(__name__)

OFFLINE_SWEEP_MAX = 200


def apply_presence(
    *,
    session: Session,
    node: Node,
    bd_seq: int,
    online: bool,
    now: datetime,
    policies: Policies,
    fresh: bool,
) -> list[AlertNotice]:
    """A status or birth from session `bd_seq`; `fresh`: the node row was made in this batch."""
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
