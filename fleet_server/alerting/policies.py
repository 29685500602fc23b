"""Escalation policies: who hears about an alert of a given type, and when.

A policy is a ladder of levels stored in the database (`EscalationPolicy`,
`EscalationLevel`); `load_policies` detaches all of them, with the set of
roles that have an active user, into a `Policies` value that the lifecycle
and escalation rules read. Loading is three queries, so the ingest worker and
the timer loop keep a `PolicyCache`.

The cache is exact, across processes: every change to what `load_policies`
reads (a policy, a level, a user) bumps the one-row `PolicyVersion` in the
same transaction (`bump_policy_version`), and the cache reloads when the
stored version is not the one it loaded at. A rolled-back change rolls its
bump back with it. Code that changes policies or users must go through the
functions here or in `fleet_server.auth`, or call `bump_policy_version`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from fleet_server.models import (
    CATCH_ALL_QUEUE,
    AlertType,
    EscalationLevel,
    EscalationPolicy,
    EscalationPolicyChange,
    PolicyVersion,
    Role,
    User,
)

__all__ = [
    "DEFAULT_POLICIES",
    "Policies",
    "PolicyCache",
    "PolicyPlan",
    "bump_policy_version",
    "ensure_default_policies",
    "load_policies",
    "policy_version",
    "set_policy",
]

logger = logging.getLogger(__name__)

_ROLES = frozenset(r.value for r in Role)


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
        if recipient in _ROLES and recipient not in self.staffed_roles:
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


_VERSION_ROW = 1
_READ_VERSION = select(PolicyVersion.version).where(PolicyVersion.id == _VERSION_ROW)
_BUMP_VERSION = (
    update(PolicyVersion)
    .where(col(PolicyVersion.id) == _VERSION_ROW)
    .values(version=col(PolicyVersion.version) + 1)
)


def policy_version(session: Session) -> int:
    """The stored policy version (0 when the row is missing: an adopted database)."""
    version = session.exec(_READ_VERSION).first()
    return 0 if version is None else int(version)


def bump_policy_version(session: Session) -> None:
    """Record, in the caller's transaction, that policies, levels or users changed."""
    if session.execute(_BUMP_VERSION).rowcount == 0:  # type: ignore[attr-defined]
        session.execute(insert(PolicyVersion).values(id=_VERSION_ROW, version=1))


class PolicyCache:
    """`load_policies` for the ingest worker and the timer loop, reloaded only on change.

    Each `get` reads the stored `PolicyVersion` (one primary-key lookup) and
    reloads when it moved since the last load. Profiling the ingest worker
    showed `load_policies` at about a quarter of its time per single-message
    batch, which is why it is cached at all.
    """

    def __init__(self, *, ack_timeout_s: float) -> None:
        self.ack_timeout_s = ack_timeout_s
        self._policies: Policies | None = None
        self._version = -1
        self.loads = 0

    def get(self, session: Session) -> Policies:
        """Current policies, loaded through `session` when the cached copy is stale."""
        version = policy_version(session)
        if self._policies is None or version != self._version:
            self._policies = load_policies(session=session, ack_timeout_s=self.ack_timeout_s)
            self._version = version
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
        # The seed is the first entry of each policy's history (fleet_server.alerting.changes).
        after = {
            "name": name, "alert_type": alert_type, "repeat_every_s": repeat,
            "ack_timeout_s": None,
            "levels": [{"after_s": float(a), "recipient": r} for a, r in levels],
        }  # fmt: skip
        session.add(
            EscalationPolicyChange(policy_name=name, action="created", actor="system", after=after)
        )
    bump_policy_version(session)
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
    """Create or replace a policy and its levels, and bump the version (not committed).

    No checks, no history, no re-planning of open alerts: an admin's change
    goes through `fleet_server.alerting.changes.change_policy`, which does all three.
    """
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
    bump_policy_version(session)
    session.flush()
    return policy
