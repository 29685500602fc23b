"""The agent's configuration: one pydantic model per section of ``agent.toml``.

Loading is split into file → text → dict → model so tests and the simulator
pass plain dicts (`AgentConfig.model_validate(d)` or `config_from_dict`).
Unknown keys are refused everywhere: a typo in the field must fail loudly at
start-up, not leave a pillar on a default. Every field carries a
description (tested) and bounds.

Hardware is chosen by a discriminated union on ``type`` over the backends
registered in `hardware` (entry points included): ``[hardware] type = "rpi"``
for the board, ``[power.monitor] type = "ina219"`` for the power monitor,
``[[cameras]] type = "opencv"`` per camera, each with its backend's own
options. The old spellings (``[hardware] backend = ...``, ``[power] monitor =
"<name>"`` with ``monitor_options = {...}``) still load, with one warning.

Some settings may be changed at run time by a `SetConfigCommand`; they are
listed in `RUNTIME_KEYS` and changed only through `apply_changes`, which
validates the whole new configuration before anything is applied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.camera.privacy import PrivacyPolicy, policy_from_text
from edge_agent.errors import AgentError
from edge_agent.evidence_upload import EvidenceUploadConfig
from edge_agent.ota import OtaConfig
from edge_agent.power import PowerConfig
from hardware.backends import BOARDS, BoardConfig
from hardware.camera import CAMERAS, CameraConfig
from hardware.errors import HardwareError
from proto.codec import encode_canonical
from proto.messages import GeoPoint
from proto.topics import NAME_PATTERN, NODE_ID_PATTERN

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 nodes (Jetson)
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "RUNTIME_KEYS",
    "AgentConfig",
    "CameraAnalyticsConfig",
    "CameraSelection",
    "ConfigError",
    "EvidenceConfig",
    "HardwareConfig",
    "IdentityConfig",
    "IgnoreMask",
    "IndicatorConfig",
    "MotionSettings",
    "MqttConfig",
    "OutboxConfig",
    "PanicConfig",
    "PowerConfig",
    "PrivacyConfig",
    "TelemetryConfig",
    "apply_changes",
    "config_from_dict",
    "config_hash",
    "load_config_file",
    "parse_config_text",
]

logger = logging.getLogger(__name__)

RUNTIME_KEYS = frozenset(
    {
        "telemetry.interval_s",
        "panic.hold_to_confirm_ms",
        "panic.debounce_ms",
        "panic.stuck_after_s",
        "privacy.policy",  # issue 15: masks and private-camera terms (edge_agent.camera.privacy)
    }
)

PinName = Annotated[
    int | str,
    Field(description="BCM number (17) or a gpiozero pin name ('GPIO17', 'BOARD11')"),
]


class ConfigError(AgentError, ValueError):
    """The configuration (file or runtime change) is not acceptable."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttConfig(_Section):
    """How the node reaches the broker."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        title="Broker URL",
        description="mqtt://host[:port] (plain, loopback/dev) or mqtts://host[:port] (TLS)",
        min_length=8,
        max_length=255,
    )
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        title="Keepalive",
        description="MQTT keepalive; the broker publishes the last-will after 1.5x this",
    )
    session_expiry_s: int = Field(
        default=86_400,
        ge=0,
        le=4_294_967_295,
        title="Session expiry",
        description="how long the broker keeps the session (and queued commands) while away",
    )
    reconnect_min_s: float = Field(
        default=1.0, gt=0.0, le=60.0, title="First reconnect delay", description="backoff floor"
    )
    reconnect_max_s: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        title="Longest reconnect delay",
        description="backoff ceiling; delays are jittered so a fleet does not reconnect at once",
    )
    ca_file: Path | None = Field(
        default=None, title="CA bundle", description="for mqtts://; the fleet CA certificate"
    )
    cert_file: Path | None = Field(
        default=None, title="Client certificate", description="for mqtts://; this node's cert"
    )
    key_file: Path | None = Field(
        default=None, title="Client key", description="for mqtts://; this node's private key"
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        _ = parts.port  # raises ValueError for a non-numeric port
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class PanicConfig(_Section):
    """The panic button and how presses are interpreted."""

    pin: PinName = Field(default=17, title="Button pin", description="where the button is wired")
    button: str = Field(
        default="main",
        pattern=NAME_PATTERN,
        title="Button name",
        description="sent as PanicEvent.button",
    )
    debounce_ms: int = Field(
        default=30,
        ge=0,
        le=1000,
        title="Debounce",
        description="a level must be stable this long before it counts",
    )
    hold_to_confirm_ms: int = Field(
        default=0,
        ge=0,
        le=10_000,
        title="Hold to confirm",
        description="0: a press counts at once; otherwise it must be held this long",
    )
    stuck_after_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        title="Stuck after",
        description="held longer than this → one button_stuck tamper; presses ignored",
    )


class IndicatorConfig(_Section):
    """The pillar's light and buzzer."""

    led_pin: PinName = Field(default=27, title="LED pin", description="the pillar's light")
    buzzer_pin: int | str | None = Field(
        default=None, title="Buzzer pin", description="None when the pillar has no buzzer"
    )


class TelemetryConfig(_Section):
    """Periodic health reports."""

    interval_s: float = Field(
        default=30.0, ge=1.0, le=86_400.0, title="Interval", description="seconds between reports"
    )


class OutboxConfig(_Section):
    """The durable outbox (see `edge_agent.outbox` for the fsync policy)."""

    max_events: int = Field(
        default=10_000,
        ge=10,
        le=10_000_000,
        title="Capacity",
        description="when full the oldest non-panic event is evicted; panic never is",
    )
    resend_after_s: float = Field(
        default=10.0,
        ge=0.1,
        le=3600.0,
        title="Resend after",
        description="an event without an ack is published again after this long",
    )
    synchronous: Literal["full", "normal"] = Field(
        default="full",
        title="SQLite synchronous",
        description="full on nodes (fsync per commit); normal only for simulated fleets",
    )


_legacy_warned: set[str] = set()


def _warn_legacy(key: str, advice: str) -> None:
    # Once per process: a simulated fleet loads thousands of configs.
    if key not in _legacy_warned:
        _legacy_warned.add(key)
        logger.warning("agent.toml: %s is deprecated; %s", key, advice)


def _board(value: Any) -> Any:
    """``[hardware]`` → the registered board's config model (None: no board named)."""
    if value is None or isinstance(value, BoardConfig):
        return value
    if not isinstance(value, Mapping):
        raise ValueError("[hardware] must be a table with a 'type' key")
    data = dict(value)
    if "backend" in data:  # the old spelling: [hardware] backend = "sim"
        if "type" in data:
            raise ValueError("give [hardware] type only ('backend' is its old name)")
        _warn_legacy("[hardware] backend", 'write [hardware] type = "<name>" instead')
        name = data.pop("backend")
        if name is not None:
            data["type"] = name
    if not data:
        return None
    try:
        return BOARDS.validate(data)
    except HardwareError as exc:
        raise ValueError(str(exc)) from None


def _camera(value: Any) -> Any:
    if isinstance(value, CameraConfig):
        return value
    if not isinstance(value, Mapping):
        raise ValueError("each [[cameras]] entry must be a table with a 'type' key")
    try:
        return CAMERAS.validate(value)
    except HardwareError as exc:
        raise ValueError(str(exc)) from None


# The [hardware] section: a discriminated union on `type` over every board
# registered in hardware.backends.BOARDS (entry points included), resolved at
# validation time so a board installed by another package can be named.
HardwareConfig = Annotated[SerializeAsAny[BoardConfig] | None, BeforeValidator(_board)]
CameraSelection = Annotated[SerializeAsAny[CameraConfig], BeforeValidator(_camera)]


class IdentityConfig(_Section):
    """Where the node enrolled and how it keeps its certificate fresh (docs/provisioning.md)."""

    server_url: str | None = Field(
        default=None,
        title="Enrollment server",
        description="https://host[:port] of the fleet server's API; None: no renewal",
        max_length=255,
        pattern=r"^https?://",
    )
    ca_file: Path | None = Field(
        default=None,
        title="Server CA chain",
        description="verifies the enrollment server; defaults to mqtt.ca_file",
    )
    renew_check_interval_s: float = Field(
        default=86_400.0,
        ge=0.1,
        le=30 * 86_400.0,
        title="Renewal check interval",
        description="how often the agent checks whether its certificate is due for renewal",
    )
    renew_retry_s: float = Field(
        default=300.0,
        ge=0.1,
        le=86_400.0,
        title="Renewal retry",
        description="after a failed renewal, try again this much later",
    )
    renew_when_left: float = Field(
        default=1.0 / 3.0,
        gt=0.0,
        lt=1.0,
        title="Renew when left",
        description="renew once less than this fraction of the lifetime is left",
    )


# ------------------------------------------------------------ camera analytics
# Per-camera settings of the camera pipeline (edge_agent.camera), kept here so
# loading a config never imports numpy or OpenCV.


class IgnoreMask(_Section):
    """A region the motion gate ignores, in fractions of the frame (0..1, x right, y down)."""

    rect: tuple[float, float, float, float] | None = Field(
        default=None, description="[x, y, w, h] of a rectangle, fractions of the frame"
    )
    polygon: list[tuple[float, float]] | None = Field(
        default=None,
        min_length=3,
        max_length=64,
        description="[[x, y], ...] corners of a polygon, fractions of the frame",
    )

    @field_validator("rect", "polygon")
    @classmethod
    def _inside_frame(cls, value: Any) -> Any:
        if isinstance(value, tuple):  # a rect: its two opposite corners
            x, y, w, h = value
            points = [(x, y), (x + w, y + h)] if w >= 0 and h >= 0 else [(-1.0, -1.0)]
        else:
            points = value or []
        for x, y in points:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError("coordinates are fractions of the frame, 0..1")
        return value

    def corners(self) -> list[tuple[float, float]]:
        """The mask as a polygon (a rectangle's four corners)."""
        if self.rect is not None:
            x, y, w, h = self.rect
            return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        return list(self.polygon or [])

    @model_validator(mode="after")
    def _one_shape(self) -> IgnoreMask:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("give exactly one of rect, polygon")
        return self


class MotionSettings(_Section):
    """The motion gate (`edge_agent.camera.motion.MotionGate`) of one camera."""

    width: int = Field(
        default=320, ge=16, le=1920, description="frames are downscaled to this width first"
    )
    threshold: int = Field(
        default=25, ge=1, le=255, description="grey-level difference from the background"
    )
    alpha: float = Field(
        default=0.05, gt=0.0, le=1.0, description="how fast the background learns (per frame)"
    )
    blur: int = Field(default=5, ge=0, le=31, description="Gaussian blur kernel (odd, 0 = none)")
    dilate: int = Field(
        default=3, ge=0, le=32, description="dilation radius joining a vehicle's fragments (px)"
    )
    min_area: float = Field(
        default=0.002, ge=0.0, le=1.0, description="smallest motion region, share of the frame"
    )
    ignore: list[IgnoreMask] = Field(
        default_factory=list, max_length=32, description="regions to ignore (trees, sky, clocks)"
    )

    @field_validator("blur")
    @classmethod
    def _odd_blur(cls, value: int) -> int:
        if value and value % 2 == 0:
            raise ValueError("blur must be 0 or odd")
        return value


class CameraAnalyticsConfig(_Section):
    """What the camera pipeline does with one camera's frames (``[analytics.<camera id>]``)."""

    enabled: bool = Field(default=True, description="analyse frames (false: capture only)")
    max_fps: float = Field(
        default=10.0, ge=0.0, le=120.0, description="frames analysed per second at most (0: all)"
    )
    queue_size: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="frames waiting for analysis; when full the frame is dropped and counted",
    )
    detector: str | None = Field(
        default=None,
        max_length=200,
        description="plate detector plugin (entry point name or module:factory); None: motion only",
    )
    reader: str | None = Field(
        default=None,
        max_length=200,
        description="plate reader plugin (entry point name or module:factory)",
    )
    detect_in_regions: bool = Field(
        default=True, description="run the detector only inside motion regions"
    )
    motion: MotionSettings = Field(default_factory=MotionSettings, description="the motion gate")
    confirm_hits: int = Field(
        default=3, ge=1, le=100, description="detections before a plate track counts"
    )
    max_misses: int = Field(
        default=5, ge=0, le=1000, description="analysed frames without the plate that end a track"
    )
    iou_min: float = Field(
        default=0.2, gt=0.0, le=1.0, description="box overlap that continues a track"
    )
    max_reads: int = Field(default=12, ge=1, le=1000, description="reader calls per track at most")
    inference: Literal["threads", "processes"] = Field(
        default="threads",
        description=(
            "where the detector and reader run: the camera's analysis thread, or a child process"
            " built from their plugin names (a model that holds the GIL cannot slow the agent)"
        ),
    )
    inference_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="longest detector or reader call in a child process; then it is restarted",
    )
    max_track_frames: int | None = Field(
        default=600,
        ge=1,
        le=1_000_000,
        description=(
            "analysed frames a plate track may live before its pass is reported (a parked car:"
            " one event, then the track only holds its box); None: no limit"
        ),
    )
    stall_after_s: float = Field(
        default=10.0, ge=0.1, le=3600.0, description="no frame this long: the camera stalled"
    )
    retry_min_s: float = Field(
        default=1.0, gt=0.0, le=600.0, description="first retry delay of a lost camera"
    )
    retry_max_s: float = Field(
        default=60.0, gt=0.0, le=3600.0, description="longest retry delay (doubling backoff)"
    )


class PrivacyConfig(_Section):
    """Privacy masks and private-camera terms (`edge_agent.camera.privacy`, docs/privacy.md)."""

    policy: PrivacyPolicy | None = Field(
        default=None,
        description="the node's privacy policy as the fleet server sends it (set_config key "
        "privacy.policy, JSON text); None: nothing masked",
    )

    @field_validator("policy", mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return policy_from_text(value)


class EvidenceConfig(_Section):
    """The local evidence store (`edge_agent.evidence`): crops kept by SHA-256, bounded."""

    max_mb: float = Field(default=256.0, gt=0.0, le=1_000_000.0, description="size bound (MB)")
    max_files: int = Field(default=20_000, ge=1, le=10_000_000, description="file count bound")
    upload: EvidenceUploadConfig = Field(
        default_factory=EvidenceUploadConfig,
        description="[evidence.upload]: signed upload over HTTPS, retention (docs/evidence.md)",
    )


class FacesConfig(_Section):
    """The site's policy on face recognition (``[faces]``; docs/faces.md). Off unless allowed."""

    allowed: bool = Field(
        default=False,
        title="Faces allowed",
        description="the site's policy allows face recognition here (default: it does not)",
    )
    cameras: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="the cameras faces may be processed on; empty: every camera",
    )


class AgentConfig(_Section):
    """Everything one node's agent needs to run."""

    node_id: str = Field(
        pattern=NODE_ID_PATTERN, title="Node id", description="MQTT client id and topic level"
    )
    serial: str = Field(
        min_length=1, max_length=64, title="Serial", description="hardware serial number"
    )
    site_id: str | None = Field(
        default=None, pattern=NAME_PATTERN, title="Site", description="site (pillar)"
    )
    district: str | None = Field(default=None, pattern=NAME_PATTERN, description="district")
    data_dir: Path = Field(
        title="Data directory", description="holds the outbox database; must be writable"
    )
    test_mode: bool = Field(
        default=False, description="start in commissioning test mode (presses marked test)"
    )
    dev_mode: bool = Field(
        default=False,
        title="Development mode",
        description="with no [hardware] type, fall back to simulated hardware when the real "
        "board cannot load (never on a pillar)",
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="how to reach the broker")
    panic: PanicConfig = Field(default_factory=PanicConfig, description="the panic button")
    indicator: IndicatorConfig = Field(
        default_factory=IndicatorConfig, description="the pillar's light and buzzer"
    )
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig, description="periodic health reports"
    )
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="the durable outbox")
    hardware: HardwareConfig = Field(
        default=None,
        title="Board",
        description="[hardware] type = one of the registered boards (sim, rpi, …) and its "
        "options; env NIGEHBAAN_HW overrides; unset: the real board or a clear error",
    )
    cameras: list[CameraSelection] = Field(
        default_factory=list,
        max_length=16,
        description="[[cameras]] entries: type = picamera2 | opencv | sim (or a registered one)",
    )
    identity: IdentityConfig = Field(
        default_factory=IdentityConfig, description="enrollment server and certificate renewal"
    )
    power: PowerConfig = Field(
        default_factory=PowerConfig, description="power monitor, battery and load shedding"
    )
    location: GeoPoint | None = Field(
        default=None, description="surveyed WGS84 position (lat, lon), sent in Birth"
    )
    analytics: dict[str, CameraAnalyticsConfig] = Field(
        default_factory=dict,
        description="[analytics.<camera id>]: the camera pipeline's settings per camera "
        "(a camera without one gets the defaults)",
    )
    evidence: EvidenceConfig = Field(
        default_factory=EvidenceConfig, description="local evidence store (plate crops)"
    )
    ota: OtaConfig = Field(
        default_factory=OtaConfig, description="signed updates: repository, window, health gate"
    )
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig, description="privacy masks and private-camera terms"
    )
    faces: FacesConfig = Field(
        default_factory=FacesConfig,
        description="face recognition: only where the site's policy allows it",
    )

    def camera_analytics(self, camera_id: str) -> CameraAnalyticsConfig:
        """The pipeline settings of camera `camera_id` (defaults when none are given)."""
        return self.analytics.get(camera_id) or CameraAnalyticsConfig()

    @model_validator(mode="after")
    def _analytics_for_known_cameras(self) -> AgentConfig:
        unknown = sorted(set(self.analytics) - {c.id for c in self.cameras})
        if unknown:
            raise ValueError(f"[analytics] names cameras that are not configured: {unknown}")
        return self

    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids must be unique: {ids}")
        return cameras


def parse_config_text(
    text: str, *, fmt: Literal["toml", "yaml", "json"] = "toml"
) -> dict[str, Any]:
    """Text → dict; the format is the file's (TOML normally)."""
    try:
        if fmt == "toml":
            return dict(tomllib.loads(text))
        if fmt == "yaml":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot parse {fmt} config: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError is not a ValueError
        raise ConfigError(f"cannot parse {fmt} config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{fmt} config must be a table/mapping at the top level")
    return data


def config_from_dict(data: Mapping[str, Any]) -> AgentConfig:
    """Dict → validated config, with every problem named in one ConfigError."""
    try:
        return AgentConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def load_config_file(path: Path) -> AgentConfig:
    """File → text → dict → config. ``.yaml``/``.yml``/``.json`` by suffix, else TOML."""
    suffix = path.suffix.lower()
    fmt: Literal["toml", "yaml", "json"] = (
        "yaml" if suffix in (".yaml", ".yml") else "json" if suffix == ".json" else "toml"
    )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return config_from_dict(parse_config_text(text, fmt=fmt))


def config_hash(config: AgentConfig) -> str:
    """SHA-256 of the canonical JSON of the config, reported in Birth."""
    return hashlib.sha256(encode_canonical(config.model_dump(mode="json"))).hexdigest()


def apply_changes(config: AgentConfig, changes: Mapping[str, Any]) -> AgentConfig:
    """A new config with `changes` (dotted keys) applied, or ConfigError; all or nothing.

    Values are validated strictly (``"30"`` is not a number, ``true`` is not
    an int), because they come from the network.
    """
    unknown = sorted(set(changes) - RUNTIME_KEYS)
    if unknown:
        raise ConfigError(
            f"not changeable at run time: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(RUNTIME_KEYS))})"
        )
    data = config.model_dump(mode="python")
    for key, value in changes.items():
        section, field = key.split(".", 1)
        data[section][field] = value
    try:
        return AgentConfig.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for item in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in item["loc"]) or "(config)"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)
