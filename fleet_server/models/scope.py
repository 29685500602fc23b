"""API tokens for other agencies' systems, and the record of purposeful data access.

Both belong to the access model in docs/access.md: an `ApiToken` is a
scoped, expiring, revocable credential another agency's system presents as a
bearer token (only its SHA-256 is stored); a `DataAccess` row records that
someone viewed evidence-like data and the purpose they stated
(`fleet_server.scope.Purpose`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow
from fleet_server.models.user import DistrictName, Role


class ApiTokenCreate(SQLModel):
    """Input for issuing an API token; `districts` null means every district."""

    name: str = Field(min_length=1, max_length=64, description="which system uses it")
    agency: str = Field(min_length=1, max_length=64)
    role: Role = Field(default=Role.AUDITOR, description="operator, technician or auditor")
    districts: list[DistrictName] | None = Field(default=None, max_length=500)
    ttl_days: int = Field(default=90, ge=1, le=366, description="days until it expires")


class ApiToken(SQLModel, table=True):
    """An issued API token; the secret itself is shown once and never stored."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    agency: str = Field(max_length=64)
    role: str = Field(max_length=16)
    districts: list[str] | None = Field(default=None, sa_type=JSON)
    secret_sha256: str = Field(max_length=64, unique=True)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class ApiTokenPublic(SQLModel):
    """An API token as the admin API lists it (never the secret)."""

    id: int
    name: str
    agency: str
    role: str
    districts: list[str] | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiTokenCreated(ApiTokenPublic):
    """The answer to issuing a token: the only time `token` is shown."""

    token: str


class ApiTokensPublic(SQLModel):
    """Every API token, newest first."""

    data: list[ApiTokenPublic]
    count: int


class DataAccess(SQLModel, table=True):
    """Someone viewed evidence-like data, and why (docs/access.md, "Stated purpose")."""

    __tablename__ = "data_access"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)
    actor: str = Field(max_length=128, index=True)
    agency: str | None = Field(default=None, max_length=64)
    resource: str = Field(max_length=64, description="what kind of data, e.g. 'alert_snapshot'")
    object_id: str = Field(max_length=128, index=True)
    purpose_kind: str = Field(max_length=16, description="case | fir | alert | note")
    purpose_ref: str = Field(max_length=500)
