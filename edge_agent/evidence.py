"""The node's local evidence store: the image behind an event, kept by its SHA-256, bounded.

A plate event carries the SHA-256 of its best crop (`PlateEvent.snapshot_sha256`);
the crop itself stays on the node in ``<data_dir>/evidence/<sha256><suffix>``
and goes to the fleet server over HTTPS when it is evidence of a hit or a panic,
or when an operator asks for it (`edge_agent.evidence_upload`). The store is
bounded by total bytes and by file count: putting a new file deletes the
oldest ones first until both bounds hold again, so a busy camera can never
fill the disk the outbox lives on. Files are written to a temporary name and
renamed, so a power cut leaves either the whole file or none. Putting the
same bytes twice stores them once. Safe to call from the camera threads.

Evidence that must outlive the size bound — a watchlist hit's crop and frame,
a panic snapshot, a file waiting for upload, anything on legal hold — is
*pinned*. A hit's evidence is pinned in the same call that writes it
(``put(data, pin=True)``, under one lock: nothing can evict it in between),
whether or not an uploader is configured; `pin` pins a file already held.
Pins are kept on disk (``.pins`` beside the files), so a restart keeps them.
Eviction only ever takes unpinned files, oldest first; when the unpinned files
cannot make room, nothing is deleted and the new file is refused
(`EvidenceStoreFull`): a frame is refused and counted in `refused`, a pinned
put (a hit's evidence) in `evidence_refused` — the caller then reports a
``node_fault`` and still writes its event. `figures` is what the camera
pipeline reports in health and telemetry (`proto.messages.EvidenceStoreTelemetry`).
`unpin` lets a file give way again (the server holds it); `delete` is for
retention (`edge_agent.evidence_upload`); `entries` lists what is held.

`describe` says what a stored file is (data class, camera, time, the event or
alert it belongs to) to whoever listens (`add_describe_listener`): the
evidence uploader indexes it and, for hits and snapshots, uploads it. With
no listener (no uploader configured) it does nothing.

Errors::

    AgentError
     └── EvidenceError            cannot be stored (too large, disk refused it)
          └── EvidenceStoreFull   only pinned evidence is left: nothing may give way
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

__all__ = ["EvidenceError", "EvidenceStore", "EvidenceStoreFull"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".jpg", ".png", ".bin")
_PINS = ".pins"  # one SHA-256 a line: the pinned files (not a stored file: no 64-hex stem)


class EvidenceError(AgentError):
    """A piece of evidence cannot be stored (too large for the store, disk refused it)."""


class EvidenceStoreFull(EvidenceError):
    """The store holds only pinned evidence where room is needed: nothing may give way."""


class EvidenceStore:
    """Files by content hash under `root`, oldest deleted first; see the module docstring."""

    def __init__(self, root: Path, *, max_bytes: int = 256 * 1024 * 1024, max_files: int = 20_000):
        if max_bytes < 1 or max_files < 1:
            raise ValueError("max_bytes and max_files must be at least 1")
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.deleted = 0  # files evicted to make room (never a pinned one)
        self.refused = 0  # unpinned files refused: only pinned evidence was left
        self.evidence_refused = 0  # pinned puts (a hit's evidence) refused
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
            pins = self._read_pins()
            self._pinned = {d for d in pins if d in self._files}
            if self._pinned != pins:
                self._write_pins()  # pins of files gone since (deleted, or never renamed)
            try:
                self._shrink(0)
            except EvidenceStoreFull:  # bounds lowered under pinned evidence: keep it all
                logger.warning("evidence: over its bounds with pinned evidence only; kept")

    def _read_pins(self) -> set[str]:
        try:
            text = (self.root / _PINS).read_text(encoding="ascii")
        except FileNotFoundError:
            return set()
        except (OSError, UnicodeDecodeError) as exc:
            logger.error("evidence: cannot read %s (%s); no pins", _PINS, exc)
            return set()
        return {line for line in text.split() if len(line) == 64}

    def _write_pins(self) -> None:
        """Persist the pin set (caller holds the lock): written whole, then renamed."""
        tmp = self.root / ".tmp-pins"
        try:
            tmp.write_text("".join(f"{d}\n" for d in sorted(self._pinned)), encoding="ascii")
            os.replace(tmp, self.root / _PINS)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            logger.error("evidence: cannot keep the pin list: %s", exc)

    @property
    def stored_bytes(self) -> int:
        """Bytes held now (at most `max_bytes`)."""
        return self._bytes

    @property
    def pinned_bytes(self) -> int:
        """Bytes of pinned files held now."""
        with self._lock:
            return sum(self._files[d][1] for d in self._pinned if d in self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, digest: object) -> bool:
        return digest in self._files

    def path(self, digest: str) -> Path | None:
        """Where the file with this SHA-256 is, or None (never stored, or deleted since)."""
        entry = self._files.get(digest)
        return entry[0] if entry is not None else None

    def put(self, data: bytes, *, suffix: str = ".jpg", pin: bool = False) -> str:
        """Store `data` and return its SHA-256 (hex); older unpinned files give way to it.

        `pin`: the file is a hit's (or a panic's) evidence, pinned in the same
        step it is written. `EvidenceStoreFull` when only pinned files could
        make room (nothing is deleted then).
        """
        if suffix not in _SUFFIXES:
            raise EvidenceError(f"suffix must be one of {', '.join(_SUFFIXES)}")
        if len(data) > self.max_bytes:
            if pin:
                self.evidence_refused += 1
            raise EvidenceError(
                f"{len(data)} bytes is more than the whole store ({self.max_bytes})"
            )
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._files:
                self._files.move_to_end(digest)
                if pin and digest not in self._pinned:
                    self._pinned.add(digest)
                    self._write_pins()
                return digest
            try:
                self._shrink(len(data))
            except EvidenceStoreFull:
                if pin:
                    self.evidence_refused += 1
                else:
                    self.refused += 1
                raise
            path = self.root / f"{digest}{suffix}"
            tmp = self.root / f".tmp-{digest}"
            if pin:  # the pin is on disk before the file: a file that exists is pinned
                self._pinned.add(digest)
                self._write_pins()
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                if pin:
                    self.evidence_refused += 1
                    self._pinned.discard(digest)
                    self._write_pins()
                raise EvidenceError(f"cannot write evidence {path.name}: {exc}") from exc
            self._files[digest] = (path, len(data))
            self._bytes += len(data)
        return digest

    def _shrink(self, incoming: int) -> None:
        """Delete the oldest unpinned files until `incoming` more bytes (and one more file) fit.

        Checks first that the unpinned files can make the room: when they
        cannot, nothing is deleted and `EvidenceStoreFull` is raised.
        """
        extra_file = 1 if incoming else 0
        free_bytes = self.max_bytes - self._bytes - incoming
        free_files = self.max_files - len(self._files) - extra_file
        if free_bytes >= 0 and free_files >= 0:
            return
        movable = [(d, e) for d, e in self._files.items() if d not in self._pinned]
        if sum(size for _, (_, size) in movable) < -free_bytes or len(movable) < -free_files:
            raise EvidenceStoreFull(
                f"only pinned evidence is left to give way: {len(self._files)} files "
                f"({self._bytes} bytes), {len(self._files) - len(movable)} pinned; "
                f"no room for {incoming} more bytes"
            )
        for victim, (path, size) in movable:
            if free_bytes >= 0 and free_files >= 0:
                break
            del self._files[victim]
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("evidence: cannot delete %s", path)
            self._bytes -= size
            free_bytes += size
            free_files += 1
            self.deleted += 1

    def pin(self, digest: str) -> bool:
        """Keep this file through eviction (upload pending, legal hold); False if not held."""
        with self._lock:
            if digest not in self._files:
                return False
            if digest not in self._pinned:
                self._pinned.add(digest)
                self._write_pins()
            return True

    def unpin(self, digest: str) -> None:
        """Let the file be evicted again when room is needed (the server holds it)."""
        with self._lock:
            if digest in self._pinned:
                self._pinned.discard(digest)
                self._write_pins()

    def is_pinned(self, digest: str) -> bool:
        """Whether eviction skips this file."""
        return digest in self._pinned

    def delete(self, digest: str) -> bool:
        """Delete one file now (retention; pinned or not); True if it was held."""
        with self._lock:
            entry = self._files.pop(digest, None)
            if digest in self._pinned:
                self._pinned.discard(digest)
                self._write_pins()
            if entry is None:
                return False
            path, size = entry
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("evidence: cannot delete %s", path)
            self._bytes -= size
            return True

    def figures(self) -> dict[str, int]:
        """How full the store is and what gave way or was refused since the agent started
        (the fields of `proto.messages.EvidenceStoreTelemetry`)."""
        with self._lock:
            pinned = [self._files[d][1] for d in self._pinned if d in self._files]
            return {
                "files": len(self._files),
                "stored_bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "pinned_files": len(pinned),
                "pinned_bytes": sum(pinned),
                "evicted": self.deleted,
                "refused": self.refused,
                "evidence_refused": self.evidence_refused,
            }

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
