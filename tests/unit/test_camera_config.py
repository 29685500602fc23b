"""Per-camera analytics settings in agent.toml: defaults, masks, and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import ConfigError, config_from_dict, parse_config_text


def base(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"node_id": "lhr-cam-0001", "serial": "SN-1", "data_dir": str(tmp_path), **extra}


TOML = """
node_id = "lhr-cam-0001"
serial = "SN-1"
data_dir = "/var/lib/nigehbaan"

[[cameras]]
type = "sim"
id = "gate"

[[cameras]]
type = "sim"
id = "road"

[analytics.gate]
max_fps = 5
queue_size = 4
detector = "mydetectors:plates"
reader = "myreaders:ocr"

[analytics.gate.motion]
threshold = 30
ignore = [{ rect = [0.0, 0.0, 1.0, 0.2] }, { polygon = [[0.8, 0.8], [1.0, 0.8], [1.0, 1.0]] }]

[evidence]
max_mb = 64
"""


def test_analytics_per_camera_from_toml_and_defaults_for_the_others() -> None:
    config = config_from_dict(parse_config_text(TOML))
    gate = config.camera_analytics("gate")
    assert gate.max_fps == 5.0
    assert gate.queue_size == 4
    assert gate.detector == "mydetectors:plates"
    assert gate.motion.threshold == 30
    assert gate.motion.ignore[0].corners() == [(0.0, 0.0), (1.0, 0.0), (1.0, 0.2), (0.0, 0.2)]
    assert len(gate.motion.ignore[1].corners()) == 3
    road = config.camera_analytics("road")
    assert road.detector is None  # motion only until a detector is named
    assert road.max_fps == 10.0
    assert config.evidence.max_mb == 64.0
    # The dump loads again as the same config (set_config validates a dump).
    assert config_from_dict(config.model_dump(mode="python")) == config


@pytest.mark.parametrize(
    ("analytics", "message"),
    [
        ({"nope": {}}, "not configured"),
        ({"cam-1": {"queue_size": 0}}, "queue_size"),
        ({"cam-1": {"motion": {"blur": 4}}}, "odd"),
        ({"cam-1": {"motion": {"ignore": [{"rect": [0, 0, 2, 1]}]}}}, "fractions"),
        ({"cam-1": {"motion": {"ignore": [{}]}}}, "exactly one of rect, polygon"),
        ({"cam-1": {"fps": 5}}, "fps"),
    ],
)
def test_bad_analytics_settings_are_refused_naming_the_field(
    tmp_path: Path, analytics: dict[str, Any], message: str
) -> None:
    data = base(tmp_path, cameras=[{"type": "sim", "id": "cam-1"}], analytics=analytics)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)
