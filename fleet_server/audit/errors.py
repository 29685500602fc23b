"""The audit package's one root exception.

Errors::

    FleetServerError
     └── audit.AuditError
          └── ChainBroken      (verification found a broken link; the message names it)
"""

from __future__ import annotations

from fleet_server.errors import FleetServerError

__all__ = ["AuditError", "ChainBroken"]


class AuditError(FleetServerError):
    """Root of fleet_server.audit errors."""


class ChainBroken(AuditError):
    """The chain or a checkpoint does not verify; the message names the first broken link."""
