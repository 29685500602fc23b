"""Provisioning: enrollment tokens, preauthorized serials, the accept queue, node certificates,
and the node commands/replies the commissioning checklist uses (docs/provisioning.md).

The bodies a node sends and reads (enroll, renew, pending, the refusal) are
the wire contract's (`proto.enrollment`); the names the API has always used
for them (`EnrollIn`, `EnrollOut`, …) are those models, not copies.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow
from proto.bundle import Location
from proto.enrollment import EnrollPending, EnrollRequest, EnrollResponse, RenewRequest

__all__ = [
    "DAY_S",
    "DecisionIn",
    "EnrollIn",
    "EnrollOut",
    "EnrollPending",
    "EnrollmentRequest",
    "EnrollmentRequestPublic",
    "EnrollmentRequestState",
    "EnrollmentRequestsPublic",
    "EnrollmentToken",
    "EnrollmentTokenCreate",
    "EnrollmentTokenCreated",
    "EnrollmentTokenPublic",
    "EnrollmentTokensPublic",
    "ImportSkip",
    "LifecycleIn",
    "Location",
    "NodeCertificate",
    "NodeCertificatePublic",
    "NodeCertificatesPublic",
    "NodeCommand",
    "NodeCommandIn",
    "NodeCommandOut",
    "NodeLifecycle",
    "NodeRegister",
    "NodeReply",
    "NodeReplyPublic",
    "Preauthorization",
    "PreauthorizedImport",
    "RenewIn",
    "RevokeIn",
    "RevokeOut",
]

DAY_S = 86_400


class NodeLifecycle(StrEnum):
    """Where a node is: registered → provisioned → commissioned → active → decommissioned."""

    REGISTERED = "registered"
    PROVISIONED = "provisioned"
    COMMISSIONED = "commissioned"
    ACTIVE = "active"
    DECOMMISSIONED = "decommissioned"


# ------------------------------------------------------------ enrollment tokens


class EnrollmentToken(SQLModel, table=True):
    """A single-use, expiring, scoped enrollment token; only its SHA-256 is stored."""

    id: str = Field(primary_key=True, max_length=26)
    token_sha256: str = Field(unique=True, index=True, max_length=64)
    district: str | None = Field(default=None, max_length=64)
    site_id: str | None = Field(default=None, max_length=64)
    note: str = Field(default="", max_length=200)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    used_by_node_id: str | None = Field(default=None, max_length=64)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class EnrollmentTokenCreate(SQLModel):
    """What an admin or technician asks for."""

    district: str | None = Field(default=None, max_length=64)
    site_id: str | None = Field(default=None, max_length=64)
    ttl_s: int = Field(default=DAY_S, ge=60, le=30 * DAY_S, description="lifetime in seconds")
    note: str = Field(default="", max_length=200)


class EnrollmentTokenCreated(SQLModel):
    """The token value is in this answer and nowhere else, ever."""

    id: str
    token: str
    expires_at: datetime
    district: str | None
    site_id: str | None


class EnrollmentTokenPublic(SQLModel):
    """A token as the list shows it (never its value)."""

    id: str
    district: str | None
    site_id: str | None
    note: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_node_id: str | None
    revoked_at: datetime | None


class EnrollmentTokensPublic(SQLModel):
    data: list[EnrollmentTokenPublic]
    count: int


# ------------------------------------------------------- preauthorized serials


class Preauthorization(SQLModel, table=True):
    """A hardware serial whose public key was imported before the node was shipped."""

    serial: str = Field(primary_key=True, max_length=64)
    node_id: str = Field(index=True, max_length=64)
    key_sha256: str = Field(max_length=64, description="SHA-256 of the DER SubjectPublicKeyInfo")
    district: str | None = Field(default=None, max_length=64)
    site_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    enrolled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class ImportSkip(SQLModel):
    serial: str
    reason: str


class PreauthorizedImport(SQLModel):
    """Result of a CSV import: nodes created, rows skipped and why."""

    created: list[str]
    skipped: list[ImportSkip]


# ------------------------------------------------------------------- enrolling


# The enrollment bodies are the contract's (proto.enrollment), under the API's names.
EnrollIn = EnrollRequest
EnrollOut = EnrollResponse
RenewIn = RenewRequest


class EnrollmentRequestState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class EnrollmentRequest(SQLModel, table=True):
    """A node that asked to enroll with neither token nor preauthorization (manual accept)."""

    id: str = Field(primary_key=True, max_length=26)
    serial: str = Field(index=True, max_length=64)
    node_id: str = Field(max_length=64)
    key_sha256: str = Field(max_length=64)
    csr_pem: str = Field(sa_column=Column(Text, nullable=False))
    district: str | None = Field(default=None, max_length=64)
    site_id: str | None = Field(default=None, max_length=64)
    lat: float | None = None
    lon: float | None = None
    client_address: str | None = Field(default=None, max_length=64)
    state: str = Field(default=EnrollmentRequestState.PENDING, max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    decided_by: str | None = Field(default=None, max_length=64)
    note: str = Field(default="", max_length=200)
    certificate_serial: str | None = Field(default=None, max_length=64)


class EnrollmentRequestPublic(SQLModel):
    id: str
    serial: str
    node_id: str
    key_sha256: str
    district: str | None
    site_id: str | None
    lat: float | None
    lon: float | None
    client_address: str | None
    state: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str


class EnrollmentRequestsPublic(SQLModel):
    data: list[EnrollmentRequestPublic]
    count: int


class DecisionIn(SQLModel):
    note: str = Field(default="", max_length=200)


# ------------------------------------------------------------------ certificates


class NodeCertificate(SQLModel, table=True):
    """Every certificate issued to a node; revocation is `revoked_at` (the CRL is built from it)."""

    serial: str = Field(primary_key=True, max_length=64, description="lower-case hex")
    node_id: str = Field(index=True, max_length=64)
    hardware_serial: str = Field(max_length=64)
    key_sha256: str = Field(max_length=64)
    not_before: datetime = Field(sa_type=UtcDateTime)
    not_after: datetime = Field(sa_type=UtcDateTime, index=True)
    issued_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    issued_via: str = Field(max_length=32, description="token | preauthorized | manual | renewal")
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime, index=True)
    revocation_reason: str | None = Field(default=None, max_length=200)
    pem: str = Field(sa_column=Column(Text, nullable=False))


class NodeCertificatePublic(SQLModel):
    serial: str
    node_id: str
    hardware_serial: str
    key_sha256: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    issued_via: str
    revoked_at: datetime | None
    revocation_reason: str | None


class NodeCertificatesPublic(SQLModel):
    data: list[NodeCertificatePublic]
    count: int


class RevokeIn(SQLModel):
    reason: str = Field(default="revoked by admin", max_length=200)


class RevokeOut(SQLModel):
    node_id: str
    revoked: list[str] = Field(description="serials revoked by this call")
    broker: str = Field(description="what the managed broker was made to do")


# --------------------------------------------------------- registration/lifecycle


class NodeRegister(SQLModel):
    """`POST /api/v1/nodes`: a technician registers a node before it enrolls."""

    node_id: str = Field(min_length=3, max_length=64)
    serial: str = Field(min_length=1, max_length=64)
    site_id: str | None = Field(default=None, max_length=64)
    district: str | None = Field(default=None, max_length=64)
    location: Location | None = None


class LifecycleIn(SQLModel):
    to: NodeLifecycle
    note: str = Field(default="", max_length=200)


# ------------------------------------------------------------- commands/replies


class NodeCommand(SQLModel, table=True):
    """A command the server published to a node (the reply is matched by request_id)."""

    request_id: str = Field(primary_key=True, max_length=26)
    node_id: str = Field(index=True, max_length=64)
    name: str = Field(max_length=64)
    args: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sent_by: str = Field(max_length=64)
    sent_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class NodeReply(SQLModel, table=True):
    """A node's `Reply` as ingest received it on `reply/<request_id>`."""

    node_id: str = Field(primary_key=True, max_length=64)
    request_id: str = Field(primary_key=True, max_length=26)
    ok: bool
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str | None = Field(default=None, max_length=1000)
    ts: datetime = Field(sa_type=UtcDateTime, description="node clock")
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class NodeCommandIn(SQLModel):
    """`POST /api/v1/nodes/{node_id}/commands`."""

    name: str = Field(max_length=64, description="ping | test_mode | set_config")
    args: dict[str, Any] = Field(default_factory=dict)
    ttl_s: int = Field(default=300, ge=1, le=DAY_S, description="the node ignores it after this")


class NodeCommandOut(SQLModel):
    request_id: str


class NodeReplyPublic(SQLModel):
    node_id: str
    request_id: str
    ok: bool
    result: dict[str, Any] | None
    error: str | None
    ts: datetime
    received_at: datetime
