"""A panic press pulls snapshots from the cameras nearest the pillar, end to end.

A pillar (the real agent on mock pins) and three camera nodes (the real
agent with the real camera pipeline on simulated cameras) talk to a real
Mosquitto and a real `nigehbaan server`. The pillar stands at a site with
one camera node on the same site, one camera node 120 m away on another
site and one 2 km away. A press opens a panic alert; the server asks the
two near camera nodes for a snapshot and not the far one. The camera that
has a frame keeps it in its node's evidence store and answers with its
SHA-256 (the file on the node's disk hashes to it); the camera that has
seen no frame says so. The alert shows which nodes were asked, why, and
their replies. A commissioning (test) press pulls nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2")

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.node import Node, build_node
from hardware import SimBackend
from hardware.camera import SimCamera
from simulators.fleet import SimFleet
from tests.support.camera import ScriptedReader, WhiteRectDetector, street
from tests.support.e2e import API, Stack, running_stack, until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SITE = "gulberg-main-blvd"
PILLAR_AT = (31.5204, 74.3587)
FAST = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "keepalive_s": 5}


def offset(metres_north: float) -> dict[str, float]:
    lat, lon = PILLAR_AT
    return {"lat": lat + metres_north / 111_320.0, "lon": lon}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, env={"NIGEHBAAN_SNAPSHOT_RADIUS_M": "300"}) as started:
        yield started


def camera_node(stack: Stack, node_id: str, *, site: str, north_m: float) -> tuple[Node, SimCamera]:
    camera = SimCamera(camera_id="road", max_queued=8)
    settings = CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 8})
    feed = CameraFeed.of(camera, settings, detector=WhiteRectDetector(), reader=ScriptedReader([]))
    config = config_from_dict(
        {
            "node_id": node_id, "serial": f"SN-{node_id}", "site_id": site,
            "district": "lahore", "location": offset(north_m),
            "data_dir": str(stack.work / "nodes" / node_id),
            "mqtt": {"url": stack.broker.url, **FAST}, "hardware": {"type": "sim"},
            "telemetry": {"interval_s": 1.0},
        }
    )  # fmt: skip
    node = build_node(
        config, backend=SimBackend(), components=[CameraPipeline([feed])], renewal=False
    )
    return node, camera


@contextlib.asynccontextmanager
async def running(nodes: list[Node]) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(n.run()) for n in nodes]
    try:
        yield
    finally:
        for node in nodes:
            node.stop()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)


def get(stack: Stack, path: str, **params: Any) -> Any:
    with stack.api() as api:
        answer = api.get(f"{API}{path}", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()


def test_a_press_asks_the_nearest_cameras_and_the_alert_shows_their_hashes(stack: Stack) -> None:
    near, beside, far = (
        camera_node(stack, "lhr-cam-0101", site=SITE, north_m=900.0),  # same site, wide site
        camera_node(stack, "lhr-cam-0102", site="gulberg-canal", north_m=120.0),
        camera_node(stack, "lhr-cam-0103", site="model-town", north_m=2000.0),
    )
    pillar = SimFleet(
        broker_url=stack.broker.url, data_dir=stack.work / "pillars", count=1,
        overrides={"site_id": SITE, "district": "lahore",
                   "location": {"lat": PILLAR_AT[0], "lon": PILLAR_AT[1]}, "mqtt": FAST},
    )  # fmt: skip

    async def story() -> dict[str, Any]:
        await pillar.start(connect_timeout=30)
        try:
            async with running([near[0], beside[0], far[0]]):
                # the server knows them as camera nodes once their telemetry lists cameras
                await until(
                    lambda: len({c["node_id"] for c in get(stack, "/cameras")["data"]}) == 3,
                    what="three camera nodes reporting",
                )
                near[1].push_frame(street(320, 180))  # only this camera has a picture
                pipeline = near[0].component("camera")
                assert isinstance(pipeline, CameraPipeline)
                await until(
                    lambda: pipeline.latest_still("road") != "no_frame", what="the frame captured"
                )
                press = await pillar.press(0)
                alert = await until(
                    lambda: [a for a in get(stack, "/alerts", node_id=press.node_id)["data"]
                             if a["type"] == "panic"],
                    what="the panic alert",
                )  # fmt: skip
                alert_id = alert[0]["id"]

                def both_answered() -> list[dict[str, Any]] | None:
                    rows: list[dict[str, Any]] = get(stack, f"/alerts/{alert_id}/snapshots")["data"]
                    done = len(rows) == 2 and all(r["status"] == "answered" for r in rows)
                    return rows if done else None

                answered = await until(both_answered, what="both near camera nodes answering")
                return {"alert_id": alert_id, "rows": answered}
        finally:
            await pillar.stop()

    result = asyncio.run(asyncio.wait_for(story(), 120))
    rows = {r["node_id"]: r for r in result["rows"]}
    assert set(rows) == {"lhr-cam-0101", "lhr-cam-0102"}  # the 2 km node was not asked
    assert rows["lhr-cam-0101"]["reason"] == "same_site"
    assert rows["lhr-cam-0102"]["reason"] == "nearby"
    assert math.isclose(rows["lhr-cam-0102"]["distance_m"], 120.0, rel_tol=0.02)
    [kept] = rows["lhr-cam-0101"]["snapshots"]
    assert (kept["camera_id"], kept["width"], kept["height"]) == ("road", 320, 180)
    stored = stack.work / "nodes" / "lhr-cam-0101" / "evidence" / f"{kept['sha256']}.jpg"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == kept["sha256"]
    assert rows["lhr-cam-0101"]["missing"] == []
    assert rows["lhr-cam-0102"]["snapshots"] == []
    assert rows["lhr-cam-0102"]["missing"] == [{"camera_id": "road", "reason": "no_frame"}]
