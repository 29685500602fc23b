"""The command router: ``cmd/<name>`` → the one component that answers it, and its reply.

Every component hands the node a name → handler map (`Component.commands`);
the router holds the union and refuses a name claimed twice, so a new
component adds commands without touching this file or any other component.
For each decoded command it checks expiry, calls the handler and publishes
the `Reply` (``ok`` with the handler's result, or ``ok=false`` with the
reason: expired, refused, unknown, internal error). Downlink messages that
cannot be decoded are counted by reason (`rejections`) and, when their
request id is readable, answered too.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from edge_agent.component import CommandHandler, CommandRefused
from hardware.clock import Clock
from proto.errors import ProtoError
from proto.ids import is_ulid
from proto.messages import CommandBase, Reply, WireModel
from proto.topics import Channel, parse_topic, reply_topic

__all__ = ["CommandRouter", "DuplicateCommand"]

logger = logging.getLogger(__name__)


class DuplicateCommand(ValueError):
    """Two components claim the same command name."""


class CommandRouter:
    """Dispatches commands by name and answers each one; see the module docstring."""

    def __init__(
        self,
        *,
        node_id: str,
        clock: Clock,
        counters: Counter[str],
        publish: Callable[[WireModel], bool],
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.counters = counters
        self.rejections: Counter[str] = Counter()
        self._publish = publish
        self._handlers: dict[str, tuple[str, CommandHandler]] = {}

    def add(self, owner: str, commands: Mapping[str, CommandHandler]) -> None:
        """Route `commands` to component `owner`."""
        for name, handler in commands.items():
            if name in self._handlers:
                raise DuplicateCommand(
                    f"command {name!r} claimed by {self._handlers[name][0]!r} and {owner!r}"
                )
            self._handlers[name] = (owner, handler)

    @property
    def names(self) -> dict[str, str]:
        """Command name → the component that answers it."""
        return {name: owner for name, (owner, _) in self._handlers.items()}

    def dispatch(self, command: CommandBase) -> None:
        """Answer `command` (in the loop thread)."""
        self.counters["commands"] += 1
        if command.expires_at is not None and command.expires_at < self.clock.now():
            self.counters["commands_expired"] += 1
            self.reply(command.request_id, ok=False, error="expired")
            return
        name = str(getattr(command, "name", type(command).__name__))
        entry = self._handlers.get(name)
        if entry is None:
            self.counters["commands_refused"] += 1
            self.reply(command.request_id, ok=False, error=f"unknown command {name}")
            return
        owner, handler = entry
        try:
            result = handler(command)
        except CommandRefused as exc:
            self.counters["commands_refused"] += 1
            self.reply(command.request_id, ok=False, error=str(exc)[:1000])
            return
        except Exception:
            logger.exception("%s: command %s (%s) failed", self.node_id, name, owner)
            self.reply(command.request_id, ok=False, error="internal error on the node")
            return
        self.reply(command.request_id, ok=True, result=dict(result or {}))

    def reject(self, topic: str, payload: bytes, exc: ProtoError) -> None:
        """Count and log an unreadable downlink message; answer it if its request id is readable."""
        self.counters["rejected"] += 1
        self.rejections[exc.reason] += 1
        logger.warning("%s: rejected message on %s (%s): %s", self.node_id, topic, exc.reason, exc)
        request_id = _request_id_of(topic, payload, self.node_id)
        if request_id is not None:
            self.reply(request_id, ok=False, error=f"rejected ({exc.reason}): {exc}"[:1000])

    def reply(
        self,
        request_id: str,
        *,
        ok: bool,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        reply = Reply(
            node_id=self.node_id,
            ts=self.clock.now(),
            request_id=request_id,
            ok=ok,
            result=result,
            error=error,
        )
        self._publish(reply)
        self.counters["replies"] += 1


def _request_id_of(topic: str, payload: bytes, node_id: str) -> str | None:
    """The request id of an unreadable command, if one can be found safely."""
    try:
        parsed = parse_topic(topic)
    except ProtoError:
        return None
    if parsed.channel is not Channel.CMD or parsed.node_id != node_id:
        return None
    try:
        data = json.loads(payload) if len(payload) <= 16 * 1024 else None
    except ValueError:
        return None
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str) or not is_ulid(request_id):
        return None
    try:
        reply_topic(node_id, request_id)
    except ProtoError:
        return None
    return request_id
