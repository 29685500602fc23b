"""`GET /stream/alerts`: the live alert feed as Server-Sent Events."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from fleet_server.api.deps import RuntimeDep, StreamUser

router = APIRouter(prefix="/stream", tags=["stream"])


@router.get("/alerts", response_class=StreamingResponse)
async def stream_alerts(runtime: RuntimeDep, _user: StreamUser) -> StreamingResponse:
    """`event: alert` / `data: {"op", "alert", "event_id"}` for every alert change.

    Auth by bearer header or `?access_token=` (EventSource cannot set headers).
    """
    broadcaster = runtime.broadcaster
    sub = broadcaster.subscribe()
    return StreamingResponse(
        broadcaster.stream(sub, keepalive_s=runtime.settings.sse_keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
