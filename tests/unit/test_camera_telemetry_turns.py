"""A node with more cameras than one telemetry report holds reports every one of them, in turns.

`Telemetry.cameras` holds at most `MAX_TELEMETRY_CAMERAS` (8); a node may
run up to 16. It used to send the first eight every time, so the rest were
never reported and nothing said so. Now each report carries
``cameras_total`` and the next share of cameras, so every camera is in one
of ceil(n / 8) consecutive reports. The node runs on a `ManualClock` with a
`MemoryTransport`; the reports are decoded as the server decodes them.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

pytest.importorskip("cv2")

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline, cameras_in_turn
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.memory import memory_transport
from edge_agent.node import build_node
from hardware import ManualClock, SimBackend
from hardware.camera import SimCamera
from proto.messages import MAX_TELEMETRY_CAMERAS, Telemetry
from tests.support.node import running
from tests.support.polling import until

NODE = "lhr-cam-0012"


def covers_every_camera(shares: list[list[str]], ids: list[str]) -> bool:
    """Every window of ceil(n / 8) consecutive reports lists every camera."""
    window = math.ceil(len(ids) / MAX_TELEMETRY_CAMERAS)
    return all(
        set().union(*shares[i : i + window]) == set(ids) for i in range(len(shares) - window + 1)
    )


@pytest.mark.parametrize("count", [1, 8, 9, 12, 16, 17])
def test_every_camera_is_in_one_of_ceil_n_over_8_consecutive_turns(count: int) -> None:
    ids = [f"cam-{i:02d}" for i in range(count)]
    shares, start = [], 0
    for _ in range(3 * count):
        share, start = cameras_in_turn(ids, start=start, limit=MAX_TELEMETRY_CAMERAS)
        assert len(share) == min(count, MAX_TELEMETRY_CAMERAS)
        assert len(set(share)) == len(share)
        shares.append(share)
    assert covers_every_camera(shares, ids)
    if count <= MAX_TELEMETRY_CAMERAS:
        assert all(share == ids for share in shares)  # a small node lists all, every time


def test_the_check_would_catch_the_old_first_eight_every_time() -> None:
    ids = [f"cam-{i:02d}" for i in range(12)]
    assert not covers_every_camera([ids[:MAX_TELEMETRY_CAMERAS]] * 4, ids)


def test_a_node_with_twelve_cameras_reports_all_twelve_in_turns_and_says_how_many(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=0.0)
    ids = [f"cam-{i:02d}" for i in range(12)]
    feeds = [
        CameraFeed.of(
            SimCamera(camera_id=camera_id, clock=clock, max_queued=4),
            CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 4}),
        )
        for camera_id in ids
    ]
    config = config_from_dict(
        {
            "node_id": NODE,
            "serial": "SN-CAM-12",
            "data_dir": str(tmp_path / NODE),
            "hardware": {"type": "sim"},
            "outbox": {"synchronous": "normal"},
            "telemetry": {"interval_s": 1.0},
        }
    )
    node = build_node(
        config,
        backend=SimBackend(clock=clock),
        transport_factory=memory_transport(),
        components=[CameraPipeline(feeds)],
        renewal=False,
    )

    async def body() -> None:
        async with running(node, clock) as transport:

            def reports() -> list[Telemetry]:
                return [t for t in transport.messages(Telemetry) if t.cameras]

            for _ in range(40):  # bounded: one report a (virtual) second
                if len(reports()) >= 4:
                    break
                await clock.elapse(1.0)
            await until(lambda: len(reports()) >= 4, "four telemetry reports with cameras")
            got = reports()
            assert all(t.cameras_total == 12 for t in got)
            assert all(t.cameras is not None and len(t.cameras) == 8 for t in got)
            shares = [[c.camera_id for c in t.cameras or []] for t in got]
            assert covers_every_camera(shares, ids)

    asyncio.run(asyncio.wait_for(body(), 60))
