"""A node downloads from the OTA repository over HTTPS with its own client certificate.

The server runs uvicorn over TLS with `uvicorn_client_cert_options` (the
client certificate asked for and verified against the fleet CA chain). A node
with a certificate this server issued gets the target, with Range; with no
certificate and no token it is 401; a revoked certificate, or one the fleet
CA signed for something that is not a node, is 403 with the reason.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from sqlmodel import Session

from fleet_server.app import create_app
from fleet_server.broker.process import free_port
from fleet_server.models import Node, NodeCertificate, utcnow
from fleet_server.ota.mtls import uvicorn_client_cert_options
from fleet_server.settings import Settings
from tests.support.api import PASSWORDS
from tests.support.pki import FleetCA, csr_pem, key_pem, new_key

OTA = "/api/v1/ota"
BLOB = bytes(range(256)) * 16


@dataclass(frozen=True)
class Served:
    url: str
    ca: Path
    node_cert: Path
    node_key: Path
    other_cert: Path
    other_key: Path
    engine: object
    serial: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("ota-mtls")
    fleet_ca = FleetCA()
    ca = fleet_ca.write_ca(tmp / "chain.pem")
    server_files = fleet_ca.server_files(tmp)
    key = new_key()
    node_pem = fleet_ca.sign_csr(csr_pem(key, cn="mtls-node-01"), lifetime=timedelta(days=5))
    (tmp / "node.pem").write_text(node_pem)
    (tmp / "node.key").write_bytes(key_pem(key))
    other = fleet_ca.client_files(tmp, "not-a-node")
    settings = Settings(
        data_dir=tmp, broker_url=None, admin_password=PASSWORDS["admin"],
        secret_key="test-secret-key-that-is-long-enough",
    )  # fmt: skip
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning",
        ssl_certfile=str(server_files.cert), ssl_keyfile=str(server_files.key),
        **uvicorn_client_cert_options(ca),
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    cert = x509.load_pem_x509_certificate(node_pem.encode())
    serial = format(cert.serial_number, "x")
    engine = app.state.runtime.engine
    with Session(engine) as session:
        session.add(Node(node_id="mtls-node-01", hardware="sim", lifecycle="active"))
        session.add(NodeCertificate(
            serial=serial, node_id="mtls-node-01", hardware_serial="SN-mtls-node-01",
            key_sha256="0" * 64, not_before=utcnow(), not_after=utcnow() + timedelta(days=5),
            issued_via="token", pem=node_pem,
        ))  # fmt: skip
        session.commit()
    url = f"https://127.0.0.1:{port}"
    with httpx.Client(base_url=url, verify=str(ca)) as admin:
        token = admin.post(f"{OTA[:-4]}/login/access-token",
                           data={"username": "admin", "password": PASSWORDS["admin"]})  # fmt: skip
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        up = admin.post(
            f"{OTA}/artifacts", headers=headers,
            data={"kind": "app", "name": "agent", "version": "1.0.0", "hardware": "sim"},
            files={"file": ("agent.tar", BLOB, "application/octet-stream")},
        )  # fmt: skip
        assert up.status_code == 201, up.text
    try:
        yield Served(url, ca, tmp / "node.pem", tmp / "node.key", other.cert, other.key,
                     engine, serial)  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=10)


TARGET = f"{OTA}/repository/targets/app/agent-1.0.0.tar"


def _client(served: Served, cert: tuple[str, str] | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(served.ca))
    if cert is not None:
        context.load_cert_chain(*cert)
    return httpx.Client(base_url=served.url, verify=context)


def test_a_node_with_its_certificate_downloads_and_resumes_a_target(served: Served) -> None:
    with _client(served, (str(served.node_cert), str(served.node_key))) as node:
        whole = node.get(TARGET)
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).hexdigest() == hashlib.sha256(BLOB).hexdigest()
        rest = node.get(TARGET, headers={"Range": "bytes=1000-"})
        assert (rest.status_code, rest.content) == (206, BLOB[1000:])


def test_no_certificate_and_no_token_is_401(served: Served) -> None:
    with _client(served, None) as anonymous:
        assert anonymous.get(TARGET).status_code == 401


def test_a_certificate_that_is_not_a_live_node_s_is_403_with_the_reason(served: Served) -> None:
    with _client(served, (str(served.other_cert), str(served.other_key))) as other:
        refused = other.get(TARGET)
        assert refused.status_code == 403
        assert refused.json()["detail"]["reason"] == "cert_unknown"
    with Session(served.engine) as session:  # type: ignore[arg-type]
        row = session.get(NodeCertificate, served.serial)
        assert row is not None
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
    with _client(served, (str(served.node_cert), str(served.node_key))) as node:
        revoked = node.get(TARGET)
        assert revoked.status_code == 403
        assert revoked.json()["detail"]["reason"] == "revoked"
