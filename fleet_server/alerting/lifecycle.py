"""The alert lifecycle: opening an alert, joining presses to it, and its legal moves.

An alert moves through `new → acknowledged → dispatched → on_scene → resolved
→ closed` (plus `false_alarm`, `duplicate`, `test`); only the moves in
`TRANSITIONS` are legal, and every one is stored as an `AlertTransition` with
its actor and time. Reaching a state for the first time sets its
response-time milestone (`acknowledged_at`, …). Acknowledging sets the ack
follow-up deadline; any other move stops the escalation ladder
(`fleet_server.alerting.escalation`).

Functions take a `Session` and leave the commit to the caller unless they
say otherwise; what to announce comes back as `AlertNotice`s.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.alerting.errors import AlertError, AlertNotFound, IllegalTransition
from fleet_server.alerting.escalation import next_due
from fleet_server.alerting.gates import DispatchBlocked, dispatch_blocker
from fleet_server.alerting.history import AlertRows, record_created, record_escalation
from fleet_server.alerting.notices import AlertNotice, notice
from fleet_server.alerting.policies import Policies, load_policies
from fleet_server.models import (
    CATCH_ALL_QUEUE,
    OPEN_STATES,
    Alert,
    AlertState,
    AlertTransition,
    AlertType,
    Node,
    Severity,
    utcnow,
)

__all__ = [
    "SEVERITY_BY_TYPE",
    "TRANSITIONS",
    "AlertError",
    "AlertNotFound",
    "IllegalTransition",
    "apply_transition",
    "find_open_alert",
    "join_alert",
    "open_alert",
    "transition_alert",
]

logger = logging.getLogger(__name__)

S = AlertState
TRANSITIONS: dict[str, frozenset[str]] = {
    S.NEW: frozenset({S.ACKNOWLEDGED, S.DISPATCHED, S.RESOLVED, S.FALSE_ALARM, S.DUPLICATE}),
    S.ACKNOWLEDGED: frozenset({S.DISPATCHED, S.RESOLVED, S.FALSE_ALARM, S.DUPLICATE}),
    S.DISPATCHED: frozenset({S.ON_SCENE, S.RESOLVED, S.FALSE_ALARM}),
    S.ON_SCENE: frozenset({S.RESOLVED, S.FALSE_ALARM}),
    S.RESOLVED: frozenset({S.CLOSED}),
    S.FALSE_ALARM: frozenset({S.CLOSED}),
    S.DUPLICATE: frozenset({S.CLOSED}),
    S.TEST: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}
# The first time an alert reaches one of these states is a response-time milestone.
_MILESTONES = {
    S.ACKNOWLEDGED: "acknowledged_at",
    S.DISPATCHED: "dispatched_at",
    S.ON_SCENE: "on_scene_at",
    S.RESOLVED: "resolved_at",
    S.CLOSED: "closed_at",
}
SEVERITY_BY_TYPE: dict[str, Severity] = {
    AlertType.PANIC: Severity.P1,
    AlertType.TAMPER: Severity.P2,
    AlertType.POWER: Severity.P3,
    AlertType.NODE_OFFLINE: Severity.P3,
}


def open_alert(
    *,
    session: Session,
    node: Node,
    alert_type: str,
    now: datetime,
    policies: Policies,
    event_id: str | None = None,
    pressed_at: datetime | None = None,
    test: bool = False,
    detail: str | None = None,
    rows: AlertRows | None = None,
) -> Alert:
    """Create an alert (state `new`, or `test` without escalation) and its first rows.

    With `rows`, the transition/escalation rows are collected there for the
    caller to insert (`AlertRows.insert`) instead of being added to the session.
    """
    alert = Alert(
        node_id=node.node_id,
        type=alert_type,
        severity=(Severity.P4 if test else SEVERITY_BY_TYPE.get(alert_type, Severity.P3)).value,
        state=(S.TEST if test else S.NEW).value,
        district=node.district,
        site_id=node.site_id,
        detail=detail,
        first_event_id=event_id,
        last_event_id=event_id,
        pressed_at=pressed_at,
        received_at=now,
        updated_at=now,
    )
    session.add(alert)
    actor = f"node:{node.node_id}" if event_id else "system"
    record_created(session, alert, to=alert.state, actor=actor, now=now, rows=rows)
    if test:
        return alert
    plan = policies.for_type(alert_type)
    if plan is None or not plan.levels:
        record_escalation(
            session, alert, level=None, queue=CATCH_ALL_QUEUE, reason="no_policy", now=now,
            rows=rows,
        )  # fmt: skip
        return alert
    alert.escalation_policy_id = plan.id
    record_escalation(
        session,
        alert,
        level=0,
        queue=policies.queue_for(plan.levels[0].recipient),
        reason="created",
        now=now,
        rows=rows,
    )
    alert.next_escalation_at = next_due(level=0, received_at=now, plan=plan, now=now)
    return alert


def join_alert(*, alert: Alert, event_id: str, now: datetime) -> None:
    """Another press on a node whose panic alert is still open: count it, no new alert."""
    alert.press_count += 1
    alert.last_event_id = event_id
    alert.updated_at = now


def find_open_alert(*, session: Session, node_id: str, alert_type: str) -> Alert | None:
    """The oldest open alert of this type on this node, if any."""
    return session.exec(
        select(Alert)
        .where(Alert.node_id == node_id, Alert.type == alert_type)
        .where(col(Alert.state).in_(OPEN_STATES))
        .order_by(col(Alert.received_at))
    ).first()


def apply_transition(
    *,
    session: Session,
    alert: Alert,
    to: str,
    actor: str,
    now: datetime,
    policies: Policies,
    note: str = "",
) -> AlertTransition:
    """Move `alert` to `to` if the lifecycle allows it (not committed)."""
    to = str(to)  # an AlertState member would otherwise show its repr in messages
    allowed = TRANSITIONS.get(alert.state, frozenset())
    if to not in allowed:
        options = ", ".join(sorted(allowed)) or "none (terminal state)"
        raise IllegalTransition(
            f"alert {alert.id} cannot go from {alert.state!r} to {to!r}; allowed: {options}"
        )
    if to == S.DISPATCHED:  # e.g. a watchlist hit nobody has confirmed (alerting.gates)
        blocked = dispatch_blocker(session, alert)
        if blocked is not None:
            raise DispatchBlocked(blocked)
    row = AlertTransition(
        alert_id=alert.id, from_state=alert.state, to_state=to, actor=actor, note=note, at=now
    )
    session.add(row)
    alert.state = to
    alert.updated_at = now
    milestone = _MILESTONES.get(S(to))
    if milestone is not None and getattr(alert, milestone) is None:
        setattr(alert, milestone, now)
    if to == S.ACKNOWLEDGED:
        plan = policies.for_type(alert.type)
        timeout = (plan.ack_timeout_s if plan else None) or policies.ack_timeout_s
        alert.next_escalation_at = now + timedelta(seconds=timeout)
    else:
        alert.next_escalation_at = None
    return row


def _audit_actor(actor: str) -> str:
    """An operator's name as the audit log spells actors (`user:<name>`)."""
    return actor if ":" in actor or actor == "system" else f"user:{actor}"


def transition_alert(
    *,
    session: Session,
    alert_id: str,
    to: str,
    actor: str,
    note: str = "",
    ack_timeout_s: float,
    now: datetime | None = None,
) -> tuple[AlertTransition, AlertNotice]:
    """Apply an operator's transition and commit; the notice is for after the commit."""
    now = now or utcnow()
    alert = session.exec(select(Alert).where(Alert.id == alert_id).with_for_update()).first()
    if alert is None:
        raise AlertNotFound(f"no alert {alert_id!r}")
    policies = load_policies(session=session, ack_timeout_s=ack_timeout_s)
    row = apply_transition(
        session=session, alert=alert, to=to, actor=actor, now=now, policies=policies, note=note
    )
    audit.record(
        session, actor=_audit_actor(actor), action="alert.transition", object=f"alert:{alert.id}",
        detail={"from": row.from_state, "to": row.to_state, "note": note, "node_id": alert.node_id},
        now=now,
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    session.refresh(alert)
    logger.info("alert %s → %s by %s", alert.id, to, actor)
    return row, notice("transition", alert, now=now)
