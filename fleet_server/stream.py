"""The live feed behind `/api/v1/stream/alerts` (Server-Sent Events): framing and fan-out.

Items are whole SSE messages (`id:`, `event:`, `data:`), made once per change
(`alert_frame`); what a reconnecting client missed comes from the database
first (`fleet_server.feed_replay`), framed here the same way. Every frame's
`id:` is the cursor of the change it announces (`cursor_of`): the alert's
`updated_at` in UTC with microseconds.

Each connected client gets a bounded asyncio queue. `publish` never waits:
if a client's queue is full, that client is cut off (its stream ends with a
comment saying why, and EventSource reconnects and replays what it missed),
so a slow browser can never hold up ingest or the other clients. Messages are
serialised once, not once per client. `publish` must run on the event loop;
other threads use `publish_threadsafe`.

Each client sees only alerts of its scope (docs/access.md): an alert frame is
an `AlertFrame`, a `str` that also knows its alert's district, and a
subscription made with a `Scope` gets only the frames that scope allows.
A district-bound subscriber gets nothing that is not an `AlertFrame`, so a
frame of unknown district never reaches it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fleet_server.alerting import AlertNotice
from fleet_server.models import AlertPublic
from fleet_server.scope import Scope

__all__ = [
    "RESYNC_EVENT",
    "AlertFrame",
    "Broadcaster",
    "Subscription",
    "alert_data",
    "alert_frame",
    "cursor_of",
    "frame",
    "parse_cursor",
    "resync_frame",
]

logger = logging.getLogger(__name__)

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


def alert_data(op: str, alert: AlertPublic, event_id: str | None) -> str:
    """The JSON of an alert frame's `data:` line (docs/panic-flow.md)."""
    return json.dumps(
        {"op": op, "alert": alert.model_dump(mode="json"), "event_id": event_id},
        separators=(",", ":"),
    )


class AlertFrame(str):
    """An alert's SSE message that also carries the alert's district, for per-client scope."""

    district: str | None

    def __new__(cls, text: str, *, district: str | None) -> AlertFrame:
        item = super().__new__(cls, text)
        item.district = district
        return item


def alert_frame(notice: AlertNotice) -> AlertFrame:
    """The whole SSE message for a committed change, with its cursor as the `id:`."""
    return AlertFrame(
        frame(
            event="alert",
            data=alert_data(notice.op, notice.alert, notice.event_id),
            cursor=cursor_of(notice.alert.updated_at),
        ),
        district=notice.alert.district,
    )


def _visible(scope: Scope | None, item: str) -> bool:
    if scope is None or scope.is_all:
        return True
    return isinstance(item, AlertFrame) and scope.allows(item.district)


def resync_frame(reason: str) -> str:
    """Tell the client to re-read the alert list instead of relying on the replay."""
    return frame(event=RESYNC_EVENT, data=json.dumps({"reason": reason}))


@dataclass(eq=False)
class Subscription:
    """One connected client."""

    queue: asyncio.Queue[str | None]
    overflowed: bool = False
    scope: Scope | None = None  # None: every frame (in-process consumers)


@dataclass
class Broadcaster:
    """Fan-out of pre-serialised SSE messages to every subscriber."""

    queue_max: int = 1000
    loop: asyncio.AbstractEventLoop | None = None
    dropped_clients: int = 0
    published: int = 0
    _subs: set[Subscription] = field(default_factory=set)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, *, scope: Scope | None = None) -> Subscription:
        """A new client; with `scope` it gets only the alert frames that scope allows."""
        sub = Subscription(asyncio.Queue(maxsize=self.queue_max), scope=scope)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, items: Sequence[str]) -> None:
        """Queue `items` for every client (on the loop thread)."""
        self.published += len(items)
        for sub in list(self._subs):
            if sub.overflowed:
                continue
            try:
                for item in items:
                    if _visible(sub.scope, item):
                        sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                self._cut_off(sub)

    def publish_threadsafe(self, items: Sequence[str]) -> None:
        """Schedule `publish` on the loop from any thread."""
        if self.loop is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.publish, list(items))

    def _cut_off(self, sub: Subscription) -> None:
        sub.overflowed = True
        self.dropped_clients += 1
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)
        logger.warning("SSE client too slow (%s queued); disconnecting it", self.queue_max)

    async def stream(
        self, sub: Subscription, *, keepalive_s: float, backlog: Sequence[str] = ()
    ) -> AsyncIterator[str]:
        """The text/event-stream body for one client: `backlog` (the replay), then live."""
        try:
            # Sent after subscribing: a client that has read it will see every later event.
            yield ": connected\n\n"
            for replayed in backlog:
                yield replayed
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if item is None:
                    yield ": dropped because this client fell behind; reconnect\n\n"
                    return
                yield item
        finally:
            self.unsubscribe(sub)
