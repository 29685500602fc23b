"""Errors of the camera pipeline.

The tree::

    AgentError (edge_agent.errors)
    └── CameraError         the pipeline cannot run as configured
        └── PluginError     a detector or reader plugin named in the config cannot load

A camera that disconnects or stalls is not an error here: the pipeline
retries it and reports a ``node_fault`` event. A `CameraError` raised while
the component sets up makes the node report the component as crashed, and the
panic path carries on.
"""

from __future__ import annotations

from edge_agent.errors import AgentError

__all__ = ["CameraError", "PluginError"]


class CameraError(AgentError):
    """The camera pipeline cannot run as configured."""


class PluginError(CameraError):
    """A detector or reader plugin cannot be found or built."""
