"""Application acks to nodes: built fast, and coalesced while the ingest worker is behind.

An `Ack` tells a node that events are committed, so its outbox may delete
them; until then the node keeps them and re-sends after
`outbox.resend_after_s` (10 s by default). The ack is therefore not urgent
for most events, only for a panic press, whose ack turns the pillar's light
to "delivered" in front of the citizen.

`AckCoalescer` uses that. After each committed batch the worker hands it the
batch's acks; when nothing else is queued (the normal case) everything is
published at once, so an idle server acks within one commit. When more
messages are already waiting, acks for non-panic events are held and merged
per node with the next batches', until the queue runs dry, `hold_s` has
passed since the oldest held ack, or a node has a full `Ack`
(`ACK_MAX_IDS`). A node with a panic press in the batch is always acked at
once, together with anything held for it. Under a storm (a broker restart,
thousands of outboxes draining) this turns one ack message per event into
one per node per `hold_s`, cutting what the broker and the server's MQTT
thread carry; see docs/benchmarks.md (`bench ingest`) for the figures.

Holding is safe because the hold (half a second by default) is far below the
node's resend time, and a lost or late ack only costs a re-send that the
server stores once and acks again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from proto.codec import encode_canonical
from proto.messages import Ack
from proto.topics import ack_topic

ACK_MAX_IDS = 500  # proto.messages.Ack.event_ids max_length


class Publisher(Protocol):
    """Where acks and commands go (the MQTT link, or a list in unit tests)."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...


def publish_acks(publisher: Publisher, acks: dict[str, list[str]], *, now: datetime) -> int:
    """One `Ack` per node (split at the wire limit) for events now committed.

    A batch acks hundreds of nodes at the same `now`: one `Ack` is built and
    validated, and its canonical dump is cut around the node id and the event
    ids (both validated when the events were decoded); each node's payload is
    the pieces joined with its own JSON values spliced in, which is what
    `encode(Ack(...))` would give (tested byte for byte), at a tenth of the cost.
    Returns the number of messages published.
    """
    pieces: tuple[str, str, str] | None = None
    sent = 0
    for node_id, ids in acks.items():
        for start in range(0, len(ids), ACK_MAX_IDS):
            chunk = ids[start : start + ACK_MAX_IDS]
            if pieces is None:
                pieces = _ack_pieces(Ack(node_id=node_id, ts=now, event_ids=chunk))
            head, middle, tail = pieces
            payload = f"{head}{_json(chunk)}{middle}{_json(node_id)}{tail}".encode()
            publisher.publish(ack_topic(node_id), payload, qos=1)
            sent += 1
    return sent


_IDS_MARK, _NODE_MARK = "\ue000ids\ue000", "\ue000node\ue000"
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _ack_pieces(ack: Ack) -> tuple[str, str, str]:
    """`encode(ack)` cut where the event ids and the node id go (in that key order)."""
    data = ack.model_dump(mode="json", exclude_none=True)
    data["event_ids"], data["node_id"] = _IDS_MARK, _NODE_MARK
    text = encode_canonical(data).decode()
    head, rest = text.split(_json(_IDS_MARK))
    middle, tail = rest.split(_json(_NODE_MARK))
    return head, middle, tail


class AckCoalescer:
    """Holds non-urgent acks while the worker has a backlog (see the module docstring).

    Used from the ingest worker's thread only; not thread-safe.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        hold_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if hold_s < 0:
            raise ValueError("hold_s must not be negative")
        self.publisher = publisher
        self.hold_s = hold_s
        self._monotonic = monotonic
        self._held: dict[str, dict[str, None]] = {}  # node → event ids (an ordered set)
        self._held_since: float | None = None
        self.messages = 0  # Ack messages published so far
        self.held_batches = 0  # batches whose acks (some of them) waited for a later one

    @property
    def held(self) -> int:
        """Event ids committed but not yet acknowledged to their node."""
        return sum(len(ids) for ids in self._held.values())

    def add(
        self,
        acks: dict[str, list[str]],
        *,
        urgent: Iterable[str],
        backlog: int,
        now: datetime,
    ) -> int:
        """Take one committed batch's acks; publish what must go now. Returns messages sent.

        `urgent`: nodes acked at once (a panic press in the batch); `backlog`:
        messages already waiting for the worker; `now`: the `Ack` timestamp.
        """
        for node_id, ids in acks.items():
            self._held.setdefault(node_id, {}).update(dict.fromkeys(ids))
        if not self._held:
            return 0
        if backlog <= 0 or self.hold_s == 0:
            return self.flush(now=now)
        clock = self._monotonic()
        if self._held_since is None:
            self._held_since = clock
        elif clock - self._held_since >= self.hold_s:
            return self.flush(now=now)
        due = {n for n in urgent if n in self._held}
        due.update(n for n, ids in self._held.items() if len(ids) >= ACK_MAX_IDS)
        self.held_batches += 1
        if not due:
            return 0
        sent = publish_acks(self.publisher, {n: list(self._held.pop(n)) for n in due}, now=now)
        self.messages += sent
        if not self._held:
            self._held_since = None
        return sent

    def flush(self, *, now: datetime) -> int:
        """Publish everything held (queue ran dry, hold time up, or shutting down)."""
        held, self._held, self._held_since = self._held, {}, None
        sent = publish_acks(self.publisher, {n: list(ids) for n, ids in held.items()}, now=now)
        self.messages += sent
        return sent
