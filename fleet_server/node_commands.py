"""Commands to a node and the node's replies: build the proto command, record it, store replies.

No HTTP and no sockets here: the route publishes what `make_command` builds
through the server's MQTT link, and the ingest worker calls `store_reply` for
every `Reply` it receives on `nb/v1/<node_id>/reply/<request_id>`.

A reply is kept only when it answers a command this server sent to that
node: an operator's (a `NodeCommand` row) or one of the server's own
`alert_state` commands, which are not stored as rows but remembered in
memory by `SentCommands` as `RecordingPublisher` passes them to the link.
Any other reply (`unknown_replies`) is refused and counted by the ingest
worker as `unknown_request` for its node: nobody asked for it, nothing would
read it, and storing it would let a node grow the replies table at will. A
late reply to an `alert_state` command sent before a server restart is
refused the same way; the node does not depend on its reply being kept.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError
from sqlmodel import Session, col, select

from fleet_server.errors import FleetServerError
from fleet_server.models import NodeCommand, NodeReply, new_id
from proto.errors import ProtoError
from proto.messages import COMMAND_MODELS, CommandBase, Reply
from proto.topics import Channel, parse_topic

__all__ = [
    "OPERATOR_COMMANDS",
    "CommandRefused",
    "NodeUnreachable",
    "RecordingPublisher",
    "SentCommands",
    "check_reachable",
    "make_command",
    "reply_for",
    "store_reply",
    "unknown_replies",
]

logger = logging.getLogger(__name__)

# alert_state is the server's own (it follows the alert lifecycle); people may
# not send it by hand.
OPERATOR_COMMANDS = frozenset({"ping", "test_mode", "set_config"})


class CommandRefused(FleetServerError, ValueError):
    """The command cannot be sent: `reason` is a code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class NodeUnreachable(CommandRefused):
    """This server has no way to the node now; `status_code` is what a route answers with.

    Raised by a cluster worker's downlink (`fleet_server.cluster.downlink`):
    the node's district is unknown (409) or this worker has no link to its
    district broker (503). One box never raises it: its broker holds every
    node's session and queues for a node that is away.
    """

    def __init__(self, reason: str, message: str, *, status_code: int) -> None:
        super().__init__(reason, message)
        self.status_code = status_code


def check_reachable(publisher: object, node_id: str) -> None:
    """Raise `NodeUnreachable` when `publisher` knows it cannot reach `node_id` now.

    For routes, before they record a command. A publisher that can tell has
    a ``reach(node_id)`` (the cluster downlink); the one-box link cannot
    fail to queue, so it has none and this passes.
    """
    reach = getattr(publisher, "reach", None)
    if reach is not None:
        reach(node_id)


def make_command(
    *,
    session: Session,
    node_id: str,
    name: str,
    args: dict[str, Any],
    sent_by: str,
    now: datetime,
    ttl_s: int,
) -> CommandBase:
    """Validate and record a command; the caller publishes it after the commit."""
    if name not in OPERATOR_COMMANDS:
        raise CommandRefused(
            "bad_command", f"unknown command {name!r}; one of {sorted(OPERATOR_COMMANDS)}"
        )
    reserved = {"v", "node_id", "ts", "request_id", "expires_at", "name"} & set(args)
    if reserved:
        raise CommandRefused("bad_command", f"args may not set {sorted(reserved)}")
    request_id = new_id()
    try:
        command = COMMAND_MODELS[name].model_validate(
            {
                **args,
                "node_id": node_id,
                "ts": now,
                "request_id": request_id,
                "expires_at": now + timedelta(seconds=ttl_s),
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CommandRefused("bad_command", f"bad arguments for {name}: {problems}") from None
    session.add(
        NodeCommand(
            request_id=request_id, node_id=node_id, name=name, args=args, sent_by=sent_by,
            sent_at=now,
        )
    )  # fmt: skip
    return command


def store_reply(*, session: Session, node_id: str, reply: Reply, now: datetime) -> None:
    """Keep a node's reply (a redelivered duplicate is ignored)."""
    if session.get(NodeReply, (node_id, reply.request_id)) is not None:
        return
    session.add(
        NodeReply(
            node_id=node_id,
            request_id=reply.request_id,
            ok=reply.ok,
            result=reply.result,
            error=reply.error,
            ts=reply.ts,
            received_at=now,
        )
    )
    # Flushed now so a duplicate later in the same ingest batch finds it.
    session.flush()


def reply_for(*, session: Session, node_id: str, request_id: str) -> NodeReply | None:
    """The node's reply to `request_id`, once it has arrived."""
    return session.get(NodeReply, (node_id, request_id))


class SentCommands:
    """(node_id, request_id) of commands published without a `NodeCommand` row, newest kept.

    Bounded: past `max_entries` the oldest are forgotten (a node answers in
    seconds; 100,000 covers hours of a busy fleet's alert changes).
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._sent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, node_id: str, request_id: str) -> None:
        """Remember one published command."""
        with self._lock:
            self._sent[(node_id, request_id)] = None
            while len(self._sent) > self._max:
                self._sent.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._sent


class _Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...


class RecordingPublisher:
    """A publisher that remembers every command it passes on in `sent`, then publishes it."""

    def __init__(self, publisher: _Publisher, sent: SentCommands) -> None:
        self.publisher = publisher
        self.sent = sent

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Record a command's request id (the server built it, so it parses), then publish."""
        try:
            parsed = parse_topic(topic)
            if parsed.channel is Channel.CMD:
                request_id = json.loads(payload)["request_id"]
                self.sent.add(parsed.node_id, str(request_id))
        except (ProtoError, ValueError, KeyError, TypeError):
            logger.warning("could not record the request id of a command on %s", topic)
        self.publisher.publish(topic, payload, qos=qos)


def unknown_replies(
    *, session: Session, replies: Iterable[tuple[str, str]], sent: SentCommands
) -> set[tuple[str, str]]:
    """The (node_id, request_id) pairs among `replies` that answer no command sent to that node."""
    pending = {pair for pair in replies if pair not in sent}
    if not pending:
        return set()
    request_ids = sorted({request_id for _node, request_id in pending})
    rows = session.exec(
        select(NodeCommand.node_id, NodeCommand.request_id).where(
            col(NodeCommand.request_id).in_(request_ids)
        )
    ).all()
    return pending - {(node_id, request_id) for node_id, request_id in rows}
