"""The in-process live feed behind `/api/v1/stream/alerts` (Server-Sent Events).

Items are whole SSE messages (`id:`, `event:`, `data:`), made once per change
(`AlertNotice.sse_frame`); what a reconnecting client missed comes from the
database first (`fleet_server.feed_replay`).

Each connected client gets a bounded asyncio queue. `publish` never waits:
if a client's queue is full, that client is cut off (its stream ends with a
comment saying why, and EventSource reconnects and replays what it missed),
so a slow browser can never hold up ingest or the other clients. Messages are
serialised once, not once per client. `publish` must run on the event loop;
other threads use `publish_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Subscription:
    """One connected client."""

    queue: asyncio.Queue[str | None]
    overflowed: bool = False


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

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.Queue(maxsize=self.queue_max))
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
