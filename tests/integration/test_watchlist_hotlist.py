"""A stolen plate on a watchlist becomes a hit that an operator confirms, end to end.

The server signs the list and sends it as a ``watchlist`` command (captured
from the API's publisher and handed to the node over its in-memory
transport); the node verifies it against the fleet CA it trusts, its camera
pipeline reads the hotlisted plate, and the hit event it writes through the
outbox opens an alert at the server, which an operator confirms. A tampered
bundle sent the same way is refused in the node's reply and the list it held
stays in force.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2")

from cryptography import x509
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.memory import MemoryTransport, memory_transport
from edge_agent.node import build_node
from edge_agent.watchlist import WatchlistComponent, WatchlistStore
from fleet_server.alerting import load_policies
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Node, utcnow
from fleet_server.models.watchlist import WatchlistHit
from fleet_server.pki.store import PkiPaths, init_dev_pki
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.codec import encode, topic_for
from proto.messages import PlateEvent, Reply, Telemetry, WatchlistHitEvent
from tests.support.api import API, login, runtime_of
from tests.support.camera import ScriptedReader, WhiteRectDetector, moving_plate
from tests.support.polling import until

NODE = "lhr-wl-0001"
PURPOSE = {"X-Purpose": "case:WL-42"}


class Captured:
    """Stands in for the server's MQTT link: keeps what the API publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connected.set()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.published.append((topic, payload))


@pytest.fixture(scope="module")
def server(client: TestClient) -> Iterator[tuple[TestClient, Captured, PkiPaths]]:
    runtime = runtime_of(client)
    paths = PkiPaths(runtime.settings.pki_path)
    if not paths.exists:
        init_dev_pki(paths, passphrase=b"test-passphrase", now=utcnow())
    with Session(runtime.engine) as session:
        session.add(Node(node_id=NODE, district="lahore", site_id="gulberg-1"))
        session.add(Node(node_id="lhr-wl-0002", district="lahore"))
        session.add(Node(node_id="khi-wl-0001", district="karachi"))
        session.commit()
    captured = Captured()
    before = runtime.mqtt
    runtime.mqtt = captured  # type: ignore[assignment]
    yield client, captured, paths
    runtime.mqtt = before


def to_server(client: TestClient, *messages: Any) -> None:
    envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()


def make_node(tmp_path: Path, clock: ManualClock, trusted: list[x509.Certificate]) -> Any:
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    reader = ScriptedReader(["LEB6881", "LEB6B81", "LEB6881"])
    settings = CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 64})
    store = WatchlistStore(
        trusted=trusted, directory=tmp_path / "watchlists", district="lahore", site_id="gulberg-1"
    )
    feed = CameraFeed.of(camera, settings, detector=WhiteRectDetector(), reader=reader)
    pipeline = CameraPipeline([feed], watchlists=store)
    config = config_from_dict(
        {
            "node_id": NODE, "serial": "SN-WL-1", "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"},
        }
    )  # fmt: skip
    node = build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[pipeline, WatchlistComponent(store, now=clock.now)], renewal=False,
    )  # fmt: skip
    return node, camera, store


def test_a_stolen_plate_is_delivered_hit_alerted_and_confirmed(
    server: tuple[TestClient, Captured, PkiPaths], tmp_path: Path
) -> None:
    client, captured, paths = server
    admin, op = login(client, "admin"), login(client, "op")
    created = client.post(
        f"{API}/watchlists",
        headers=admin,
        json={
            "name": "stolen-lhr", "category": "stolen_vehicle",
            "purpose": "stolen vehicles reported in Lahore", "owner_agency": "Punjab Police",
            "districts": ["lahore"],
            "expires_at": (utcnow() + timedelta(days=30)).isoformat(),
        },
    )  # fmt: skip
    assert created.status_code == 201, created.text
    assert client.post(f"{API}/watchlists", headers=op, json={}).status_code in (403, 422)
    entry = client.post(
        f"{API}/watchlists/stolen-lhr/entries", headers=admin,
        json={"kind": "plate", "plate": "leb-6881", "note": "white Corolla, FIR 112/26"},
    )  # fmt: skip
    assert entry.status_code == 201, entry.text
    assert entry.json()["plate_key"] == "LEB6881"
    assert entry.json()["version"] == 2
    # reading a list needs a stated purpose
    assert client.get(f"{API}/watchlists/stolen-lhr", headers=admin).status_code == 428
    shown = client.get(f"{API}/watchlists/stolen-lhr", headers={**admin, **PURPOSE}).json()
    assert shown["entries"][0]["plate_key"] == "LEB6881"
    # nobody holds it yet: both Lahore nodes lag, the Karachi node is out of scope
    lag = client.get(f"{API}/watchlists/stolen-lhr/lag", headers=op).json()
    assert {n["node_id"] for n in lag["data"]} == {NODE, "lhr-wl-0002"}

    delivered = client.post(f"{API}/watchlists/stolen-lhr/deliver", headers=admin)
    assert delivered.status_code == 202, delivered.text
    assert set(delivered.json()["nodes"]) == {NODE, "lhr-wl-0002"}
    [(topic, payload)] = [(t, p) for t, p in captured.published if f"/{NODE}/" in t]

    trusted = list(x509.load_pem_x509_certificates(paths.chain.read_bytes()))
    clock = ManualClock(start=0.0, wall=utcnow())
    node, camera, store = make_node(tmp_path, clock, trusted)

    async def body() -> MemoryTransport:
        task = asyncio.ensure_future(node.run())
        await clock.elapse(0)
        transport = node.uplink.transport
        assert isinstance(transport, MemoryTransport)
        try:
            # a tampered copy first: refused, and reported in the reply
            doc = json.loads(json.loads(payload)["bundle"])
            doc["body"]["plates"][0]["key"] = "ABC123"
            tampered = json.loads(payload)
            tampered["bundle"] = json.dumps(doc)
            tampered["request_id"] = "01JD0Q60000000000000000009"
            transport.deliver_raw(topic, json.dumps(tampered).encode())
            refused = await until(lambda: [r for r in transport.messages(Reply) if not r.ok])
            assert "signature" in (refused[0].error or "")
            assert store.versions() == {}
            # the real one: held
            transport.deliver_raw(topic, payload)
            await until(lambda: [r for r in transport.messages(Reply) if r.ok], "accepted")
            assert store.versions() == {"stolen-lhr": 2}
            for frame in moving_plate():
                camera.push_frame(frame)
            await until(lambda: transport.messages(WatchlistHitEvent), "a watchlist hit")
            await until(lambda: transport.messages(PlateEvent), "the plate event")
            # the node reports the version it holds in its telemetry
            await clock.elapse(node.config.telemetry.interval_s + 1)
            await until(lambda: [t for t in transport.messages(Telemetry) if t.watchlists])
        finally:
            node.stop()
            await asyncio.wait_for(task, 10)
        return transport

    transport = asyncio.run(asyncio.wait_for(body(), 60))
    # (the outbox may have sent an event again while the clock ran: same id, one event)
    [hit] = {e.event_id: e for e in transport.messages(WatchlistHitEvent)}.values()
    [plate] = {e.event_id: e for e in transport.messages(PlateEvent)}.values()
    assert (hit.watchlist_id, hit.match, hit.listed) == ("stolen-lhr", "exact", "LEB6881")
    assert hit.source_event_id == plate.event_id

    # the server: the hit opens an alert (stolen vehicle: P2) awaiting a decision
    [telemetry, *_] = [t for t in transport.messages(Telemetry) if t.watchlists]
    assert telemetry.watchlists == {"stolen-lhr": 2}
    to_server(client, plate, hit, telemetry)
    with Session(runtime_of(client).engine) as session:
        row = session.get(WatchlistHit, hit.event_id)
        assert row is not None
        assert row.decision == "pending"
        alert = session.get(Alert, row.alert_id)
        assert alert is not None
        assert (alert.type, alert.severity) == ("watchlist_hit", "P2")
        assert session.exec(select(Alert).where(col(Alert.node_id) == NODE)).all() == [alert]
    lag = client.get(f"{API}/watchlists/stolen-lhr/lag", headers=op).json()
    assert {n["node_id"] for n in lag["data"]} == {"lhr-wl-0002"}

    pending = client.get(f"{API}/watchlist-hits?decision=pending", headers={**op, **PURPOSE})
    assert [h["event_id"] for h in pending.json()["data"]] == [hit.event_id]
    confirmed = client.post(
        f"{API}/watchlist-hits/{hit.event_id}/decision", headers=op,
        json={"decision": "confirmed", "note": "plate and vehicle match the FIR"},
    )  # fmt: skip
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["decided_by"] == "user:op"
    again = client.post(
        f"{API}/watchlist-hits/{hit.event_id}/decision", headers=op, json={"decision": "rejected"}
    )
    assert again.status_code == 409
    figures = client.get(f"{API}/watchlist-hits/false-accepts", headers=op).json()
    assert figures["by_watchlist"]["stolen-lhr"]["confirmed"] == 1
    assert figures["by_node"][NODE]["false_accept_rate"] == 0.0
