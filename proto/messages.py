"""Pydantic models for every message on the wire, one class per payload kind.

Every payload carries the schema version ``v``, the ``node_id`` it concerns
(which must match the topic) and ``ts``, the sender's clock in UTC. Events add
a time-ordered ``event_id`` (ULID) and the node's monotonic ``seq`` so the
server can deduplicate redeliveries and detect gaps. Models forbid unknown
fields: a node speaking a newer schema must bump ``v``, and the server is
upgraded before the nodes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from proto.ids import ULID_PATTERN
from proto.topics import NAME_PATTERN, NODE_ID_PATTERN

SCHEMA_VERSION: Literal[1] = 1
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a UTC offset (for example a trailing 'Z')")
    return value.astimezone(timezone.utc)


def _format_ts(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime(_TS_FORMAT)


UtcDatetime = Annotated[
    datetime,
    AfterValidator(_require_utc),
    PlainSerializer(_format_ts, return_type=str, when_used="always"),
    Field(description="UTC time, ISO 8601 with microseconds and 'Z'"),
]
NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Ulid = Annotated[str, StringConstraints(pattern=ULID_PATTERN)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, StringConstraints(max_length=120)]
Detail = Annotated[str, StringConstraints(max_length=1000)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
BdSeq = Annotated[int, Field(ge=0, le=2**63 - 1)]


def utc_now() -> datetime:
    """The current UTC time, for `ts` fields."""
    return datetime.now(timezone.utc)


class WireModel(BaseModel):
    """Base for every payload: frozen, no unknown fields, no NaN/Infinity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = Field(default=SCHEMA_VERSION, description="schema version")
    node_id: NodeId = Field(description="node the message concerns; must match the topic")
    ts: UtcDatetime


# ---------------------------------------------------------------- status/birth


class Status(WireModel):
    """Retained online/offline state; the last-will publishes `offline`."""

    kind: Literal["status"] = "status"
    state: Literal["online", "offline"]
    bd_seq: BdSeq = Field(description="birth/death sequence pairing this status with a birth")


class Capability(str, Enum):
    """What a node can do; the server uses it to pick commands and checks."""

    PANIC_BUTTON = "panic_button"
    INDICATOR = "indicator"
    CAMERA = "camera"
    ANPR = "anpr"
    FACE = "face"
    POWER_MONITOR = "power_monitor"
    GNSS = "gnss"
    TAMPER = "tamper"


class Firmware(BaseModel):
    """The running agent build and the A/B slot it booted from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    slot: Literal["a", "b"] | None = None
    build: ShortText | None = None


class GeoPoint(BaseModel):
    """WGS84 position of the node (surveyed at commissioning or from GNSS)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lat: Annotated[float, Field(ge=-90.0, le=90.0)]
    lon: Annotated[float, Field(ge=-180.0, le=180.0)]


class Birth(WireModel):
    """Published on every (re)connect: who the node is and what it runs."""

    kind: Literal["birth"] = "birth"
    bd_seq: BdSeq
    serial: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    hardware: ShortText
    firmware: Firmware
    capabilities: Annotated[list[Capability], Field(max_length=16)]
    config_hash: Sha256Hex
    site_id: Name | None = None
    district: Name | None = None
    location: GeoPoint | None = None
    last_seq: Seq = Field(default=0, description="highest event seq the node has issued")


# ------------------------------------------------------------------- telemetry


class PowerTelemetry(BaseModel):
    """Solar/battery/load readings and the estimated hours of autonomy."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    panel_w: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = None
    battery_v: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    battery_a: Annotated[float, Field(ge=-500.0, le=500.0)] | None = None
    battery_soc: Fraction | None = None
    battery_temp_c: Annotated[float, Field(ge=-60.0, le=150.0)] | None = None
    load_w: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = None
    mains_present: bool | None = None
    autonomy_h: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = None
    policy_step: Annotated[int, Field(ge=0, le=16)] | None = None


class StageMs(BaseModel):
    """Milliseconds per call of one analysis stage: median and 95th percentile."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    p50: Annotated[float, Field(ge=0.0, le=600_000.0)]
    p95: Annotated[float, Field(ge=0.0, le=600_000.0)]


class CameraHealth(BaseModel):
    """One camera's figures in telemetry (the camera pipeline's per-camera health).

    Added for the camera issue; every field but `camera_id` is optional so a
    pipeline that has not measured a stage yet still reports the camera.
    `shed` says what the power policy took away: ``slowed`` (analytics below
    full rate), ``stopped`` (camera off); absent or ``none`` at full rate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    camera_id: Name
    frames_in: Annotated[int, Field(ge=0)] = 0
    frames_dropped: Annotated[int, Field(ge=0)] = 0
    motion_ratio: Fraction | None = None
    detector_ms: StageMs | None = None
    reader_ms: StageMs | None = None
    plates_per_hour: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    shed: Literal["none", "slowed", "stopped"] | None = None
    analytics_rate: Fraction | None = None
    fault: Name | None = Field(
        default=None, description="the camera's open fault (camera_lost, camera_stalled)"
    )


class EvidenceStoreTelemetry(BaseModel):
    """The node's local evidence store (edge_agent.evidence): how full, what is pinned,
    what gave way and what was refused since the agent started.

    Added for the watchlist issue (optional in `Telemetry`). A full store evicts
    the oldest unpinned frames first (`evicted`) and never a hit's evidence; a
    frame it cannot make room for is `refused`; a hit's or panic's evidence it
    cannot keep is `evidence_refused` (and a ``node_fault``, evidence_store_full).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    files: Annotated[int, Field(ge=0)] = 0
    stored_bytes: Annotated[int, Field(ge=0)] = 0
    max_bytes: Annotated[int, Field(ge=1)] | None = None
    pinned_files: Annotated[int, Field(ge=0)] = 0
    pinned_bytes: Annotated[int, Field(ge=0)] = Field(
        default=0, description="bytes of pinned evidence (hits, panic snapshots, uploads due)"
    )
    evicted: Annotated[int, Field(ge=0)] = Field(
        default=0, description="unpinned files deleted to make room, oldest first"
    )
    refused: Annotated[int, Field(ge=0)] = Field(
        default=0, description="frames refused because only pinned evidence was left"
    )
    evidence_refused: Annotated[int, Field(ge=0)] = Field(
        default=0, description="pieces of a hit's or panic's evidence the store could not keep"
    )


MAX_TELEMETRY_CAMERAS = 8
CameraList = Annotated[list[CameraHealth], Field(max_length=MAX_TELEMETRY_CAMERAS)]


class Telemetry(WireModel):
    """Periodic health (and power, where measured) report."""

    kind: Literal["telemetry"] = "telemetry"
    uptime_s: Annotated[float, Field(ge=0.0)]
    cpu_percent: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    mem_percent: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    disk_free_mb: Annotated[float, Field(ge=0.0)] | None = None
    temperature_c: Annotated[float, Field(ge=-60.0, le=150.0)] | None = None
    outbox_depth: Annotated[int, Field(ge=0)] = 0
    frames_dropped: Annotated[int, Field(ge=0)] | None = None
    rssi_dbm: Annotated[float, Field(ge=-200.0, le=0.0)] | None = None
    test_mode: bool = False
    power: PowerTelemetry | None = None
    # Added for the camera issue (optional, so older servers and nodes still agree):
    cameras: CameraList | None = Field(
        default=None,
        description="per-camera health of the camera pipeline: at most "
        "MAX_TELEMETRY_CAMERAS per report; a node with more takes turns, so every "
        "camera is in one of ceil(cameras_total / 8) consecutive reports",
    )
    cameras_total: Annotated[int, Field(ge=0, le=1024)] | None = Field(
        default=None,
        description="how many cameras the node runs; more than `cameras` lists when "
        "the node takes turns (absent from older nodes: `cameras` is all of them)",
    )
    # Added for the watchlist issue (optional):
    watchlists: Annotated[dict[Name, Annotated[int, Field(ge=1)]], Field(max_length=64)] | None = (
        Field(default=None, description="watchlist id → the signed bundle version the node holds")
    )
    # Added for the watchlist issue (optional): the node's evidence store under pressure.
    evidence: EvidenceStoreTelemetry | None = Field(
        default=None, description="the local evidence store: fill, pins, evictions, refusals"
    )
    # Added for the lawful-use issue (optional): privacy masks and private-camera terms.
    privacy_version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        default=None, description="the version of the privacy policy the node applies"
    )


# ---------------------------------------------------------------------- events


class EventBase(WireModel):
    """Fields every event shares; events travel through the durable outbox."""

    event_id: Ulid = Field(description="ULID, fixed when the event is first written")
    seq: Seq = Field(description="node's monotonic event sequence number")


class PanicEvent(EventBase):
    """A confirmed press of a panic button (after debounce and hold-to-confirm)."""

    type: Literal["panic"] = "panic"
    button: Name = "main"
    held_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 0
    test: bool = Field(default=False, description="pressed in commissioning test mode")


class TamperEvent(EventBase):
    """Physical interference: enclosure opened, button stuck, camera blocked."""

    type: Literal["tamper"] = "tamper"
    tamper: Literal[
        "enclosure_open", "button_stuck", "camera_blocked", "camera_moved", "camera_lost"
    ]
    active: bool = Field(default=True, description="true when raised, false when cleared")
    detail: Detail | None = None


class PowerEvent(EventBase):
    """A change in the node's power situation or in its load-shedding step."""

    type: Literal["power"] = "power"
    power: Literal[
        "mains_lost",
        "mains_restored",
        "autonomy_low",
        "autonomy_restored",
        "policy_step",
        "battery_fault",
    ]
    battery_soc: Fraction | None = None
    autonomy_h: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = None
    policy_step: Annotated[int, Field(ge=0, le=16)] | None = None
    detail: Detail | None = None


class PlateBox(BaseModel):
    """A plate's box in frame pixels (top-left corner, width, height)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: Annotated[int, Field(ge=0, le=100_000)]
    y: Annotated[int, Field(ge=0, le=100_000)]
    w: Annotated[int, Field(ge=1, le=100_000)]
    h: Annotated[int, Field(ge=1, le=100_000)]


class PlateEvent(EventBase):
    """One vehicle pass read by ANPR (after multi-frame voting)."""

    type: Literal["plate"] = "plate"
    camera_id: Name
    track_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    plate: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9 -]{0,15}$")]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = "PK"
    confidence: Fraction
    frames: Annotated[int, Field(ge=1, le=10_000)]
    watchlist_id: Name | None = None
    watchlist_entry: ShortText | None = None
    snapshot_sha256: Sha256Hex | None = None
    # Added for the camera issue (optional, so older servers and nodes still agree):
    province: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = Field(
        default=None, description="the province the plate rules matched (Punjab, Sindh…)"
    )
    layout: Annotated[str, StringConstraints(min_length=1, max_length=48)] | None = Field(
        default=None, description="the rules' layout name (punjab-district, sindh…) or unknown"
    )
    box: PlateBox | None = Field(default=None, description="the best read's box, frame pixels")
    canonical: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")] | None = Field(
        default=None,
        description="the rules' canonical key: look-alikes corrected, no separators, "
        "attributes such as the registration year left out",
    )


class FaceEvent(EventBase):
    """A face track that matched a watchlist entry on several agreeing frames."""

    type: Literal["face"] = "face"
    camera_id: Name
    track_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    frames: Annotated[int, Field(ge=1, le=10_000)]
    quality: Fraction
    score: Fraction
    watchlist_id: Name
    subject_id: ShortText
    snapshot_sha256: Sha256Hex | None = None


class OtaEvent(EventBase):
    """Progress of an update on the node."""

    type: Literal["ota"] = "ota"
    artifact: Name
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    phase: Literal[
        "offered",
        "deferred",
        "downloading",
        "verified",
        "installed",
        "healthy",
        "rolled_back",
        "failed",
    ]
    campaign_id: Name | None = None
    detail: Detail | None = None
    # Added for the OTA issue (optional, so older servers and nodes still agree):
    artifact_kind: Literal["app", "model", "config", "os"] | None = Field(
        default=None, description="what the artifact updates; `artifact` is its name"
    )
    reason: Name | None = Field(
        default=None,
        description="why it was deferred, refused, failed or rolled back: a stable code "
        "(e.g. alert_active, battery_low, maintenance_window, signature, hash, expired, "
        "clock, version, health); `detail` says it in words",
    )
    bytes_done: Annotated[int, Field(ge=0)] | None = None
    bytes_total: Annotated[int, Field(ge=0)] | None = None


class NodeFaultEvent(EventBase):
    """A component of the node failed or recovered."""

    type: Literal["node_fault"] = "node_fault"
    component: Name
    code: Name
    active: bool = True
    detail: Detail | None = None


class WatchlistHitEvent(EventBase):
    """A pass (or face track) that matched an entry of a signed watchlist the node holds.

    Added for the watchlist issue. ``match`` says how: ``exact`` (the voted
    plate's canonical key is the listed key) or ``confusable`` (they differ in
    one look-alike character, proto.plates). A person must confirm it at the
    server before anyone is dispatched.
    """

    type: Literal["watchlist_hit"] = "watchlist_hit"
    watchlist_id: Name
    watchlist_version: Annotated[int, Field(ge=1, le=2**63 - 1)]
    entry_id: Name
    subject: Literal["plate", "person"] = "plate"
    match: Literal["exact", "confusable", "face"]
    camera_id: Name
    track_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    plate: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")] | None = Field(
        default=None, description="the canonical key the node read"
    )
    listed: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")] | None = Field(
        default=None, description="the canonical key on the watchlist"
    )
    confidence: Fraction
    frames: Annotated[int, Field(ge=1, le=10_000)]
    source_event_id: Ulid | None = Field(default=None, description="the plate event's id")
    snapshot_sha256: Sha256Hex | None = None
    # Added for face watchlists (optional): a face track's weighted cosine similarity.
    score: Fraction | None = Field(
        default=None, description="face hits: the agreeing frames' weighted cosine similarity"
    )
    # Added for hit evidence (optional): the whole frame the best crop came from.
    frame_sha256: Sha256Hex | None = Field(
        default=None,
        description="the frame the crop came from (JPEG, downscaled if large), "
        "stored and uploaded with the crop as evidence of the hit",
    )


Event = Annotated[
    PanicEvent
    | TamperEvent
    | PowerEvent
    | PlateEvent
    | FaceEvent
    | OtaEvent
    | NodeFaultEvent
    | WatchlistHitEvent,
    Field(discriminator="type"),
]
EVENT_MODELS: dict[str, type[EventBase]] = {
    "panic": PanicEvent,
    "tamper": TamperEvent,
    "power": PowerEvent,
    "plate": PlateEvent,
    "face": FaceEvent,
    "ota": OtaEvent,
    "node_fault": NodeFaultEvent,
    "watchlist_hit": WatchlistHitEvent,
}


# -------------------------------------------------------------------- commands


class CommandBase(WireModel):
    """A server→node request; the node answers on `reply/<request_id>`."""

    request_id: Ulid
    expires_at: UtcDatetime | None = Field(
        default=None, description="the node ignores the command after this time"
    )


class PingCommand(CommandBase):
    """Liveness check; the reply carries the node's uptime and outbox depth."""

    name: Literal["ping"] = "ping"


ConfigScalar = bool | int | float | str


class SetConfigCommand(CommandBase):
    """Change agent settings by dotted key; the node validates before applying."""

    name: Literal["set_config"] = "set_config"
    changes: Annotated[dict[str, ConfigScalar], Field(min_length=1, max_length=64)]


class TestModeCommand(CommandBase):
    """Enter or leave commissioning test mode (presses marked test, no escalation)."""

    name: Literal["test_mode"] = "test_mode"
    enabled: bool
    duration_s: Annotated[int, Field(ge=1, le=86_400)] = 900


class AlertStateCommand(CommandBase):
    """Tell the pillar how its alert is progressing so its light can say so."""

    name: Literal["alert_state"] = "alert_state"
    alert_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    state: Literal[
        "new",
        "acknowledged",
        "dispatched",
        "on_scene",
        "resolved",
        "closed",
        "false_alarm",
        "duplicate",
        "test",
    ]


class OtaCheckCommand(CommandBase):
    """Check for an update now (a campaign's wave reached this node, or a technician asked).

    The fields are hints for the report and a cross-check: what the node installs is
    only ever what its own group's signed metadata says (ota.trust), so a command naming
    another group is refused as mix-and-match.
    """

    name: Literal["ota_check"] = "ota_check"
    campaign_id: Name | None = None
    group: Name | None = Field(default=None, description="the node group the campaign targets")
    artifact_kind: Literal["app", "model", "config", "os"] | None = Field(
        default=None, description="only this kind; all kinds when absent"
    )
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class WatchlistFetch(BaseModel):
    """Where a node fetches a signed watchlist bundle over HTTPS (mTLS) and what it must be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    watchlist_id: Name
    version: Annotated[int, Field(ge=1, le=2**63 - 1)]
    url: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^(https?://|/)")]
    sha256: Sha256Hex = Field(description="SHA-256 of the bundle's bytes as served")
    size: Annotated[int, Field(ge=2, le=64 * 1024 * 1024)] = Field(description="bytes")


class WatchlistCommand(CommandBase):
    """Install a signed watchlist bundle (proto.watchlist.SignedWatchlist as JSON text).

    Added for the watchlist issue. The node verifies the bundle before use and
    answers with the version it now holds, or why it refused (signature,
    expired, version, format).
    """

    name: Literal["watchlist"] = "watchlist"
    bundle: Annotated[str, StringConstraints(min_length=2, max_length=15 * 1024)] | None = Field(
        default=None, description="the bundle itself (small lists; older servers)"
    )
    # Added for large lists (optional): where to fetch the bundle over HTTPS with the node's
    # client certificate, and what it must hash to. One of `bundle` and `fetch` is given.
    fetch: WatchlistFetch | None = Field(
        default=None, description="fetch the bundle over HTTPS instead (large lists)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> WatchlistCommand:
        if (self.bundle is None) == (self.fetch is None):
            raise ValueError("a watchlist command carries either bundle or fetch")
        return self


class SnapshotCommand(CommandBase):
    """Take the latest frame of each camera now and keep it in the node's evidence store.

    Added for the watchlist issue: a panic press pulls snapshots from the
    cameras nearest the pillar. The node answers at once; the reply's result
    has ``snapshots`` (per camera: ``camera_id``, the ``sha256`` of the stored
    JPEG, ``bytes``, ``width``, ``height``, ``frame_age_s``) and ``missing``
    (per camera: ``camera_id`` and a ``reason`` such as ``no_frame``,
    ``stale``, ``off``). The image itself never travels over MQTT: it is
    uploaded over HTTPS and referenced by its SHA-256.
    """

    name: Literal["snapshot"] = "snapshot"
    alert_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="the alert the snapshots are evidence for"
    )
    cameras: Annotated[list[Name], Field(max_length=MAX_TELEMETRY_CAMERAS)] | None = Field(
        default=None, description="only these cameras; every camera of the node when absent"
    )
    reason: Literal["panic", "operator"] = "panic"


Command = Annotated[
    PingCommand
    | SetConfigCommand
    | TestModeCommand
    | AlertStateCommand
    | OtaCheckCommand
    | WatchlistCommand
    | SnapshotCommand,
    Field(discriminator="name"),
]
COMMAND_MODELS: dict[str, type[CommandBase]] = {
    "ping": PingCommand,
    "set_config": SetConfigCommand,
    "test_mode": TestModeCommand,
    "alert_state": AlertStateCommand,
    "ota_check": OtaCheckCommand,
    "watchlist": WatchlistCommand,
    "snapshot": SnapshotCommand,
}


# ----------------------------------------------------------------- reply / ack


class Reply(WireModel):
    """The node's answer to a command."""

    kind: Literal["reply"] = "reply"
    request_id: Ulid
    ok: bool
    result: dict[str, JsonValue] | None = None
    error: Detail | None = None


class Ack(WireModel):
    """Application acknowledgement: these events are committed at the server.

    The node deletes an event from its outbox only on this, never on a broker
    PUBACK.
    """

    kind: Literal["ack"] = "ack"
    event_ids: Annotated[list[Ulid], Field(min_length=1, max_length=500)]


Message = Status | Birth | Telemetry | EventBase | CommandBase | Reply | Ack
