"""Errors raised by plate recognition.

The tree::

    AnprError            root: anything plate recognition refuses (an AgentError)
    ├── RulesError       a format rules file that cannot be used (names the line)
    └── ReaderError      a reader or detector that cannot load (missing extra, model)

Model files that fail their manifest are `edge_agent.inference.ModelError`.
"""

from __future__ import annotations

from edge_agent.errors import AgentError

__all__ = ["AnprError", "ReaderError", "RulesError"]


class AnprError(AgentError):
    """Root of plate recognition's errors."""


class RulesError(AnprError):
    """A rules file is malformed; the message names the file and the line."""


class ReaderError(AnprError):
    """A detector or reader cannot be built here (its extra or model is missing)."""
