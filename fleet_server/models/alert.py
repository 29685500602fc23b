"""Alerts, their lifecycle transitions and their escalation steps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, new_id, utcnow


class AlertState(StrEnum):
    """Lifecycle states (docs/panic-flow.md); also what the node's light shows."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    CLOSED = "closed"
    FALSE_ALARM = "false_alarm"
    DUPLICATE = "duplicate"
    TEST = "test"


OPEN_STATES: frozenset[str] = frozenset(
    {AlertState.NEW, AlertState.ACKNOWLEDGED, AlertState.DISPATCHED, AlertState.ON_SCENE}
)


class AlertType(StrEnum):
    """Where an alert came from."""

    PANIC = "panic"
    TAMPER = "tamper"
    POWER = "power"
    NODE_OFFLINE = "node_offline"
    ACL_DENIED = "acl_denied"  # the broker refused a node's publishes (fleet_server.broker)
    WATCHLIST_HIT = "watchlist_hit"  # a node matched a signed watchlist (fleet_server.watchlists)
    AGREEMENT_EXPIRING = "agreement_expiring"  # a private camera's agreement (fleet_server.privacy)


class Severity(StrEnum):
    """P1 critical … P4 low."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class AlertBase(SQLModel):
    """Fields the API shows for every alert."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    node_id: str = Field(index=True, max_length=64)
    type: str = Field(max_length=32)
    severity: str = Field(max_length=2)
    state: str = Field(default=AlertState.NEW, index=True, max_length=16)
    district: str | None = Field(default=None, index=True, max_length=64)
    site_id: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=1000)
    press_count: int = 1
    first_event_id: str | None = Field(default=None, max_length=26)
    last_event_id: str | None = Field(default=None, max_length=26)
    queue: str | None = Field(default=None, max_length=64, description="current recipient queue")
    escalation_level: int | None = None
    escalation_policy_id: int | None = None
    next_escalation_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    pressed_at: datetime | None = Field(default=None, sa_type=UtcDateTime, description="node ts")
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    dispatched_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    on_scene_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Alert(AlertBase, table=True):
    """An alert row."""

    __table_args__ = (
        # The escalation loop's query: due alerts, oldest first.
        Index("ix_alert_next_escalation_at", "next_escalation_at"),
        Index("ix_alert_node_type_state", "node_id", "type", "state"),
        # The live feed's replay: alerts changed since a cursor (fleet_server.feed_replay).
        Index("ix_alert_updated_at", "updated_at"),
    )


class AlertPublic(AlertBase):
    """An alert as the API and the SSE feed show it."""


class AlertsPublic(SQLModel):
    """A page of alerts."""

    data: list[AlertPublic]
    count: int


class AlertTransition(SQLModel, table=True):
    """One lifecycle step, with who made it and when (creation has from_state None)."""

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(index=True, max_length=26, foreign_key="alert.id")
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str = Field(max_length=16)
    actor: str = Field(max_length=128)
    note: str = Field(default="", max_length=1000)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class AlertTransitionPublic(SQLModel):
    """A transition as the API shows it."""

    id: int
    alert_id: str
    from_state: str | None
    to_state: str
    actor: str
    note: str
    at: datetime


class AlertTransitionsPublic(SQLModel):
    """Every transition of one alert, oldest first."""

    data: list[AlertTransitionPublic]
    count: int


class TransitionRequest(SQLModel):
    """Body of `POST /alerts/{id}/transitions`."""

    to: AlertState
    note: str = Field(default="", max_length=1000)


class AlertEscalation(SQLModel, table=True):
    """One escalation step: which level/queue was notified, when and why."""

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(index=True, max_length=26, foreign_key="alert.id")
    level: int
    queue: str = Field(max_length=64)
    reason: str = Field(max_length=32, description="created | timeout | ack_not_followed_up")
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    # When the step was due (the alert's next_escalation_at as the timer found
    # it); None for the first level, which fires on arrival. at - due_at is how
    # late the timer was, e.g. across a server restart.
    due_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class AlertEscalationPublic(SQLModel):
    """An escalation step as the API shows it."""

    id: int
    alert_id: str
    level: int
    queue: str
    reason: str
    at: datetime
    due_at: datetime | None
