"""Which handler stores which kind of uplink message: an open registry, a dict by class.

`store_batch` looks a message's handler up by its class (`proto.messages`
has one class per payload kind), once per message, with no `isinstance`
chain: a new kind of message (an OTA report, a camera event with its own
rules) is a handler registered here, without editing the batch loop. A class
with no handler of its own gets its nearest registered base's (every event
class falls back to the plain event handler), resolved once and remembered.

A handler does its work in two steps, so that a batch reads the database
once per kind of state rather than once per message:

- `scan(batch, node_id, message)` runs for every message before anything is
  stored; it may ask for a batched preload (`Batch.want`) and returns
  whether handling needs the node's ORM row (most events do not: their
  node's `last_seen_at`/`last_seq` are written in bulk);
- `handle(batch, node, message, event)` applies the message. For an event,
  `event` is the row about to be inserted (the handler may set its
  `alert_id`), and `handle` runs only when the node row was needed — or,
  for a handler with ``rowless = True``, for every new event with ``node``
  None when the row was not loaded (it writes through `Batch.bulk`).
"""

from __future__ import annotations

from typing import Any, Protocol

from fleet_server.ingest.batch import Batch
from fleet_server.models import Node

__all__ = ["MessageHandler", "handler_for", "register_handler", "unregister_handler"]


class MessageHandler(Protocol):
    """Stores one kind of uplink message (see the module docstring)."""

    # An event (`proto.messages.EventBase`): deduplicated by id, acked, stored as a row.
    is_event: bool
    # Ack the node at once, not coalesced (the pillar's light waits for it).
    urgent_ack: bool

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        """Before storing: ask for preloads; return whether `handle` needs the node row."""
        ...

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        """Apply `message` (inside the batch's transaction)."""
        ...


_HANDLERS: dict[type, MessageHandler] = {}  # registered, and resolved through a base
_RESOLVED: set[type] = set()  # classes in `_HANDLERS` only through a base's handler


def register_handler(message_type: type, handler: MessageHandler) -> None:
    """Store messages of `message_type` (and subclasses without their own) with `handler`."""
    _forget_resolved()
    _HANDLERS[message_type] = handler


def unregister_handler(message_type: type) -> None:
    """Drop `message_type`'s own handler (it falls back to its nearest base's)."""
    _forget_resolved()
    _HANDLERS.pop(message_type, None)


def _forget_resolved() -> None:
    # A class resolved through a base may have a nearer handler after a change.
    for cls in _RESOLVED:
        _HANDLERS.pop(cls, None)
    _RESOLVED.clear()


def handler_for(message_type: type) -> MessageHandler:
    """The handler for a message class: one dict lookup once the class has been seen."""
    handler = _HANDLERS.get(message_type)
    if handler is not None:
        return handler
    for base in message_type.__mro__[1:]:
        handler = _HANDLERS.get(base)
        if handler is not None:
            _HANDLERS[message_type] = handler
            _RESOLVED.add(message_type)
            return handler
    raise LookupError(f"no ingest handler for {message_type.__name__}")
