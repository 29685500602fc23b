"""The node's ONVIF client against the SOAP stand-in on 127.0.0.1 (tests/support/onvif_standin.py).

The stand-in is a stand-in of the SOAP mapping, not a camera: it checks the
WS-Security digest the way a camera does and answers with canned documents.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from datetime import datetime, timedelta, timezone

import pytest

from edge_agent.camera.errors import CameraError
from edge_agent.camera.onvif import (
    Limits,
    OnvifBadSource,
    OnvifError,
    OnvifFault,
    OnvifMalformed,
    OnvifNoProfile,
    OnvifNotAuthorized,
    OnvifUnreachable,
    Profile,
    choose_profile,
    parse_source,
    password_digest,
    resolve,
    security_header,
)
from edge_agent.camera.standards import Standards
from tests.support.onvif_standin import OnvifStandIn, StandInProfile, onvif_standin

NOW = datetime(2026, 12, 1, 0, 0, 0, tzinfo=timezone.utc)


def fixed(at: datetime = NOW) -> datetime:
    return at


def test_the_password_digest_matches_a_vector_computed_by_hand() -> None:
    nonce = bytes(range(16))  # 00 01 … 0f: "AAECAwQFBgcICQoLDA0ODw==" in base64
    created = "2026-12-01T00:00:00.000Z"
    # sha1(nonce ‖ created ‖ password) = 1fc53c8de4aaf9781eca8e9ad8f6574b4eb6f719, by hand:
    by_hand = hashlib.sha1(nonce + b"2026-12-01T00:00:00.000Z" + b"s3cret-pw").hexdigest()
    assert by_hand == "1fc53c8de4aaf9781eca8e9ad8f6574b4eb6f719"
    assert base64.b64encode(bytes.fromhex(by_hand)).decode() == "H8U8jeSq+Xgeyo6a2PZXS0629xk="
    assert password_digest(nonce, created, "s3cret-pw") == "H8U8jeSq+Xgeyo6a2PZXS0629xk="
    header = security_header("admin", "s3cret-pw", created=NOW, nonce=nonce)
    assert "H8U8jeSq+Xgeyo6a2PZXS0629xk=" in header
    assert "AAECAwQFBgcICQoLDA0ODw==" in header
    assert "<wsu:Created>2026-12-01T00:00:00.000Z</wsu:Created>" in header
    assert "s3cret-pw" not in header


def test_an_onvif_source_parses_with_its_profile_and_escaped_password() -> None:
    source = parse_source("onvif://admin:p%40ss%2Fw@cam.plaza.local:8080/mainStream")
    assert (source.host, source.port, source.username) == ("cam.plaza.local", 8080, "admin")
    assert source.password == "p@ss/w"
    assert source.profile == "mainStream"
    assert "p@ss" not in repr(source)
    bare = parse_source("onvif://10.0.0.7")
    assert (bare.port, bare.username, bare.profile) == (80, "", None)


@pytest.mark.parametrize(
    "source",
    [
        "onvif://",
        "onvif://admin:pw@",
        "onvif://admin:pw@host:99999",
        "onvif://admin:pa/ss@host",  # an unescaped '/' would put the password in the path
        "onvif://admin:pw@host/a/b",
        "onvif://admin:pw@host/main?x=1",
        "onvif://:pw@host",
        "rtsp://admin:pw@host",
    ],
)
def test_a_malformed_onvif_source_is_refused_without_its_password(source: str) -> None:
    with pytest.raises(OnvifBadSource) as caught:
        parse_source(source)
    assert "pw" not in str(caught.value).replace("password", "")
    assert "pa/ss" not in str(caught.value)


def test_resolve_finds_the_best_profile_its_stream_and_the_camera_clock() -> None:
    with onvif_standin(OnvifStandIn(camera_time=lambda: NOW + timedelta(seconds=1))) as device:
        resolved = resolve(device.source(), now=fixed, standards=Standards())
    assert device.calls == [
        "GetSystemDateAndTime", "GetDeviceInformation", "GetServices", "GetProfiles",
        "GetStreamUri",
    ]  # fmt: skip
    assert device.refused == []
    assert device.stream_tokens == ["Profile_101"]  # 1920x1080 over the 640x360 sub-stream
    assert resolved.profile.width == 1920
    assert resolved.clock_skew_s == pytest.approx(1.0)
    assert resolved.device.manufacturer == "StandIn"
    # The camera said 127.0.0.2 (its LAN address); the node uses the host it was given,
    # and logs in to the RTSP stream with the ONVIF account.
    assert resolved.stream_uri == "rtsp://admin:s3cret-pw@127.0.0.1:554/Streaming/Channels/101"
    assert resolved.stream_shown == "rtsp://***@127.0.0.1:554/Streaming/Channels/101"
    assert "s3cret" not in str(resolved.as_dict()) + repr(resolved)


def test_the_profile_named_in_the_source_is_used_by_token_or_name() -> None:
    with onvif_standin() as device:
        resolve(device.source(profile="subStream"), now=lambda: datetime.now(timezone.utc))
        resolve(device.source(profile="Profile_102"), now=lambda: datetime.now(timezone.utc))
        with pytest.raises(OnvifNoProfile, match="no profile 'thirdStream'"):
            resolve(device.source(profile="thirdStream"), now=lambda: datetime.now(timezone.utc))
    assert device.stream_tokens == ["Profile_102", "Profile_102"]


def test_no_profile_meeting_the_minimums_is_below_standard() -> None:
    small = [StandInProfile("p1", "main", 1280, 720, 25), StandInProfile("p2", "sub", 640, 360)]
    with (
        onvif_standin(OnvifStandIn(profiles=small)) as device,
        pytest.raises(OnvifNoProfile) as caught,
    ):
        resolve(
            device.source(),
            now=lambda: datetime.now(timezone.utc),
            standards=Standards(min_width=1920, min_height=1080),
        )
    assert caught.value.fault_code == "camera_below_standard"
    assert "meets 1920x1080 at 10 fps" in str(caught.value)
    assert "main (1280x720 25 fps)" in str(caught.value)
    assert "GetStreamUri" not in device.calls


def test_choose_profile_weighs_resolution_then_frame_rate_and_skips_audio_only() -> None:
    profiles = [
        Profile("a", "audio"),
        Profile("b", "slow-big", 2560, 1440, 5.0),
        Profile("c", "main", 1920, 1080, 25.0),
        Profile("d", "main-12", 1920, 1080, 12.0),
    ]
    chosen = choose_profile(profiles, named=None, standards=Standards(min_fps=10), address="x")
    assert chosen.token == "c"
    anything = choose_profile(profiles, named=None, standards=None, address="x")
    assert anything.token == "b"


def test_a_camera_clock_off_by_minutes_still_accepts_our_tokens() -> None:
    # The camera refuses a token whose Created is over 10 s from its own clock: the client
    # writes Created in the camera's time (the offset from GetSystemDateAndTime).
    late = OnvifStandIn(camera_time=lambda: datetime.now(timezone.utc) - timedelta(minutes=7))
    with onvif_standin(late) as device:
        resolved = resolve(device.source(), now=lambda: datetime.now(timezone.utc))
    assert device.refused == []
    assert resolved.clock_skew_s is not None
    assert -421 < resolved.clock_skew_s < -419


def test_a_wrong_password_is_a_not_authorized_fault() -> None:
    with onvif_standin() as device, pytest.raises(OnvifNotAuthorized) as caught:
        resolve(device.source(password="wrong-pw"), now=lambda: datetime.now(timezone.utc))
    assert device.refused == ["GetDeviceInformation"]
    assert isinstance(caught.value, OnvifFault)
    assert isinstance(caught.value, CameraError)
    assert caught.value.subcode == "ter:NotAuthorized"
    assert caught.value.fault_code == "camera_onvif_error"
    assert "wrong-pw" not in str(caught.value)
    assert device.address in str(caught.value)


def test_an_older_device_without_get_services_is_asked_for_its_capabilities() -> None:
    with onvif_standin(OnvifStandIn(get_services=False)) as device:
        resolve(device.source(), now=lambda: datetime.now(timezone.utc))
    assert device.calls[2:5] == ["GetServices", "GetCapabilities", "GetProfiles"]
    assert device.stream_tokens == ["Profile_101"]


def test_a_camera_that_gives_no_utc_time_has_an_unknown_clock() -> None:
    with onvif_standin(OnvifStandIn(utc_time=False)) as device:
        resolved = resolve(device.source(), now=lambda: datetime.now(timezone.utc))
    assert resolved.clock_skew_s is None


def test_malformed_xml_is_a_typed_error() -> None:
    with (
        onvif_standin(OnvifStandIn(malformed="GetProfiles")) as device,
        pytest.raises(OnvifMalformed, match="malformed XML"),
    ):
        resolve(device.source(), now=lambda: datetime.now(timezone.utc))


def test_an_unreachable_device_is_a_typed_error_naming_no_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OnvifUnreachable) as caught:
        resolve(
            f"onvif://admin:s3cret-pw@127.0.0.1:{port}",
            now=lambda: datetime.now(timezone.utc),
            limits=Limits(timeout_s=2.0),
        )
    assert caught.value.fault_code == "camera_lost"
    assert isinstance(caught.value, OnvifError)
    assert "s3cret" not in str(caught.value)
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_a_document_type_declaration_is_refused() -> None:
    from edge_agent.camera.onvif import _parse

    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&lol;'
        b"</s:Body></s:Envelope>"
    )
    with pytest.raises(OnvifMalformed, match="document type declaration"):
        _parse(bomb, "x:80")
    with pytest.raises(OnvifMalformed, match="not a SOAP envelope"):
        _parse(b"<html><body>login</body></html>", "x:80")
