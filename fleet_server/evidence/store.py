"""Where evidence bytes live: the `EvidenceBlobStore` interface and its local directory.

Files are kept by SHA-256 (``<root>/blobs/<sha256>``); an upload in progress
grows ``<root>/partial/<sha256>`` chunk by chunk at the offset the node says
it continues from, so a cut upload resumes where it stopped. `finish` checks
the whole file's SHA-256 and size against the node's signed claim and only
then moves it into place (fsync, `os.replace`), so a file in ``blobs/`` is
always exactly what a node signed for. An S3-compatible store is a later
plugin with the same methods (not built).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO, Protocol

from fleet_server.errors import FleetServerError

__all__ = [
    "BlobMismatch",
    "EvidenceBlobStore",
    "EvidenceStoreError",
    "LocalEvidenceStore",
    "OffsetMismatch",
]

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EvidenceStoreError(FleetServerError):
    """Evidence bytes cannot be stored or read."""


class OffsetMismatch(EvidenceStoreError):
    """A chunk does not continue the partial upload; `received` says where to continue."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the upload continues at byte {received}")
        self.received = received


class BlobMismatch(EvidenceStoreError):
    """The uploaded bytes are not the file the node signed for (hash or size)."""


class EvidenceBlobStore(Protocol):
    """Evidence bytes by SHA-256, with resumable uploads."""

    def received(self, sha256: str) -> int:
        """Bytes of a partial upload held so far (0 when none)."""
        ...

    def append(self, sha256: str, offset: int, data: bytes, *, size: int) -> int:
        """Add `data` at `offset` of a partial upload; the bytes held after (OffsetMismatch)."""
        ...

    def finish(self, sha256: str, *, size: int) -> None:
        """Check the partial upload's hash and size and keep it (BlobMismatch: discarded)."""
        ...

    def has(self, sha256: str) -> bool: ...

    def open(self, sha256: str) -> BinaryIO:
        """The stored bytes (EvidenceStoreError when absent)."""
        ...

    def delete(self, sha256: str) -> bool:
        """Delete stored and partial bytes; True if anything was there."""
        ...


class LocalEvidenceStore:
    """An `EvidenceBlobStore` in a local directory (the default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.partial = root / "partial"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _check(sha256: str) -> str:
        if not _SHA256.match(sha256):
            raise EvidenceStoreError(f"{sha256!r} is not a SHA-256")
        return sha256

    def received(self, sha256: str) -> int:
        path = self.partial / self._check(sha256)
        return path.stat().st_size if path.exists() else 0

    def append(self, sha256: str, offset: int, data: bytes, *, size: int) -> int:
        path = self.partial / self._check(sha256)
        held = path.stat().st_size if path.exists() else 0
        if offset != held:
            raise OffsetMismatch(held)
        if held + len(data) > size:
            raise BlobMismatch(f"{held + len(data)} bytes is more than the claimed {size}")
        try:
            with path.open("ab") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise EvidenceStoreError(f"cannot store evidence {sha256}: {exc}") from exc
        return held + len(data)

    def finish(self, sha256: str, *, size: int) -> None:
        path = self.partial / self._check(sha256)
        digest = hashlib.sha256()
        length = 0
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(chunk)
                length += len(chunk)
        if length != size or digest.hexdigest() != sha256:
            path.unlink(missing_ok=True)
            raise BlobMismatch(
                f"the {length} bytes received hash to {digest.hexdigest()}, not the claimed "
                f"{sha256} ({size} bytes)"
            )
        os.replace(path, self.blobs / sha256)
        logger.info("stored evidence %s (%d bytes)", sha256, size)

    def has(self, sha256: str) -> bool:
        return (self.blobs / self._check(sha256)).exists()

    def open(self, sha256: str) -> BinaryIO:
        try:
            return (self.blobs / self._check(sha256)).open("rb")
        except FileNotFoundError:
            raise EvidenceStoreError(f"no stored bytes for {sha256}") from None

    def delete(self, sha256: str) -> bool:
        found = False
        for path in (self.blobs / self._check(sha256), self.partial / sha256):
            if path.exists():
                path.unlink(missing_ok=True)
                found = True
        return found
