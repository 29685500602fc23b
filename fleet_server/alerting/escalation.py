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

When a policy changes, `replan(alert, plan, now)` (pure, like `decide`) puts
every open alert of its type on the new ladder: it keeps its level if the new
ladder has it and is clamped to the new top otherwise, and gets its next due
time from the new ladder, so a change never strands an alert with no next
escalation (issue 11: a shorter ladder had left level-3 panics with none,
even after the policy was put back). `replan_open_alerts` applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlmodel import Session, col, select

from fleet_server.alerting.history import record_escalation
from fleet_server.alerting.notices import AlertNotice, notice
from fleet_server.alerting.policies import Policies, PolicyPlan
from fleet_server.models import CATCH_ALL_QUEUE, Alert, AlertState

__all__ = [
    "EscalatingAlert",
    "EscalationStep",
    "PlannedAlert",
    "Replan",
    "decide",
    "escalate_due",
    "next_due",
    "replan",
    "replan_open_alerts",
]

logger = logging.getLogger(__name__)

Reason = Literal["no_policy", "timeout", "repeat", "ack_not_followed_up"]
POLICY_CHANGED = "policy_changed"  # the escalation reason recorded when a re-plan moves an alert


class EscalatingAlert(Protocol):
    """What `decide` reads of an alert (an `Alert` row, or any plain value with these)."""

    @property
    def state(self) -> str: ...
    @property
    def escalation_level(self) -> int | None: ...
    @property
    def received_at(self) -> datetime: ...


class PlannedAlert(EscalatingAlert, Protocol):
    """What `replan` reads: `EscalatingAlert` plus when its ladder moves next."""

    @property
    def next_escalation_at(self) -> datetime | None: ...


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


@dataclass(frozen=True)
class Replan:
    """Where an open alert stands on a changed ladder.

    `level` None means no policy (the catch-all queue). `clamped`: the alert
    was above the new ladder's top and now stands at it; it is due at once so
    the new top recipient hears about it on the next tick.
    """

    level: int | None
    recipient: str | None
    clamped: bool
    next_due: datetime | None


def replan(
    alert: PlannedAlert, plan: PolicyPlan | None, now: datetime, *, default_ack_timeout_s: float
) -> Replan:
    """An open (new or acknowledged) alert put on `plan`, its policy after a change (pure).

    A new alert keeps its level if the ladder has it, else is clamped to the
    top, and is next due when the new ladder says (at once when clamped).
    That is None only when the alert has passed the last level of a ladder
    that does not repeat, which `fleet_server.alerting.changes` refuses for P1
    alert types. An acknowledged alert keeps its follow-up deadline, shortened
    to the new ack timeout if that is sooner.
    """
    if plan is None or not plan.levels:
        return Replan(level=None, recipient=None, clamped=False, next_due=None)
    top = len(plan.levels) - 1
    current = alert.escalation_level
    clamped = current is not None and current > top
    level = top if clamped else current
    recipient = plan.levels[level].recipient if level is not None else None
    if alert.state == AlertState.ACKNOWLEDGED:
        deadline = now + timedelta(seconds=plan.ack_timeout_s or default_ack_timeout_s)
        if alert.next_escalation_at is not None and alert.next_escalation_at < deadline:
            deadline = alert.next_escalation_at
        return Replan(level=level, recipient=recipient, clamped=clamped, next_due=deadline)
    due = now if clamped else next_due(level=level, received_at=alert.received_at, plan=plan,
                                       now=now)  # fmt: skip
    return Replan(level=level, recipient=recipient, clamped=clamped, next_due=due)


def replan_open_alerts(
    *, session: Session, alert_types: Collection[str] | None, policies: Policies, now: datetime
) -> int:
    """Put every open new/acknowledged alert of `alert_types` on its (changed) ladder.

    `alert_types` None means the default policy changed: every type without a
    policy of its own. `policies` must be loaded after the change. An alert
    whose recipient changes (clamped, or its level now names someone else)
    gets a `policy_changed` escalation step. Returns how many alerts were
    re-planned (not committed).
    """
    query = select(Alert).where(col(Alert.state).in_([AlertState.NEW, AlertState.ACKNOWLEDGED]))
    if alert_types is None:
        covered = [t for t in policies.by_type if t is not None]
        query = query.where(col(Alert.type).not_in(covered))
    else:
        query = query.where(col(Alert.type).in_(list(alert_types)))
    count = 0
    for alert in session.exec(query.order_by(col(Alert.received_at)).with_for_update()).all():
        plan = policies.for_type(alert.type)
        step = replan(alert, plan, now, default_ack_timeout_s=policies.ack_timeout_s)
        queue = CATCH_ALL_QUEUE if plan is None else policies.queue_for(step.recipient)
        moved = step.clamped or alert.queue != queue
        if moved and (step.level is not None or plan is None):
            record_escalation(
                session, alert, level=step.level, queue=queue, reason=POLICY_CHANGED, now=now
            )
        alert.escalation_policy_id = plan.id if plan is not None else None
        alert.next_escalation_at = step.next_due
        alert.updated_at = now
        count += 1
        logger.info(
            "alert %s re-planned after a policy change: level %s (%s), next due %s",
            alert.id, step.level, queue, step.next_due,
        )  # fmt: skip
    return count


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
