"""A stand-in for an ONVIF camera's SOAP services on 127.0.0.1 — not a real camera.

It implements only the SOAP mapping `edge_agent.camera.onvif` uses, with
canned answers shaped like a Hikvision/Dahua-style Profile S device:
``GetSystemDateAndTime`` (unauthenticated), and, behind a WS-Security
UsernameToken checked the way a camera checks it (user, PasswordDigest
recomputed from the nonce, created and password, ``Created`` within
`token_window_s` of the *camera's* clock), ``GetDeviceInformation``,
``GetServices`` / ``GetCapabilities``, ``GetProfiles`` and ``GetStreamUri``.
It serves no video: the stream URI it hands out is whatever the test gives
(an MJPEG server, or an address nobody listens on). Its service addresses
name 127.0.0.2 on purpose: the client must use the host it was given.

Knobs a test turns: the camera's clock (`camera_time`), the profiles, no
``GetServices`` (an older device), no UTC time, a malformed answer to one
operation. What it was asked is recorded in `calls` and `refused`.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.etree import ElementTree as ET

__all__ = ["OnvifStandIn", "StandInProfile", "onvif_standin"]

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
OPEN = (
    f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="{SOAP}" '
    'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
    'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
    'xmlns:tt="http://www.onvif.org/ver10/schema" '
    'xmlns:ter="http://www.onvif.org/ver10/error"><env:Body>'
)
CLOSE = "</env:Body></env:Envelope>"


@dataclass
class StandInProfile:
    token: str
    name: str
    width: int
    height: int
    fps: int = 25


@dataclass
class OnvifStandIn:
    """What the stand-in answers; see the module docstring."""

    username: str = "admin"
    password: str = "s3cret-pw"
    stream_uri: str = "rtsp://127.0.0.2:554/Streaming/Channels/101"
    camera_time: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    profiles: list[StandInProfile] = field(
        default_factory=lambda: [
            StandInProfile("Profile_101", "mainStream", 1920, 1080, 25),
            StandInProfile("Profile_102", "subStream", 640, 360, 15),
        ]
    )
    get_services: bool = True
    utc_time: bool = True
    malformed: str | None = None  # an operation answered with broken XML
    token_window_s: float = 10.0
    calls: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # operations refused NotAuthorized
    stream_tokens: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def source(self, *, password: str | None = None, profile: str = "") -> str:
        secret = self.password if password is None else password
        tail = f"/{profile}" if profile else ""
        return f"onvif://{self.username}:{secret}@127.0.0.1:{self.port}{tail}"

    # ---------------------------------------------------------------- answers

    def answer(self, body: bytes) -> tuple[int, str]:
        root = ET.fromstring(body)
        request = root.find(f"{{{SOAP}}}Body")
        assert request is not None, "no SOAP Body"
        assert len(request), "an empty SOAP Body"
        operation = request[0].tag.rsplit("}", 1)[-1]
        self.calls.append(operation)
        if operation != "GetSystemDateAndTime" and not self._authorised(root):
            self.refused.append(operation)
            return 400, self._fault("env:Sender", "ter:NotAuthorized", "Sender not Authorized")
        if operation == self.malformed:
            return 200, OPEN + "<trt:GetProfilesResponse><trt:Profiles token="
        handler = getattr(self, f"_{operation}", None)
        if handler is None:
            return 400, self._fault("env:Receiver", "ter:ActionNotSupported", "not supported")
        result: tuple[int, str] = handler(request[0])
        return result

    def _authorised(self, root: ET.Element) -> bool:
        token = root.find(f".//{{{WSSE}}}UsernameToken")
        if token is None:
            return False
        user = token.findtext(f"{{{WSSE}}}Username")
        digest = token.findtext(f"{{{WSSE}}}Password")
        nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
        created = token.findtext(f"{{{WSU}}}Created") or ""
        raw = base64.b64decode(nonce) + created.encode() + self.password.encode()
        expected = base64.b64encode(hashlib.sha1(raw).digest()).decode()
        try:
            at = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return False
        fresh = abs((at - self.camera_time()).total_seconds()) <= self.token_window_s
        return user == self.username and digest == expected and fresh

    @staticmethod
    def _fault(code: str, subcode: str, reason: str) -> str:
        return (
            f"{OPEN}<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode>"
            f"<env:Value>{subcode}</env:Value></env:Subcode></env:Code><env:Reason>"
            f'<env:Text xml:lang="en">{reason}</env:Text></env:Reason></env:Fault>{CLOSE}'
        )

    def _GetSystemDateAndTime(self, _: ET.Element) -> tuple[int, str]:
        now = self.camera_time().astimezone(timezone.utc)
        local = now + timedelta(hours=5)
        utc = (
            f"<tt:UTCDateTime><tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}"
            f"</tt:Minute><tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>"
            f"{now.year}</tt:Year><tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day>"
            "</tt:Date></tt:UTCDateTime>"
        )
        return 200, (
            f"{OPEN}<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>PKT-5</tt:TZ></tt:TimeZone>"
            f"{utc if self.utc_time else ''}<tt:LocalDateTime><tt:Time><tt:Hour>{local.hour}"
            f"</tt:Hour><tt:Minute>{local.minute}</tt:Minute><tt:Second>{local.second}"
            f"</tt:Second></tt:Time><tt:Date><tt:Year>{local.year}</tt:Year><tt:Month>"
            f"{local.month}</tt:Month><tt:Day>{local.day}</tt:Day></tt:Date></tt:LocalDateTime>"
            f"</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>{CLOSE}"
        )

    def _GetDeviceInformation(self, _: ET.Element) -> tuple[int, str]:
        return 200, (
            f"{OPEN}<tds:GetDeviceInformationResponse><tds:Manufacturer>StandIn</tds:Manufacturer>"
            "<tds:Model>SOAP-1</tds:Model><tds:FirmwareVersion>V5.7.3 build 220112"
            "</tds:FirmwareVersion><tds:SerialNumber>SI-0001</tds:SerialNumber>"
            f"<tds:HardwareId>88</tds:HardwareId></tds:GetDeviceInformationResponse>{CLOSE}"
        )

    def _GetServices(self, _: ET.Element) -> tuple[int, str]:
        if not self.get_services:
            return 400, self._fault("env:Receiver", "ter:ActionNotSupported", "no GetServices")
        services = [
            ("http://www.onvif.org/ver10/device/wsdl", "/onvif/device_service"),
            ("http://www.onvif.org/ver10/media/wsdl", "/onvif/media_service"),
            ("http://www.onvif.org/ver20/media/wsdl", "/onvif/media2_service"),
        ]
        listed = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>"
            f"http://127.0.0.2/{path.lstrip('/')}</tds:XAddr><tds:Version><tt:Major>2</tt:Major>"
            "<tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, path in services
        )
        return 200, f"{OPEN}<tds:GetServicesResponse>{listed}</tds:GetServicesResponse>{CLOSE}"

    def _GetCapabilities(self, _: ET.Element) -> tuple[int, str]:
        return 200, (
            f"{OPEN}<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Media><tt:XAddr>"
            "http://127.0.0.2/onvif/Media</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            f"</tds:Capabilities></tds:GetCapabilitiesResponse>{CLOSE}"
        )

    def _GetProfiles(self, _: ET.Element) -> tuple[int, str]:
        listed = "".join(
            f'<trt:Profiles token="{p.token}" fixed="true"><tt:Name>{p.name}</tt:Name>'
            '<tt:VideoSourceConfiguration token="VideoSourceToken"><tt:Name>VideoSource_1'
            "</tt:Name></tt:VideoSourceConfiguration>"
            f'<tt:VideoEncoderConfiguration token="VideoEncoderToken_{p.token}"><tt:Name>'
            f"VideoEncoder_{p.token}</tt:Name><tt:Encoding>H264</tt:Encoding><tt:Resolution>"
            f"<tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height></tt:Resolution>"
            f"<tt:RateControl><tt:FrameRateLimit>{p.fps}</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit>"
            "</tt:RateControl></tt:VideoEncoderConfiguration></trt:Profiles>"
            for p in self.profiles
        )
        audio_only = '<trt:Profiles token="Audio_1"><tt:Name>audio</tt:Name></trt:Profiles>'
        return 200, (
            f"{OPEN}<trt:GetProfilesResponse>{listed}{audio_only}</trt:GetProfilesResponse>{CLOSE}"
        )

    def _GetStreamUri(self, request: ET.Element) -> tuple[int, str]:
        token = request.findtext("{http://www.onvif.org/ver10/media/wsdl}ProfileToken") or ""
        self.stream_tokens.append(token)
        return 200, (
            f"{OPEN}<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{self.stream_uri}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
            "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
            f"</trt:GetStreamUriResponse>{CLOSE}"
        )


@contextmanager
def onvif_standin(standin: OnvifStandIn | None = None) -> Iterator[OnvifStandIn]:
    """Serve `standin` on 127.0.0.1 (a free port, in `standin.port`) while the block runs."""
    device = standin or OnvifStandIn()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, text = device.answer(self.rfile.read(length))
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    device.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield device
    finally:
        server.shutdown()
        server.server_close()
