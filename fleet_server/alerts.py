"""Alert lifecycle and escalation: the rules, as data functions, and the timer loop.

An alert moves through `new → acknowledged → dispatched → on_scene → resolved
→ closed` (plus `false_alarm`, `duplicate`, `test`); only the moves in
`TRANSITIONS` are legal, and every one is stored as an `AlertTransition` with
its actor and time. Escalation follows a policy stored in the database: level
0 is notified when the alert is received, level N `after_s` seconds after it;
acknowledging stops the ladder, but an acknowledgement not followed by
`dispatched` within the ack timeout re-escalates. A level without a reachable
recipient puts the alert in the `catch_all` queue, so nothing waits on
nobody. Due times live on the alert row (`next_escalation_at`) and the timer
loop selects due rows from the database each tick, so a restarted server
resumes escalation on time.

Functions here take a `Session` and return `AlertNotice`s describing what
happened; the caller commits and only then hands the notices to a `Notifier`
(SSE feed + `AlertStateCommand` to the node), so nobody is told about a
state the database does not hold.

Errors::

    AlertError
     ├── AlertNotFound
     └── IllegalTransition
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from fleet_server.feed_replay import cursor_of, frame
from fleet_server.models import (
    CATCH_ALL_QUEUE,
    OPEN_STATES,
    Alert,
    AlertEscalation,
    AlertPublic,
    AlertState,
    AlertTransition,
    AlertType,
    EscalationLevel,
    EscalationPolicy,
    Node,
    Role,
    Severity,
    User,
    utcnow,
)
from proto.ids import new_request_id
from proto.messages import AlertStateCommand

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
# Only a panic alert drives the pillar's light; telling a citizen "help is
# coming" because a tamper alert was acknowledged would be wrong.
_COMMAND_TYPES = frozenset({AlertType.PANIC})

Op = Literal["created", "joined", "transition", "escalated"]


class AlertError(Exception):
    """Root of alert-rule refusals."""


class AlertNotFound(AlertError):
    """No alert with that id."""


class IllegalTransition(AlertError):
    """The lifecycle does not allow this move."""


@dataclass(frozen=True)
class AlertNotice:
    """Something that happened to an alert, to announce after the commit."""

    op: Op
    alert: AlertPublic
    event_id: str | None = None
    command: AlertStateCommand | None = None

    def sse_frame(self) -> str:
        """The whole SSE message, with the change's cursor as its `id:`."""
        return frame(event="alert", data=self.sse_data(), cursor=cursor_of(self.alert.updated_at))

    def sse_data(self) -> str:
        """The JSON of the SSE `data:` line (docs/panic-flow.md)."""
        return json.dumps(
            {
                "op": self.op,
                "alert": self.alert.model_dump(mode="json"),
                "event_id": self.event_id,
            },
            separators=(",", ":"),
        )


class Notifier(Protocol):
    """Announces committed alert changes (SSE feed, node commands)."""

    def __call__(self, notices: Sequence[AlertNotice]) -> None: ...


def _command_for(alert: Alert, now: datetime) -> AlertStateCommand | None:
    if alert.type not in _COMMAND_TYPES:
        return None
    return AlertStateCommand(
        node_id=alert.node_id,
        ts=now,
        request_id=new_request_id(),
        alert_id=alert.id,
        state=alert.state,  # AlertState values are exactly the Literal's
    )


def notice(
    op: Op, alert: Alert, *, now: datetime, event_id: str | None = None, command: bool = True
) -> AlertNotice:
    """An AlertNotice for `alert` as it stands now."""
    return AlertNotice(
        op=op,
        alert=AlertPublic.model_validate(alert),
        event_id=event_id,
        command=_command_for(alert, now) if command else None,
    )


# ------------------------------------------------------------------ policies


@dataclass(frozen=True)
class PolicyPlan:
    """A policy with its levels in order, detached from the session."""

    id: int
    name: str
    levels: tuple[EscalationLevel, ...]
    repeat_every_s: float | None
    ack_timeout_s: float | None


@dataclass
class Policies:
    """Policies by alert type (None = default), plus which roles have users.

    Loaded once per ingest batch or timer tick rather than once per alert.
    """

    by_type: dict[str | None, PolicyPlan]
    staffed_roles: frozenset[str]
    ack_timeout_s: float

    def for_type(self, alert_type: str) -> PolicyPlan | None:
        return self.by_type.get(alert_type) or self.by_type.get(None)

    def queue_for(self, recipient: str | None) -> str:
        """The queue a level's recipient resolves to; catch_all when nobody can take it."""
        if not recipient:
            return CATCH_ALL_QUEUE
        if recipient in {r.value for r in Role} and recipient not in self.staffed_roles:
            return CATCH_ALL_QUEUE
        return recipient


def load_policies(*, session: Session, ack_timeout_s: float) -> Policies:
    """Every escalation policy and the set of roles with an active user."""
    levels: dict[int, list[EscalationLevel]] = {}
    for level in session.exec(select(EscalationLevel).order_by(col(EscalationLevel.level))):
        levels.setdefault(level.policy_id, []).append(level)
    by_type: dict[str | None, PolicyPlan] = {}
    for policy in session.exec(select(EscalationPolicy).order_by(col(EscalationPolicy.id))):
        assert policy.id is not None
        by_type.setdefault(
            policy.alert_type,
            PolicyPlan(
                id=policy.id,
                name=policy.name,
                levels=tuple(levels.get(policy.id, [])),
                repeat_every_s=policy.repeat_every_s,
                ack_timeout_s=policy.ack_timeout_s,
            ),
        )
    roles = session.exec(select(User.role).where(col(User.is_active)).distinct()).all()
    return Policies(by_type=by_type, staffed_roles=frozenset(roles), ack_timeout_s=ack_timeout_s)


# What `load_policies` reads. A commit that touched any of these (in this
# process) bumps `_policy_generation`, so a `PolicyCache` reloads at once.
_POLICY_SOURCES = (EscalationPolicy, EscalationLevel, User)
_policy_generation = itertools.count(1)
_current_generation = 0
_generation_lock = threading.Lock()


def _bump_policy_generation() -> None:
    global _current_generation
    with _generation_lock:
        _current_generation = next(_policy_generation)


@event.listens_for(OrmSession, "after_flush")
def _note_policy_change(session: OrmSession, _context: Any) -> None:
    for obj in itertools.chain(session.new, session.dirty, session.deleted):
        if isinstance(obj, _POLICY_SOURCES):
            session.info["nb_policies_changed"] = True
            return


@event.listens_for(OrmSession, "after_commit")
def _policies_committed(session: OrmSession) -> None:
    if session.info.pop("nb_policies_changed", False):
        _bump_policy_generation()


@event.listens_for(OrmSession, "after_rollback")
def _policies_rolled_back(session: OrmSession) -> None:
    session.info.pop("nb_policies_changed", None)


class PolicyCache:
    """`load_policies` for the ingest worker, without three queries per batch.

    Reloaded when a commit in this process touched a policy, a level or a
    user (exact), and otherwise at most `max_age_s` after the last load, which
    bounds how long a change made by another process (the CLI creating a
    user, a second server) goes unseen. Profiling the ingest worker showed
    `load_policies` at about a quarter of its time per single-message batch.
    """

    def __init__(
        self,
        *,
        ack_timeout_s: float,
        max_age_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ack_timeout_s = ack_timeout_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._policies: Policies | None = None
        self._generation = -1
        self._loaded_at = 0.0
        self.loads = 0

    def get(self, session: Session) -> Policies:
        """Current policies, loaded through `session` when the cached copy may be stale."""
        generation = _current_generation
        now = self._clock()
        if (
            self._policies is None
            or generation != self._generation
            or now - self._loaded_at >= self.max_age_s
        ):
            self._policies = load_policies(session=session, ack_timeout_s=self.ack_timeout_s)
            self._generation = generation
            self._loaded_at = now
            self.loads += 1
        return self._policies

    def invalidate(self) -> None:
        """Forget the cached copy (the next `get` reloads)."""
        self._policies = None


_PolicySeed = tuple[str, str | None, float | None, tuple[tuple[float, str], ...]]
DEFAULT_POLICIES: tuple[_PolicySeed, ...] = (
    # name, alert type, repeat_every_s, levels (after_s, recipient)
    (
        "panic",
        AlertType.PANIC,
        300.0,
        ((0, "zone_operator"), (30, "supervisor"), (90, "duty_officer"), (300, "command_head")),
    ),
    ("default", None, None, ((0, "zone_operator"), (300, "supervisor"))),
)


def ensure_default_policies(*, session: Session) -> None:
    """Seed the ARCHITECTURE.md example ladder when the database has no policy yet."""
    if session.exec(select(EscalationPolicy.id)).first() is not None:
        return
    for name, alert_type, repeat, levels in DEFAULT_POLICIES:
        policy = EscalationPolicy(name=name, alert_type=alert_type, repeat_every_s=repeat)
        session.add(policy)
        session.flush()
        assert policy.id is not None
        for i, (after_s, recipient) in enumerate(levels):
            session.add(
                EscalationLevel(policy_id=policy.id, level=i, after_s=after_s, recipient=recipient)
            )
    session.commit()
    logger.info("seeded default escalation policies")


def set_policy(
    *,
    session: Session,
    name: str,
    alert_type: str | None,
    levels: Iterable[tuple[float, str | None]],
    repeat_every_s: float | None = None,
    ack_timeout_s: float | None = None,
) -> EscalationPolicy:
    """Create or replace a policy and its levels (not committed)."""
    policy = session.exec(select(EscalationPolicy).where(EscalationPolicy.name == name)).first()
    if policy is None:
        policy = EscalationPolicy(name=name)
    policy.alert_type = alert_type
    policy.repeat_every_s = repeat_every_s
    policy.ack_timeout_s = ack_timeout_s
    session.add(policy)
    session.flush()
    assert policy.id is not None
    for old in session.exec(select(EscalationLevel).where(EscalationLevel.policy_id == policy.id)):
        session.delete(old)
    for i, (after_s, recipient) in enumerate(levels):
        session.add(
            EscalationLevel(policy_id=policy.id, level=i, after_s=after_s, recipient=recipient)
        )
    session.flush()
    return policy


# ---------------------------------------------------------------- lifecycle


@dataclass
class AlertRows:
    """Transition and escalation rows collected for one multi-row INSERT each.

    The ingest worker opens many alerts per batch under load; building an ORM
    object per history row cost more than the insert itself (profiled: about
    0.2 ms per object), and nothing reads these rows back in the batch.
    """

    transitions: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)

    def insert(self, session: Session) -> None:
        """Insert what was collected (flushes first: the rows reference new alerts)."""
        if not (self.transitions or self.escalations):
            return
        session.flush()
        if self.transitions:
            session.execute(insert(AlertTransition), self.transitions)
            self.transitions = []
        if self.escalations:
            session.execute(insert(AlertEscalation), self.escalations)
            self.escalations = []


def _record(
    session: Session,
    alert: Alert,
    *,
    to: str,
    actor: str,
    now: datetime,
    note: str = "",
    rows: AlertRows | None = None,
) -> None:
    if rows is not None:
        rows.transitions.append(
            {"alert_id": alert.id, "from_state": None, "to_state": to, "actor": actor,
             "note": note, "at": now}
        )  # fmt: skip
        return
    session.add(
        AlertTransition(
            alert_id=alert.id, from_state=None, to_state=to, actor=actor, note=note, at=now
        )
    )


def _escalate_to(
    session: Session,
    alert: Alert,
    *,
    level: int | None,
    queue: str,
    reason: str,
    now: datetime,
    due_at: datetime | None = None,
    rows: AlertRows | None = None,
) -> None:
    alert.escalation_level = level
    alert.queue = queue
    alert.updated_at = now  # every change moves the feed cursor (fleet_server.feed_replay)
    if rows is not None:
        rows.escalations.append(
            {"alert_id": alert.id, "level": level or 0, "queue": queue, "reason": reason,
             "at": now, "due_at": due_at}
        )  # fmt: skip
    else:
        session.add(
            AlertEscalation(
                alert_id=alert.id, level=level or 0, queue=queue, reason=reason, at=now,
                due_at=due_at,
            )
        )  # fmt: skip
    if queue == CATCH_ALL_QUEUE:
        logger.warning("alert %s (%s) is in the catch-all queue: %s", alert.id, alert.type, reason)


def _next_level_due(alert: Alert, plan: PolicyPlan, now: datetime) -> datetime | None:
    """When the ladder moves next, given the level the alert is at."""
    current = alert.escalation_level if alert.escalation_level is not None else -1
    if current + 1 < len(plan.levels):
        due = alert.received_at + timedelta(seconds=plan.levels[current + 1].after_s)
        return max(due, now)
    if plan.repeat_every_s:
        return now + timedelta(seconds=plan.repeat_every_s)
    return None


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
    _record(session, alert, to=alert.state, actor=actor, now=now, rows=rows)
    if test:
        return alert
    plan = policies.for_type(alert_type)
    if plan is None or not plan.levels:
        _escalate_to(
            session, alert, level=None, queue=CATCH_ALL_QUEUE, reason="no_policy", now=now,
            rows=rows,
        )  # fmt: skip
        return alert
    alert.escalation_policy_id = plan.id
    _escalate_to(
        session,
        alert,
        level=0,
        queue=policies.queue_for(plan.levels[0].recipient),
        reason="created",
        now=now,
        rows=rows,
    )
    alert.next_escalation_at = _next_level_due(alert, plan, now)
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
    session.commit()
    session.refresh(row)
    session.refresh(alert)
    logger.info("alert %s → %s by %s", alert.id, to, actor)
    return row, notice("transition", alert, now=now)


# --------------------------------------------------------------- escalation


def escalate_due(
    *, session: Session, now: datetime, policies: Policies, limit: int = 500
) -> list[AlertNotice]:
    """Escalate every alert whose `next_escalation_at` has passed (not committed)."""
    due = session.exec(
        select(Alert)
        .where(col(Alert.next_escalation_at) <= now)
        .where(col(Alert.state).in_([S.NEW, S.ACKNOWLEDGED]))
        .order_by(col(Alert.next_escalation_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    notices = []
    for alert in due:
        due_at = alert.next_escalation_at
        plan = policies.for_type(alert.type)
        if plan is None or not plan.levels:
            alert.next_escalation_at = None
            _escalate_to(
                session, alert, level=None, queue=CATCH_ALL_QUEUE, reason="no_policy", now=now,
                due_at=due_at,
            )  # fmt: skip
            notices.append(notice("escalated", alert, now=now, command=False))
            continue
        current = alert.escalation_level if alert.escalation_level is not None else -1
        level = min(current + 1, len(plan.levels) - 1)
        acked = alert.state == S.ACKNOWLEDGED
        reason = "ack_not_followed_up" if acked else ("timeout" if level > current else "repeat")
        _escalate_to(
            session,
            alert,
            level=level,
            queue=policies.queue_for(plan.levels[level].recipient),
            reason=reason,
            now=now,
            due_at=due_at,
        )
        if acked:
            timeout = plan.ack_timeout_s or policies.ack_timeout_s
            alert.next_escalation_at = now + timedelta(seconds=timeout)
        else:
            alert.next_escalation_at = _next_level_due(alert, plan, now)
        alert.updated_at = now
        logger.info("alert %s escalated to level %s (%s): %s", alert.id, level, alert.queue, reason)
        notices.append(notice("escalated", alert, now=now, command=False))
    return notices


def run_timers_once(
    *, engine: Engine, now: datetime, ack_timeout_s: float, offline_grace_s: float
) -> list[AlertNotice]:
    """One tick of the timer loop: settle node outages, then escalate due alerts."""
    from fleet_server.crud import settle_offline_nodes

    with Session(engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=ack_timeout_s)
        notices = settle_offline_nodes(
            session=session, now=now, grace_s=offline_grace_s, policies=policies
        )
        notices += escalate_due(session=session, now=now, policies=policies)
        session.commit()
    return notices


@dataclass
class TimerLoop:
    """The async loop that runs `run_timers_once` off the event loop every tick."""

    engine: Engine
    notify: Notifier
    tick_s: float
    ack_timeout_s: float
    offline_grace_s: float
    clock: Callable[[], datetime] = utcnow
    ticks: int = field(default=0, init=False)

    async def run(self) -> None:
        logger.info("escalation timer loop running every %.2fs", self.tick_s)
        while True:
            try:
                notices = await asyncio.to_thread(
                    run_timers_once,
                    engine=self.engine,
                    now=self.clock(),
                    ack_timeout_s=self.ack_timeout_s,
                    offline_grace_s=self.offline_grace_s,
                )
                if notices:
                    self.notify(notices)
            except Exception:
                logger.exception("escalation tick failed; retrying next tick")
            self.ticks += 1
            await asyncio.sleep(self.tick_s)
