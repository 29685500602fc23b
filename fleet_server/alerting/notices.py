"""What happened to an alert, told to the outside world only after the commit.

Data functions in `fleet_server.alerting` return `AlertNotice`s; the caller
commits and then hands them to a `Notifier` (the live feed and, for panic
alerts, an `AlertStateCommand` to the pillar), so nobody is told about a
state the database does not hold. How a notice becomes an SSE message is the
stream's business (`fleet_server.stream.alert_frame`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from fleet_server.models import Alert, AlertPublic, AlertType
from proto.ids import new_request_id
from proto.messages import AlertStateCommand

__all__ = ["AlertNotice", "Notifier", "Op", "notice"]

Op = Literal["created", "joined", "transition", "escalated"]

# Only a panic alert drives the pillar's light; telling a citizen "help is
# coming" because a tamper alert was acknowledged would be wrong.
_COMMAND_TYPES = frozenset({AlertType.PANIC})


@dataclass(frozen=True)
class AlertNotice:
    """Something that happened to an alert, to announce after the commit."""

    op: Op
    alert: AlertPublic
    event_id: str | None = None
    command: AlertStateCommand | None = None


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
