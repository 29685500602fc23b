"""Escalation policies: who hears about an alert of a given type, and when."""

from __future__ import annotations

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
