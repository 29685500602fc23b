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
as it does for a cursor it cannot read.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.models import Alert, AlertPublic

RESYNC_EVENT = "resync"


def cursor_of(updated_at: datetime) -> str:
    """The SSE id of a change: `updated_at` as ISO-8601 UTC with microseconds."""
    value = updated_at if updated_at.tzinfo else updated_at.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_cursor(text: str) -> datetime:
    """The instant a cursor names; `ValueError` (with the reason) for anything else."""
    try:
        value = datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError as exc:
        raise ValueError(
            f"not a feed cursor: {text[:64]!r} (expected e.g. 2025-03-01T09:00:00.000000Z)"
        ) from exc
    return value.replace(tzinfo=timezone.utc)


def frame(*, event: str, data: str, cursor: str | None = None) -> str:
    """One SSE message (`data` must be a single line of JSON)."""
    head = f"id: {cursor}\n" if cursor is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def resync_frame(reason: str) -> str:
    """Tell the client to re-read the alert list instead of relying on the replay."""
    return frame(event=RESYNC_EVENT, data=json.dumps({"reason": reason}))


def replay_frames(engine: Engine, since: datetime, *, limit: int) -> list[str]:
    """`op: "sync"` frames for alerts changed at or after `since`, or one resync frame."""
    with Session(engine) as session:
        alerts = session.exec(
            select(Alert)
            .where(col(Alert.updated_at) >= since)
            .order_by(col(Alert.updated_at), col(Alert.id))
            .limit(limit + 1)
        ).all()
        if len(alerts) > limit:
            return [resync_frame(f"more than {limit} alert changes since {cursor_of(since)}")]
        return [
            frame(
                event="alert",
                cursor=cursor_of(alert.updated_at),
                data=json.dumps(
                    {
                        "op": "sync",
                        "alert": AlertPublic.model_validate(alert).model_dump(mode="json"),
                        "event_id": None,
                    },
                    separators=(",", ":"),
                ),
            )
            for alert in alerts
        ]
