"""A hit's evidence on the node: pinned as it is written, never evicted, its frame kept too.

The store, the camera analysis, the pipeline and the uploader are the real
ones; the node runs on virtual time with a memory transport, the server
side of the upload is a small in-memory stand-in. The story: a full store
gives up its oldest plain frames and refuses new ones rather than touch a
hit's crop or frame; a hit whose evidence cannot be kept still reaches the
operator, with a ``node_fault`` saying why; telemetry and health say how
full the store is; the uploader retries a refusal that may pass next time
and drops one that cannot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cv2")

import cv2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.anpr.types import Box, PlateRead
from edge_agent.camera.analysis import (
    FRAME_MAX_SIDE,
    FRAMES_KEPT,
    CameraAnalysis,
    _crop,
    encode_frame,
)
from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.evidence import EvidenceStore, EvidenceStoreFull
from edge_agent.evidence_upload import (
    EvidenceUploadConfig,
    EvidenceUploader,
    UploadQueue,
    UploadRefused,
)
from edge_agent.faces.matching import FaceHit
from edge_agent.memory import memory_transport
from edge_agent.node import Node, build_node
from edge_agent.outbox import StoredEvent
from edge_agent.watchlist import WatchlistStore
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.watchlists.signing import WatchlistSigner, sign_bundle
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.evidence import SignedClaim
from proto.messages import (
    EventBase,
    NodeFaultEvent,
    PlateEvent,
    Telemetry,
    WatchlistHitEvent,
)
from proto.watchlist import WatchlistBody, WatchlistPlate
from tests.support.camera import ScriptedReader, WhiteRectDetector, moving_plate
from tests.support.node import running
from tests.support.polling import until

NODE = "lhr-hit-0003"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)


def _jpeg_shape(data: bytes) -> tuple[int, ...]:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return tuple(image.shape)


def _fill_with_pinned_evidence(store: EvidenceStore, count: int) -> list[str]:
    return [store.put(f"earlier hit {i}".encode() * 40, pin=True) for i in range(count)]


# ------------------------------------------------------------------------------ the store


def test_a_full_store_evicts_the_oldest_plain_frames_and_never_a_hit_s_evidence(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path, max_files=4)
    hit = store.put(b"the hit's crop", pin=True)  # the oldest file, pinned as it was written
    frames = [store.put(f"plate read {i}".encode()) for i in range(6)]
    assert hit in store
    assert store.is_pinned(hit)
    assert [f in store for f in frames] == [False, False, False, True, True, True]
    figures = store.figures()
    assert (figures["evicted"], figures["pinned_files"], figures["files"]) == (3, 1, 4)
    assert figures["pinned_bytes"] == len(b"the hit's crop")


def test_when_only_evidence_could_give_way_a_frame_is_refused_and_nothing_is_deleted(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path, max_files=3)
    pinned = _fill_with_pinned_evidence(store, 2)
    plain = store.put(b"one plain frame")
    assert store.put(b"a newer frame")
    assert plain not in store
    store.pin(store.put(b"a newer frame"))  # (asked for by an operator: pinned for upload)
    with pytest.raises(EvidenceStoreFull, match="only pinned evidence"):
        store.put(b"a frame with no room")
    assert (store.refused, store.evidence_refused) == (1, 0)
    assert all(d in store for d in pinned)
    before = store.figures()
    with pytest.raises(EvidenceStoreFull):
        store.put(b"a new hit's crop", pin=True)
    after = store.figures()
    assert after["evidence_refused"] == before["evidence_refused"] + 1 == 1
    assert after["files"] == before["files"] == 3
    assert after["evicted"] == before["evicted"] == 1


def test_a_byte_bound_refusal_deletes_nothing_when_the_plain_frames_cannot_make_room(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path, max_bytes=1000)
    store.put(b"e" * 700, pin=True)
    small = store.put(b"f" * 100)
    with pytest.raises(EvidenceStoreFull):
        store.put(b"g" * 400)  # the 100-byte frame going would not be enough
    assert small in store
    assert store.figures()["evicted"] == 0


def test_pins_survive_a_restart_and_putting_known_bytes_as_evidence_pins_them(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path)
    crop = store.put(b"a plate crop that turns out to be a hit's")
    assert not store.is_pinned(crop)
    assert store.put(b"a plate crop that turns out to be a hit's", pin=True) == crop
    frame = store.put(b"its frame", pin=True)
    plain = store.put(b"a plain frame")
    again = EvidenceStore(tmp_path)  # the node restarts, no uploader configured
    assert again.is_pinned(crop)
    assert again.is_pinned(frame)
    assert not again.is_pinned(plain)
    again.unpin(frame)  # the server holds it now
    assert not EvidenceStore(tmp_path).is_pinned(frame)
    again.delete(crop)  # retention
    assert not EvidenceStore(tmp_path).is_pinned(crop)


# --------------------------------------------------------------------- the camera analysis


class RisingReader:
    """Reads LEB6881 each time, surer every frame: the best read is the track's last one."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, frame: Any, box: Box) -> PlateRead | None:
        self.calls += 1
        return PlateRead(
            text="LEB6881", canonical="LEB6881", confidence=0.3 + 0.05 * self.calls, box=box
        )


def _analysis(store: EvidenceStore, listed: set[str], *, reader: Any = None) -> CameraAnalysis:
    return CameraAnalysis(
        camera_id="cam-1",
        settings=CameraAnalyticsConfig.model_validate({"max_fps": 0}),
        detector=WhiteRectDetector(),
        reader=reader or ScriptedReader(["LEB6881"]),
        evidence=store,
        track_prefix="t",
        hit_check=lambda plate: plate in listed,
    )


def _decoded(store: EvidenceStore, digest: str) -> Any:
    path = store.path(digest)
    assert path is not None
    return cv2.imdecode(np.frombuffer(path.read_bytes(), dtype=np.uint8), cv2.IMREAD_COLOR)


def _mad(a: Any, b: Any) -> float:
    """Mean absolute difference after a blur (JPEG blurs the drawn street's grain)."""
    a, b = (cv2.GaussianBlur(x, (9, 9), 0).astype(np.int16) for x in (a, b))
    return float(np.mean(np.abs(a - b)))


def test_a_listed_plate_s_crop_and_the_frame_it_came_from_are_kept_pinned(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    frames = list(moving_plate())
    reader = RisingReader()
    cam = _analysis(store, {"LEB6881"}, reader=reader)
    [plate_pass] = [p for f in frames for p in cam.process(f)]
    assert reader.calls > FRAMES_KEPT  # frames of weaker reads were let go on the way
    assert plate_pass.hit_evidence
    assert plate_pass.evidence_fault is None
    crop, frame = plate_pass.snapshot_sha256, plate_pass.frame_sha256
    assert crop is not None
    assert frame is not None
    assert store.is_pinned(crop)
    assert store.is_pinned(frame)
    # The stored frame is one of the camera's frames (JPEG: nearly equal), and the
    # stored crop is that frame's plate: the frame the crop came from, not another.
    stored_frame, stored_crop = _decoded(store, frame), _decoded(store, crop)
    assert stored_frame.shape == frames[0].shape  # small frames are kept whole
    distance = [_mad(stored_frame, f) for f in frames]
    source = frames[int(np.argmin(distance))]
    assert min(distance) < 3.0
    box = plate_pass.best.box
    assert box is not None
    same = _crop(source, box)
    assert same is not None
    assert stored_crop.shape == same.shape
    assert _mad(stored_crop, same) < 3.0
    others = [_crop(f, box) for f in frames if f is not source]
    assert all(o is None or o.shape != same.shape or _mad(stored_crop, o) > 3.0 for o in others)


def test_a_pass_that_is_no_hit_keeps_an_unpinned_crop_and_no_frame(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    cam = _analysis(store, {"KHI8001"})
    [plate_pass] = [p for f in moving_plate() for p in cam.process(f)]
    assert not plate_pass.hit_evidence
    assert plate_pass.frame_sha256 is None
    assert plate_pass.snapshot_sha256 is not None
    assert not store.is_pinned(plate_pass.snapshot_sha256)


def test_a_hit_the_full_store_cannot_keep_says_so_and_still_passes(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, max_files=2)
    _fill_with_pinned_evidence(store, 2)
    cam = _analysis(store, {"LEB6881"})
    [plate_pass] = [p for f in moving_plate() for p in cam.process(f)]
    assert plate_pass.plate == "LEB6881"
    assert (plate_pass.snapshot_sha256, plate_pass.frame_sha256) == (None, None)
    assert plate_pass.evidence_fault is not None
    assert plate_pass.evidence_fault[0] == "evidence_store_full"
    assert store.evidence_refused == 2  # the crop and the frame


def test_a_large_frame_is_stored_scaled_down_with_its_aspect() -> None:
    big = np.zeros((1080, 1920, 3), dtype=np.uint8)
    big[400:700, 800:1200] = 255
    data = encode_frame(big)
    assert data is not None
    assert _jpeg_shape(data) == (720, FRAME_MAX_SIDE, 3)


# ------------------------------------------------------------ the pipeline on a running node


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    paths = PkiPaths(tmp_path_factory.mktemp("pki"))
    init_dev_pki(paths, passphrase=b"test-passphrase", now=T0)
    return paths


def hotlist(pki: PkiPaths, plate: str) -> WatchlistStore:
    trusted = list(x509.load_pem_x509_certificates(pki.chain.read_bytes()))
    store = WatchlistStore(trusted=trusted)
    body = WatchlistBody.model_validate(
        {"watchlist_id": "wl-stolen-lhr", "version": 3, "category": "stolen_vehicle",
         "purpose": "stolen vehicles, Lahore", "owner_agency": "Punjab Police",
         "issued_at": T0, "expires_at": T0 + timedelta(days=7),
         "plates": [WatchlistPlate(entry_id="e-1", key=plate)]}
    )  # fmt: skip
    signer = WatchlistSigner.from_pki(pki, now=T0)
    store.install(sign_bundle(body, signer=signer).model_dump_json(), now=T0)
    return store


def plate_node(
    tmp_path: Path, clock: ManualClock, camera: SimCamera, pki: PkiPaths, store: EvidenceStore
) -> tuple[Node, CameraPipeline]:
    settings = CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 64})
    feed = CameraFeed.of(
        camera, settings, detector=WhiteRectDetector(), reader=ScriptedReader(["LEB6881"])
    )
    pipeline = CameraPipeline([feed], evidence=store, watchlists=hotlist(pki, "LEB6881"))
    config = config_from_dict(
        {"node_id": NODE, "serial": "SN-HIT-3", "data_dir": str(tmp_path / NODE),
         "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"}}
    )  # fmt: skip
    node = build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[pipeline], renewal=False,
    )  # fmt: skip
    return node, pipeline


def test_a_plate_hit_names_its_crop_and_frame_both_pinned_with_no_uploader(
    pki: PkiPaths, tmp_path: Path
) -> None:
    clock = ManualClock(start=0.0, wall=T0 + timedelta(hours=1))
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    store = EvidenceStore(tmp_path / "evidence")
    node, pipeline = plate_node(tmp_path, clock, camera, pki, store)

    async def body() -> None:
        async with running(node, clock) as transport:
            await clock.elapse(1.0)
            for frame in moving_plate():
                camera.push_frame(frame)
            [hit] = await until(lambda: transport.messages(WatchlistHitEvent), "the hit")
            assert hit.snapshot_sha256 is not None
            assert hit.frame_sha256 is not None
            assert store.is_pinned(hit.snapshot_sha256)
            assert store.is_pinned(hit.frame_sha256)
            assert transport.messages(NodeFaultEvent) == []
            report = Telemetry.model_validate(
                {"node_id": NODE, "ts": T0, "uptime_s": 1.0, **pipeline.telemetry()}
            )
            assert report.evidence is not None
            assert report.evidence.pinned_files == 2

    asyncio.run(asyncio.wait_for(body(), 60))


def test_a_hit_whose_evidence_the_full_store_refuses_reaches_the_operator_with_a_fault(
    pki: PkiPaths, tmp_path: Path
) -> None:
    clock = ManualClock(start=0.0, wall=T0 + timedelta(hours=1))
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    store = EvidenceStore(tmp_path / "evidence", max_files=3)
    earlier = _fill_with_pinned_evidence(store, 3)
    node, pipeline = plate_node(tmp_path, clock, camera, pki, store)

    async def body() -> None:
        async with running(node, clock) as transport:
            await clock.elapse(1.0)
            for frame in moving_plate():
                camera.push_frame(frame)
            [hit] = await until(lambda: transport.messages(WatchlistHitEvent), "the hit")
            assert (hit.plate, hit.snapshot_sha256, hit.frame_sha256) == ("LEB6881", None, None)
            [plate] = transport.messages(PlateEvent)
            assert plate.snapshot_sha256 is None
            [fault] = await until(lambda: transport.messages(NodeFaultEvent), "the fault")
            assert (fault.component, fault.code, fault.active) == (
                "camera", "evidence_store_full", True
            )  # fmt: skip
            assert all(d in store for d in earlier)  # no hit's evidence gave way
            figures = pipeline.telemetry()["evidence"]
            assert figures["evidence_refused"] == 2
            assert "2 hit evidence refused" in pipeline.health().detail

    asyncio.run(asyncio.wait_for(body(), 60))


# -------------------------------------------------------------------- a face hit's evidence


@dataclass
class _Staged:
    hit: FaceHit
    crop: Any


class _Ctx:
    """The slice of `NodeContext` the hit path uses, recording what it writes."""

    node_id = NODE

    def __init__(self) -> None:
        from collections import Counter

        from hardware.clock import SystemClock

        self.clock = SystemClock()
        self.counters: Counter[str] = Counter()
        self.events: list[EventBase] = []

    def write_event(self, build: Callable[[str, int], EventBase]) -> None:
        self.events.append(build(f"01JD0Q60000000000000000{len(self.events):03d}", 1))


def test_a_face_hit_keeps_its_crop_and_frame_pinned_and_a_refusal_is_a_fault_then_clears(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path, max_files=3)
    settings = CameraAnalyticsConfig.model_validate({})
    pipeline = CameraPipeline(
        [CameraFeed.of(SimCamera(camera_id="gate"), settings)], evidence=store
    )
    ctx: Any = _Ctx()
    face = FaceHit("f-1", "e-person-1", "wanted_person", 0.7, (1, 2, 3), 2, "wanted-lhr", 4)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    staged: Any = _Staged(face, image[10:70, 20:80].copy())

    kept = pipeline._keep_face_evidence(staged, image, "gate")
    pipeline._write_face_hit(ctx, staged, "gate", kept)
    [hit] = ctx.events
    assert isinstance(hit, WatchlistHitEvent)
    assert hit.snapshot_sha256 is not None
    assert hit.frame_sha256 is not None
    assert store.is_pinned(hit.snapshot_sha256)
    assert store.is_pinned(hit.frame_sha256)

    store.put(b"one more pinned", pin=True)  # the store is now full of evidence
    other: Any = _Staged(face, image[0:50, 0:50].copy())
    kept = pipeline._keep_face_evidence(other, image[::-1].copy(), "gate")
    pipeline._write_face_hit(ctx, other, "gate", kept)
    hit, fault = ctx.events[1:]
    assert isinstance(hit, WatchlistHitEvent)
    assert hit.snapshot_sha256 is None
    assert isinstance(fault, NodeFaultEvent)
    assert (fault.code, fault.active) == ("evidence_store_full", True)

    store.max_files = 10  # room again (an upload let pins go, retention ran)
    kept = pipeline._keep_face_evidence(other, image[::-1].copy(), "gate")
    pipeline._write_face_hit(ctx, other, "gate", kept)
    hit, cleared = ctx.events[3:]
    assert isinstance(hit, WatchlistHitEvent)
    assert hit.frame_sha256 is not None
    assert isinstance(cleared, NodeFaultEvent)
    assert (cleared.code, cleared.active) == ("evidence_store_full", False)


# ----------------------------------------------------------------------------- the upload


class RefusingServer:
    """An evidence API that refuses the first `refusals` whole uploads with `reason`."""

    def __init__(self, reason: str, refusals: int) -> None:
        self.reason = reason
        self.refusals = refusals
        self.bytes: dict[str, bytes] = {}
        self.claims: dict[str, SignedClaim] = {}
        self.begun = 0

    def begin(self, signed: SignedClaim) -> tuple[int, str]:
        self.begun += 1
        if self.reason == "signature":
            raise UploadRefused("signature", "the node's key did not sign this", status=422)
        self.claims[signed.claim.sha256] = signed
        held = self.bytes.get(signed.claim.sha256, b"")
        return len(held), "stored" if len(held) == signed.claim.size else "partial"

    def put(self, sha256: str, offset: int, data: bytes) -> int:
        held = self.bytes.get(sha256, b"")[:offset] + data
        size = self.claims[sha256].claim.size
        if len(held) >= size and self.refusals > 0:
            self.refusals -= 1
            self.bytes.pop(sha256, None)  # the server discards the partial upload
            raise UploadRefused("hash_mismatch", "bytes do not hash to the claim", status=422,
                                received=0)  # fmt: skip
        self.bytes[sha256] = held
        return len(held)

    def instructions(self) -> dict[str, list[str]]:
        return {"upload": [], "hold": [], "delete": []}

    def report_deleted(self, sha256s: Sequence[str], *, reason: str) -> None:
        return None


def _uploader(tmp_path: Path, server: RefusingServer) -> EvidenceUploader:
    key = ec.generate_private_key(ec.SECP256R1())
    config = EvidenceUploadConfig.model_validate(
        {"url": "https://127.0.0.1:1/api/v1/evidence", "chunk_kb": 1, "retry_min_s": 0.01}
    )
    return EvidenceUploader(
        config, node_id=NODE, store=EvidenceStore(tmp_path / "evidence"),
        queue=UploadQueue(tmp_path / "evidence-upload.sqlite3"), key=lambda: key,
        client=lambda: server,
    )  # fmt: skip


def _hit(crop: str, frame: str) -> StoredEvent:
    payload = {"type": "watchlist_hit", "node_id": NODE, "ts": T0.isoformat(),
               "camera_id": "gate", "subject": "plate", "snapshot_sha256": crop,
               "frame_sha256": frame}  # fmt: skip
    return StoredEvent(
        seq=9, event_id="01JD0Q60000000000000000777", event_type="watchlist_hit",
        topic=f"nb/v1/{NODE}/event/watchlist_hit", payload=json.dumps(payload).encode(),
        created_at=time.time(),
    )  # fmt: skip


def _rounds_until(uploader: EvidenceUploader, done: Callable[[], bool], rounds: int = 20) -> None:
    for _ in range(rounds):  # bounded; each round waits out the (10 ms) backoff first
        if done():
            return
        time.sleep(0.05)
        uploader.work_once()


def test_a_hash_mismatch_is_retried_until_the_server_holds_the_crop_and_the_frame(
    tmp_path: Path,
) -> None:
    server = RefusingServer("hash_mismatch", refusals=2)
    uploader = _uploader(tmp_path, server)
    crop = uploader.store.put(b"crop " * 700, pin=True)
    frame = uploader.store.put(b"frame " * 900, pin=True)
    uploader.on_event(_hit(crop, frame))
    assert uploader.work_once() == 0  # both refused once: hash_mismatch
    assert sorted(uploader.queue.pending()) == sorted([crop, frame])
    assert uploader.refused == 2
    _rounds_until(uploader, lambda: not uploader.queue.pending())
    assert uploader.queue.pending() == []
    assert server.bytes[crop] == b"crop " * 700
    assert server.bytes[frame] == b"frame " * 900
    for sha in (crop, frame):  # evidence of the hit, by its event, at the server
        claim = server.claims[sha].claim
        assert (claim.event_id, claim.event_type, claim.data_class) == (
            "01JD0Q60000000000000000777", "watchlist_hit", "plate_crop"
        )  # fmt: skip
        assert not uploader.store.is_pinned(sha)  # the server holds it: may give way now
    assert uploader.uploaded == 2


def test_a_signature_refusal_is_dropped_and_the_hit_s_evidence_stays_pinned(
    tmp_path: Path,
) -> None:
    server = RefusingServer("signature", refusals=0)
    uploader = _uploader(tmp_path, server)
    crop = uploader.store.put(b"crop " * 700, pin=True)
    frame = uploader.store.put(b"frame " * 900, pin=True)
    uploader.on_event(_hit(crop, frame))
    assert uploader.work_once() == 0
    assert uploader.queue.pending() == []  # dropped: the same claim would always be refused
    begun = server.begun
    time.sleep(0.05)
    uploader.work_once()
    assert server.begun == begun  # never tried again
    assert uploader.refused == 2
    assert uploader.store.is_pinned(crop)
    assert uploader.store.is_pinned(frame)
    assert "evidence refused 0" in uploader.health().detail
