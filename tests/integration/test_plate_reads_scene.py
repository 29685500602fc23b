"""A simulated camera node plays rendered vehicle passes (lighting, blur) through the real
pipeline — OcrLineDetector and RapidOcrReader named in its config — and each pass reaches
the server as one plate event whose text is the pass's known truth.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("cv2")

from edge_agent.config import config_from_dict
from edge_agent.node import build_node
from fleet_server.broker import ManagedBroker
from hardware import SimBackend
from proto.messages import PlateEvent
from simulators.camera_scenes import ScenePlayer, anpr_missing, camera_analytics, pipeline_camera
from tests.support.fleet_standin import FleetStandIn, node_config
from tests.support.polling import until

pytestmark = pytest.mark.broker


def test_rendered_passes_played_into_the_sim_camera_are_read_by_the_real_pipeline(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    missing = anpr_missing()
    if missing:
        pytest.skip(f"the real plate pipeline cannot run here: {missing}")
    config = {**node_config(broker, tmp_path), **camera_analytics("gate", max_fps=0)}
    node = build_node(config_from_dict(config), backend=SimBackend(), renewal=False)
    server = FleetStandIn(broker, config["node_id"])
    player = ScenePlayer(pipeline_camera(node, "gate"), seed=4, fps=10.0, gap_s=(1.0, 1.0),
                         max_passes=2)  # fmt: skip

    async def body() -> None:
        task = asyncio.ensure_future(node.run())
        try:
            player.start()
            await until(lambda: len(player.played) == 2, "two passes played", timeout=60)
            await until(
                lambda: len(server.of_type(PlateEvent)) >= 2, "two plate events", timeout=90
            )
            await until(lambda: node.outbox.depth == 0, "the acks", timeout=30)
        finally:
            player.stop()
            node.stop()
            await asyncio.wait_for(task, 10)

    try:
        asyncio.run(asyncio.wait_for(body(), 180))  # real models on a shared CPU
    finally:
        server.close()
    events = server.of_type(PlateEvent)
    assert len({e.event_id for e in events}) == 2
    assert [e.plate for e in events] == [t.canonical for t in player.played]
    for event, truth in zip(events, player.played, strict=True):
        assert event.canonical == truth.canonical
        # Province and layout are the reader's guess for same-shaped layouts (a Punjab
        # AAA 999 and a Sindh AAA-999 differ by colour): not checked against the truth here.
        assert event.box is not None
