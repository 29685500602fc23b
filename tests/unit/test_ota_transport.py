"""The OTA fetcher keeps to its bandwidth cap in the node's own time and reports progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from ota.memory import MemoryTransport
from ota.transport import ResumingFetcher


class _Time:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def test_a_capped_download_takes_as_long_as_the_cap_says_and_reports_progress(
    tmp_path: Path,
) -> None:
    url = "https://ota.test/ota/targets/app/x.tar"
    transport = MemoryTransport(files={url: b"x" * 100_000}, chunk_size=10_000)
    clock = _Time()
    progress: list[int] = []
    fetcher = ResumingFetcher(
        transport,
        partial_dir=tmp_path,
        targets_url="https://ota.test/ota/targets/",
        bandwidth_bps=25_000,
        progress=lambda _url, done: progress.append(done),
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )
    data = fetcher.download_bytes(url, 100_000)
    assert len(data) == 100_000
    assert clock.now >= 4.0  # 100 kB at 25 kB/s
    assert progress == list(range(10_000, 100_001, 10_000))
    assert fetcher.bytes_transferred == 100_000


def test_when_the_server_ignores_range_the_download_starts_over_cleanly(tmp_path: Path) -> None:
    from tuf.api.exceptions import DownloadError

    url = "https://ota.test/ota/targets/app/x.tar"
    body = bytes(range(256)) * 400
    transport = MemoryTransport(files={url: body}, chunk_size=4096, ignore_range=True)
    transport.cut_after[url] = 50_000
    fetcher = ResumingFetcher(
        transport, partial_dir=tmp_path, targets_url="https://ota.test/ota/targets/"
    )
    with pytest.raises(DownloadError, match="cut"):
        fetcher.download_bytes(url, len(body))
    assert fetcher.download_bytes(url, len(body)) == body  # a 200 to our Range: from zero
    assert transport.requests == [(url, 0), (url, 50_000)]


def test_an_error_answer_on_a_kept_alive_connection_does_not_spoil_the_next_request() -> None:
    """python-tuf asks for the next root on every refresh and gets a 404 with a body; the
    body must not be read as the answer to the next request on the pooled connection."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ota.errors import TransportError
    from ota.transport import HttpsTransport

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for both requests

        def do_GET(self) -> None:
            body = (
                b'{"detail": "no metadata file 2.root.json"}'
                if self.path == "/2.root.json"
                else b"timestamp"
            )
            self.send_response(404 if self.path == "/2.root.json" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        transport = HttpsTransport(ca_file=None)
        with pytest.raises(TransportError) as refused:
            transport.open(f"{base}/2.root.json")
        assert refused.value.status == 404
        answer = transport.open(f"{base}/timestamp.json")
        assert (answer.status, b"".join(answer.chunks)) == (200, b"timestamp")
    finally:
        server.shutdown()
        server.server_close()
