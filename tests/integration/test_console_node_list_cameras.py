"""The queue page's node list says, per camera node, how its cameras are: ok, stalled or shed.

Story: an operator opens the console; beside each camera node in the node
list is one line — "2 cameras ok" for a healthy gate camera node, "Cameras:
1 ok · 1 stalled · 1 shed" (in the fault colour, the open fault in its title)
for a node whose north camera stalled and whose rear camera the power
policy stopped — and no camera line for a panic pillar without cameras. The
nodes and their telemetry are written by the server's own ingest
(`store_batch`) into a real `nigehbaan server`'s database; the page runs in
Debian's Chromium. `GET /cameras/summary` is checked beside it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session

from fleet_server.alerting import load_policies
from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import utcnow
from proto.codec import encode, topic_for
from proto.messages import Birth, Telemetry, WireModel
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, console_server, sign_in

OPERATOR = Account("op-cams", "operator", "cams-" + secrets.token_hex(8))
GOLDEN_BIRTH = Path(__file__).parents[2] / "proto" / "golden" / "birth.json"

pytestmark = BROWSER_MARKS


def _birth(node_id: str, camera: bool) -> Birth:
    data: dict[str, Any] = json.loads(GOLDEN_BIRTH.read_text(encoding="utf-8"))
    data.update(node_id=node_id, serial=f"SN-{node_id}", ts=utcnow().isoformat())
    if not camera:
        data["capabilities"] = ["panic_button", "indicator"]
    return Birth.model_validate(data)


def _telemetry(node_id: str, cameras: list[dict[str, Any]]) -> Telemetry:
    return Telemetry.model_validate(
        {"node_id": node_id, "ts": utcnow(), "uptime_s": 60.0, "cameras": cameras}
    )


def _seed(server: ServerProcess) -> None:
    messages: list[WireModel] = [
        _birth("lhr-cams-gate", camera=True),
        _birth("lhr-cams-mall", camera=True),
        _birth("lhr-cams-pillar", camera=False),
        _telemetry(
            "lhr-cams-gate",
            [{"camera_id": "in", "frames_in": 900}, {"camera_id": "out", "shed": "none"}],
        ),
        _telemetry(
            "lhr-cams-mall",
            [
                {"camera_id": "front", "frames_in": 1200},
                {"camera_id": "north", "fault": "camera_stalled"},
                {"camera_id": "rear", "shed": "stopped"},
            ],
        ),
    ]
    engine = make_engine(server.db_url)
    try:
        envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
        with Session(engine, expire_on_commit=False) as session:
            policies = load_policies(session=session, ack_timeout_s=120)
            store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
            session.commit()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("fleet-cams"), [OPERATOR]) as proc:
        _seed(proc)
        yield proc


def _row(page: Page, node_id: str) -> Any:
    return page.locator(f'[data-testid="node-row"][data-node-id="{node_id}"]')


def test_the_node_list_shows_each_camera_nodes_cameras_ok_stalled_or_shed(
    page: Page, server: ServerProcess
) -> None:
    sign_in(page, server, OPERATOR)
    gate = _row(page, "lhr-cams-gate").get_by_test_id("node-cameras")
    expect(gate).to_have_text("2 cameras ok")
    expect(gate).to_have_attribute("data-health", "ok")

    mall = _row(page, "lhr-cams-mall").get_by_test_id("node-cameras")
    expect(mall).to_have_text("Cameras: 1 ok · 1 stalled · 1 shed")
    expect(mall).to_have_attribute("data-health", "stalled")
    expect(mall).to_have_attribute("title", "north: camera_stalled")
    # The fault colour, not the ok one: the operator sees it without reading.
    colour = mall.evaluate("e => getComputedStyle(e).color")
    assert colour != gate.evaluate("e => getComputedStyle(e).color")

    pillar = _row(page, "lhr-cams-pillar")
    expect(pillar).to_be_visible()
    expect(pillar.get_by_test_id("node-cameras")).to_have_count(0)


def test_the_camera_summary_api_counts_per_node(page: Page, server: ServerProcess) -> None:
    sign_in(page, server, OPERATOR)
    # Through the page's own API client (it holds the session's token).
    payload = page.evaluate("() => NB.api('/cameras/summary')")
    by_node = {s["node_id"]: s for s in payload["data"]}
    assert set(by_node) == {"lhr-cams-gate", "lhr-cams-mall"}
    assert {k: by_node["lhr-cams-mall"][k] for k in ("cameras", "ok", "stalled", "shed")} == {
        "cameras": 3,
        "ok": 1,
        "stalled": 1,
        "shed": 1,
    }
    assert by_node["lhr-cams-mall"]["faults"] == ["north: camera_stalled"]
    assert by_node["lhr-cams-gate"]["ok"] == 2
    assert httpx.get(f"{server.base_url}/api/v1/cameras/summary").status_code == 401
