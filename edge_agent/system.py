"""The node's own commands: ``ping`` (liveness and health), ``set_config``, ``test_mode``.

These act on the node as a whole rather than on one part of it, so they go
through the `NodeContext` only: ``ping`` answers with uptime, outbox depth,
``bd_seq``, last ``seq``, test mode and every component's `Health` (the
``health`` key: ``{name: {ok, detail}}`` and an overall ``ok``), which is
how the server and OTA's health gate read a node's health without a new
message kind; ``set_config`` validates and applies runtime changes all or
nothing (components hear a ``config`` signal); ``test_mode`` enters or leaves
commissioning test mode for a while.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from edge_agent.component import CommandHandler, CommandRefused, Health, NodeContext
from edge_agent.config import ConfigError, config_hash
from proto.messages import Capability, CommandBase, SetConfigCommand, TestModeCommand

__all__ = ["SystemCommands", "health_report"]

logger = logging.getLogger(__name__)


def health_report(health: Mapping[str, Health]) -> dict[str, Any]:
    """Components' health as plain JSON: ``{"ok": all ok, "components": {name: {ok, detail}}}``."""
    return {
        "ok": all(h.ok for h in health.values()),
        "components": {name: h.as_dict() for name, h in health.items()},
    }


class SystemCommands:
    """Answers the node-wide commands; see the module docstring."""

    name = "system"

    def __init__(self) -> None:
        self._ctx: NodeContext | None = None

    def bind(self, ctx: NodeContext) -> None:
        """Commands may arrive as soon as the uplink connects; the node binds this first."""
        self._ctx = ctx

    @property
    def capabilities(self) -> Sequence[Capability]:
        return ()

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"ping": self._ping, "set_config": self._set_config, "test_mode": self._test_mode}

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def health(self) -> Health:
        # Answering this ping is the proof; there is nothing else to go wrong here.
        return Health(self._ctx is not None, "answering commands" if self._ctx else "not bound")

    async def run(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def _context(self) -> NodeContext:
        if self._ctx is None:
            raise CommandRefused("the node is not running yet")
        return self._ctx

    def _ping(self, command: CommandBase) -> Mapping[str, Any]:
        ctx = self._context()
        state = ctx.state
        return {
            "uptime_s": round(state.uptime_s, 3),
            "outbox_depth": state.outbox_depth,
            "bd_seq": state.bd_seq,
            "last_seq": state.last_seq,
            "test_mode": state.test_mode,
            "health": health_report(ctx.health()),
        }

    def _set_config(self, command: CommandBase) -> Mapping[str, Any]:
        if not isinstance(command, SetConfigCommand):
            raise CommandRefused(f"set_config cannot take {type(command).__name__}")
        ctx = self._context()
        try:
            new = ctx.apply_config(command.changes)
        except ConfigError as exc:
            raise CommandRefused(str(exc)) from exc
        logger.info("%s: config changed: %s", ctx.node_id, dict(command.changes))
        return {"applied": dict(command.changes), "config_hash": config_hash(new)}

    def _test_mode(self, command: CommandBase) -> Mapping[str, Any]:
        if not isinstance(command, TestModeCommand):
            raise CommandRefused(f"test_mode cannot take {type(command).__name__}")
        ctx = self._context()
        ctx.set_test_mode(enabled=command.enabled, duration_s=command.duration_s)
        logger.info("%s: test mode %s", ctx.node_id, "on" if command.enabled else "off")
        return {"test_mode": command.enabled, "duration_s": command.duration_s}
