"""Changing an escalation policy safely: validated, recorded, and applied to open alerts.

This is the way an admin changes who hears about an alert (the API's
`/escalation-policies` routes call it). Issue 11 showed what a bare
`set_policy` allows: a typo in `alert_type` moved the live panic policy onto a
type no alert has, new panics fell to the default ladder, and open level-3
panics were left with no next escalation, with no record of who did it. So a
change here:

- is refused when it would leave an alert type reaching nobody or makes no
  sense (`check_policy`): the alert type is a known one and a policy never
  changes type (except to repair a stored type no alert can have, such as
  the typo issue 11 found); one policy per type; level 0 at 0 s and the rest in
  non-decreasing order; a P1 type's ladder repeats; a P1 type's policy and
  the default policy are never deleted;
- re-plans every open alert the change affects (`replan_open_alerts`), so no
  open alert is stranded without a next escalation;
- records who, when, and the policy before and after (`EscalationPolicyChange`),
  in the same transaction, beside the `PolicyVersion` bump.

Where no level can take an alert (no policy, a role with nobody on duty) the
catch-all queue gets it (`Policies.queue_for`), whatever a policy says.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.alerting.errors import PolicyConflict, PolicyInvalid
from fleet_server.alerting.escalation import replan_open_alerts
from fleet_server.alerting.lifecycle import SEVERITY_BY_TYPE
from fleet_server.alerting.policies import bump_policy_version, load_policies, set_policy
from fleet_server.models import (
    AlertType,
    EscalationLevel,
    EscalationPolicy,
    EscalationPolicyChange,
    Severity,
)

__all__ = [
    "KNOWN_ALERT_TYPES",
    "P1_ALERT_TYPES",
    "PolicyChanged",
    "PolicyDraft",
    "change_policy",
    "check_policy",
    "delete_policy",
    "is_known_or_default",
    "policy_history",
    "record_change",
    "snapshot",
]

logger = logging.getLogger(__name__)

# The alert types a policy may name: the `AlertType` enum is the one source.
KNOWN_ALERT_TYPES = frozenset(t.value for t in AlertType)
# Types whose alerts are P1: their policy must repeat and may not be deleted.
P1_ALERT_TYPES = frozenset(t for t, sev in SEVERITY_BY_TYPE.items() if sev == Severity.P1)
MIN_INTERVAL_S = 1.0  # repeat_every_s and ack_timeout_s below this are not intervals


@dataclass(frozen=True)
class PolicyDraft:
    """A whole policy as proposed: alert type (None = default), levels (after_s, recipient)."""

    alert_type: str | None
    levels: tuple[tuple[float, str | None], ...]
    repeat_every_s: float | None = None
    ack_timeout_s: float | None = None


@dataclass(frozen=True)
class PolicyChanged:
    """What a change did: the stored policy (None when deleted), its record, alerts re-planned."""

    policy: EscalationPolicy | None
    change: EscalationPolicyChange
    replanned: int


def snapshot(session: Session, policy: EscalationPolicy) -> dict[str, Any]:
    """The policy as stored, as plain JSON (the history's before/after)."""
    levels = session.exec(
        select(EscalationLevel)
        .where(EscalationLevel.policy_id == policy.id)
        .order_by(col(EscalationLevel.level))
    ).all()
    return {
        "name": policy.name,
        "alert_type": policy.alert_type,
        "repeat_every_s": policy.repeat_every_s,
        "ack_timeout_s": policy.ack_timeout_s,
        "levels": [{"after_s": lv.after_s, "recipient": lv.recipient} for lv in levels],
    }


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_known_or_default(alert_type: str | None) -> bool:
    """Whether a stored policy's type is one alerts can have (None: the default policy)."""
    return alert_type is None or alert_type in KNOWN_ALERT_TYPES


def check_policy(
    *,
    name: str,
    draft: PolicyDraft,
    existing: EscalationPolicy | None,
    clash: EscalationPolicy | None,
) -> None:
    """Refuse a policy that makes no sense or would leave an alert type reaching nobody.

    `existing` is the stored policy of that name, `clash` another policy
    already covering `draft.alert_type`. Raises `PolicyInvalid` or `PolicyConflict`.
    """
    kind = draft.alert_type
    if kind is not None and kind not in KNOWN_ALERT_TYPES:
        raise PolicyInvalid(
            f"unknown alert type {kind!r}; known: {', '.join(sorted(KNOWN_ALERT_TYPES))}"
        )
    if name in KNOWN_ALERT_TYPES and kind != name:
        raise PolicyInvalid(f"a policy named {name!r} must cover alert type {name!r}, not {kind!r}")
    # A stored type no alert can have (a typo accepted before issue 11) may be
    # repaired in place; a policy for a real type (or the default) never moves.
    retyped = existing is not None and existing.alert_type != kind
    if retyped and existing is not None and is_known_or_default(existing.alert_type):
        raise PolicyConflict(
            f"policy {name!r} covers alert type {existing.alert_type or 'default'!r}; a policy "
            f"never changes type (create a policy for {kind or 'default'!r} under its own name)"
        )
    if clash is not None:
        raise PolicyConflict(f"policy {clash.name!r} already covers alert type {kind!r}")
    if not draft.levels:
        raise PolicyInvalid("a policy needs at least one level")
    delays = [after_s for after_s, _ in draft.levels]
    if not all(_is_seconds(d) and d >= 0 for d in delays):
        raise PolicyInvalid(f"after_s must be seconds >= 0, got {delays}")
    if delays != sorted(delays):
        raise PolicyInvalid(f"levels must be in ascending after_s order, got {delays}")
    if delays[0] != 0:
        raise PolicyInvalid(
            f"level 0 is notified when the alert arrives: its after_s must be 0, got {delays[0]}"
        )
    for field, value in (
        ("repeat_every_s", draft.repeat_every_s),
        ("ack_timeout_s", draft.ack_timeout_s),
    ):
        if value is not None and not (_is_seconds(value) and value >= MIN_INTERVAL_S):
            raise PolicyInvalid(f"{field} must be at least {MIN_INTERVAL_S:g} s, got {value!r}")
    if kind in P1_ALERT_TYPES and draft.repeat_every_s is None:
        raise PolicyInvalid(
            f"alert type {kind!r} is P1: its ladder must repeat (set repeat_every_s) so an "
            "unanswered alert keeps reaching someone"
        )


def record_change(
    session: Session,
    *,
    name: str,
    action: str,
    actor: str,
    now: datetime,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    replanned: int = 0,
) -> EscalationPolicyChange:
    """Add the history row of one policy change (not committed)."""
    change = EscalationPolicyChange(
        policy_name=name, action=action, actor=actor, at=now, before=before, after=after,
        replanned=replanned,
    )  # fmt: skip
    session.add(change)
    audit.record(
        session, actor=actor, action=f"escalation_policy.{action}",
        object=f"escalation-policy:{name}", now=now,
        detail={"before": before, "after": after, "replanned": replanned},
    )  # fmt: skip
    return change


def _find(session: Session, name: str) -> EscalationPolicy | None:
    return session.exec(select(EscalationPolicy).where(EscalationPolicy.name == name)).first()


def change_policy(
    *,
    session: Session,
    name: str,
    draft: PolicyDraft,
    actor: str,
    now: datetime,
    default_ack_timeout_s: float,
) -> PolicyChanged:
    """Create or replace policy `name` after `check_policy`, re-plan, record (not committed)."""
    existing = _find(session, name)
    clash = session.exec(
        select(EscalationPolicy).where(
            EscalationPolicy.alert_type == draft.alert_type, EscalationPolicy.name != name
        )
    ).first()
    check_policy(name=name, draft=draft, existing=existing, clash=clash)
    before = snapshot(session, existing) if existing is not None else None
    policy = set_policy(
        session=session,
        name=name,
        alert_type=draft.alert_type,
        levels=draft.levels,
        repeat_every_s=draft.repeat_every_s,
        ack_timeout_s=draft.ack_timeout_s,
    )
    policies = load_policies(session=session, ack_timeout_s=default_ack_timeout_s)
    types = None if draft.alert_type is None else [draft.alert_type]
    replanned = replan_open_alerts(session=session, alert_types=types, policies=policies, now=now)
    change = record_change(
        session, name=name, action="replaced" if existing is not None else "created",
        actor=actor, now=now, before=before, after=snapshot(session, policy),
        replanned=replanned,
    )  # fmt: skip
    session.flush()
    logger.warning(
        "escalation policy %s %s by %s (%s open alert(s) re-planned)",
        name, change.action, actor, replanned,
    )  # fmt: skip
    return PolicyChanged(policy=policy, change=change, replanned=replanned)


def delete_policy(
    *, session: Session, name: str, actor: str, now: datetime, default_ack_timeout_s: float
) -> PolicyChanged | None:
    """Delete policy `name` (its alerts fall to the default ladder); None if there is none.

    The default policy and a P1 type's policy are never deleted: they are
    what keeps an alert reaching someone.
    """
    policy = _find(session, name)
    if policy is None:
        return None
    if policy.alert_type is None:
        raise PolicyConflict(
            f"policy {name!r} is the default for every alert type without its own; "
            "replace it instead of deleting it"
        )
    if policy.alert_type in P1_ALERT_TYPES:
        raise PolicyConflict(
            f"policy {name!r} covers P1 alert type {policy.alert_type!r}; it can be replaced, "
            "never deleted"
        )
    before = snapshot(session, policy)
    for level in session.exec(
        select(EscalationLevel).where(EscalationLevel.policy_id == policy.id)
    ):
        session.delete(level)
    session.delete(policy)
    bump_policy_version(session)
    session.flush()
    policies = load_policies(session=session, ack_timeout_s=default_ack_timeout_s)
    replanned = replan_open_alerts(
        session=session, alert_types=[before["alert_type"]], policies=policies, now=now
    )
    change = record_change(
        session, name=name, action="deleted", actor=actor, now=now, before=before, after=None,
        replanned=replanned,
    )  # fmt: skip
    session.flush()
    logger.warning(
        "escalation policy %s deleted by %s (%s open alert(s) re-planned)", name, actor, replanned
    )
    return PolicyChanged(policy=None, change=change, replanned=replanned)


def policy_history(
    *, session: Session, name: str, limit: int = 100, offset: int = 0
) -> tuple[Sequence[EscalationPolicyChange], int]:
    """Changes to policy `name`, newest first, and how many there are."""
    rows = session.exec(
        select(EscalationPolicyChange)
        .where(EscalationPolicyChange.policy_name == name)
        .order_by(col(EscalationPolicyChange.at).desc(), col(EscalationPolicyChange.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    total = len(
        session.exec(
            select(EscalationPolicyChange.id).where(EscalationPolicyChange.policy_name == name)
        ).all()
    )
    return rows, total
