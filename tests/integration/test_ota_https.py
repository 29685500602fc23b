"""Over real HTTPS on 127.0.0.1 with the node's client certificate: check, a cut, a resume.

A small static file server with HTTP Range stands in for the fleet server's OTA routes
(fleet_server/ota serves the same tree); certificates come from the product's own CA.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ota.artifacts import ArtifactKind, build_artifact
from ota.errors import TransportError
from ota.keys import OnlineKeys, generate_signer
from ota.repository import Repository
from ota.transport import HttpsTransport
from ota.trust import UpdateClient
from tests.support.pki import FleetCA


@dataclass
class _Served:
    root: Path
    cut_once: dict[str, int] = field(default_factory=dict)
    ranges: list[str] = field(default_factory=list)


def _handler(served: _Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rel = self.path.removeprefix("/ota/")
            path = (served.root / rel).resolve()
            if not path.is_relative_to(served.root.resolve()) or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            header = self.headers.get("Range")
            if header:
                served.ranges.append(header)
                start = int(header.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            limit = served.cut_once.pop(path.name, None)
            if limit is not None:
                self.wfile.write(body[:limit])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def https_repo(tmp_path: Path) -> Iterator[tuple[str, _Served, Path, FleetCA]]:
    repo = Repository.create(
        tmp_path / "repo",
        root_signers=[generate_signer()],
        root_threshold=1,
        targets_signer=generate_signer(),
        online=OnlineKeys.generate(),
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / "agent.py").write_bytes(b"#" * 300_000)
    blob, manifest = build_artifact(
        src, kind=ArtifactKind.APP, name="agent", version="2.0.0", hardware=["sim"]
    )
    repo.add_artifact(blob)
    repo.assign("site-a", manifest, campaign_id="c-https")
    repo.publish()
    ca = FleetCA()
    server_files = ca.server_files(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_files.cert, server_files.key)
    context.load_verify_locations(cadata=ca.pem)
    context.verify_mode = ssl.CERT_REQUIRED
    served = _Served(root=repo.directory)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/ota", served, tmp_path, ca
    finally:
        server.shutdown()
        server.server_close()


def _client(base: str, tmp_path: Path, ca: FleetCA, *, with_cert: bool = True) -> UpdateClient:
    ca_file = ca.write_ca(tmp_path / "node" / "ca.pem")
    node = ca.client_files(tmp_path / "node", "node-1") if with_cert else None
    transport = HttpsTransport(
        ca_file=ca_file,
        cert_file=node.cert if node else None,
        key_file=node.key if node else None,
        timeout=10,
    )
    root = (tmp_path / "repo" / "metadata" / "1.root.json").read_bytes()
    return UpdateClient(
        cache_dir=tmp_path / "node" / "ota",
        metadata_url=f"{base}/metadata/",
        targets_url=f"{base}/targets/",
        transport=transport,
        group="site-a",
        hardware="sim",
        trusted_root=root,
    )


def test_a_node_checks_and_resumes_a_cut_download_over_mtls(
    https_repo: tuple[str, _Served, Path, FleetCA],
) -> None:
    base, served, tmp_path, ca = https_repo
    client = _client(base, tmp_path, ca)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    assert offer.version == "2.0.0"
    served.cut_once[f"{offer.sha256}.agent-2.0.0.tar"] = 100_000
    with pytest.raises(TransportError):
        client.download(offer)
    got = client.download(offer)
    assert served.ranges
    assert served.ranges[0].startswith("bytes=")
    assert int(served.ranges[0].removeprefix("bytes=").rstrip("-")) > 0
    assert (
        got.path.read_bytes()
        == (tmp_path / "repo")
        .joinpath("targets", "app", f"{offer.sha256}.agent-2.0.0.tar")
        .read_bytes()
    )
    assert client.fetcher.server_date is not None
    skew = abs((client.fetcher.server_date - datetime.now(timezone.utc)).total_seconds())
    assert skew < 120


def test_a_client_without_a_certificate_is_turned_away(
    https_repo: tuple[str, _Served, Path, FleetCA],
) -> None:
    base, _, tmp_path, ca = https_repo
    with pytest.raises(TransportError):
        _client(base, tmp_path, ca, with_cert=False).check(ArtifactKind.APP)
