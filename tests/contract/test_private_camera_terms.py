"""The server's private-camera terms are what the node's privacy policy accepts.

The server (`fleet_server.models.privacy`) and the node
(`edge_agent.camera.privacy`, `edge_agent.camera.standards`) each define the
terms, since the server may not import the node's code; these checks keep
them in step: the same minimums with the same defaults and bounds, the same
sources accepted and refused, and a document the server builds is one the
node validates.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from edge_agent.camera.privacy import PrivacyPolicy, PrivateSource, redact
from edge_agent.camera.standards import Standards
from fleet_server.models import utcnow
from fleet_server.models.privacy import CameraStandardsIn, PrivateCameraIn
from fleet_server.privacy.service import redact_source

SOURCES_OK = [
    "rtsp://user:pw@10.0.0.7:554/Streaming/Channels/101",
    "rtsps://cam.example.pk/live",
    "http://127.0.0.1:8080/stream.mjpg",
    "https://plaza.example.pk/mjpeg",
    "/dev/video0",
    "/dev/video12",
]
SOURCES_BAD = ["ftp://10.0.0.7/cam", "rtsp://", "/etc/passwd", "/dev/video123", "cam 7", ""]


def test_the_minimums_have_the_same_fields_defaults_and_bounds() -> None:
    node = Standards.model_json_schema()["properties"]
    server = CameraStandardsIn.model_json_schema()["properties"]
    assert set(node) == set(server)
    for name in node:
        for key in ("default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            assert node[name].get(key) == server[name].get(key), (name, key)


@pytest.mark.parametrize("source", SOURCES_OK)
def test_a_source_the_server_takes_the_node_takes(source: str) -> None:
    ends = utcnow() + timedelta(days=1)
    server = PrivateCameraIn(owner="Pearl Plaza", agreement="KP-DSA-1", expires_at=ends,
                             reason="joins", source=source)  # fmt: skip
    node = PrivateSource(owner="Pearl Plaza", agreement="KP-DSA-1", expires_at=ends,
                         source=server.source)  # fmt: skip
    assert node.source == source
    assert redact(source) == redact_source(source)
    assert "pw" not in redact(source)


@pytest.mark.parametrize("source", SOURCES_BAD)
def test_a_source_the_server_refuses_the_node_refuses(source: str) -> None:
    ends = utcnow() + timedelta(days=1)
    with pytest.raises(ValidationError):
        PrivateCameraIn(owner="Pearl Plaza", agreement="KP-DSA-1", expires_at=ends,
                        reason="joins", source=source)  # fmt: skip
    with pytest.raises(ValidationError):
        PrivateSource(owner="Pearl Plaza", agreement="KP-DSA-1", expires_at=ends, source=source)


def test_terms_with_a_source_and_minimums_are_a_policy_the_node_applies() -> None:
    ends = (utcnow() + timedelta(days=1)).isoformat()
    terms = {"owner": "Pearl Plaza", "agreement": "KP-DSA-1", "expires_at": ends,
             "allow": ["faces"], "source": SOURCES_OK[0],
             "standards": CameraStandardsIn(min_fps=12.5).model_dump()}  # fmt: skip
    policy = PrivacyPolicy.model_validate({"version": 3, "cameras": {"plaza": {"private": terms}}})
    private = policy.cameras["plaza"].private
    assert private is not None
    assert private.standards == Standards(min_fps=12.5)
