"""Privacy masks on the node: the rasterisation, and the guard that blacks pixels out of frames.

A mask is polygons in fractions of the frame; `rasterise` turns them into a
pixel mask at whatever resolution the camera delivers, covering the polygon
and its edge. `PrivacyGuard` applies the node's policy to each frame: masked
pixels become black in a copy, a private camera past its agreement (or one
that may contribute no plates) gives nothing, a newer policy replaces the one
held, an older one does not, and the one held survives a restart on disk.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.camera.privacy import PrivacyGuard, PrivacyPolicy, rasterise
from edge_agent.config import ConfigError, apply_changes, config_from_dict, config_hash

NAIVE_EXPIRY = {"owner": "x", "agreement": "y", "expires_at": "2027-01-01T00:00:00", "allow": []}
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
SQUARE = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]


def policy(version: int = 1, **cameras: Any) -> PrivacyPolicy:
    return PrivacyPolicy.model_validate({"version": version, "cameras": cameras})


def frame(width: int = 64, height: int = 48, value: int = 200) -> np.ndarray[Any, Any]:
    return np.full((height, width, 3), value, dtype=np.uint8)


# ------------------------------------------------------------------ rasterise


def test_a_square_covers_exactly_its_pixels_edges_included() -> None:
    mask = rasterise([SQUARE], 101, 101)
    assert mask.shape == (101, 101)
    assert mask.dtype == np.bool_
    # Corners at 0.25 and 0.75 of (101 - 1) px: pixels 25..75 inclusive on both axes.
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (25, 75, 25, 75)
    assert int(mask.sum()) == 51 * 51


def test_a_triangle_keeps_its_shape_and_the_other_side_of_the_diagonal_is_open() -> None:
    mask = rasterise([[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]], 200, 200)
    assert mask[0, 0]
    assert mask[0, 199]
    assert mask[199, 0]
    assert not mask[199, 199]
    assert not mask[150, 150]
    assert mask[50, 50]
    # About half the frame (the diagonal itself is covered).
    assert 0.49 < mask.mean() < 0.52


def test_the_same_polygon_covers_the_same_share_at_any_resolution() -> None:
    shares = [
        float(rasterise([SQUARE], w, h).mean()) for w, h in ((64, 48), (640, 360), (1920, 1080))
    ]
    for share in shares:
        assert 0.25 <= share <= 0.30  # never less than the polygon's area, barely more


def test_several_polygons_and_a_full_frame_mask() -> None:
    two = rasterise([[(0, 0), (0.1, 0), (0.1, 0.1)], SQUARE], 100, 100)
    assert two[1, 1]
    assert two[50, 50]
    assert not two[95, 5]
    full = rasterise([[(0, 0), (1, 0), (1, 1), (0, 1)]], 33, 17)
    assert full.all()
    assert not rasterise([], 10, 10).any()


def test_a_frame_without_pixels_is_refused() -> None:
    with pytest.raises(ValueError, match="no pixels"):
        rasterise([SQUARE], 0, 10)


# ------------------------------------------------------------------ the guard


def test_masked_pixels_are_black_in_a_copy_and_the_rest_untouched() -> None:
    guard = PrivacyGuard(lambda: policy(gate={"masks": [SQUARE]}), now=lambda: NOW)
    image = frame()
    out = guard.admit("gate", image)
    assert out is not None
    mask = rasterise([SQUARE], 64, 48)
    assert not out[mask].any()
    assert (out[~mask] == 200).all()
    assert (image == 200).all(), "the source's own array is not changed"
    assert guard.admit("other-camera", image) is image  # no entry: as captured
    assert guard.frames_masked == 1
    assert guard.version == 1


def test_no_policy_leaves_frames_alone() -> None:
    guard = PrivacyGuard(lambda: None, now=lambda: NOW)
    image = frame()
    assert guard.admit("gate", image) is image
    assert guard.version is None


def test_a_newer_policy_replaces_the_held_one_and_an_older_one_is_ignored(tmp_path: Path) -> None:
    offered: list[PrivacyPolicy | None] = [policy(2, gate={"masks": [SQUARE]})]
    guard = PrivacyGuard(lambda: offered[0], now=lambda: NOW, path=tmp_path / "privacy.json")
    assert guard.version == 2
    offered[0] = policy(1)  # an older config (a stale file) does not unmask
    out = guard.admit("gate", frame())
    assert out is not None
    assert not out[24, 32].any()
    assert guard.version == 2
    offered[0] = policy(3, gate={"masks": []})
    out = guard.admit("gate", frame())
    assert out is not None
    assert (out == 200).all()
    assert json.loads((tmp_path / "privacy.json").read_text())["version"] == 3


def test_the_held_policy_survives_a_restart_before_the_server_sends_it_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "privacy.json"
    first = PrivacyGuard(lambda: policy(4, gate={"masks": [SQUARE]}), now=lambda: NOW, path=path)
    assert first.version == 4
    restarted = PrivacyGuard(lambda: None, now=lambda: NOW, path=path)
    assert restarted.version == 4
    out = restarted.admit("gate", frame())
    assert out is not None
    assert not out[24, 32].any()


def test_an_unreadable_held_policy_is_ignored_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "privacy.json"
    path.write_text("{not json", encoding="utf-8")
    guard = PrivacyGuard(lambda: None, now=lambda: NOW, path=path)
    assert guard.version is None
    assert "unreadable" in caplog.text
    assert path.read_text(encoding="utf-8") == "{not json"  # left for a person to look at


def private(allow: list[str], expires: datetime) -> dict[str, Any]:
    return {"owner": "Pearl Plaza", "agreement": "KP-DSA-2026-014",
            "expires_at": expires.isoformat(), "allow": allow}  # fmt: skip


def test_a_private_camera_gives_nothing_once_its_agreement_has_expired() -> None:
    clock = [NOW]
    terms = private(["plates"], NOW + timedelta(hours=1))
    guard = PrivacyGuard(lambda: policy(1, lobby={"private": terms}), now=lambda: clock[0])
    assert guard.admit("lobby", frame()) is not None
    assert guard.allows("lobby", "plates")
    assert not guard.allows("lobby", "faces")  # not in the agreement
    clock[0] = NOW + timedelta(hours=1)
    assert guard.admit("lobby", frame()) is None
    assert not guard.allows("lobby", "plates")
    assert guard.frames_refused == 1
    assert guard.allows("street", "faces")  # a camera of our own: not limited here


def test_a_live_view_only_private_camera_is_never_analysed() -> None:
    terms = private(["live_view"], NOW + timedelta(days=30))
    guard = PrivacyGuard(lambda: policy(1, lobby={"private": terms}), now=lambda: NOW)
    assert guard.admit("lobby", frame()) is None


# -------------------------------------------------------- delivered as config


def base_config() -> Any:
    return config_from_dict({"node_id": "lhr-cam-0001", "serial": "SN-1", "data_dir": "/tmp/x"})


def test_the_policy_arrives_as_a_runtime_config_change_and_changes_the_config_hash() -> None:
    config = base_config()
    text = json.dumps({"version": 7, "cameras": {"gate": {"masks": [SQUARE]}}})
    changed = apply_changes(config, {"privacy.policy": text})
    assert changed.privacy.policy is not None
    assert changed.privacy.policy.version == 7
    assert config_hash(changed) != config_hash(config)
    # Other runtime changes later keep it.
    again = apply_changes(changed, {"telemetry.interval_s": 30})
    assert again.privacy.policy == changed.privacy.policy


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not valid"),
        (json.dumps({"version": 0, "cameras": {}}), "version"),
        (json.dumps({"version": 1, "cameras": {"g": {"masks": [[[0, 0], [2, 0], [1, 1]]]}}}), "1"),
        (json.dumps({"version": 1, "cameras": {"g": {"masks": [[[0, 0], [1, 0]]]}}}), "at least 3"),
        (json.dumps({"version": 1, "cameras": {"g": {"private": NAIVE_EXPIRY}}}), "UTC offset"),
        (json.dumps({"version": 1, "cameras": {"g": {"masks": [], "extra": 1}}}), "extra"),
    ],
)
def test_a_bad_policy_is_refused_and_the_config_is_unchanged(text: str, says: str) -> None:
    config = base_config()
    with pytest.raises(ConfigError, match=says):
        apply_changes(config, {"privacy.policy": text})
    assert config.privacy.policy is None


def test_a_faces_only_private_camera_is_admitted_for_faces_but_not_plates() -> None:
    terms = private(["faces"], NOW + timedelta(days=30))
    guard = PrivacyGuard(lambda: policy(1, lobby={"private": terms}), now=lambda: NOW)
    assert guard.admit("lobby", frame()) is not None
    assert guard.allows("lobby", "faces")
    assert not guard.allows("lobby", "plates")  # the plate stage asks this on every frame
    assert guard.frames_refused == 0
