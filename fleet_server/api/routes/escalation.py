"""Escalation policies: admins set who hears about which alert type, and when.

A policy is replaced whole (PUT) because its levels only make sense together.
Every change goes through `fleet_server.alerting.changes`: it is refused when
it would leave an alert type reaching nobody (422 for a policy that makes no
sense, 409 for one that clashes with what is stored), it re-plans every open
alert it affects, and it is recorded with who made it and the policy before
and after (`GET /escalation-policies/{name}/history`, admins and auditors).
Policies are fleet-wide, not district data: any scope may read them, only an
every-district scope may change them (docs/access.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from sqlmodel import Session, col, select

from fleet_server.alerting import (
    PolicyConflict,
    PolicyDraft,
    PolicyRefused,
    change_policy,
    delete_policy,
    policy_history,
)
from fleet_server.api.deps import AdminUser, RuntimeDep, SessionDep, require_roles
from fleet_server.api.scope import FleetScope, ScopeDep
from fleet_server.models import (
    EscalationLevel,
    EscalationLevelIn,
    EscalationPolicy,
    EscalationPolicyChangePublic,
    EscalationPolicyChangesPublic,
    EscalationPolicyIn,
    EscalationPolicyPublic,
    Role,
    User,
    utcnow,
)

__all__ = ["router"]

router = APIRouter(prefix="/escalation-policies", tags=["escalation"])

PolicyName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
AuditUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.AUDITOR))]


def _public(session: Session, policy: EscalationPolicy) -> EscalationPolicyPublic:
    assert policy.id is not None
    levels = session.exec(
        select(EscalationLevel)
        .where(EscalationLevel.policy_id == policy.id)
        .order_by(col(EscalationLevel.level))
    ).all()
    return EscalationPolicyPublic(
        id=policy.id,
        name=policy.name,
        alert_type=policy.alert_type,
        repeat_every_s=policy.repeat_every_s,
        ack_timeout_s=policy.ack_timeout_s,
        levels=[EscalationLevelIn(after_s=lv.after_s, recipient=lv.recipient) for lv in levels],
    )


def _refused(exc: PolicyRefused) -> HTTPException:
    code = (
        status.HTTP_409_CONFLICT
        if isinstance(exc, PolicyConflict)
        else status.HTTP_422_UNPROCESSABLE_CONTENT
    )
    return HTTPException(status_code=code, detail=str(exc))


@router.get("")
def read_policies(session: SessionDep, _scope: ScopeDep) -> list[EscalationPolicyPublic]:
    """Every policy with its levels."""
    policies = session.exec(select(EscalationPolicy).order_by(col(EscalationPolicy.id))).all()
    return [_public(session, p) for p in policies]


@router.put(
    "/{name}",
    responses={
        409: {"description": "another policy covers the type, or the policy would change type"},
        422: {"description": "unknown alert type, bad timings, or a P1 ladder that stops"},
    },
)
def replace_policy(
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminUser,
    _fleet: FleetScope,
    name: PolicyName,
    policy_in: EscalationPolicyIn,
) -> EscalationPolicyPublic:
    """Create or replace a policy; open alerts of its type are re-planned on the new ladder.

    Level 0 has `after_s` 0 and the rest follow in non-decreasing order; a P1
    type's ladder must repeat; a policy never changes its alert type.
    """
    draft = PolicyDraft(
        alert_type=None if policy_in.alert_type is None else policy_in.alert_type.value,
        levels=tuple((level.after_s, level.recipient) for level in policy_in.levels),
        repeat_every_s=policy_in.repeat_every_s,
        ack_timeout_s=policy_in.ack_timeout_s,
    )
    try:
        changed = change_policy(
            session=session,
            name=name,
            draft=draft,
            actor=f"user:{admin.username}",
            now=utcnow(),
            default_ack_timeout_s=runtime.settings.ack_followup_s,
        )
    except PolicyRefused as exc:
        session.rollback()
        raise _refused(exc) from None
    session.commit()
    assert changed.policy is not None
    session.refresh(changed.policy)
    return _public(session, changed.policy)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        404: {"description": "no such policy"},
        409: {"description": "the default policy and P1 types' policies are never deleted"},
    },
)
def remove_policy(
    session: SessionDep, runtime: RuntimeDep, admin: AdminUser, _fleet: FleetScope, name: PolicyName
) -> None:
    """Delete a policy; its type's open alerts are re-planned on the default ladder."""
    try:
        changed = delete_policy(
            session=session,
            name=name,
            actor=f"user:{admin.username}",
            now=utcnow(),
            default_ack_timeout_s=runtime.settings.ack_followup_s,
        )
    except PolicyRefused as exc:
        session.rollback()
        raise _refused(exc) from None
    if changed is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no policy {name!r}")
    session.commit()


@router.get("/{name}/history")
def read_policy_history(
    session: SessionDep,
    _user: AuditUser,
    _scope: ScopeDep,
    name: PolicyName,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> EscalationPolicyChangesPublic:
    """Every change to a policy, newest first: who, when, the policy before and after."""
    rows, count = policy_history(session=session, name=name, limit=limit, offset=offset)
    if count == 0:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND, detail=f"no policy {name!r} and no history"
        )
    return EscalationPolicyChangesPublic(
        data=[EscalationPolicyChangePublic.model_validate(r) for r in rows], count=count
    )
