"""Errors raised by the edge agent.

The tree::

    AgentError            root: anything the agent itself refuses
    ├── ConfigError       configuration file or runtime change not acceptable
    │                     (also a ValueError; defined in edge_agent.config)
    └── OutboxError       the durable outbox cannot be opened or written
"""

from __future__ import annotations

__all__ = ["AgentError", "OutboxError"]


class AgentError(Exception):
    """Root of the agent's own errors."""


class OutboxError(AgentError):
    """The outbox database cannot be opened, read or written."""
