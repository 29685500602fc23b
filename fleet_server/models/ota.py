"""OTA on the server: artifacts, campaigns, per-node progress, node tags and site windows.

One family of models per resource (`OtaArtifact`, `OtaArtifactPublic`, ...).
A campaign rolls one artifact out to the nodes its target names, in waves;
each targeted node has one `OtaCampaignNode` row with its wave and the last
state the node reported (`ota` events) or the server gave it (offered). The
rules live in `fleet_server.ota`; these are the rows and the API's shapes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow

__all__ = [
    "ArtifactKind",
    "CampaignCreate",
    "CampaignNodeState",
    "CampaignState",
    "CampaignTarget",
    "OtaArtifact",
    "OtaArtifactPublic",
    "OtaArtifactsPublic",
    "OtaCampaign",
    "OtaCampaignNode",
    "OtaCampaignNodePublic",
    "OtaCampaignPublic",
    "OtaCampaignsPublic",
    "OtaNodeTag",
    "OtaSiteWindow",
    "SiteWindowIn",
    "WaveSpec",
]


class ArtifactKind(StrEnum):
    """What an artifact replaces on a node: the agent application, a model or config bundle.

    The same values as `ota.artifacts.ArtifactKind` (one TUF role each; one A/B
    slot each, except the OS, which goes to the node's OS updater, RAUC).
    """

    APP = "app"
    MODEL = "model"
    CONFIG = "config"
    OS = "os"


class CampaignState(StrEnum):
    """Where a campaign is: running waves, paused by an admin, aborted, or done."""

    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    COMPLETED = "completed"


class CampaignNodeState(StrEnum):
    """One node's progress in a campaign; `pending` until it is offered."""

    PENDING = "pending"
    OFFERED = "offered"
    DOWNLOADING = "downloading"
    DEFERRED = "deferred"
    INSTALLED = "installed"
    HEALTHY = "healthy"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class OtaArtifact(SQLModel, table=True):
    """One uploaded artifact: its bytes live in the artifact store under `sha256`."""

    id: str = Field(primary_key=True, max_length=26)
    kind: str = Field(max_length=16, index=True)
    name: str = Field(max_length=64, index=True)
    version: str = Field(max_length=64)
    hardware: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sha256: str = Field(max_length=64, index=True)
    length: int = Field(ge=0)
    filename: str = Field(max_length=200)
    note: str = Field(default="", max_length=500)
    created_by: str = Field(max_length=80)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class OtaArtifactPublic(SQLModel):
    """An artifact as the API shows it; `target_path` is its path in the repository."""

    id: str
    kind: str
    name: str
    version: str
    hardware: list[str]
    sha256: str
    length: int
    filename: str
    note: str
    created_by: str
    created_at: datetime
    target_path: str
    in_use: bool = PydanticField(default=False, description="a campaign names it")


class OtaArtifactsPublic(SQLModel):
    """A page of artifacts."""

    data: list[OtaArtifactPublic]
    count: int


class WaveSpec(BaseModel):
    """One wave: how many of the campaign's nodes have been offered once it has started.

    Sizes are cumulative: `percent` of all targeted nodes or a `count`, exactly
    one of the two. The last wave always takes every node left.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = PydanticField(min_length=1, max_length=32)
    percent: float | None = PydanticField(default=None, gt=0, le=100)
    count: int | None = PydanticField(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_size(self) -> WaveSpec:
        if (self.percent is None) == (self.count is None):
            raise ValueError("a wave has exactly one of percent or count")
        return self


DEFAULT_WAVES = [
    WaveSpec(name="canary", percent=5),
    WaveSpec(name="wider", percent=30),
    WaveSpec(name="all", percent=100),
]


class CampaignTarget(BaseModel):
    """Which nodes a campaign is for: the union of every list given."""

    model_config = ConfigDict(extra="forbid")

    districts: list[str] = PydanticField(default_factory=list, max_length=200)
    sites: list[str] = PydanticField(default_factory=list, max_length=1000)
    tags: list[str] = PydanticField(default_factory=list, max_length=100)
    node_ids: list[str] = PydanticField(default_factory=list, max_length=100_000)

    def is_empty(self) -> bool:
        return not (self.districts or self.sites or self.tags or self.node_ids)


class CampaignCreate(BaseModel):
    """What an admin sends to start a campaign."""

    model_config = ConfigDict(extra="forbid")

    name: str = PydanticField(min_length=1, max_length=80)
    artifact_id: str = PydanticField(min_length=1, max_length=26)
    target: CampaignTarget
    waves: list[WaveSpec] = PydanticField(
        default_factory=lambda: list(DEFAULT_WAVES), min_length=1, max_length=10
    )
    min_sample: int = PydanticField(
        default=3,
        ge=1,
        le=1_000_000,
        description="finished nodes a wave needs before it is judged",
    )
    failure_threshold: float = PydanticField(
        default=0.05,
        ge=0,
        le=1,
        description="share of a wave's finished nodes failed or rolled back above which "
        "the campaign aborts",
    )
    wave_max_s: float | None = PydanticField(
        default=None,
        gt=0,
        description="after this long a wave that reached its minimum sample and stayed under "
        "the threshold makes way for the next, even with nodes still deferring",
    )
    offer_resend_s: float = PydanticField(
        default=600, ge=10, description="re-send the offer to a node that has not answered"
    )
    downgrade: bool = PydanticField(
        default=False, description="the artifact may be older than what nodes run"
    )


class OtaCampaign(SQLModel, table=True):
    """A rollout of one artifact to a target, wave by wave (`fleet_server.ota.waves`)."""

    id: str = Field(primary_key=True, max_length=26)
    name: str = Field(max_length=80)
    artifact_id: str = Field(foreign_key="otaartifact.id", index=True, max_length=26)
    state: str = Field(default=CampaignState.RUNNING, max_length=16, index=True)
    target: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    waves: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    min_sample: int = 3
    failure_threshold: float = 0.05
    wave_max_s: float | None = None
    offer_resend_s: float = 600.0
    downgrade: bool = False
    wave_index: int = Field(default=-1, description="-1 before the first wave starts")
    wave_started_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    reason: str = Field(default="", max_length=500, description="why it aborted or paused")
    created_by: str = Field(max_length=80)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class OtaCampaignNode(SQLModel, table=True):
    """One node's progress in one campaign."""

    campaign_id: str = Field(foreign_key="otacampaign.id", primary_key=True, max_length=26)
    node_id: str = Field(primary_key=True, max_length=64, index=True)
    wave: int | None = Field(default=None, description="None: not yet in a wave")
    state: str = Field(default=CampaignNodeState.PENDING, max_length=16)
    detail: str = Field(default="", max_length=500, description="deferral reason, error")
    attempt: int = 1
    offers: int = 0
    offered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    reported_at: datetime | None = Field(
        default=None, sa_type=UtcDateTime, description="node time of the last ota event applied"
    )


class OtaCampaignNodePublic(SQLModel):
    """A node's progress as the API shows it."""

    node_id: str
    wave: int | None
    state: str
    detail: str
    attempt: int
    offers: int
    offered_at: datetime | None
    updated_at: datetime


class OtaCampaignPublic(SQLModel):
    """A campaign with its counts per node state (and, on `GET /{id}`, every node)."""

    id: str
    name: str
    artifact_id: str
    state: str
    target: dict[str, Any]
    waves: list[dict[str, Any]]
    min_sample: int
    failure_threshold: float
    wave_max_s: float | None
    offer_resend_s: float
    downgrade: bool
    wave_index: int
    wave_started_at: datetime | None
    reason: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    counts: dict[str, int] = PydanticField(default_factory=dict)
    nodes: list[OtaCampaignNodePublic] | None = None


class OtaCampaignsPublic(SQLModel):
    """A page of campaigns."""

    data: list[OtaCampaignPublic]
    count: int


class OtaNodeTag(SQLModel, table=True):
    """A free tag on a node ("solar", "pilot"), for campaign targets."""

    node_id: str = Field(primary_key=True, max_length=64)
    tag: str = Field(primary_key=True, max_length=64, index=True)


class OtaSiteWindow(SQLModel, table=True):
    """When a site may install: minutes after local midnight in the site's time zone."""

    site_id: str = Field(primary_key=True, max_length=64)
    tz: str = Field(max_length=64, description="IANA zone, e.g. Asia/Karachi")
    start_minute: int = Field(ge=0, lt=1440)
    end_minute: int = Field(ge=0, le=1440, description="before start: the window spans midnight")


class SiteWindowIn(BaseModel):
    """A site's maintenance window as an admin sets it ("HH:MM" local time)."""

    model_config = ConfigDict(extra="forbid")

    tz: str = PydanticField(min_length=1, max_length=64, examples=["Asia/Karachi"])
    start: str = PydanticField(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["01:00"])
    end: str = PydanticField(pattern=r"^([01]\d|2[0-4]):[0-5]\d$", examples=["05:00"])
