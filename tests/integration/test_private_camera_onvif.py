"""Private cameras registered by their ONVIF address: the node resolves, opens and judges them.

The ONVIF device is the SOAP stand-in on 127.0.0.1 (tests/support/onvif_standin.py:
a stand-in of the SOAP mapping, not a real camera); the stream it names is a
real MJPEG-over-HTTP server on 127.0.0.1 that the node opens with OpenCV, as
it would a camera's RTSP stream (no RTSP server is installed here). Each
stand-in names its services and stream on 127.0.0.2, so a node that used the
camera's own idea of its address would find nothing there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("cv2")

from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect
from sqlmodel import Session, col, select

from edge_agent.camera.onvif import OnvifCamera
from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from fleet_server.models import Node, utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.privacy import PrivacyPolicyVersion
from hardware import ManualClock
from hardware.camera import SimCamera
from proto.messages import NodeFaultEvent
from simulators.server_process import ServerProcess
from tests.integration.test_privacy_api import (  # noqa: F401  (the module's fixture)
    Captured,
    last_command,
    private_body,
    server,
)
from tests.integration.test_privacy_console import ADMIN as CONSOLE_ADMIN
from tests.integration.test_privacy_console import NODE as CONSOLE_NODE
from tests.integration.test_privacy_console import (  # noqa: F401  (the module's fixture)
    RunningNode,
    stack,
)
from tests.integration.test_private_camera_standards import (
    faults,
    make_node,
    mjpeg_server,
    run,
    running,
    settings,
    terms,
)
from tests.support.api import API, login, runtime_of
from tests.support.browser import BROWSER_MARKS
from tests.support.camera import ScriptedReader, WhiteRectDetector
from tests.support.console import sign_in
from tests.support.onvif_standin import OnvifStandIn, StandInProfile, onvif_standin
from tests.support.polling import until, wait_for


class Pipeline(CameraPipeline):
    """Third-party feeds with the tests' fast retry and the stand-in plate models."""

    def _private_feed(self, ctx: Any, camera_id: str, source: str) -> CameraFeed:
        feed = super()._private_feed(ctx, camera_id, source)
        return dataclasses.replace(
            feed, settings=settings(), detector=WhiteRectDetector(), reader=ScriptedReader(["X1"])
        )


def test_onvif_cameras_resolve_to_their_stream_and_their_clocks_are_judged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = ManualClock(start=0.0)
    street = SimCamera(camera_id="street", clock=clock)
    pipeline = Pipeline(
        [CameraFeed.of(street, settings(), detector=WhiteRectDetector(), reader=ScriptedReader([]))]
    )

    def camera_clock(offset_s: float) -> Any:
        return lambda: clock.now() + timedelta(seconds=offset_s)

    with (
        mjpeg_server(1280, 720, 20.0) as url,
        onvif_standin(OnvifStandIn(camera_time=camera_clock(0.0))) as lobby,
        onvif_standin(OnvifStandIn(camera_time=camera_clock(30.0))) as gate,
        onvif_standin(OnvifStandIn(camera_time=camera_clock(0.0))) as roof,
        onvif_standin(
            OnvifStandIn(camera_time=camera_clock(0.0),
                         profiles=[StandInProfile("sub", "subStream", 640, 360)])
        ) as garage,
    ):  # fmt: skip
        for device in (lobby, gate, roof, garage):
            device.stream_uri = url.replace("127.0.0.1", "127.0.0.2")
        minimums = {"sample_frames": 5, "max_clock_skew_s": 2.0}
        sources = {
            "lobby": lobby.source(),
            "gate": gate.source(),
            "roof": roof.source(password="not-the-pw"),
            "garage": garage.source(),
        }
        policy = {
            "version": 3,
            "cameras": {c: {"private": {**terms(**minimums), "source": s}}
                        for c, s in sources.items()},
        }  # fmt: skip
        node = make_node(tmp_path, clock, pipeline, policy)

        async def body() -> None:
            async with running(node, clock) as transport:

                def cameras() -> dict[str, Any]:
                    figures: dict[str, Any] = pipeline.stats()["cameras"]
                    return figures

                for _ in range(100):  # the pipeline adopts sources at its next poll
                    await clock.elapse(1.0)
                    if set(sources) <= set(cameras()):
                        break
                await until(lambda: cameras()["lobby"]["standards"], "the lobby judged", timeout=30)
                await until(lambda: cameras()["gate"]["standards"], "the gate judged", timeout=30)
                await until(lambda: cameras()["lobby"]["frames_analysed"] > 0, "lobby analysed")
                await until(lambda: len(roof.refused) >= 3, "the roof retried")
                await until(lambda: len(garage.calls) >= 10, "the garage retried")
                await until(lambda: faults(transport, "camera_onvif_error"), "the roof reported")
                await until(lambda: faults(transport, "camera_below_standard"), "a poor camera")
                stats = cameras()
                opened = pipeline.workers["lobby"].source
                telemetry = {c["camera_id"]: c for c in pipeline.telemetry()["cameras"]}
                health = str(pipeline.health())
                events = transport.messages(NodeFaultEvent)

            # The lobby: its stream came from GetStreamUri, on the host the node was given.
            assert isinstance(opened, OnvifCamera)
            assert opened.resolved.stream_shown == url.replace("http://", "http://***@")
            assert lobby.stream_tokens[0] == "Profile_101"
            verdict = stats["lobby"]["standards"]
            assert verdict["passed"], verdict
            assert verdict["clock"] == "skew 0.0 s"
            assert (verdict["width"], verdict["height"]) == (1280, 720)
            # The gate's clock is 30 s ahead of the node's: below standard, live view only.
            gate_verdict = stats["gate"]["standards"]
            assert not gate_verdict["passed"]
            assert gate_verdict["clock"] == "skew 30.0 s"
            assert gate_verdict["reasons"] == ["clock off by 30.0 s (over 2 s)"]
            assert stats["gate"]["frames_analysed"] == 0
            assert telemetry["gate"]["fault"] == "camera_below_standard"
            below = [e for e in events if e.code == "camera_below_standard"]
            assert any((e.detail or "").startswith("gate:") and "clock off by 30.0 s"
                       in (e.detail or "") for e in below)  # fmt: skip
            # The roof refuses the account: a typed fault, retried, never a crash.
            (refused,) = faults(transport, "camera_onvif_error")
            assert "roof: cannot open" in (refused.detail or "")
            assert "NotAuthorized" in (refused.detail or "")
            assert stats["roof"]["fault"] == "camera_onvif_error"
            assert stats["roof"]["standards"] is None
            # The garage has no profile meeting 1280x720: below standard before any frame.
            assert stats["garage"]["fault"] == "camera_below_standard"
            assert garage.stream_tokens == []
            assert any((e.detail or "").startswith("garage: cannot open: no ONVIF profile")
                       for e in below)  # fmt: skip
            # Credentials nowhere: faults, stats, telemetry, health, logs.
            shown = json.dumps([e.model_dump(mode="json") for e in events])
            shown += json.dumps(pipeline.stats()) + json.dumps(telemetry, default=str) + health
            shown += "\n".join(r.getMessage() for r in caplog.records)
            assert "s3cret" not in shown
            assert "not-the-pw" not in shown

        run(body)


def test_the_camera_clock_is_read_each_time_the_camera_is_opened(tmp_path: Path) -> None:
    """A camera whose clock drifts is judged again at the next connect (a changed source)."""
    clock = ManualClock(start=0.0)
    street = SimCamera(camera_id="street", clock=clock)
    pipeline = Pipeline(
        [CameraFeed.of(street, settings(), detector=WhiteRectDetector(), reader=ScriptedReader([]))]
    )
    offset = {"s": 0.0}

    def camera_time() -> datetime:
        return clock.now() + timedelta(seconds=offset["s"])

    with mjpeg_server(1280, 720, 20.0) as url, onvif_standin(
        OnvifStandIn(camera_time=camera_time, stream_uri=url)
    ) as device:  # fmt: skip
        policy: dict[str, Any] = {
            "version": 1,
            "cameras": {
                "plaza": {"private": {**terms(sample_frames=4), "source": device.source()}}
            },
        }
        node = make_node(tmp_path, clock, pipeline, policy)

        async def body() -> None:
            async with running(node, clock):

                def verdict() -> Any:
                    figures = pipeline.stats()["cameras"].get("plaza")
                    return figures["standards"] if figures else None

                for _ in range(100):
                    await clock.elapse(1.0)
                    if "plaza" in pipeline.workers:
                        break
                await until(verdict, "the first verdict", timeout=30)
                first = verdict()
                offset["s"] = -5.0  # the camera's clock falls behind; the owner re-registers it
                pipeline.workers["plaza"].reopen(pipeline.workers["plaza"].feed.open)
                await until(lambda: verdict() is not None and verdict() != first, "judged again",
                            timeout=30)  # fmt: skip
                second = verdict()

            assert first["passed"]
            assert first["clock"] == "skew 0.0 s"
            assert not second["passed"]
            assert second["reasons"] == ["clock off by 5.0 s (over 2 s)"]

        run(body)


# ----------------------------------------------------------------- the server's side


def test_the_registration_api_takes_an_onvif_source_and_shows_it_without_credentials(
    server: tuple[TestClient, Captured, dict[str, str]],  # noqa: F811
) -> None:
    client, captured, _ = server
    admin, op = login(client, "admin"), login(client, "op")
    node = "psh-gw-0003"
    with Session(runtime_of(client).engine) as session:
        session.add(Node(node_id=node, district="peshawar"))
        session.commit()
    url = f"{API}/privacy/nodes/{node}/cameras/lobby/private"
    source = "onvif://admin:s3cret-pw@10.20.0.7:8080/mainStream"
    body = {**private_body(utcnow() + timedelta(days=90), ["plates"]), "source": source,
            "standards": {"min_width": 1280, "min_height": 720, "max_clock_skew_s": 2}}  # fmt: skip
    answer = client.put(url, headers=admin, json=body)
    assert answer.status_code == 200, answer.text
    assert "s3cret" not in answer.text
    assert answer.json()["private"]["source"] == "onvif://***@10.20.0.7:8080/mainStream"
    policy = json.loads(str(last_command(captured, node).changes["privacy.policy"]))
    assert policy["cameras"]["lobby"]["private"]["source"] == source  # the node logs in with it
    listed = client.get(f"{API}/privacy/private-cameras", headers=op)
    assert "onvif://***@10.20.0.7:8080/mainStream" in listed.text
    assert "s3cret" not in listed.text
    assert "s3cret" not in client.get(f"{API}/privacy/nodes/{node}", headers=op).text
    with Session(runtime_of(client).engine) as session:
        records = session.exec(
            select(AuditRecord).where(col(AuditRecord.object) == f"camera:{node}/lobby")
        ).all()
        assert records
        assert all("s3cret" not in json.dumps(r.detail) for r in records)
        versions = len(
            session.exec(
                select(PrivacyPolicyVersion).where(col(PrivacyPolicyVersion.node_id) == node)
            ).all()
        )

    # A malformed ONVIF source: a 422 that says what is wrong, and no new version.
    for bad, says in (
        ("onvif://admin:s3c/ret@10.20.0.7", "percent-encode"),
        ("onvif://admin:s3cret-pw@10.20.0.7:99999", "bad port"),
        ("onvif://admin:s3cret-pw@", "names no host"),
    ):
        refused = client.put(url, headers=admin, json={**body, "source": bad})
        assert refused.status_code == 422, (bad, refused.text)
        message = refused.json()["detail"][0]["msg"]
        assert says in message, message
        assert "onvif://user:password@host[:port][/profile]" in message
        assert "s3c" not in message
    with Session(runtime_of(client).engine) as session:
        query = select(PrivacyPolicyVersion).where(col(PrivacyPolicyVersion.node_id) == node)
        assert len(session.exec(query).all()) == versions


# ------------------------------------------------------------ console to camera, end to end


def _browser(test: Any) -> Any:
    for mark in BROWSER_MARKS:
        test = mark(test)
    return test


@_browser
def test_an_onvif_camera_registered_in_the_console_is_judged_by_its_clock(
    page: Page,
    stack: tuple[ServerProcess, RunningNode],  # noqa: F811
) -> None:
    """The form → the policy over MQTT → the node asks the stand-in → the verdict in the list."""
    process, node = stack
    ahead = timedelta(seconds=30)
    with (
        mjpeg_server(1280, 720, 20.0) as url,
        onvif_standin(
            OnvifStandIn(camera_time=lambda: datetime.now(timezone.utc) + ahead, stream_uri=url)
        ) as device,
    ):
        sign_in(page, process, CONSOLE_ADMIN)
        page.goto(f"{process.base_url}/console/privacy")
        page.get_by_test_id("p-node").fill(CONSOLE_NODE)
        page.get_by_test_id("p-camera").fill("plaza")
        page.get_by_test_id("p-owner").fill("Pearl Plaza Peshawar")
        page.get_by_test_id("p-agreement").fill("KP-DSA-2026-077")
        page.get_by_test_id("p-expires").fill("2027-06-01T00:00")
        page.get_by_test_id("p-allow-plates").check()
        page.get_by_test_id("p-source").fill(device.source())
        page.get_by_test_id("p-min-width").fill("1280")
        page.get_by_test_id("p-max-skew").fill("2")
        page.get_by_test_id("p-reason").fill("plaza gate camera joins by its ONVIF address")
        page.get_by_test_id("private-save").click()
        row = page.locator(f'[data-testid="private-row"][data-camera="{CONSOLE_NODE}/plaza"]')
        expect(row).to_contain_text(f"onvif://***@127.0.0.1:{device.port}")
        expect(row).not_to_contain_text("s3cret")

        def judged() -> dict[str, Any] | None:
            camera = node.pipeline.stats()["cameras"].get("plaza") or {}
            found: dict[str, Any] | None = camera.get("standards")
            return found

        verdict = wait_for(
            judged,
            timeout=60, interval=0.2, what="the node's verdict on the ONVIF camera",
        )  # fmt: skip
        assert verdict is not None
        token = process.login(CONSOLE_ADMIN.username, CONSOLE_ADMIN.password)
        headers = {"Authorization": f"Bearer {token}"}

        def shown() -> bool:
            text = httpx.get(f"{process.base_url}/api/v1/privacy/private-cameras", headers=headers)
            return "clock off by" in text.text

        wait_for(shown, timeout=30, interval=0.5, what="the verdict at the server")
        page.reload()
        expect(row).to_contain_text("below standard")
        expect(row).to_contain_text(re.compile(r"clock off by (29\.\d|30\.0) s \(over 2 s\)"))
        expect(row).not_to_contain_text("s3cret")

    assert device.calls[:2] == ["GetSystemDateAndTime", "GetDeviceInformation"]
    assert device.refused == []  # its tokens were stamped in the camera's (later) time
    assert not verdict["passed"]
    assert re.fullmatch(r"skew (29\.\d|30\.0) s", verdict["clock"]), verdict
    assert (verdict["width"], verdict["height"]) == (1280, 720)
