"""Control-room users, their roles and bearer tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow


class Role(StrEnum):
    """What a user may do (see fleet_server.auth for the checks)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    TECHNICIAN = "technician"
    AUDITOR = "auditor"


class UserCreate(SQLModel):
    """Input for creating a user."""

    username: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=8, max_length=256)


class User(SQLModel, table=True):
    """A user row; the password is only ever stored as an argon2 hash."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=64)
    role: str = Field(max_length=16)
    is_active: bool = True
    password_hash: str = Field(max_length=256)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class UserPublic(SQLModel):
    """A user as the API shows it."""

    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime


class Token(SQLModel):
    """OAuth2 token response."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth2 token type, not a secret
    expires_at: datetime
