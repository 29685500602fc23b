"""Node presence: online, offline after a grace period or a silence, and the outage alert.

The rules follow Sparkplug B's host-application rules for birth and death
certificates, because a node's `bd_seq` is not a clock the server can trust
to only grow: a reflashed or replaced node (fresh SD card, fresh outbox)
starts again at `bd_seq` 1.

- A birth, or an `online` status, is published by a live connection: it
  wins whatever its `bd_seq`, marks the node online and makes its `bd_seq`
  the node's current session.
- An `offline` status (the last-will) counts only when its `bd_seq` is the
  current session's; a will of any other session (an older one arriving
  late, or a retained one from before a reflash) is ignored.
- Anything else from the node (an event, telemetry, a reply) proves it is
  connected, so it brings the node back online (`prove_connected`).
- A node that sent nothing for several of its telemetry intervals is
  offline whatever its last status said (`find_silent_nodes`, the timer
  loop's silence job): a dead node whose will never came, or came with a
  session the server did not know, does not stay online.

An `offline` starts a grace period (`offline_pending_since`) rather than an
outage, because a node that reconnects within seconds (an LTE hand-over, a
broker restart) is not an incident; the timer loop's presence job
(`settle_offline_nodes`) turns a pending outage that outlived the grace
period into `online = False` and a P3 `node_offline` alert, and the node
coming back resolves that alert.

Data functions with a `Session`; the caller commits, then announces the
returned notices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
    "Silence",
    "apply_presence",
    "find_silent_nodes",
    "learn_telemetry_interval",
    "mark_offline_pending",
    "mark_online",
    "mark_silent_nodes",
    "prove_connected",
    "settle_offline_nodes",
]

logger = logging.getLogger(__name__)

OFFLINE_SWEEP_MAX = 200
# Gaps between two telemetry reports (node clock) longer than this are not an
# interval: a clock set at boot, or a node switched off for the night.
_MAX_INTERVAL_S = 86_400.0


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
    """A birth or status of session `bd_seq`; `fresh`: the node row was made in this batch.

    A birth or online status always wins (it comes from a live connection) and
    sets the current session; an offline status counts only for the current
    session. Returns the notices to announce (an outage alert resolved).
    """
    if online:
        if node.bd_seq is not None and bd_seq != node.bd_seq:
            logger.debug("node %s: new session bd_seq %s (was %s)", node.node_id, bd_seq,
                         node.bd_seq)  # fmt: skip
        node.bd_seq = bd_seq
        return prove_connected(session=session, node=node, now=now, policies=policies, fresh=fresh)
    if node.bd_seq is not None and bd_seq != node.bd_seq:
        # The will of another session: an older one arriving late, or one from
        # before the node was reflashed. Only the current session's will counts.
        logger.debug("ignoring offline of session %s for %s (current %s)",
                     bd_seq, node.node_id, node.bd_seq)  # fmt: skip
        return []
    node.bd_seq = bd_seq
    mark_offline_pending(node=node, now=now)
    return []


def prove_connected(
    *, session: Session, node: Node, now: datetime, policies: Policies, fresh: bool
) -> list[AlertNotice]:
    """The node sent something only a live connection sends: it is online."""
    if fresh:
        node.offline_pending_since = None
        if not node.online:
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


def learn_telemetry_interval(*, node: Node, device_ts: datetime) -> None:
    """Remember how often this node reports, from its own clock (for the silence timeout).

    The node's clock, not the server's: telemetry that waited in a backlog
    (the server restarting, the worker behind) arrives bunched together, but
    its stamps keep the node's real spacing. A lost report (telemetry is QoS 0)
    only makes one interval look longer, which makes the timeout safer.
    """
    last = node.last_telemetry_ts
    node.last_telemetry_ts = device_ts
    if last is None:
        return
    gap = (device_ts - last).total_seconds()
    if 0.0 < gap <= _MAX_INTERVAL_S:
        node.telemetry_interval_s = gap


@dataclass(frozen=True)
class Silence:
    """How long a node may be silent before it counts as offline.

    `intervals` of the node's telemetry interval (0 turns silence off), at
    least `min_s`; `default_s` for a node whose interval is not known yet
    (fewer than two reports seen).
    """

    intervals: float = 3.0
    default_s: float = 300.0
    min_s: float = 60.0

    @property
    def enabled(self) -> bool:
        """Whether a silence ever takes a node offline."""
        return self.intervals > 0

    def timeout_s(self, telemetry_interval_s: float | None) -> float:
        """Seconds of silence after which a node with this interval is offline."""
        if telemetry_interval_s is None:
            return self.default_s
        return max(self.min_s, self.intervals * telemetry_interval_s)

    @property
    def shortest_s(self) -> float:
        """The shortest timeout any node can have."""
        return min(self.default_s, self.min_s)


def find_silent_nodes(
    *,
    session: Session,
    now: datetime,
    silence: Silence,
    listening_since: datetime,
    limit: int = OFFLINE_SWEEP_MAX,
) -> list[tuple[str, datetime]]:
    """Online nodes silent for longer than their timeout, with when they were last heard.

    Silence counts only from `listening_since` (when the server last began to
    receive): after a server restart or a lost broker link every node looks
    silent, and is not. The longest-silent first, at most `limit`. Reads
    three columns of the online nodes whose last message is older than the
    shortest possible timeout, not whole rows.
    """
    if not silence.enabled or now - listening_since < timedelta(seconds=silence.shortest_s):
        return []
    cutoff = now - timedelta(seconds=silence.shortest_s)
    rows = session.exec(
        select(col(Node.node_id), col(Node.last_seen_at), col(Node.telemetry_interval_s))
        .where(col(Node.online))
        .where(col(Node.offline_pending_since).is_(None))
        .where((col(Node.last_seen_at) <= cutoff) | col(Node.last_seen_at).is_(None))
    ).all()
    silent = []
    for node_id, last_seen_at, interval_s in rows:
        heard = max(last_seen_at or listening_since, listening_since)
        if now - heard >= timedelta(seconds=silence.timeout_s(interval_s)):
            silent.append((node_id, last_seen_at or listening_since))
    silent.sort(key=lambda item: (item[1], item[0]))
    return silent[:limit]


def mark_silent_nodes(*, session: Session, silent: list[tuple[str, datetime]]) -> list[str]:
    """Start the outage of these silent nodes at the time each was last heard.

    The outage is a pending offline like a last-will's, dated when the node
    went quiet, so the presence job settles it (and opens the alert) on the
    same tick, and a message from the node still brings it back. Rows another
    worker holds are skipped (`SKIP LOCKED`); returns the node ids marked.
    """
    if not silent:
        return []
    heard = dict(silent)
    nodes = session.exec(
        select(Node)
        .where(col(Node.node_id).in_(list(heard)))
        .where(col(Node.online))
        .where(col(Node.offline_pending_since).is_(None))
        .with_for_update(skip_locked=True)
    ).all()
    for node in nodes:
        node.offline_pending_since = heard[node.node_id]
        logger.warning("node %s silent since %s: offline", node.node_id, heard[node.node_id])
    return [n.node_id for n in nodes]


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
        logger.warning("node %s is offline (since %s)", node.node_id, node.online_changed_at)
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
