"""Where artifact bytes and repository metadata live: an interface and its local directory.

`ArtifactStore` is what the rest of the OTA server uses; `LocalArtifactStore`
keeps targets by SHA-256 under `<root>/targets/` and signed metadata files
under `<root>/metadata/`. An upload streams into a temporary file in the same
directory, hashed and counted as it is written, and is `os.replace`d into
place only when it is whole and within its size limit, so a cut upload or a
full disk never leaves a partial target. An S3-compatible store is a later
plugin with the same five methods (not built).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from fleet_server.ota.errors import ArtifactNotFound, ArtifactRefused, StorageError

__all__ = ["ArtifactStore", "LocalArtifactStore", "StoredBlob"]

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A signed repository's own target files: <kind>/<sha256>.<name>-<version>.tar, deltas too.
_REPO_TARGET = re.compile(r"^(app|model|config)/([0-9a-f]{64})\.[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# TUF metadata names: root.json, 3.root.json, timestamp.json, 12.snapshot.json,
# 4.targets.json, 2.agent.json (a delegated role).
_METADATA_NAME = re.compile(r"^(?:[0-9]{1,10}\.)?[a-z][a-z0-9_-]{0,63}\.json$")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredBlob:
    """What the store knows of stored bytes."""

    sha256: str
    length: int


class ArtifactStore(Protocol):
    """Bytes by SHA-256, plus the repository's metadata files by name."""

    def put(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredBlob:
        """Store a stream; refuse (ArtifactRefused `too_large`) past `max_bytes`."""
        ...

    def open(self, sha256: str) -> tuple[BinaryIO, int]:
        """The stored bytes and their length (ArtifactNotFound when absent)."""
        ...

    def delete(self, sha256: str) -> None:
        """Forget the bytes (nothing when already gone)."""
        ...

    def open_signed_target(self, path: str) -> tuple[BinaryIO, int, str] | None:
        """A file the signed repository wrote under `targets/` (bytes, length, SHA-256)."""
        ...

    def put_metadata(self, name: str, data: bytes) -> None:
        """Write (atomically replace) one metadata file."""
        ...

    def metadata(self, name: str) -> bytes:
        """One metadata file (ArtifactNotFound when absent)."""
        ...


class LocalArtifactStore:
    """An `ArtifactStore` in a local directory (the default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.targets = root / "targets"
        self.meta = root / "metadata"
        self.targets.mkdir(parents=True, exist_ok=True)
        self.meta.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ArtifactNotFound("artifact_unknown", f"{sha256!r} is not a SHA-256")
        return self.targets / sha256

    def put(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredBlob:
        digest = hashlib.sha256()
        length = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.targets, prefix=".upload-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    length += len(chunk)
                    if length > max_bytes:
                        raise ArtifactRefused(
                            "too_large", f"the artifact is larger than the limit of {max_bytes} "
                            "bytes (ota_max_artifact_bytes)",
                        )  # fmt: skip
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            os.replace(tmp, self.targets / sha256)
        except OSError as exc:
            raise StorageError("storage_failed", f"could not store the artifact: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("stored artifact %s (%d bytes)", sha256, length)
        return StoredBlob(sha256=sha256, length=length)

    def open(self, sha256: str) -> tuple[BinaryIO, int]:
        path = self._path(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ArtifactNotFound("target_missing", f"no stored bytes for {sha256}") from None
        return handle, os.fstat(handle.fileno()).st_size

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def open_signed_target(self, path: str) -> tuple[BinaryIO, int, str] | None:
        match = _REPO_TARGET.match(path)
        if match is None:
            return None
        try:
            handle = (self.targets / path).open("rb")
        except FileNotFoundError:
            return None
        return handle, os.fstat(handle.fileno()).st_size, match.group(2)

    def _meta_path(self, name: str) -> Path:
        if not _METADATA_NAME.match(name):
            raise ArtifactNotFound("metadata_unknown", f"{name!r} is not a metadata file name")
        return self.meta / name

    def put_metadata(self, name: str, data: bytes) -> None:
        path = self._meta_path(name)
        tmp = path.with_name(f".{name}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError("storage_failed", f"could not write {name}: {exc}") from exc

    def metadata(self, name: str) -> bytes:
        try:
            return self._meta_path(name).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound("metadata_missing", f"no metadata file {name!r}") from None
