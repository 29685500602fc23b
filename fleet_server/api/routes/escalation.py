"""Escalation policies: admins set who hears about which alert type, and when.

A policy is replaced whole (PUT) because its levels only make sense together.
Ingest and the escalation timer read policies from the database on every
batch/tick, so a change applies to the next step of every open alert.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from sqlmodel import Session, col, select

from fleet_server.alerting import set_policy
from fleet_server.api.deps import AdminUser, CurrentUser, SessionDep
from fleet_server.models import (
    EscalationLevel,
    EscalationLevelIn,
    EscalationPolicy,
    EscalationPolicyIn,
    EscalationPolicyPublic,
)

router = APIRouter(prefix="/escalation-policies", tags=["escalation"])

PolicyName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


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


@router.get("")
def read_policies(session: SessionDep, _user: CurrentUser) -> list[EscalationPolicyPublic]:
    """Every policy with its levels."""
    policies = session.exec(select(EscalationPolicy).order_by(col(EscalationPolicy.id))).all()
    return [_public(session, p) for p in policies]


@router.put("/{name}")
def replace_policy(
    session: SessionDep, _admin: AdminUser, name: PolicyName, policy_in: EscalationPolicyIn
) -> EscalationPolicyPublic:
    """Create or replace a policy; levels must be in ascending `after_s`."""
    delays = [level.after_s for level in policy_in.levels]
    if delays != sorted(delays):
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"levels must be in ascending after_s order, got {delays}",
        )
    clash = session.exec(
        select(EscalationPolicy).where(
            EscalationPolicy.alert_type == policy_in.alert_type, EscalationPolicy.name != name
        )
    ).first()
    if clash is not None:
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=f"policy {clash.name!r} already covers alert type {policy_in.alert_type!r}",
        )
    policy = set_policy(
        session=session,
        name=name,
        alert_type=policy_in.alert_type,
        levels=[(level.after_s, level.recipient) for level in policy_in.levels],
        repeat_every_s=policy_in.repeat_every_s,
        ack_timeout_s=policy_in.ack_timeout_s,
    )
    session.commit()
    session.refresh(policy)
    return _public(session, policy)
