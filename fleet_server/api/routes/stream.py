"""`GET /stream/alerts`: the live alert feed as Server-Sent Events, resumable, in scope.

A client gets only the alerts of its scope, live and replayed (docs/access.md).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

from fleet_server.api.deps import RuntimeDep
from fleet_server.api.scope import StreamScope
from fleet_server.feed_replay import replay_frames
from fleet_server.stream import parse_cursor, resync_frame

router = APIRouter(prefix="/stream", tags=["stream"])


@router.get("/alerts", response_class=StreamingResponse)
async def stream_alerts(
    runtime: RuntimeDep,
    scope: StreamScope,
    since: Annotated[
        str | None,
        Query(description="a frame id: first replay alerts changed at or after it"),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """`event: alert` / `data: {"op", "alert", "event_id"}` for every alert change.

    Each frame's `id:` is a cursor. Reconnecting with `Last-Event-ID` (what
    EventSource sends) or `?since=` first replays, as `op: "sync"`, every
    alert changed since then (`fleet_server.feed_replay`). A bad `since` is a
    422; a bad `Last-Event-ID` (the client cannot fix it) gets `event: resync`.
    Auth by bearer header or `?access_token=` (EventSource cannot set headers).
    """
    backlog: list[str] = []
    cursor = since if since is not None else last_event_id
    if since is not None:
        try:
            parse_cursor(since)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
    broadcaster = runtime.broadcaster
    # Subscribe before reading the replay: a change committed in between comes
    # live (maybe twice), never not at all.
    sub = broadcaster.subscribe(scope=scope)
    if cursor is not None:
        try:
            backlog = await asyncio.to_thread(
                replay_frames,
                runtime.engine,
                parse_cursor(cursor),
                limit=runtime.settings.sse_replay_max,
                scope=scope,
            )
        except ValueError as exc:
            backlog = [resync_frame(str(exc))]
        except BaseException:
            broadcaster.unsubscribe(sub)
            raise
    return StreamingResponse(
        broadcaster.stream(sub, keepalive_s=runtime.settings.sse_keepalive_s, backlog=backlog),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
