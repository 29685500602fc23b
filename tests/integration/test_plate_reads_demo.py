"""The demo's camera nodes read plates from rendered scenes with the real pipeline, and the
reads are in the server's plate reads (what the console's Plate reads page lists).

The demo's own configuration (`with_cameras` on `demo_node_configs`) and scene players
(`start_scene_players`), a `SimFleet` of real agents on a real broker, and a real
`nigehbaan server` process; the demo's enrollment and mTLS are not needed for this.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet_server.broker import ManagedBroker
from simulators.camera_scenes import anpr_missing
from simulators.demo import demo_node_configs, start_scene_players, with_cameras
from simulators.fleet import SimFleet
from tests.support.console import Account, console_server

pytestmark = [pytest.mark.broker]

OPERATOR = Account("op-demo-plates", "operator", "scene-" + secrets.token_hex(8))


def test_without_the_anpr_extra_the_demo_says_so_and_adds_no_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simulators.camera_scenes as scenes

    monkeypatch.setattr(scenes, "anpr_missing", lambda: "rapidocr is not installed")
    configs = demo_node_configs(count=3, data_dir=tmp_path)
    out, line = with_cameras(configs, 2)
    assert out == configs
    assert "rapidocr is not installed" in line


def test_demo_camera_nodes_reads_reach_the_server_as_plate_reads(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    missing = anpr_missing()
    if missing:
        pytest.skip(f"the real plate pipeline cannot run here: {missing}")
    plain = [
        {**c, "mqtt": {**c["mqtt"], "url": broker.url}}
        for c in demo_node_configs(count=3, data_dir=tmp_path / "nodes")
    ]
    configs, line = with_cameras(plain, 1)
    assert "sim-00000" in line
    assert ["cameras" in c for c in configs] == [True, False, False]

    with console_server(broker, tmp_path / "server", [OPERATOR]) as server:
        token = server.login(OPERATOR.username, OPERATOR.password)
        headers = {"Authorization": f"Bearer {token}", "X-Purpose": "note:demo plate reads check"}

        async def run() -> tuple[list[str], dict[str, Any]]:
            fleet = SimFleet(
                broker_url=broker.url, data_dir=tmp_path / "nodes", count=len(configs),
                node_configs=configs,
            )  # fmt: skip
            await fleet.start()
            (player,) = start_scene_players(fleet, 1)
            try:
                deadline = time.monotonic() + 120  # real models on a shared CPU
                while True:
                    answer = await asyncio.to_thread(
                        httpx.get, f"{server.base_url}/api/v1/plate-reads", headers=headers
                    )
                    body: dict[str, Any] = answer.json()
                    if body["count"] >= 2 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1.0)
            finally:
                player.stop()
                await fleet.stop()
            return [t.canonical for t in player.played], body

        played, body = asyncio.run(run())
    read = {r["canonical"] for r in body["data"]}
    assert body["count"] >= 2, body
    assert {r["node_id"] for r in body["data"]} == {"sim-00000"}
    assert len(read & set(played)) >= 2, (read, played)  # the truth of what drove past
