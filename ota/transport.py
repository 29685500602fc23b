"""Transport for the OTA client: one small interface, HTTPS with the node's certificate,
and the adapter that gives python-tuf's Updater Range resume, a bandwidth cap and progress.

The trust rules live in python-tuf's `Updater` (ota.trust); this module only moves bytes.
`Transport.open(url, offset=…)` is the one method a transport implements (the HTTPS one
here, the in-memory repository simulator in ota.memory). `ResumingFetcher` is the
`FetcherInterface` python-tuf calls: for targets it keeps what arrived in a `.part` file
and, after a cut, asks for the rest with `Range: bytes=N-`; python-tuf still counts every
byte against the declared length and hashes the whole file before anything is applied.
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient.fetcher import FetcherInterface

from ota.errors import TransportError

__all__ = ["DirectoryTransport", "Download", "HttpsTransport", "ResumingFetcher", "Transport"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int], None]


@dataclass
class Download:
    """An open response: status 200 (whole file) or 206 (from `offset`), and its chunks."""

    status: int
    chunks: Iterator[bytes]
    server_date: datetime | None = None


class Transport(ABC):
    """Moves bytes; knows nothing of trust. Raise TransportError on any failure."""

    @abstractmethod
    def open(self, url: str, *, offset: int = 0) -> Download:
        """GET `url`, from byte `offset` when it is above 0 (HTTP Range)."""


def _server_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


class HttpsTransport(Transport):
    """HTTPS with the node's client certificate (mTLS to the fleet server), via urllib3.

    Without `ca_file` the system's CAs are trusted. Plain ``http://`` URLs work too (no TLS
    at all): the node component allows them only in development mode (simulated fleets).

    urllib3 is python-tuf's own dependency, so the node carries no extra HTTP stack.
    """

    def __init__(
        self,
        *,
        ca_file: Path | None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout: float = 30.0,
        chunk_size: int = 64 * 1024,
    ) -> None:
        import urllib3

        self._chunk_size = chunk_size
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_file) if ca_file else None,
            cert_file=str(cert_file) if cert_file else None,
            key_file=str(key_file) if key_file else None,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
        )

    def open(self, url: str, *, offset: int = 0) -> Download:
        """One GET; a status other than 200/206 is a TransportError with the status."""
        import urllib3

        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        try:
            response = self._pool.request("GET", url, headers=headers, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"cannot reach {url}: {exc}") from exc
        if response.status not in (200, 206):
            # An error body left unread would be taken for the next answer on this
            # pooled connection (python-tuf asks for the next root and gets a 404
            # every refresh): read it away, or drop the connection.
            _discard(response)
            raise TransportError(f"{url}: HTTP {response.status}", status=response.status)
        date = _server_date(response.headers.get("Date"))

        def chunks() -> Iterator[bytes]:
            complete = False
            try:
                yield from response.stream(self._chunk_size)
                complete = True
            except urllib3.exceptions.HTTPError as exc:
                raise TransportError(f"{url}: connection cut: {exc}") from exc
            finally:
                if complete:
                    response.release_conn()
                else:
                    # Stopped early (a length limit, endless data): never reuse it.
                    response.close()
                    response.release_conn()

        return Download(status=response.status, chunks=chunks(), server_date=date)


def _discard(response: Any, *, limit: int = 64 * 1024) -> None:
    """Read a small error body away so the connection can be reused; close a big one."""
    try:
        length = int(response.headers.get("Content-Length") or limit + 1)
        if length <= limit:
            response.drain_conn()
        else:
            response.close()
    except Exception:  # a broken connection is simply not reused
        response.close()
    finally:
        response.release_conn()


class ResumingFetcher(FetcherInterface):
    """python-tuf's fetcher over a `Transport`, with resume, bandwidth cap and progress.

    Only URLs under `targets_url` are resumed (metadata is small and must be fresh).
    The `.part` file is named after the URL, which (consistent snapshots) carries the
    target's sha256, so a partial file can only ever continue the same content.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        partial_dir: Path,
        targets_url: str,
        bandwidth_bps: int | None = None,
        progress: ProgressCallback | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.partial_dir = partial_dir
        self.targets_url = targets_url
        self.bandwidth_bps = bandwidth_bps
        self.progress = progress
        self._sleep = sleep
        self._monotonic = monotonic
        self.server_date: datetime | None = None
        self.bytes_transferred = 0

    def partial_path(self, url: str) -> Path:
        """Where the bytes of an interrupted download of `url` wait."""
        name = hashlib.sha256(url.encode()).hexdigest()[:32]
        return self.partial_dir / f"{name}.part"

    def discard_partial(self, url: str) -> None:
        """Forget an interrupted download (after success or after a hash refusal)."""
        self.partial_path(url).unlink(missing_ok=True)

    def _fetch(self, url: str) -> Iterator[bytes]:
        resumable = url.startswith(self.targets_url)
        part = self.partial_path(url) if resumable else None
        have = part.stat().st_size if part is not None and part.exists() else 0
        try:
            download = self.transport.open(url, offset=have)
        except TransportError as exc:
            if exc.status is not None:
                raise tuf_exceptions.DownloadHTTPError(str(exc), exc.status) from exc
            raise tuf_exceptions.DownloadError(str(exc)) from exc
        if download.server_date is not None:
            self.server_date = download.server_date
        if have and download.status != 206:
            logger.info("ota: the server ignored Range for %s; starting over", url)
            have = 0
        if part is not None:
            part.parent.mkdir(parents=True, exist_ok=True)
        return self._stream(url, download, part, have)

    def _stream(
        self, url: str, download: Download, part: Path | None, have: int
    ) -> Iterator[bytes]:
        received = have
        if part is not None and have:
            logger.info("ota: resuming %s at byte %s", url, have)
            # What a previous attempt got counts toward python-tuf's length bound too.
            yield part.read_bytes()
        handle = open(part, "ab" if have else "wb") if part is not None else None  # noqa: SIM115
        started = self._monotonic()
        fresh = 0
        try:
            for chunk in download.chunks:
                if handle is not None:
                    handle.write(chunk)
                    handle.flush()
                received += len(chunk)
                fresh += len(chunk)
                self.bytes_transferred += len(chunk)
                if self.progress is not None:
                    self.progress(url, received)
                if self.bandwidth_bps:
                    due = fresh / self.bandwidth_bps - (self._monotonic() - started)
                    if due > 0:
                        self._sleep(due)
                yield chunk
        except TransportError as exc:
            raise tuf_exceptions.DownloadError(str(exc)) from exc
        finally:
            if handle is not None:
                handle.close()


class DirectoryTransport(Transport):
    """A repository copy on a local disk or USB stick (`metadata/` + `targets/`), offline.

    URLs are `file://<root>/…`; the same python-tuf verification applies as over HTTPS.
    """

    def __init__(self, root: Path, *, chunk_size: int = 64 * 1024) -> None:
        self.root = root.resolve()
        self.base_url = f"file://{self.root}"
        self._chunk_size = chunk_size

    def open(self, url: str, *, offset: int = 0) -> Download:
        """Read the file behind `url` from `offset`; outside the root is a 404."""
        if not url.startswith(self.base_url + "/"):
            raise TransportError(f"{url}: not under {self.base_url}", status=404)
        path = (self.root / url.removeprefix(self.base_url + "/")).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise TransportError(f"{url}: HTTP 404", status=404)

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as handle:
                handle.seek(offset)
                while chunk := handle.read(self._chunk_size):
                    yield chunk

        return Download(status=206 if offset else 200, chunks=chunks())
