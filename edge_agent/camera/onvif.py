"""A small ONVIF client: from ``onvif://user:pass@host:port[/profile]`` to a stream URI and a clock.

A private camera (docs/privacy.md) may be registered by its ONVIF device
address instead of a stream URL. When the node opens such a camera (in the
camera's capture thread, `edge_agent.camera.pipeline`), `resolve` talks SOAP
1.2 over HTTP to the device and returns a `Resolved`:

1. ``GetSystemDateAndTime`` (device service, unauthenticated as ONVIF
   allows): the camera's UTC clock against the node's, taken at the middle of
   the round trip — the standards check's clock figure (`clock_skew_s`,
   signed, camera minus node), and the offset the WS-Security ``Created``
   stamps are written in (a camera rejects tokens from "the future" by *its*
   clock);
2. ``GetDeviceInformation`` (maker, model, firmware, serial; for logs and
   stats);
3. ``GetServices`` (``GetCapabilities`` when the device refuses it) for the
   media service's address;
4. ``GetProfiles``, and the profile chosen: the one named in the source
   (token or name), else the highest resolution among the profiles that meet
   the camera's minimums (width, height, and frame-rate limit when the
   profile gives one); none meets them: `OnvifNoProfile`;
5. ``GetStreamUri`` (``RTP-Unicast`` over ``RTSP``) for that profile. The
   ONVIF user and password go into the URI when it carries none (RTSP servers
   on these cameras take the same account), so OpenCV/FFmpeg can log in.

Every request but the first carries a WS-Security UsernameToken with
``PasswordDigest = base64(sha1(nonce + created + password))``
(`password_digest`). Addresses the device reports about itself (service
XAddrs; the stream URI's host) are rewritten to the host the node was given:
a camera behind a site's NAT reports its LAN address, which the node cannot
reach. Only the standard library: `http.client` and `xml.etree`; a response
is read up to `Limits.max_response_bytes`, and one with a document type
declaration is refused (SOAP forbids them; no entity is ever expanded).

Credentials never leave this module in a message: every error and log line
names the device as ``host:port`` only, and `Resolved.stream_shown` is the
stream URI without them (`edge_agent.camera.privacy.redact`).

The exception tree::

    CameraError (edge_agent.camera.errors)
    └── OnvifError             anything ONVIF refused; `fault_code` is the node_fault code
        ├── OnvifUnreachable   no HTTP answer (refused, timed out, reset)   camera_lost
        ├── OnvifFault         a SOAP fault (code, subcode, reason)         camera_onvif_error
        │   └── OnvifNotAuthorized  ter:NotAuthorized, or HTTP 401          camera_onvif_error
        ├── OnvifMalformed     not SOAP, not XML, or a needed element absent camera_onvif_error
        ├── OnvifBadSource     the onvif:// source itself is malformed      camera_onvif_error
        └── OnvifNoProfile     no media profile meets the minimums          camera_below_standard

The pipeline reports an `OnvifError` raised while opening a camera as a
``node_fault`` with its `fault_code` and retries with the same doubling
backoff as a camera that cannot be opened. WS-Discovery is not done.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from xml.etree import ElementTree as ET

from edge_agent.camera.errors import CameraError
from hardware.camera import CameraSource
from hardware.clock import Clock
from hardware.errors import HardwareError

if TYPE_CHECKING:
    from edge_agent.camera.standards import Standards
    from hardware.camera import Image

__all__ = [
    "DeviceInfo",
    "Limits",
    "OnvifBadSource",
    "OnvifCamera",
    "OnvifClient",
    "OnvifError",
    "OnvifFault",
    "OnvifMalformed",
    "OnvifNoProfile",
    "OnvifNotAuthorized",
    "OnvifSource",
    "OnvifUnreachable",
    "Profile",
    "Resolved",
    "choose_profile",
    "is_onvif",
    "open_camera",
    "parse_source",
    "password_digest",
    "resolve",
    "security_header",
]

logger = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
MEDIA_NS = NS["trt"]
DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
NONCE_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
DEVICE_PATH = "/onvif/device_service"
MAX_SOURCE = 500


# ------------------------------------------------------------------ errors


class OnvifError(CameraError):
    """An ONVIF device could not give the node a stream (see the module docstring)."""

    fault_code = "camera_onvif_error"


class OnvifUnreachable(OnvifError):
    """No HTTP answer from the device: connection refused, timed out, reset."""

    fault_code = "camera_lost"


class OnvifFault(OnvifError):
    """The device answered with a SOAP fault."""

    def __init__(
        self, message: str, *, code: str = "", subcode: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.reason = reason


class OnvifNotAuthorized(OnvifFault):
    """The device refused the account (``ter:NotAuthorized``, or HTTP 401)."""


class OnvifMalformed(OnvifError):
    """The answer is not XML, not SOAP, or lacks an element the client needs."""


class OnvifBadSource(OnvifError):
    """The ``onvif://`` source cannot be used (the server validates it first)."""


class OnvifNoProfile(OnvifError):
    """No media profile meets the camera's minimums (or the one named does not exist)."""

    fault_code = "camera_below_standard"


# ------------------------------------------------------------------ source


@dataclass(frozen=True)
class OnvifSource:
    """An ``onvif://[user:password@]host[:port][/profile]`` source, parsed."""

    host: str
    port: int = 80
    username: str = ""
    password: str = field(default="", repr=False)
    profile: str | None = None  # a profile token or name; None: choose by the minimums

    @property
    def address(self) -> str:
        """``host:port`` as errors and logs may name it (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_onvif(source: str) -> bool:
    return source[:8].lower() == "onvif://"


def parse_source(source: str) -> OnvifSource:
    """Parse an ``onvif://`` source; `OnvifBadSource` (never naming the password) when malformed.

    Credentials are percent-encoded where they hold ``@ / : ? #``.
    """
    form = "onvif://user:password@host[:port][/profile]"
    if len(source) > MAX_SOURCE or not is_onvif(source) or any(c.isspace() for c in source):
        raise OnvifBadSource(f"an ONVIF source is {form}")
    try:
        parts = urlsplit(source)
    except ValueError:
        raise OnvifBadSource(f"the ONVIF source has a bad host: {form}") from None
    if parts.query or parts.fragment or "@" in parts.path:
        raise OnvifBadSource(
            "the ONVIF source has a '/', '?', '#' or '@' in the user or password: "
            f"percent-encode them (%2F, %3F, %23, %40): {form}"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise OnvifBadSource(f"the ONVIF source has a bad port (1-65535): {form}") from None
    host = parts.hostname or ""
    if not host:
        raise OnvifBadSource(f"the ONVIF source names no host: {form}")
    if "@" in parts.netloc and not parts.username:
        raise OnvifBadSource(f"the ONVIF source has an '@' but no user: {form}")
    path = parts.path.strip("/")
    if "/" in path:
        raise OnvifBadSource(f"the ONVIF source's path is one profile token or name: {form}")
    profile = unquote(path) if path else None
    if profile is not None and not 0 < len(profile) <= 64:
        raise OnvifBadSource("an ONVIF profile token or name is 1 to 64 characters")
    return OnvifSource(
        host=host,
        port=port,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        profile=profile,
    )


# ------------------------------------------------------------------ WS-Security


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken ``PasswordDigest``: base64(sha1(nonce + created + password))."""
    raw = nonce + created.encode("utf-8") + password.encode("utf-8")
    return base64.b64encode(hashlib.sha1(raw, usedforsecurity=False).digest()).decode("ascii")


def _created(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{at.microsecond // 1000:03d}Z"
    )


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def security_header(username: str, password: str, *, created: datetime, nonce: bytes) -> str:
    """The ``wsse:Security`` header with a UsernameToken (PasswordDigest) for one request."""
    stamp = _created(created)
    return (
        f'<wsse:Security s:mustUnderstand="1" xmlns:wsse="{NS["wsse"]}" xmlns:wsu="{NS["wsu"]}">'
        f"<wsse:UsernameToken><wsse:Username>{_text(username)}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST_TYPE}">{password_digest(nonce, stamp, password)}'
        f"</wsse:Password>"
        f'<wsse:Nonce EncodingType="{NONCE_TYPE}">{base64.b64encode(nonce).decode("ascii")}'
        f"</wsse:Nonce><wsu:Created>{stamp}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, *, header: str = "") -> bytes:
    """A SOAP 1.2 envelope around `body` (which may use the tds/trt/tt prefixes)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:tds="{NS["tds"]}" xmlns:trt="{NS["trt"]}" '
        f'xmlns:tt="{NS["tt"]}"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>'
    ).encode()


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Limits:
    """How long and how much the client waits for and reads from a device."""

    timeout_s: float = 4.0  # per request (connect and each read)
    max_response_bytes: int = 512 * 1024


@dataclass(frozen=True)
class DeviceInfo:
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    serial: str = ""


@dataclass(frozen=True)
class Profile:
    """A media profile with the video encoder figures the choice needs."""

    token: str
    name: str
    width: int | None = None
    height: int | None = None
    fps_limit: float | None = None
    encoding: str = ""

    def summary(self) -> str:
        size = f"{self.width}x{self.height}" if self.width and self.height else "no video"
        fps = f" {self.fps_limit:g} fps" if self.fps_limit else ""
        return f"{self.name or self.token} ({size}{fps})"


@dataclass(frozen=True)
class Resolved:
    """What `resolve` found: the stream to open and the camera's clock against the node's."""

    stream_uri: str = field(repr=False)  # may carry the credentials: never log it
    stream_shown: str  # the same without credentials
    profile: Profile
    device: DeviceInfo
    clock_skew_s: float | None  # camera minus node, seconds; None: the camera gave no UTC time

    def as_dict(self) -> dict[str, object]:
        return {
            "stream": self.stream_shown,
            "profile": self.profile.summary(),
            "device": f"{self.device.manufacturer} {self.device.model}".strip() or None,
            "firmware": self.device.firmware or None,
            "clock_skew_s": round(self.clock_skew_s, 2) if self.clock_skew_s is not None else None,
        }


# ------------------------------------------------------------------ XML


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(node: ET.Element, *names: str) -> ET.Element | None:
    """The first descendant path by local names (namespaces vary between firmwares)."""
    current: ET.Element | None = node
    for name in names:
        if current is None:
            return None
        current = next((c for c in current.iter() if c is not current and _local(c.tag) == name),
                       None)  # fmt: skip
    return current


def _child_text(node: ET.Element | None, *names: str) -> str:
    found = _find(node, *names) if node is not None else None
    return (found.text or "").strip() if found is not None else ""


def _parse(data: bytes, address: str) -> ET.Element:
    """The SOAP Body of a response; `OnvifFault` for a fault, `OnvifMalformed` for the rest."""
    head = data[:2048].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise OnvifMalformed(f"ONVIF device {address} sent a document type declaration")
    try:
        # Safe without defusedxml: a DTD (the only way to declare an entity) is refused above.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as exc:
        raise OnvifMalformed(f"ONVIF device {address} sent malformed XML ({exc})") from None
    if _local(root.tag) != "Envelope":
        raise OnvifMalformed(f"ONVIF device {address} sent XML that is not a SOAP envelope")
    body = next((c for c in root if _local(c.tag) == "Body"), None)
    if body is None:
        raise OnvifMalformed(f"ONVIF device {address} sent a SOAP envelope with no Body")
    fault = next((c for c in body if _local(c.tag) == "Fault"), None)
    if fault is not None:
        code = _child_text(fault, "Code", "Value")
        subcode = _child_text(fault, "Subcode", "Value")
        reason = _child_text(fault, "Reason", "Text")[:200]
        kind = OnvifNotAuthorized if _local_name(subcode) == "NotAuthorized" else OnvifFault
        raise kind(
            f"ONVIF device {address} answered a SOAP fault {subcode or code}"
            + (f": {reason}" if reason else ""),
            code=code,
            subcode=subcode,
            reason=reason,
        )
    return body


def _local_name(qname: str) -> str:
    return qname.rsplit(":", 1)[-1]


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_system_time(body: ET.Element, address: str) -> datetime | None:
    """The camera's UTC time from a GetSystemDateAndTime answer (None when it gives none)."""
    utc = _find(body, "UTCDateTime")
    if utc is None:
        return None  # only a local time and a POSIX TZ string: not worth guessing from
    parts = [_int(_child_text(utc, "Date", n)) for n in ("Year", "Month", "Day")] + [
        _int(_child_text(utc, "Time", n)) for n in ("Hour", "Minute", "Second")
    ]
    if any(p is None for p in parts):
        raise OnvifMalformed(f"ONVIF device {address} sent an incomplete UTCDateTime")
    year, month, day, hour, minute, second = (int(p or 0) for p in parts)
    try:
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc)
    except ValueError:
        raise OnvifMalformed(f"ONVIF device {address} sent an impossible UTCDateTime") from None


def parse_device_info(body: ET.Element) -> DeviceInfo:
    return DeviceInfo(
        manufacturer=_child_text(body, "Manufacturer")[:64],
        model=_child_text(body, "Model")[:64],
        firmware=_child_text(body, "FirmwareVersion")[:64],
        serial=_child_text(body, "SerialNumber")[:64],
    )


def parse_media_xaddr_services(body: ET.Element) -> str | None:
    """The media (ver10) service's XAddr from a GetServices answer."""
    for service in body.iter():
        if _local(service.tag) != "Service":
            continue
        if _child_text(service, "Namespace") == MEDIA_NS:
            return _child_text(service, "XAddr") or None
    return None


def parse_media_xaddr_capabilities(body: ET.Element) -> str | None:
    """The media service's XAddr from a GetCapabilities answer."""
    return _child_text(body, "Media", "XAddr") or None


def parse_profiles(body: ET.Element, address: str) -> list[Profile]:
    profiles = []
    for node in body.iter():
        if _local(node.tag) != "Profiles":
            continue
        token = node.get("token") or ""
        if not token:
            raise OnvifMalformed(f"ONVIF device {address} sent a profile with no token")
        encoder = _find(node, "VideoEncoderConfiguration")
        fps = _child_text(encoder, "RateControl", "FrameRateLimit")
        try:
            fps_limit = float(fps) if fps else None
        except ValueError:
            fps_limit = None
        profiles.append(
            Profile(
                token=token[:64],
                name=next((c.text or "" for c in node if _local(c.tag) == "Name"), "").strip()[:64],
                width=_int(_child_text(encoder, "Resolution", "Width")),
                height=_int(_child_text(encoder, "Resolution", "Height")),
                fps_limit=fps_limit,
                encoding=_child_text(encoder, "Encoding")[:16],
            )
        )
    return profiles


def parse_stream_uri(body: ET.Element, address: str) -> str:
    uri = _child_text(body, "MediaUri", "Uri")
    if not uri:
        raise OnvifMalformed(f"ONVIF device {address} sent no stream URI")
    if not uri.lower().startswith(("rtsp://", "rtsps://", "http://", "https://")):
        raise OnvifMalformed(f"ONVIF device {address} sent a stream URI that is not RTSP/HTTP")
    return uri


def choose_profile(
    profiles: list[Profile], *, named: str | None, standards: Standards | None, address: str
) -> Profile:
    """The profile named (token first, then name), else the highest resolution meeting minimums."""
    if named is not None:
        for key in ("token", "name"):
            found = next((p for p in profiles if getattr(p, key) == named), None)
            if found is not None:
                return found
        known = ", ".join(p.token for p in profiles[:8]) or "none"
        raise OnvifNoProfile(f"ONVIF device {address} has no profile {named!r} (has: {known})")
    video = [p for p in profiles if p.width and p.height]
    fit = [
        p
        for p in video
        if standards is None
        or (
            (p.width or 0) >= standards.min_width
            and (p.height or 0) >= standards.min_height
            and (p.fps_limit is None or p.fps_limit >= standards.min_fps)
        )
    ]
    if not fit:
        best = ", ".join(p.summary() for p in video[:4]) or "no video profile"
        wanted = (
            f"{standards.min_width}x{standards.min_height} at {standards.min_fps:g} fps"
            if standards is not None
            else "video"
        )
        raise OnvifNoProfile(f"no ONVIF profile on {address} meets {wanted} (has: {best})")
    return max(fit, key=lambda p: ((p.width or 0) * (p.height or 0), p.fps_limit or 0.0))


# ------------------------------------------------------------------ client


class OnvifClient:
    """SOAP requests to one device; `now` is the node's clock (UTC), for the skew and tokens."""

    def __init__(
        self,
        source: OnvifSource,
        *,
        now: Callable[[], datetime],
        limits: Limits | None = None,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.source = source
        self.now = now
        self.limits = limits or Limits()
        self._nonce = nonce
        self.offset_s = 0.0  # camera minus node, once measured: the tokens' Created is its time
        self.requests = 0

    def _url(self, xaddr: str | None) -> tuple[str, str]:
        """(scheme, path) to post to: a service XAddr's path on the host the node was given."""
        if xaddr is None:
            return "http", DEVICE_PATH
        try:
            parts = urlsplit(xaddr)
        except ValueError:
            raise OnvifMalformed(f"ONVIF device {self.source.address} sent a bad XAddr") from None
        if parts.scheme not in ("http", "https"):
            raise OnvifMalformed(f"ONVIF device {self.source.address} sent a non-HTTP XAddr")
        return parts.scheme, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def call(self, body: str, *, xaddr: str | None = None, auth: bool = True) -> ET.Element:
        """POST one request; the answer's SOAP Body (or the typed error)."""
        header = ""
        if auth and self.source.username:
            created = self.now() + timedelta(seconds=self.offset_s)
            header = security_header(
                self.source.username, self.source.password, created=created, nonce=self._nonce(16)
            )
        scheme, path = self._url(xaddr)
        address = self.source.address
        connection_type = (
            http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_type(
            self.source.host, self.source.port, timeout=self.limits.timeout_s
        )
        self.requests += 1
        try:
            connection.request(
                "POST",
                path,
                body=envelope(body, header=header),
                headers={"Content-Type": "application/soap+xml; charset=utf-8"},
            )
            response = connection.getresponse()
            data = response.read(self.limits.max_response_bytes + 1)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else type(exc).__name__
            raise OnvifUnreachable(f"ONVIF device {address} unreachable ({reason})") from None
        finally:
            connection.close()
        if len(data) > self.limits.max_response_bytes:
            raise OnvifMalformed(
                f"ONVIF device {address} sent more than {self.limits.max_response_bytes} bytes"
            )
        if status == 401 and b"Fault" not in data:
            raise OnvifNotAuthorized(f"ONVIF device {address} refused the account (HTTP 401)")
        if not data.strip():
            raise OnvifMalformed(f"ONVIF device {address} sent an empty answer (HTTP {status})")
        return _parse(data, address)

    def system_time(self) -> tuple[datetime | None, float | None]:
        """The camera's UTC time and its skew against the node's clock (middle of the trip)."""
        before = self.now()
        body = self.call("<tds:GetSystemDateAndTime/>", auth=False)
        after = self.now()
        camera = parse_system_time(body, self.source.address)
        if camera is None:
            return None, None
        node = before + (after - before) / 2
        skew = (camera - node).total_seconds()
        self.offset_s = skew
        return camera, skew

    def device_information(self) -> DeviceInfo:
        return parse_device_info(self.call("<tds:GetDeviceInformation/>"))

    def media_xaddr(self) -> str:
        try:
            body = self.call(
                "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability>"
                "</tds:GetServices>"
            )
            found = parse_media_xaddr_services(body)
        except OnvifNotAuthorized:
            raise
        except OnvifFault:  # an older device: GetServices is not there
            found = None
        if found is None:
            body = self.call(
                "<tds:GetCapabilities><tds:Category>Media</tds:Category></tds:GetCapabilities>"
            )
            found = parse_media_xaddr_capabilities(body)
        if found is None:
            raise OnvifMalformed(f"ONVIF device {self.source.address} names no media service")
        return found

    def profiles(self, media: str) -> list[Profile]:
        return parse_profiles(self.call("<trt:GetProfiles/>", xaddr=media), self.source.address)

    def stream_uri(self, media: str, profile: Profile) -> str:
        body = self.call(
            "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
            "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>"
            f"<trt:ProfileToken>{_text(profile.token)}</trt:ProfileToken></trt:GetStreamUri>",
            xaddr=media,
        )
        return parse_stream_uri(body, self.source.address)


def _stream_for(uri: str, source: OnvifSource) -> tuple[str, str]:
    """The stream URI on the host the node was given, with the account; and as shown."""
    parts = urlsplit(uri)
    port = f":{parts.port}" if parts.port else ""
    host = f"[{source.host}]" if ":" in source.host else source.host
    account = ""
    if parts.username:
        account = parts.netloc.rsplit("@", 1)[0] + "@"
    elif source.username:
        account = f"{quote(source.username, safe='')}:{quote(source.password, safe='')}@"
    shown = urlunsplit((parts.scheme, f"{'***@' if account else ''}{host}{port}", parts.path,
                        "", ""))  # fmt: skip
    full = urlunsplit((parts.scheme, f"{account}{host}{port}", parts.path, parts.query, ""))
    return full, shown


def resolve(
    source: str | OnvifSource,
    *,
    now: Callable[[], datetime],
    standards: Standards | None = None,
    limits: Limits | None = None,
    nonce: Callable[[int], bytes] = os.urandom,
) -> Resolved:
    """Ask the device for its clock, identity, profiles and the chosen profile's stream URI."""
    parsed = parse_source(source) if isinstance(source, str) else source
    client = OnvifClient(parsed, now=now, limits=limits, nonce=nonce)
    started = time.monotonic()
    _camera_time, skew = client.system_time()
    device = client.device_information()
    media = client.media_xaddr()
    profile = choose_profile(
        client.profiles(media), named=parsed.profile, standards=standards, address=parsed.address
    )
    uri, shown = _stream_for(client.stream_uri(media, profile), parsed)
    logger.info(
        "ONVIF %s (%s %s): profile %s, stream %s, clock %s, %d requests in %.2fs",
        parsed.address, device.manufacturer or "?", device.model or "?", profile.summary(), shown,
        f"{skew:+.1f} s" if skew is not None else "unknown", client.requests,
        time.monotonic() - started,
    )  # fmt: skip
    return Resolved(
        stream_uri=uri, stream_shown=shown, profile=profile, device=device, clock_skew_s=skew
    )


# ------------------------------------------------------------------ the camera


class OnvifCamera(CameraSource):
    """The stream an ONVIF device named, opened with OpenCV, stamped with the camera's clock.

    Each frame's `source_time` is the node's time plus the skew measured at
    connect (``GetSystemDateAndTime``): the camera's own wall clock as well as
    the node can know it without RTCP sender reports (which OpenCV does not
    expose), so the standards check on connect has a real clock figure.
    """

    name = "onvif"

    def __init__(self, inner: CameraSource, resolved: Resolved, *, camera_id: str) -> None:
        super().__init__(camera_id=camera_id, clock=inner.clock)
        self.inner = inner
        self.resolved = resolved
        self.source = f"onvif stream {resolved.stream_shown}"

    @property
    def clock_skew_s(self) -> float | None:
        return self.resolved.clock_skew_s

    def _grab(self, timeout_s: float | None) -> Image | None:
        frame = self.inner.read(timeout_s=timeout_s)
        if frame is None:
            return None
        skew = self.resolved.clock_skew_s
        self.source_time = None if skew is None else self.clock.now() + timedelta(seconds=skew)
        return frame.image

    def close(self) -> None:
        super().close()
        self.inner.close()


def open_camera(
    camera_id: str,
    source: str,
    *,
    clock: Clock,
    standards: Standards | None = None,
    limits: Limits | None = None,
) -> OnvifCamera:
    """Resolve `source` through ONVIF and open its stream (blocking: a capture thread's work).

    Raises an `OnvifError` when ONVIF fails, a `HardwareError` when the stream
    it named cannot be opened; neither message carries the credentials.
    """
    from hardware.camera import OpenCvCamera, OpenCvCameraConfig, load_camera

    resolved = resolve(source, now=clock.now, standards=standards, limits=limits)
    config = OpenCvCameraConfig(type="opencv", id=camera_id, url=resolved.stream_uri)
    try:
        inner = load_camera(config, clock=clock)
    except HardwareError as exc:
        message = str(exc).replace(resolved.stream_uri, resolved.stream_shown)
        raise type(exc)(message) from None
    if isinstance(inner, OpenCvCamera):
        inner.source = resolved.stream_shown  # what its read errors name
    return OnvifCamera(inner, resolved, camera_id=camera_id)
