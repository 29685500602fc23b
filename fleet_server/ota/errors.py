"""The OTA server's exceptions: one root under `FleetServerError`, a reason code on each.

    FleetServerError
    └── OtaServerError            reason: str, message: str
        ├── ArtifactRefused       an upload the repository will not take (kind, hardware, size)
        ├── ArtifactNotFound
        ├── ArtifactInUse         a campaign names it, so it may not be deleted
        ├── CampaignRefused       a campaign that cannot start or cannot make this move
        ├── CampaignNotFound
        └── StorageError          the artifact store failed (disk full, missing bytes)

Routes turn them into HTTP answers (`{"detail": {"reason", "message"}}`); the
reason is a stable code an admin's tool can act on.
"""

from __future__ import annotations

from fleet_server.errors import FleetServerError

__all__ = [
    "ArtifactInUse",
    "ArtifactNotFound",
    "ArtifactRefused",
    "CampaignNotFound",
    "CampaignRefused",
    "OtaServerError",
    "StorageError",
]


class OtaServerError(FleetServerError):
    """Root of the OTA server's errors; `reason` is a stable code, `message` says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ArtifactRefused(OtaServerError):
    """An upload refused: unknown kind, hardware nobody runs, too large, empty."""


class ArtifactNotFound(OtaServerError):
    """No artifact (or no stored bytes) by that id or path."""


class ArtifactInUse(OtaServerError):
    """The artifact is named by a campaign and stays."""


class CampaignRefused(OtaServerError):
    """A campaign that targets nothing, names an unusable artifact, or an illegal move."""


class CampaignNotFound(OtaServerError):
    """No campaign by that id."""


class StorageError(OtaServerError):
    """The artifact store could not keep or give back the bytes."""
