"""The node's evidence uploader against an in-memory server: what goes, when, and what stays.

The `UploadClient` here is a small in-memory server (the real HTTPS one is
exercised in tests/integration/test_evidence_upload_export.py); the store,
the durable queue, the signing and the snapshot command are the real ones.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.evidence import EvidenceStore
from edge_agent.evidence_upload import (
    EvidenceUploadConfig,
    EvidenceUploader,
    UploadError,
    UploadQueue,
    UploadRefused,
)
from edge_agent.outbox import StoredEvent
from proto.evidence import SignedClaim, signed_payload

NODE = "lhr-cam-0001"
ALERT = "01JD0Q60000000000000000009"


class MemoryServer:
    """What the fleet server's evidence API does, in memory; `down` makes every call fail."""

    def __init__(self) -> None:
        self.claims: dict[str, SignedClaim] = {}
        self.bytes: dict[str, bytes] = {}
        self.wanted: list[str] = []
        self.hold: list[str] = []
        self.expired: list[str] = []
        self.deleted_reports: list[tuple[tuple[str, ...], str]] = []
        self.down = False
        self.cut_after: int | None = None  # bytes accepted before the link "drops"

    def _check(self) -> None:
        if self.down:
            raise UploadError("cannot reach the server")

    def begin(self, signed: SignedClaim) -> tuple[int, str]:
        self._check()
        self.claims[signed.claim.sha256] = signed
        held = self.bytes.get(signed.claim.sha256, b"")
        state = "stored" if len(held) == signed.claim.size else "partial"
        return len(held), state

    def put(self, sha256: str, offset: int, data: bytes) -> int:
        self._check()
        held = self.bytes.get(sha256, b"")
        if offset != len(held):
            raise UploadRefused("offset", "continue", status=409, received=len(held))
        if self.cut_after is not None and len(held) >= self.cut_after:
            self.cut_after = None
            raise UploadError("connection cut")
        self.bytes[sha256] = held + data
        return len(self.bytes[sha256])

    def instructions(self) -> dict[str, list[str]]:
        self._check()
        return {"upload": list(self.wanted), "hold": list(self.hold), "delete": self.expired}

    def report_deleted(self, sha256s: Sequence[str], *, reason: str) -> None:
        self._check()
        self.deleted_reports.append((tuple(sha256s), reason))


def _uploader(
    tmp_path: Path, server: MemoryServer, **config: object
) -> tuple[EvidenceUploader, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    settings = EvidenceUploadConfig.model_validate(
        {"url": "https://127.0.0.1:1/api/v1/evidence", "chunk_kb": 1, "retry_min_s": 0.01,
         **config}
    )  # fmt: skip
    uploader = EvidenceUploader(
        settings,
        node_id=NODE,
        store=EvidenceStore(tmp_path / "evidence"),
        queue=UploadQueue(tmp_path / "evidence-upload.sqlite3", max_pending=settings.max_pending),
        key=lambda: key,
        client=lambda: server,
    )
    return uploader, key


def _event(event_type: str, sha: str, **extra: object) -> StoredEvent:
    payload = {"type": event_type, "node_id": NODE, "ts": datetime.now(timezone.utc).isoformat(),
               "camera_id": "gate", "snapshot_sha256": sha, **extra}  # fmt: skip
    return StoredEvent(
        seq=1, event_id="01JD0Q60000000000000000001", event_type=event_type,
        topic=f"nb/v1/{NODE}/event/{event_type}", payload=json.dumps(payload).encode(),
        created_at=time.time(),
    )  # fmt: skip


def test_a_hit_goes_at_once_signed_by_the_node_key_and_a_plate_read_waits_to_be_asked(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    uploader, key = _uploader(tmp_path, server)
    hit = uploader.store.put(b"hit crop" * 300)
    plate = uploader.store.put(b"plate crop" * 300)
    uploader.on_event(_event("watchlist_hit", hit))
    uploader.on_event(_event("plate", plate))
    assert uploader.work_once() == 1
    assert set(server.bytes) == {hit}  # the plate crop stays on the node
    signed = server.claims[hit]
    key.public_key().verify(
        base64.b64decode(signed.signature), signed_payload(signed.claim), ec.ECDSA(hashes.SHA256())
    )
    assert (signed.claim.node_id, signed.claim.camera_id, signed.claim.event_type) == (
        NODE, "gate", "watchlist_hit"
    )  # fmt: skip
    server.wanted = [plate]  # an operator asked for it
    assert uploader.work_once() == 1
    assert server.bytes[plate] == b"plate crop" * 300
    assert server.claims[plate].claim.data_class == "plate_crop"


def test_a_hit_s_crop_is_evidence_of_the_hit_even_though_its_plate_event_named_it_first(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    uploader, _ = _uploader(tmp_path, server)
    crop = uploader.store.put(b"crop of LEB6881" * 50)
    plate, hit = _event("plate", crop), _event("watchlist_hit", crop)
    hit = StoredEvent(**{**hit.__dict__, "event_id": "01JD0Q60000000000000000002"})
    uploader.on_event(plate)  # the pass, then the hit on the same crop
    uploader.on_event(hit)
    assert uploader.work_once() == 1
    claim = server.claims[crop].claim
    assert (claim.event_id, claim.event_type) == (hit.event_id, "watchlist_hit")


def test_a_snapshot_the_command_keeps_is_uploaded_with_its_alert(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    from edge_agent.snapshot import SnapshotComponent, Still
    from proto.messages import SnapshotCommand

    server = MemoryServer()
    uploader, _ = _uploader(tmp_path, server)

    class Source:
        def snapshot_cameras(self) -> list[str]:
            return ["gate"]

        def latest_still(self, camera_id: str) -> Still | str:
            pixels = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
            return Still(image=pixels, age_s=0.2)

        def evidence_store(self) -> EvidenceStore:
            return uploader.store

    reply = SnapshotComponent(Source()).snapshot(
        SnapshotCommand(
            node_id=NODE,
            ts=datetime.now(timezone.utc),
            request_id="01JD0Q60000000000000000004",
            alert_id=ALERT,
        )
    )
    sha = reply["snapshots"][0]["sha256"]
    assert uploader.store.is_pinned(sha)
    assert uploader.work_once() == 1
    claim = server.claims[sha].claim
    assert (claim.data_class, claim.alert_id, claim.camera_id) == ("panic_snapshot", ALERT, "gate")
    assert not uploader.store.is_pinned(sha)  # at the server now: may give way when full


def test_an_unreachable_server_leaves_the_file_queued_pinned_and_retried_later(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    server.down = True
    uploader, _ = _uploader(tmp_path, server)
    sha = uploader.store.put(b"x" * 5000)
    uploader.on_event(_event("watchlist_hit", sha))
    assert uploader.work_once() == 0
    assert uploader.queue.pending() == [sha]
    assert uploader.store.is_pinned(sha)
    assert "cannot reach" in uploader.last_error
    server.down = False
    time.sleep(0.05)  # past the first retry delay (retry_min_s = 0.01)
    assert uploader.work_once() == 1
    assert uploader.queue.pending() == []


def test_a_cut_upload_resumes_from_the_server_s_count_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    server.cut_after = 2048
    uploader, key = _uploader(tmp_path, server)
    data = bytes(range(256)) * 20
    sha = uploader.store.put(data)
    uploader.on_event(_event("watchlist_hit", sha))
    assert uploader.work_once() == 0
    assert len(server.bytes[sha]) == 2048
    uploader.queue.close()
    # The node restarts: the queue on disk still holds the signed claim; the file stays pinned.
    again = EvidenceUploader(
        uploader.config, node_id=NODE, store=EvidenceStore(tmp_path / "evidence"),
        queue=UploadQueue(tmp_path / "evidence-upload.sqlite3"), key=lambda: key,
        client=lambda: server,
    )  # fmt: skip
    assert again.store.is_pinned(sha)
    time.sleep(0.05)
    assert again.work_once() == 1
    assert server.bytes[sha] == data


def test_a_full_queue_refuses_and_counts_instead_of_dropping_silently(tmp_path: Path) -> None:
    server = MemoryServer()
    server.down = True
    uploader, _ = _uploader(tmp_path, server, max_pending=1)
    first = uploader.store.put(b"first")
    second = uploader.store.put(b"second")
    assert uploader.enqueue(first, data_class="plate_crop")
    assert not uploader.enqueue(second, data_class="plate_crop")
    assert uploader.queue_full == 1
    assert "queue full" in uploader.health().detail


def test_node_retention_keeps_held_and_unsent_files_and_reports_what_it_deleted(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    uploader, _ = _uploader(tmp_path, server, retention_plate_crop_days=1.0)
    old, held, unsent = (uploader.store.put(n.encode() * 100) for n in ("old", "held", "unsent"))
    for sha in (old, held):
        uploader.on_event(_event("watchlist_hit", sha))
    assert uploader.work_once() == 2
    server.hold = [held]
    server.down = True
    uploader.on_event(_event("watchlist_hit", unsent))  # queued, the server unreachable
    uploader.work_once()
    server.down = False
    uploader._now = lambda: datetime.now(timezone.utc) + timedelta(days=2)
    server.cut_after = 0  # the unsent file's upload keeps failing this round
    uploader.work_once()
    assert old not in uploader.store
    assert held in uploader.store  # legal hold
    assert unsent in uploader.store  # never deleted before the server holds it
    assert ((old,), "retention:plate_crop") in server.deleted_reports


def test_build_node_adds_the_uploader_when_a_url_is_set_and_shares_the_camera_s_store(
    tmp_path: Path,
) -> None:
    from edge_agent.config import config_from_dict
    from edge_agent.memory import memory_transport
    from edge_agent.node import build_node
    from hardware import ManualClock, SimBackend
    from tests.support.pki import key_pem

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "node.key").write_bytes(key_pem(key))
    for name in ("node.pem", "ca.pem"):
        (tmp_path / name).write_text("not read until the first upload")
    base = {
        "node_id": NODE, "serial": "SN-EV-1", "data_dir": str(tmp_path / NODE),
        "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"},
        "cameras": [{"type": "sim", "id": "gate"}],
        "mqtt": {"ca_file": str(tmp_path / "ca.pem"), "cert_file": str(tmp_path / "node.pem"),
                 "key_file": str(tmp_path / "node.key")},
    }  # fmt: skip
    clock = ManualClock()
    plain = build_node(
        config_from_dict(base), backend=SimBackend(clock=clock),
        transport_factory=memory_transport(), renewal=False,
    )  # fmt: skip
    assert "evidence_upload" not in [c.name for c in plain.components]  # no url: no upload
    plain.close()
    with_url = {**base, "evidence": {"upload": {"url": "https://127.0.0.1:9/api/v1/evidence"}}}
    node = build_node(
        config_from_dict(with_url), backend=SimBackend(clock=clock),
        transport_factory=memory_transport(), renewal=False,
    )  # fmt: skip
    uploader = node.component("evidence_upload")
    assert isinstance(uploader, EvidenceUploader)
    assert getattr(node.component("camera"), "evidence", None) is uploader.store
    assert uploader.on_event in node.uplink.event_listeners
    uploader.queue.close()
    node.close()


def test_a_refusal_the_same_claim_would_always_get_leaves_the_queue_and_is_counted(
    tmp_path: Path,
) -> None:
    class Refusing(MemoryServer):
        def begin(self, signed: SignedClaim) -> tuple[int, str]:
            raise UploadRefused("too_large", "over evidence_max_bytes", status=413)

    server = Refusing()
    uploader, _ = _uploader(tmp_path, server)
    sha = uploader.store.put(b"big" * 100)
    asked = uploader.store.put(b"a plate crop an operator asked for" * 10)
    uploader.on_event(_event("watchlist_hit", sha))
    uploader.on_event(_event("plate", asked))
    server.wanted = [asked]
    assert uploader.work_once() == 0
    assert uploader.queue.pending() == []
    assert uploader.refused == 2
    # Both stay on the node under their class's retention; the hit's evidence stays
    # pinned (the node's copy is the only one), the crop sent on request may give way.
    assert sha in uploader.store
    assert asked in uploader.store
    assert uploader.store.is_pinned(sha)
    assert not uploader.store.is_pinned(asked)


def test_the_component_uploads_in_its_own_thread_until_stopped_and_closes_its_queue(
    tmp_path: Path,
) -> None:
    import asyncio
    import sqlite3
    from types import SimpleNamespace

    from hardware.clock import SystemClock

    server = MemoryServer()
    uploader, _ = _uploader(tmp_path, server, poll_s=0.05)
    sha = uploader.store.put(b"hit" * 100)
    uploader.on_event(_event("watchlist_hit", sha))

    async def body() -> None:
        task = asyncio.ensure_future(uploader.run(SimpleNamespace(clock=SystemClock())))
        for _ in range(200):  # bounded: 10 s at most
            if sha in server.bytes:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(body(), 30))
    assert sha in server.bytes
    with pytest.raises(sqlite3.ProgrammingError):
        uploader.queue.pending()  # closed with the component
