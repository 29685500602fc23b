"""Catching up on the live alert feed after a disconnect (SSE `Last-Event-ID`).

Every frame of `/api/v1/stream/alerts` carries an `id:`, the cursor of the
change it announces: the alert's `updated_at` (UTC, microseconds), which
every change to an alert sets and which is stored with the alert. A client
that reconnects sends the last cursor it saw (browsers' EventSource does this
by itself in the `Last-Event-ID` header; other clients may pass `?since=`),
and before the live frames it gets, as `op: "sync"`, the current state of
every alert changed at or after that cursor, oldest change first.

So nothing committed while a client was away is missed, including an alert
committed by a server that was killed before it could announce it (the
cursor lives in the database, not in the process). Delivery is at least
once: the alert at the cursor itself comes again, and a change that commits
while the replay is read may also arrive live; clients keep the newest
`updated_at` per alert id. More than `limit` changes since the cursor sends
one `event: resync` instead, telling the client to re-read `/api/v1/alerts`,
as it does for a cursor it cannot read. Cursors and framing are the
stream's (`fleet_server.stream`). The replay is the caller's scope only
(docs/access.md): the limit counts alerts in scope, so a resync says nothing
about other districts' traffic.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.models import Alert, AlertPublic
from fleet_server.scope import Scope
from fleet_server.stream import AlertFrame, alert_data, cursor_of, frame, resync_frame

__all__ = ["replay_frames"]


def replay_frames(
    engine: Engine, since: datetime, *, limit: int, scope: Scope | None = None
) -> list[str]:
    """`op: "sync"` frames for alerts in `scope` changed at or after `since`, or one resync."""
    scope = scope or Scope.everything()
    with Session(engine) as session:
        alerts = session.exec(
            scope.filter(select(Alert), Alert.district)
            .where(col(Alert.updated_at) >= since)
            .order_by(col(Alert.updated_at), col(Alert.id))
            .limit(limit + 1)
        ).all()
        if len(alerts) > limit:
            return [resync_frame(f"more than {limit} alert changes since {cursor_of(since)}")]
        return [
            AlertFrame(
                frame(
                    event="alert",
                    cursor=cursor_of(alert.updated_at),
                    data=alert_data("sync", AlertPublic.model_validate(alert), None),
                ),
                district=alert.district,
            )
            for alert in alerts
        ]
