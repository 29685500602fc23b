"""A small Server-Sent Events reader for the operator alert feed.

Benchmarks and end-to-end tests watch the feed exactly as the console does:
one long HTTP request, `event:`/`data:` lines, reconnecting when the server
goes away (a server restart is part of the chaos runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedItem:
    """One SSE message with the local monotonic time it arrived."""

    event: str
    data: dict[str, Any]
    received_at: float
    id: str | None = None  # the change's cursor (`fleet_server.feed_replay`)


async def alert_feed(
    base_url: str,
    token: str,
    *,
    path: str = "/api/v1/stream/alerts",
    reconnect_delay_s: float = 0.2,
    connected: asyncio.Event | None = None,
    last_event_id: str | None = None,
) -> AsyncIterator[FeedItem]:
    """Yield feed items forever, reconnecting after errors; cancel to stop.

    Like EventSource, a reconnect sends the last `id:` seen as `Last-Event-ID`,
    so what changed meanwhile is replayed first (`op: "sync"` items); pass
    `last_event_id` to resume from an earlier connection's cursor.
    """
    url = f"{base_url}{path}"
    params = {"access_token": token}
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(timeout=timeout) as client:
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with client.stream("GET", url, params=params, headers=headers) as response:
                    response.raise_for_status()
                    if connected is not None:
                        connected.set()
                    event, data_lines, frame_id = "message", list[str](), None
                    async for line in response.aiter_lines():
                        if line == "":
                            if data_lines:
                                payload = json.loads("\n".join(data_lines))
                                yield FeedItem(event, payload, time.monotonic(), frame_id)
                                last_event_id = frame_id or last_event_id
                            event, data_lines, frame_id = "message", list[str](), None
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("id:"):
                            frame_id = line[3:].strip()
                        elif line.startswith("data:"):
                            data_lines.append(line[5:].lstrip())
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                logger.info("alert feed interrupted (%s); reconnecting", exc)
            if connected is not None:
                connected.clear()
            await asyncio.sleep(reconnect_delay_s)
