"""The one exception tree of `ota`: every refusal carries a reason a fleet admin can act on.

A node reports the `reason` of a refusal in its `ota` event; the server shows it in the
campaign's per-node status. The tree follows python-tuf's split between *bad data*
(someone or something handed us bytes we must not trust) and *transport failure* (we
could not get the bytes at all, try again later)::

    OtaError
     ├── RepositoryError      server/CI side: keys, passphrases, metadata we cannot sign
     ├── ArtifactError        a bundle that is malformed, for other hardware, or a bad delta
     ├── TrustError           bad data: signature, threshold, expired, clock, freeze,
     │                        rollback, mix_and_match, length, hash, version, not_found
     ├── TransportError       transport failure: HTTP status, cut connection, timeout
     └── SlotError            the A/B slots: no space, a broken slot, nothing to roll back to
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class OtaError(Exception):
    """Root of every error raised by `ota`."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        """The human sentence, without the reason code."""
        return str(self.args[0]) if self.args else ""


class RepositoryError(OtaError):
    """The repository (server side) cannot do what was asked: a key, a passphrase, a role."""

    reason = "repository"


class ArtifactError(OtaError):
    """An artifact bundle or delta is malformed, for other hardware, or does not verify."""

    reason = "artifact"


class TrustReason(str, Enum):
    """Why the node refused metadata or an artifact: what an admin reads per node."""

    SIGNATURE = "signature"  # no valid signature from the role's keys
    THRESHOLD = "threshold"  # some valid signatures, fewer than the role's threshold
    EXPIRED = "expired"  # metadata past its expiry by the node's clock
    CLOCK = "clock"  # expired by the node's clock, but the node's clock disagrees with the server
    FREEZE = "freeze"  # the newest timestamp we can get is stale: the feed is frozen
    ROLLBACK = "rollback"  # metadata older than metadata already trusted
    MIX_AND_MATCH = "mix_and_match"  # metadata or target that belongs to another set/group
    LENGTH = "length"  # more bytes than declared (endless data) or a wrong length
    HASH = "hash"  # the bytes do not hash to the signed value
    VERSION = "version"  # an artifact older than the installed one, downgrade not allowed
    HARDWARE = "hardware"  # an artifact for other hardware
    NOT_FOUND = "not_found"  # nothing is assigned to this node's group
    FORMAT = "format"  # metadata that does not parse


class TrustError(OtaError):
    """Bad data: the node refused it and applied nothing.

    `evidence` carries what the admin needs to act (for an expiry: the node's clock, the
    server's clock as seen on the connection, the expiry).
    """

    reason = TrustReason.FORMAT.value

    def __init__(
        self,
        message: str,
        *,
        reason: TrustReason,
        role: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, reason=reason.value)
        self.trust_reason = reason
        self.role = role
        self.evidence: dict[str, Any] = dict(evidence or {})


class TransportError(OtaError):
    """Transport failure: the bytes could not be fetched; nothing is wrong with trust."""

    reason = "transport"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, reason="transport" if status is None else f"http_{status}")
        self.status = status


class SlotError(OtaError):
    """The A/B slots could not install, switch or roll back."""

    reason = "slot"
