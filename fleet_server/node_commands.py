"""Commands to a node and the node's replies: build the proto command, record it, store replies.

No HTTP and no MQTT here: the route publishes what `make_command` builds
through the server's MQTT link, and the ingest worker calls `store_reply` for
every `Reply` it receives on `nb/v1/<node_id>/reply/<request_id>`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from fleet_server.errors import FleetServerError
from fleet_server.models import NodeCommand, NodeReply, new_id
from proto.messages import COMMAND_MODELS, CommandBase, Reply

__all__ = ["OPERATOR_COMMANDS", "CommandRefused", "make_command", "reply_for", "store_reply"]

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
