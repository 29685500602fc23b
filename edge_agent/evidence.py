"""The node's local evidence store: the image behind an event, kept by its SHA-256, bounded.

A plate event carries the SHA-256 of its best crop (`PlateEvent.snapshot_sha256`);
the crop itself stays on the node in ``<data_dir>/evidence/<sha256><suffix>``
until the watchlist issue uploads what an operator asks for. The store is
bounded by total bytes and by file count: putting a new file deletes the
oldest ones first until both bounds hold again, so a busy camera can never
fill the disk the outbox lives on. Files are written to a temporary name and
renamed, so a power cut leaves either the whole file or none. Putting the
same bytes twice stores them once. Safe to call from the camera threads.

Evidence that must outlive the size bound — a watchlist hit's crop waiting
for upload, anything on legal hold — is *pinned* (`pin`): eviction skips
pinned files, so a full store drops the oldest unpinned frames first, and
when only pinned files are left a new put is refused (`EvidenceError`,
counted in `refused`) rather than a hit's evidence deleted. `delete` is for
retention (`edge_agent.evidence_upload`); `entries` lists what is held.
The API only grows: other parts (panic snapshots, the uploader) build on it.

`describe` says what a stored file is (data class, camera, time, the event or
alert it belongs to) to whoever listens (`add_describe_listener`): the
evidence uploader indexes it and, for hits and snapshots, uploads it. With
no listener (no uploader configured) it does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.errors import AgentError

__all__ = ["EvidenceError", "EvidenceStore"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".jpg", ".png", ".bin")


class EvidenceError(AgentError):
    """A piece of evidence cannot be stored (too large for the store, disk refused it)."""


class EvidenceStore:
    """Files by content hash under `root`, oldest deleted first; see the module docstring."""

    def __init__(self, root: Path, *, max_bytes: int = 256 * 1024 * 1024, max_files: int = 20_000):
        if max_bytes < 1 or max_files < 1:
            raise ValueError("max_bytes and max_files must be at least 1")
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.deleted = 0
        self.refused = 0
        self._pinned: set[str] = set()
        self._describe_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        self._files: OrderedDict[str, tuple[Path, int]] = OrderedDict()  # oldest first
        self._bytes = 0
        root.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        found = []
        for path in self.root.iterdir():
            if path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)  # a write a power cut interrupted
                continue
            if path.suffix not in _SUFFIXES or len(path.stem) != 64:
                continue
            stat = path.stat()
            found.append((stat.st_mtime_ns, path.stem, path, stat.st_size))
        for _, digest, path, size in sorted(found):
            self._files[digest] = (path, size)
            self._bytes += size
        with self._lock:
            self._shrink(0)

    @property
    def stored_bytes(self) -> int:
        """Bytes held now (at most `max_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, digest: object) -> bool:
        return digest in self._files

    def path(self, digest: str) -> Path | None:
        """Where the file with this SHA-256 is, or None (never stored, or deleted since)."""
        entry = self._files.get(digest)
        return entry[0] if entry is not None else None

    def put(self, data: bytes, *, suffix: str = ".jpg") -> str:
        """Store `data` and return its SHA-256 (hex); older files give way to it."""
        if suffix not in _SUFFIXES:
            raise EvidenceError(f"suffix must be one of {', '.join(_SUFFIXES)}")
        if len(data) > self.max_bytes:
            raise EvidenceError(
                f"{len(data)} bytes is more than the whole store ({self.max_bytes})"
            )
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._files:
                self._files.move_to_end(digest)
                return digest
            self._shrink(len(data))
            path = self.root / f"{digest}{suffix}"
            tmp = self.root / f".tmp-{digest}"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise EvidenceError(f"cannot write evidence {path.name}: {exc}") from exc
            self._files[digest] = (path, len(data))
            self._bytes += len(data)
        return digest

    def _shrink(self, incoming: int) -> None:
        """Delete the oldest unpinned files until `incoming` more bytes (and one more file) fit."""
        extra_file = 1 if incoming else 0
        while self._files and (
            self._bytes + incoming > self.max_bytes
            or len(self._files) + extra_file > self.max_files
        ):
            victim = next((d for d in self._files if d not in self._pinned), None)
            if victim is None:
                self.refused += 1
                raise EvidenceError(
                    f"the store holds only pinned evidence ({len(self._files)} files, "
                    f"{self._bytes} bytes): nothing may give way"
                )
            path, size = self._files.pop(victim)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("evidence: cannot delete %s", path)
            self._bytes -= size
            self.deleted += 1

    def pin(self, digest: str) -> bool:
        """Keep this file through eviction (upload pending, legal hold); False if not held."""
        with self._lock:
            if digest not in self._files:
                return False
            self._pinned.add(digest)
            return True

    def unpin(self, digest: str) -> None:
        """Let the file be evicted again when room is needed."""
        with self._lock:
            self._pinned.discard(digest)

    def is_pinned(self, digest: str) -> bool:
        """Whether eviction skips this file."""
        return digest in self._pinned

    def delete(self, digest: str) -> bool:
        """Delete one file now (retention; pinned or not); True if it was held."""
        with self._lock:
            entry = self._files.pop(digest, None)
            self._pinned.discard(digest)
            if entry is None:
                return False
            path, size = entry
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("evidence: cannot delete %s", path)
            self._bytes -= size
            return True

    def add_describe_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call `listener(sha256, metadata)` for every `describe` from now on."""
        self._describe_listeners.append(listener)

    def describe(self, digest: str, **metadata: Any) -> None:
        """Say what a stored file is: ``data_class``, ``camera_id``, ``captured_at``,
        ``event_id``, ``event_type``, ``alert_id`` (any subset); listeners decide what follows."""
        for listener in list(self._describe_listeners):
            try:
                listener(digest, dict(metadata))
            except Exception:
                logger.exception("evidence: a describe listener failed for %s", digest)

    def entries(self) -> list[tuple[str, Path]]:
        """(SHA-256, path) of every file held, oldest first."""
        with self._lock:
            return [(digest, path) for digest, (path, _) in self._files.items()]
