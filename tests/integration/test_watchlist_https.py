"""A 10,000-plate watchlist reaches a node over HTTPS with its client certificate.

The server runs uvicorn over TLS asking for client certificates (as
``nigehbaan server --https`` does). Delivering a list of 10,000 plates
(far beyond one 16 KiB MQTT command) keeps the signed bundle and sends the
node a ``watchlist`` command that names only the URL, size and SHA-256;
the node's watchlist component fetches it with its client certificate off
the event loop, checks size and hash, verifies signature, scope, expiry
and version, and holds it. A node outside the list's scope is refused the
bundle (403), a caller without a certificate too (401), and a command whose
hash does not match what is served is refused by the node and reported as
a ``node_fault``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from sqlmodel import Session

from edge_agent.config import config_from_dict
from edge_agent.memory import MemoryTransport, memory_transport
from edge_agent.node import build_node
from edge_agent.watchlist import WatchlistComponent, WatchlistStore, https_fetcher
from fleet_server.app import create_app
from fleet_server.broker.process import free_port
from fleet_server.models import Node, NodeCertificate, utcnow
from fleet_server.ota.mtls import uvicorn_client_cert_options
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.settings import Settings
from hardware import ManualClock, SimBackend
from proto.codec import decode, encode
from proto.messages import NodeFaultEvent, Reply, WatchlistCommand
from proto.topics import parse_topic
from tests.support.api import PASSWORDS
from tests.support.pki import FleetCA, csr_pem, key_pem, new_key
from tests.support.polling import until

API = "/api/v1"
PLATES = 10_000
NODE, OUTSIDER = "lhr-big-0001", "khi-big-0001"


class Captured:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connected.set()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.published.append((topic, payload))


@dataclass(frozen=True)
class Served:
    url: str
    tls_ca: Path
    files: dict[str, tuple[Path, Path]]
    trusted: list[x509.Certificate]
    published: list[tuple[str, bytes]]
    delivered: dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("wl-https")
    fleet_ca = FleetCA()
    tls_ca = fleet_ca.write_ca(tmp / "chain.pem")
    server_files = fleet_ca.server_files(tmp)
    settings = Settings(
        data_dir=tmp / "server", broker_url=None, admin_password=PASSWORDS["admin"],
        secret_key="test-secret-key-that-is-long-enough",
    )  # fmt: skip
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning",
        ssl_certfile=str(server_files.cert), ssl_keyfile=str(server_files.key),
        timeout_graceful_shutdown=1,  # the nodes' pools may keep a connection open
        **uvicorn_client_cert_options(tls_ca),
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    runtime = app.state.runtime
    paths = PkiPaths(runtime.settings.pki_path)
    if not paths.exists:
        init_dev_pki(paths, passphrase=b"test-passphrase", now=utcnow() - timedelta(minutes=5))
    captured = Captured()
    before, runtime.mqtt = runtime.mqtt, captured
    files: dict[str, tuple[Path, Path]] = {}
    with Session(runtime.engine) as session:
        for node_id, district in ((NODE, "lahore"), (OUTSIDER, "karachi")):
            key = new_key()
            pem = fleet_ca.sign_csr(csr_pem(key, cn=node_id), lifetime=timedelta(days=5))
            (tmp / f"{node_id}.pem").write_text(pem)
            (tmp / f"{node_id}.key").write_bytes(key_pem(key))
            files[node_id] = (tmp / f"{node_id}.pem", tmp / f"{node_id}.key")
            cert = x509.load_pem_x509_certificate(pem.encode())
            session.add(Node(node_id=node_id, district=district, lifecycle="active"))
            session.add(NodeCertificate(
                serial=format(cert.serial_number, "x"), node_id=node_id,
                hardware_serial=f"SN-{node_id}", key_sha256="0" * 64, not_before=utcnow(),
                not_after=utcnow() + timedelta(days=5), issued_via="token", pem=pem,
            ))  # fmt: skip
        session.commit()
    url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, verify=str(tls_ca), timeout=120) as admin:
            login = {"username": "admin", "password": PASSWORDS["admin"]}
            token = admin.post(f"{API}/login/access-token", data=login)
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            made = admin.post(
                f"{API}/watchlists", headers=headers,
                json={"name": "stolen-punjab", "category": "stolen_vehicle",
                      "purpose": "stolen vehicles, Punjab", "owner_agency": "Punjab Police",
                      "districts": ["lahore"],
                      "expires_at": (utcnow() + timedelta(days=10)).isoformat()},
            )  # fmt: skip
            assert made.status_code == 201, made.text
            bulk = admin.post(
                f"{API}/watchlists/stolen-punjab/entries/bulk", headers=headers,
                json={"entries": [{"plate": f"le-{i:06d}"} for i in range(PLATES)]},
            )  # fmt: skip
            assert bulk.status_code == 201, bulk.text
            assert bulk.json() == {"added": PLATES, "version": 2}
            delivered = admin.post(f"{API}/watchlists/stolen-punjab/deliver", headers=headers)
            assert delivered.status_code == 202, delivered.text
        trusted = list(x509.load_pem_x509_certificates(paths.chain.read_bytes()))
        yield Served(url, tls_ca, files, trusted, captured.published, delivered.json())
    finally:
        runtime.mqtt = before
        server.should_exit = True
        thread.join(timeout=10)


def _client(served: Served, node_id: str | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(served.tls_ca))
    if node_id is not None:
        cert, key = served.files[node_id]
        context.load_cert_chain(str(cert), str(key))
    return httpx.Client(base_url=served.url, verify=context)


def test_the_command_names_only_the_url_size_and_hash(served: Served) -> None:
    fetch = served.delivered["fetch"]
    assert served.delivered["nodes"] == [NODE]
    [(topic, payload)] = served.published
    command = decode(parse_topic(topic), payload)
    assert isinstance(command, WatchlistCommand)
    assert command.bundle is None
    assert command.fetch is not None
    assert command.fetch.model_dump(mode="json") == fetch
    assert len(payload) < 1024  # the command stays small whatever the list's size
    assert fetch["size"] > 300_000


def test_only_a_node_in_scope_may_fetch_the_bundle(served: Served) -> None:
    path = served.delivered["fetch"]["url"]
    with _client(served, None) as anonymous:
        assert anonymous.get(path).status_code == 401
    with _client(served, OUTSIDER) as outsider:
        refused = outsider.get(path)
        assert refused.status_code == 403
        assert "scope" in refused.text
    with _client(served, NODE) as node:
        assert node.get(path).status_code == 200


def _node(served: Served, tmp_path: Path, clock: ManualClock) -> tuple[Any, WatchlistStore]:
    cert, key = served.files[NODE]
    config = config_from_dict(
        {
            "node_id": NODE, "serial": "SN-BIG-1", "district": "lahore",
            "data_dir": str(tmp_path / NODE), "hardware": {"type": "sim"},
            "outbox": {"synchronous": "normal"},
            "mqtt": {"ca_file": str(served.tls_ca), "cert_file": str(cert), "key_file": str(key)},
            "identity": {"server_url": served.url, "ca_file": str(served.tls_ca)},
        }
    )  # fmt: skip
    store = WatchlistStore(
        trusted=served.trusted, directory=tmp_path / NODE / "watchlists", district="lahore",
        node_id=NODE,
    )  # fmt: skip
    component = WatchlistComponent(store, now=clock.now, fetcher=https_fetcher(config))
    node = build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[component], renewal=False,
    )  # fmt: skip
    return node, store


def test_the_node_fetches_verifies_and_holds_ten_thousand_plates(
    served: Served, tmp_path: Path
) -> None:
    [(topic, payload)] = served.published
    clock = ManualClock(start=0.0, wall=utcnow())
    node, store = _node(served, tmp_path, clock)

    async def body() -> MemoryTransport:
        task = asyncio.ensure_future(node.run())
        await clock.elapse(0)
        transport = node.uplink.transport
        assert isinstance(transport, MemoryTransport)
        try:
            transport.deliver_raw(topic, payload)
            await until(lambda: store.versions(), "the fetched list held", timeout=60)
        finally:
            node.stop()
            await asyncio.wait_for(task, 10)
        return transport

    transport = asyncio.run(asyncio.wait_for(body(), 90))
    [reply] = transport.messages(Reply)
    assert reply.ok
    assert reply.result == {"watchlist_id": "stolen-punjab", "version": 2, "fetching": True}
    assert store.versions() == {"stolen-punjab": 2}
    assert len(store.lists["stolen-punjab"].plates) == PLATES
    [match] = store.match_plate("LE-004242")
    assert (match.listed, match.match) == ("LE004242", "exact")
    assert transport.messages(NodeFaultEvent) == []


def test_a_fetched_bundle_that_does_not_match_its_hash_is_refused_and_reported(
    served: Served, tmp_path: Path
) -> None:
    [(topic, payload)] = served.published
    command = decode(parse_topic(topic), payload)
    assert isinstance(command, WatchlistCommand)
    assert command.fetch is not None
    wrong = command.model_copy(
        update={"fetch": command.fetch.model_copy(update={"sha256": "0" * 64})}
    )
    clock = ManualClock(start=0.0, wall=utcnow())
    node, store = _node(served, tmp_path, clock)

    async def body() -> MemoryTransport:
        task = asyncio.ensure_future(node.run())
        await clock.elapse(0)
        transport = node.uplink.transport
        assert isinstance(transport, MemoryTransport)
        try:
            transport.deliver_raw(topic, encode(wrong))
            for _ in range(40):  # the bounded retries (2, 10, 30, 60 s of virtual time)
                if transport.messages(NodeFaultEvent):
                    break
                await clock.elapse(5.0)
                await asyncio.sleep(0.05)
            await until(lambda: transport.messages(NodeFaultEvent), "the refusal reported")
        finally:
            node.stop()
            await asyncio.wait_for(task, 10)
        return transport

    transport = asyncio.run(asyncio.wait_for(body(), 120))
    [fault] = {f.event_id: f for f in transport.messages(NodeFaultEvent)}.values()
    assert (fault.component, fault.code) == ("watchlist", "watchlist_fetch")
    assert "SHA-256" in (fault.detail or "")
    assert store.versions() == {}
