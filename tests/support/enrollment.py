"""A fake enrollment server over HTTPS and bundles for it (node side of provisioning)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_agent.enroll import (
    Bundle,
)
from edge_agent.identity import (
    certificate_info,
)
from tests.support.pki import FleetCA

Answer = Callable[[str, str, dict[str, Any]], tuple[int, Any, dict[str, str]]]


@dataclass
class FakeEnrollmentServer:
    """An HTTPS server whose answers the test scripts, recording every request."""

    ca: FleetCA
    url: str
    answer: Answer
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def ca() -> FleetCA:
    return FleetCA()


@pytest.fixture
def fake_server(ca: FleetCA, tmp_path: Path) -> Iterator[FakeEnrollmentServer]:
    files = ca.server_files(tmp_path / "server-tls")
    state = FakeEnrollmentServer(ca=ca, url="", answer=lambda m, p, b: (500, None, {}))

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            state.requests.append((method, self.path, body))
            status, payload, headers = state.answer(method, self.path, body)
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self._serve("POST")

        def do_GET(self) -> None:
            self._serve("GET")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.url = f"https://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def issued(
    ca: FleetCA, body: dict[str, Any], *, node_id: str, lifetime_s: float = 30 * 86400
) -> dict[str, Any]:
    cert = ca.sign_csr(body["csr_pem"], lifetime=timedelta(seconds=lifetime_s))
    return {
        "node_id": node_id,
        "certificate_pem": cert,
        "ca_chain_pem": ca.pem,
        "broker_url": "mqtts://127.0.0.1:8883",
        "api_url": "https://127.0.0.1:8443",
        "not_after": certificate_info(cert).not_after.isoformat(),
    }


def bundle_for(server: FakeEnrollmentServer, **extra: Any) -> Bundle:
    fields: dict[str, Any] = {
        "server_url": server.url,
        "ca_chain_pem": server.ca.pem,
        "token": "nbet_secret",
        "site_id": "lahore-gulberg-site-0001",
        "district": "lahore-gulberg",
    }
    return Bundle.model_validate({**fields, **extra})
