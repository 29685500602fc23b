"""An in-memory repository simulator implementing `Transport`: tests and simulated fleets.

It serves the files of an `ota.repository.Repository` directory (or any bytes put in it)
with HTTP Range semantics, and lets a test play the attacker or the bad network: replace
a file, cut a download after N bytes, send endless data, set the server's clock. A
first-class backend, like hardware's sim board: the node code cannot tell it from HTTPS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ota.errors import TransportError
from ota.transport import Download, Transport

__all__ = ["MemoryTransport"]


@dataclass
class MemoryTransport(Transport):
    """Files by URL; `mirror(repo_dir, base_url)` loads a repository directory.

    Attack and fault knobs, each keyed by URL (or a URL suffix):
    `cut_after[url] = n` ends that download after n bytes with a transport error (once);
    `endless = {suffix}` keeps sending bytes past the file's end;
    `ignore_range = True` answers 200 to Range requests, as some proxies do.
    Every request is recorded in `requests` as (url, offset).
    """

    files: dict[str, bytes] = field(default_factory=dict)
    chunk_size: int = 16 * 1024
    server_date: datetime | None = None
    cut_after: dict[str, int] = field(default_factory=dict)
    endless: set[str] = field(default_factory=set)
    ignore_range: bool = False
    requests: list[tuple[str, int]] = field(default_factory=list)

    def mirror(self, directory: Path, base_url: str) -> None:
        """(Re)load every file under a repository directory as `base_url/<relative path>`."""
        base = base_url.rstrip("/")
        for path in directory.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                self.files[f"{base}/{path.relative_to(directory).as_posix()}"] = path.read_bytes()

    def replace(self, suffix: str, data: bytes) -> str:
        """Replace the one file whose URL ends with `suffix` (the attacker's move)."""
        matches = [url for url in self.files if url.endswith(suffix)]
        if len(matches) != 1:
            raise KeyError(f"{suffix!r} matches {len(matches)} files")
        self.files[matches[0]] = data
        return matches[0]

    def open(self, url: str, *, offset: int = 0) -> Download:
        """Serve `url` from `offset` (206) or whole (200); 404 when absent."""
        self.requests.append((url, offset))
        data = self.files.get(url)
        if data is None:
            raise TransportError(f"{url}: HTTP 404", status=404)
        status = 200
        if offset and not self.ignore_range:
            if offset > len(data):
                raise TransportError(f"{url}: HTTP 416", status=416)
            data = data[offset:]
            status = 206
        return Download(status=status, chunks=self._chunks(url, data), server_date=self.server_date)

    def _chunks(self, url: str, data: bytes) -> Iterator[bytes]:
        limit = self.cut_after.pop(url, None)
        sent = 0
        for start in range(0, len(data), self.chunk_size):
            chunk = data[start : start + self.chunk_size]
            if limit is not None and sent + len(chunk) > limit:
                yield chunk[: limit - sent]
                raise TransportError(f"{url}: connection cut after {limit} bytes")
            sent += len(chunk)
            yield chunk
        if any(url.endswith(suffix) for suffix in self.endless):
            while True:
                yield b"\0" * self.chunk_size


class SimulatedRepository:
    """A signed repository in a directory plus a `MemoryTransport` mirroring it.

    Tests and simulated fleets make one, assign artifacts, `publish()` (which re-mirrors)
    and hand `client(group=…)` to as many nodes as they like.
    """

    def __init__(
        self,
        directory: Path,
        *,
        root_keys: int = 3,
        root_threshold: int = 2,
        base_url: str = "https://ota.test/ota",
        **repo_options: object,
    ) -> None:
        from ota.keys import OnlineKeys, generate_signer
        from ota.repository import Repository

        self.base_url = base_url.rstrip("/")
        self.root_signers = [generate_signer() for _ in range(root_keys)]
        self.targets_signer = generate_signer()
        self.online = OnlineKeys.generate()
        self.repo = Repository.create(
            directory,
            root_signers=self.root_signers,
            root_threshold=root_threshold,
            targets_signer=self.targets_signer,
            online=self.online,
            **repo_options,  # type: ignore[arg-type]
        )
        self.transport = MemoryTransport()
        self.sync()

    @property
    def trusted_root(self) -> bytes:
        """The root a node is provisioned with (version 1)."""
        return (self.repo.metadata_dir / "1.root.json").read_bytes()

    def sync(self) -> None:
        """Serve what is on disk now."""
        self.transport.files.clear()
        self.transport.mirror(self.repo.directory, self.base_url)

    def publish(self) -> dict[str, int]:
        """Publish and serve."""
        versions = self.repo.publish()
        self.sync()
        return versions

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for `ota.trust.UpdateClient` against this repository."""
        return {
            "metadata_url": f"{self.base_url}/metadata/",
            "targets_url": f"{self.base_url}/targets/",
            "transport": self.transport,
            "trusted_root": self.trusted_root,
        }
