"""Database tables and API models, one family per resource (SQLModel)."""

from fleet_server.models.alert import (
    OPEN_STATES,
    Alert,
    AlertEscalation,
    AlertEscalationPublic,
    AlertPublic,
    AlertsPublic,
    AlertState,
    AlertTransition,
    AlertTransitionPublic,
    AlertTransitionsPublic,
    AlertType,
    Severity,
    TransitionRequest,
)
from fleet_server.models.common import UtcDateTime, new_id, utcnow
from fleet_server.models.escalation import (
    CATCH_ALL_QUEUE,
    EscalationLevel,
    EscalationLevelIn,
    EscalationPolicy,
    EscalationPolicyIn,
    EscalationPolicyPublic,
)
from fleet_server.models.event import Event, EventPublic, EventsPublic
from fleet_server.models.ingest import (
    IngestRejection,
    IngestRejectionPublic,
    IngestRejectionsPublic,
    SequenceGap,
)
from fleet_server.models.node import Node, NodeBase, NodePublic, NodesPublic
from fleet_server.models.user import Role, Token, User, UserCreate, UserPublic

__all__ = [
    "CATCH_ALL_QUEUE",
    "OPEN_STATES",
    "Alert",
    "AlertEscalation",
    "AlertEscalationPublic",
    "AlertPublic",
    "AlertState",
    "AlertTransition",
    "AlertTransitionPublic",
    "AlertTransitionsPublic",
    "AlertType",
    "AlertsPublic",
    "EscalationLevel",
    "EscalationLevelIn",
    "EscalationPolicy",
    "EscalationPolicyIn",
    "EscalationPolicyPublic",
    "Event",
    "EventPublic",
    "EventsPublic",
    "IngestRejection",
    "IngestRejectionPublic",
    "IngestRejectionsPublic",
    "Node",
    "NodeBase",
    "NodePublic",
    "NodesPublic",
    "Role",
    "SequenceGap",
    "Severity",
    "Token",
    "TransitionRequest",
    "User",
    "UserCreate",
    "UserPublic",
    "UtcDateTime",
    "new_id",
    "utcnow",
]
