"""Power: each node's latest readings, its downsampled history, and per-site targets.

Times here are the *node's* clock (the telemetry's ``ts``): a simulated fleet
runs its power a thousand times faster than real time, and a site's history
and its nights must follow the sun it sees, not the server's wall clock.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow

DEFAULT_AUTONOMY_TARGET_H = 8.0
DEFAULT_MAX_BATTERY_TEMP_C = 60.0


class PowerState(SQLModel, table=True):
    """A node's latest power readings (telemetry and power events both update it)."""

    node_id: str = Field(primary_key=True, max_length=64)
    ts: datetime = Field(sa_type=UtcDateTime, description="node clock of the latest reading")
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    panel_w: float | None = None
    battery_v: float | None = None
    battery_a: float | None = None
    battery_soc: float | None = None
    battery_temp_c: float | None = None
    load_w: float | None = None
    mains_present: bool | None = None
    autonomy_h: float | None = None
    policy_step: int | None = None
    max_policy_step: int = Field(default=0, description="deepest step seen (the node's last step)")


class PowerSample(SQLModel, table=True):
    """One node's readings in one bucket of `bucket_s` seconds (node clock): sums and extremes."""

    node_id: str = Field(primary_key=True, max_length=64)
    bucket_start: datetime = Field(primary_key=True, sa_type=UtcDateTime)
    samples: int = 0
    panel_w_sum: float = 0.0
    load_w_sum: float = 0.0
    battery_soc_last: float | None = None
    battery_soc_min: float | None = None
    battery_v_min: float | None = None
    battery_temp_max: float | None = None
    autonomy_h_last: float | None = None
    autonomy_h_min: float | None = None
    mains_present: bool | None = None
    policy_step_max: int | None = None
    last_ts: datetime = Field(sa_type=UtcDateTime)


class PowerSiteBase(SQLModel):
    """What a site must achieve; sites without a row get the defaults."""

    autonomy_target_h: float = Field(
        default=DEFAULT_AUTONOMY_TARGET_H,
        gt=0.0,
        le=1000.0,
        description="alert when a node's hours of autonomy fall below this (Karachi 8, KP 24)",
    )
    max_battery_temp_c: float = Field(
        default=DEFAULT_MAX_BATTERY_TEMP_C,
        ge=20.0,
        le=120.0,
        description="battery_fault above this battery temperature",
    )


class PowerSite(PowerSiteBase, table=True):
    """A site's power targets (the setting an admin or technician changes)."""

    site_id: str = Field(primary_key=True, max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_by: str | None = Field(default=None, max_length=64)


class PowerSiteUpdate(BaseModel):
    """Body of ``PUT /power/sites/{site_id}``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    autonomy_target_h: float = PydanticField(
        default=DEFAULT_AUTONOMY_TARGET_H, gt=0.0, le=1000.0, description="hours of autonomy"
    )
    max_battery_temp_c: float = PydanticField(
        default=DEFAULT_MAX_BATTERY_TEMP_C, ge=20.0, le=120.0, description="°C"
    )


class PowerSitePublic(PowerSiteBase):
    """A site's targets as the API shows them."""

    site_id: str
    updated_at: datetime | None = None
    updated_by: str | None = None


class PowerSitesPublic(SQLModel):
    """Every site with its own targets."""

    data: list[PowerSitePublic]
    count: int


class PowerPointPublic(SQLModel):
    """One bucket of history."""

    at: datetime
    samples: int
    panel_w: float
    load_w: float
    battery_soc: float | None
    battery_soc_min: float | None
    battery_v_min: float | None
    battery_temp_max: float | None
    autonomy_h: float | None
    autonomy_h_min: float | None
    mains_present: bool | None
    policy_step: int | None


class PowerHistoryPublic(SQLModel):
    """A node's history over `hours` ending at `until` (its latest reading)."""

    node_id: str
    hours: float
    bucket_s: int
    since: datetime
    until: datetime
    autonomy_target_h: float
    points: list[PowerPointPublic]


class PowerNodePublic(SQLModel):
    """One node in the fleet power overview."""

    node_id: str
    site_id: str | None
    district: str | None
    online: bool
    ts: datetime
    battery_soc: float | None
    autonomy_h: float | None
    load_w: float | None
    panel_w: float | None
    mains_present: bool | None
    policy_step: int | None
    autonomy_target_h: float
    night: bool | None = Field(description="night at the node's location at its latest reading")
    hours_until_sunrise: float | None
    autonomy_at_sunset_h: float | None = Field(
        description="predicted autonomy when the sun sets (now, if it is night)"
    )
    at_risk_tonight: bool
    below_target: bool
    reason: str


class PowerOverviewPublic(SQLModel):
    """Every node that reports power, the sites at risk tonight first."""

    data: list[PowerNodePublic]
    count: int
    at_risk: int
    below_target: int
