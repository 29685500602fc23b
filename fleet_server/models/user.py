"""Control-room users, their roles and bearer tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow


class Role(StrEnum):
    """What a user may do (see fleet_server.auth for the checks)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    TECHNICIAN = "technician"
    AUDITOR = "auditor"


# A district name as nodes carry it (`Node.district`); scopes list these (docs/access.md).
DistrictName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class UserCreate(SQLModel):
    """Input for creating a user."""

    username: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=8, max_length=256)
    agency: str | None = Field(default=None, max_length=64, description="e.g. 'PSCA', 'CTD'")
    districts: list[DistrictName] | None = Field(
        default=None,
        max_length=500,
        description="districts the user may see; null = every district (docs/access.md)",
    )


class User(SQLModel, table=True):
    """A user row; the password is only ever stored as an argon2 hash."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=64)
    role: str = Field(max_length=16)
    is_active: bool = True
    password_hash: str = Field(max_length=256)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    # Scope (docs/access.md, fleet_server.scope): NULL districts = every district.
    agency: str | None = Field(default=None, max_length=64)
    districts: list[str] | None = Field(default=None, sa_type=JSON)


class UserPublic(SQLModel):
    """A user as the API shows it."""

    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime
    agency: str | None = None
    districts: list[str] | None = Field(default=None, description="null = every district")


class Token(SQLModel):
    """OAuth2 token response."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth2 token type, not a secret
    expires_at: datetime
