"""Errors raised by the edge agent.

The tree::

    AgentError            root: anything the agent itself refuses
    ├── ConfigError       configuration file or runtime change not acceptable
    │                     (also a ValueError; defined in edge_agent.config)
    ├── CommandRefused    a command was understood but cannot be carried out
    │                     (defined in edge_agent.component; the reply says why)
    └── OutboxError       the durable outbox cannot be opened or written

Hardware that does not load is `hardware.errors.HardwareError` (its own
package's root); `build_node` lets it through so the CLI can stop the node.
"""

from __future__ import annotations

__all__ = ["AgentError", "OutboxError"]


class AgentError(Exception):
    """Root of the agent's own errors."""


class OutboxError(AgentError):
    """The outbox database cannot be opened, read or written."""
