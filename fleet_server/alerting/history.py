"""The rows that record an alert's history: every transition and every escalation step.

Kept apart from the rules that write them (`lifecycle`, `escalation`) so both
can record without importing each other. Under load the ingest worker opens
many alerts per batch; `AlertRows` collects their first rows for one
multi-row INSERT each instead of an ORM object per row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from fleet_server.models import CATCH_ALL_QUEUE, Alert, AlertEscalation, AlertTransition

__all__ = ["AlertRows", "record_created", "record_escalation"]

logger = logging.getLogger(__name__)


@dataclass
class AlertRows:
    """Transition and escalation rows collected for one multi-row INSERT each.

    The ingest worker opens many alerts per batch under load; building an ORM
    object per history row cost more than the insert itself (profiled: about
    0.2 ms per object), and nothing reads these rows back in the batch.
    """

    transitions: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)

    def insert(self, session: Session) -> None:
        """Insert what was collected (flushes first: the rows reference new alerts)."""
        if not (self.transitions or self.escalations):
            return
        session.flush()
        if self.transitions:
            session.execute(insert(AlertTransition), self.transitions)
            self.transitions = []
        if self.escalations:
            session.execute(insert(AlertEscalation), self.escalations)
            self.escalations = []


def record_created(
    session: Session,
    alert: Alert,
    *,
    to: str,
    actor: str,
    now: datetime,
    note: str = "",
    rows: AlertRows | None = None,
) -> None:
    """The first transition of a new alert (from nothing to `to`)."""
    if rows is not None:
        rows.transitions.append(
            {"alert_id": alert.id, "from_state": None, "to_state": to, "actor": actor,
             "note": note, "at": now}
        )  # fmt: skip
        return
    session.add(
        AlertTransition(
            alert_id=alert.id, from_state=None, to_state=to, actor=actor, note=note, at=now
        )
    )


def record_escalation(
    session: Session,
    alert: Alert,
    *,
    level: int | None,
    queue: str,
    reason: str,
    now: datetime,
    due_at: datetime | None = None,
    rows: AlertRows | None = None,
) -> None:
    """Put `alert` at `level` in `queue` and record the step (`due_at`: when it was due)."""
    alert.escalation_level = level
    alert.queue = queue
    alert.updated_at = now  # every change moves the feed cursor (fleet_server.feed_replay)
    if rows is not None:
        rows.escalations.append(
            {"alert_id": alert.id, "level": level or 0, "queue": queue, "reason": reason,
             "at": now, "due_at": due_at}
        )  # fmt: skip
    else:
        session.add(
            AlertEscalation(
                alert_id=alert.id, level=level or 0, queue=queue, reason=reason, at=now,
                due_at=due_at,
            )
        )  # fmt: skip
    if queue == CATCH_ALL_QUEUE:
        logger.warning("alert %s (%s) is in the catch-all queue: %s", alert.id, alert.type, reason)
