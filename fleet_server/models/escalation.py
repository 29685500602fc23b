"""Escalation policies: who hears about an alert of a given type, and when."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

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


class EscalationLevelIn(BaseModel):
    """One rung as an admin writes it."""

    model_config = ConfigDict(extra="forbid")

    after_s: float = PydanticField(
        ge=0.0, le=7 * 86_400, description="seconds after the alert arrived"
    )
    recipient: str | None = PydanticField(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="queue or role; empty → catch_all",
    )


class EscalationPolicyIn(BaseModel):
    """A whole policy as an admin writes it (replaces the stored one)."""

    model_config = ConfigDict(extra="forbid")

    alert_type: str | None = PydanticField(
        default=None, max_length=32, description="panic, tamper, …; null = default policy"
    )
    levels: list[EscalationLevelIn] = PydanticField(min_length=1, max_length=16)
    repeat_every_s: float | None = PydanticField(default=None, gt=0.0, le=86_400)
    ack_timeout_s: float | None = PydanticField(default=None, gt=0.0, le=86_400)


class EscalationPolicyPublic(BaseModel):
    """A policy with its levels in order."""

    id: int
    name: str
    alert_type: str | None
    repeat_every_s: float | None
    ack_timeout_s: float | None
    levels: list[EscalationLevelIn]
