"""The node's ``snapshot`` command: what is kept, and why a camera has nothing to give.

A fresh frame is encoded as JPEG, kept in the evidence store by its SHA-256
and pinned; a stale frame (the camera stalled), a camera power shed or one
that has read nothing is listed under ``missing`` with its reason, an
unknown camera too; before the pipeline has started the command is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.component import CommandRefused
from edge_agent.evidence import EvidenceStore
from edge_agent.snapshot import SnapshotComponent, Still
from proto.messages import PingCommand, SnapshotCommand

NOW = datetime(2026, 11, 30, 16, 0, tzinfo=timezone.utc)


class Source:
    """A camera pipeline reduced to what the command reads."""

    def __init__(self, stills: dict[str, Still | str], store: EvidenceStore | None) -> None:
        self.stills = stills
        self.store = store

    def snapshot_cameras(self) -> Sequence[str]:
        return list(self.stills)

    def latest_still(self, camera_id: str) -> Still | str:
        return self.stills[camera_id]

    def evidence_store(self) -> EvidenceStore | None:
        return self.store


def command(cameras: list[str] | None = None) -> SnapshotCommand:
    return SnapshotCommand(
        node_id="lhr-cam-0001", ts=NOW, request_id="01JD0Q60000000000000000004",
        alert_id="01JD0Q60000000000000000009", cameras=cameras,
    )  # fmt: skip


def frame(width: int = 64, height: int = 48) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)


def test_each_camera_gives_its_fresh_frame_or_the_reason_it_has_none(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence")
    source = Source(
        {"gate": Still(frame(), 0.4), "lane": Still(frame(), 12.0), "yard": "off",
         "roof": "no_frame"},
        store,
    )  # fmt: skip
    component = SnapshotComponent(source, max_age_s=5.0)
    assert "snapshot" in component.commands()
    result = component.snapshot(command())
    [kept] = result["snapshots"]
    assert (kept["camera_id"], kept["width"], kept["height"]) == ("gate", 64, 48)
    path = store.path(kept["sha256"])
    assert path is not None
    assert hashlib.sha256(path.read_bytes()).hexdigest() == kept["sha256"]
    assert path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    pin = getattr(store, "is_pinned", None)
    if pin is not None:  # a store that pins keeps the snapshot through eviction
        assert pin(kept["sha256"])
    assert result["missing"] == [
        {"camera_id": "lane", "reason": "stale", "frame_age_s": 12.0},
        {"camera_id": "yard", "reason": "off"},
        {"camera_id": "roof", "reason": "no_frame"},
    ]
    assert result["alert_id"] == "01JD0Q60000000000000000009"
    assert (component.taken, component.missed) == (1, 3)


def test_only_the_cameras_asked_and_an_unknown_one_is_named(tmp_path: Path) -> None:
    source = Source({"gate": Still(frame(), 0.1), "lane": "off"}, EvidenceStore(tmp_path))
    result = SnapshotComponent(source).snapshot(command(["lane", "nope", "lane"]))
    assert result["snapshots"] == []
    assert result["missing"] == [
        {"camera_id": "lane", "reason": "off"},
        {"camera_id": "nope", "reason": "unknown_camera"},
    ]


def test_before_the_pipeline_starts_the_command_is_refused() -> None:
    component = SnapshotComponent(Source({"gate": "not_started"}, None))
    with pytest.raises(CommandRefused, match="not started"):
        component.snapshot(command())
    with pytest.raises(CommandRefused):
        component.snapshot(
            PingCommand(node_id="lhr-cam-0001", ts=NOW, request_id="01JD0Q60000000000000000004")
        )
    with pytest.raises(ValueError, match="max_age_s"):
        SnapshotComponent(Source({}, None), max_age_s=0)
