"""Escalation policies: who hears about an alert of a given type, and when.

The input models are strict on purpose: a policy decides who hears about a
panic, so `alert_type` must be a known `AlertType` (a typo is refused, not
stored as a policy nobody's alerts match), and times must be real numbers of
seconds (JSON `false` is not 0 s, `"30"` is not 30 s, and a repeat every
5e-324 s is refused by its minimum). The rules that need the database or the
whole ladder live in `fleet_server.alerting.changes`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictFloat
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from fleet_server.models.alert import AlertType
from fleet_server.models.common import UtcDateTime, utcnow

CATCH_ALL_QUEUE = "catch_all"


class EscalationPolicy(SQLModel, table=True):
    """A named ladder of levels; `alert_type` None is the default policy."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    alert_type: str | None = Field(default=None, index=True, max_length=32)
    repeat_every_s: float | None = Field(
        default=None, description="after the last level, notify it again this often"
    )
    ack_timeout_s: float | None = Field(
        default=None, description="acknowledged but not dispatched within this → re-escalate"
    )


class EscalationLevel(SQLModel, table=True):
    """One rung: `after_s` seconds after the alert was received, notify `recipient`."""

    id: int | None = Field(default=None, primary_key=True)
    policy_id: int = Field(index=True, foreign_key="escalationpolicy.id")
    level: int = Field(ge=0)
    after_s: float = Field(ge=0.0)
    recipient: str | None = Field(
        default=None, max_length=64, description="queue or role; None → catch_all"
    )


class PolicyVersion(SQLModel, table=True):
    """How many times what escalation reads (policies, levels, users) has changed.

    One row (`id` 1). Every change to a policy, a level or a user bumps it in
    the same transaction (`fleet_server.alerting.policies.bump_policy_version`),
    so a cached copy of the policies is reloaded exactly when the version it
    was loaded at is no longer the stored one, whichever process made the change.
    """

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, ge=0)


class EscalationPolicyChange(SQLModel, table=True):
    """One change to a policy: who made it, when, and the policy before and after.

    Written in the same transaction as the change (`fleet_server.alerting.changes`),
    so a policy never changes without a record. `before` is None for a new
    policy, `after` None for a deleted one; both are `PolicySnapshot` dicts.
    """

    id: int | None = Field(default=None, primary_key=True)
    policy_name: str = Field(index=True, max_length=64)
    action: str = Field(max_length=16, description="created | replaced | deleted")
    actor: str = Field(max_length=80, description="user:<name>, or system")
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    replanned: int = Field(default=0, ge=0, description="open alerts re-planned by the change")


# Seconds as an admin writes them: a JSON number, finite, never a boolean or a string.
Seconds = StrictFloat


class EscalationLevelIn(BaseModel):
    """One rung as an admin writes it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    after_s: Seconds = PydanticField(
        ge=0.0, le=7 * 86_400, description="seconds after the alert arrived"
    )
    recipient: str | None = PydanticField(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="queue or role; empty → catch_all",
    )


class EscalationPolicyIn(BaseModel):
    """A whole policy as an admin writes it (replaces the stored one).

    Level 0 is notified when the alert arrives (`after_s` 0); later levels in
    non-decreasing `after_s`. A P1 alert type's ladder must repeat.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    alert_type: AlertType | None = PydanticField(
        default=None, description="a known alert type; null = the default policy"
    )
    levels: list[EscalationLevelIn] = PydanticField(min_length=1, max_length=16)
    repeat_every_s: Seconds | None = PydanticField(
        default=None,
        ge=1.0,
        le=86_400,
        description="after the last level, notify it again this often (required for P1 types)",
    )
    ack_timeout_s: Seconds | None = PydanticField(
        default=None,
        ge=1.0,
        le=86_400,
        description="acknowledged but not followed up within this → re-escalate",
    )


class EscalationPolicyPublic(BaseModel):
    """A policy with its levels in order."""

    id: int
    name: str
    alert_type: str | None
    repeat_every_s: float | None
    ack_timeout_s: float | None
    levels: list[EscalationLevelIn]


class EscalationPolicyChangePublic(BaseModel):
    """One recorded policy change as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    policy_name: str
    action: str
    actor: str
    at: datetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    replanned: int


class EscalationPolicyChangesPublic(BaseModel):
    """A policy's changes, newest first."""

    data: list[EscalationPolicyChangePublic]
    count: int
