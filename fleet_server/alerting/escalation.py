"""Escalation: when the ladder moves next, and moving it for every alert that is due.

The rule is one pure function, `decide(alert, plan, now)`: given where an
alert stands (its state, its level, when it was received) and its policy's
ladder, it returns the next `EscalationStep` (level, recipient, reason, next
due time) without touching a database, so it is tested on plain values.
`escalate_due` is the thin part around it: it selects the alerts whose
`next_escalation_at` has passed (`SKIP LOCKED`, so several server workers
share the work), applies each step and records it with the time it was due.

Level 0 is notified when the alert is received and level N `after_s` seconds
after it; after the last level, a policy with `repeat_every_s` notifies it
again that often. Acknowledging stops the ladder, but an acknowledgement not
followed up within the ack timeout re-escalates. An alert without a policy,
or at a level nobody can take, lands in the catch-all queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlmodel import Session, col, select

from fleet_server.alerting.history import record_escalation
from fleet_server.alerting.notices import AlertNotice, notice
from fleet_server.alerting.policies import Policies, PolicyPlan
from fleet_server.models import CATCH_ALL_QUEUE, Alert, AlertState

__all__ = ["EscalatingAlert", "EscalationStep", "decide", "escalate_due", "next_due"]

logger = logging.getLogger(__name__)

Reason = Literal["no_policy", "timeout", "repeat", "ack_not_followed_up"]


class EscalatingAlert(Protocol):
    """What `decide` reads of an alert (an `Alert` row, or any plain value with these)."""

    @property
    def state(self) -> str: ...
    @property
    def escalation_level(self) -> int | None: ...
    @property
    def received_at(self) -> datetime: ...


@dataclass(frozen=True)
class EscalationStep:
    """Where a due alert goes now, and when it is due again.

    `level` None (with `recipient` None) means no policy: the catch-all queue.
    `recipient` is the level's queue or role as the policy names it;
    `Policies.queue_for` resolves it (an unstaffed role is the catch-all).
    """

    level: int | None
    recipient: str | None
    reason: Reason
    next_due: datetime | None


def next_due(
    *, level: int | None, received_at: datetime, plan: PolicyPlan, now: datetime
) -> datetime | None:
    """When the ladder moves next for an alert now at `level` (None: not on it yet)."""
    current = level if level is not None else -1
    if current + 1 < len(plan.levels):
        due = received_at + timedelta(seconds=plan.levels[current + 1].after_s)
        return max(due, now)
    if plan.repeat_every_s:
        return now + timedelta(seconds=plan.repeat_every_s)
    return None


def decide(
    alert: EscalatingAlert,
    plan: PolicyPlan | None,
    now: datetime,
    *,
    default_ack_timeout_s: float,
) -> EscalationStep:
    """The step a due alert takes now (pure: reads its arguments, changes nothing).

    `default_ack_timeout_s` applies when the plan sets no ack timeout of its own.
    """
    if plan is None or not plan.levels:
        return EscalationStep(level=None, recipient=None, reason="no_policy", next_due=None)
    current = alert.escalation_level if alert.escalation_level is not None else -1
    level = min(current + 1, len(plan.levels) - 1)
    recipient = plan.levels[level].recipient
    if alert.state == AlertState.ACKNOWLEDGED:
        timeout = plan.ack_timeout_s or default_ack_timeout_s
        return EscalationStep(
            level=level,
            recipient=recipient,
            reason="ack_not_followed_up",
            next_due=now + timedelta(seconds=timeout),
        )
    return EscalationStep(
        level=level,
        recipient=recipient,
        reason="timeout" if level > current else "repeat",
        next_due=next_due(level=level, received_at=alert.received_at, plan=plan, now=now),
    )


def escalate_due(
    *, session: Session, now: datetime, policies: Policies, limit: int = 500
) -> list[AlertNotice]:
    """Escalate every alert whose `next_escalation_at` has passed (not committed)."""
    due = session.exec(
        select(Alert)
        .where(col(Alert.next_escalation_at) <= now)
        .where(col(Alert.state).in_([AlertState.NEW, AlertState.ACKNOWLEDGED]))
        .order_by(col(Alert.next_escalation_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    notices = []
    for alert in due:
        due_at = alert.next_escalation_at
        step = decide(
            alert, policies.for_type(alert.type), now, default_ack_timeout_s=policies.ack_timeout_s
        )
        queue = CATCH_ALL_QUEUE if step.level is None else policies.queue_for(step.recipient)
        record_escalation(
            session, alert, level=step.level, queue=queue, reason=step.reason, now=now,
            due_at=due_at,
        )  # fmt: skip
        alert.next_escalation_at = step.next_due
        if step.level is not None:
            logger.info(
                "alert %s escalated to level %s (%s): %s", alert.id, step.level, queue, step.reason
            )
        notices.append(notice("escalated", alert, now=now, command=False))
    return notices
