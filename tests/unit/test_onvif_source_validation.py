"""The server's check of an ``onvif://`` source and the node's parser agree, and name no password.

The server never imports the node's code (fleet_server.privacy.sources
writes the form's rules again); these cases hold the two to one reading.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.camera.onvif import OnvifBadSource, parse_source
from edge_agent.camera.privacy import PrivateSource
from fleet_server.models.privacy import PrivateCameraIn
from fleet_server.privacy.sources import source_problem

GOOD = [
    "onvif://admin:s3cret-pw@10.20.0.7",
    "onvif://admin:s3cret-pw@10.20.0.7:8080",
    "onvif://admin:s3cret-pw@cam.plaza.local:80/mainStream",
    "onvif://admin:p%40ss%2Fw%3F@10.20.0.7/Profile_101",
    "onvif://10.20.0.7:2020",
    "onvif://admin:s3cret-pw@[fd00::7]:8000/",
]
BAD = [
    "onvif://",
    "onvif://admin:s3cret-pw@",
    "onvif://admin:s3cret-pw@10.20.0.7:70000",
    "onvif://admin:s3cret-pw@10.20.0.7:port",
    "onvif://admin:s3c/ret-pw@10.20.0.7",
    "onvif://admin:s3cret-pw@10.20.0.7/main/sub",
    "onvif://admin:s3cret-pw@10.20.0.7/main?x=1",
    "onvif://admin:s3cret-pw@10.20.0.7#frag",
    "onvif://:s3cret-pw@10.20.0.7",
    "onvif://admin:s3cret-pw@10.20.0.7/" + "p" * 65,
]


@pytest.mark.parametrize("source", GOOD)
def test_a_good_onvif_source_passes_on_both_sides(source: str) -> None:
    assert source_problem(source) is None
    parse_source(source)
    PrivateSource.model_validate(
        {"owner": "Pearl Plaza", "agreement": "KP-DSA-14", "expires_at": "2099-01-01T00:00:00Z",
         "source": source}
    )  # fmt: skip


@pytest.mark.parametrize("source", BAD)
def test_a_malformed_onvif_source_is_refused_on_both_sides_naming_no_password(
    source: str,
) -> None:
    problem = source_problem(source)
    assert problem is not None
    assert "onvif://user:password@host" in problem or "64 characters" in problem
    with pytest.raises(OnvifBadSource):
        parse_source(source)
    with pytest.raises(ValidationError) as caught:
        PrivateCameraIn.model_validate(
            {"owner": "Pearl Plaza", "agreement": "KP-DSA-14",
             "expires_at": "2099-01-01T00:00:00Z", "reason": "onboarding", "source": source}
        )  # fmt: skip
    message = caught.value.errors()[0]["msg"]
    assert "s3cret" not in message
    assert "s3c/ret" not in message


def test_other_sources_keep_their_rules() -> None:
    assert source_problem("rtsp://plaza:pw@10.20.0.7:554/Streaming/Channels/101") is None
    assert source_problem("/dev/video2") is None
    for bad in ("ftp://10.20.0.7/cam", "ONVIF://10.20.0.7", "/etc/passwd", "camera 7"):
        assert source_problem(bad) is not None, bad
