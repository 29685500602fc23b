"""Evidence on the server: node-signed files, upload requests, cases (legal holds), exports.

`EvidenceItem` is one file a node captured and signed, kept by SHA-256 with
the node's signed claim, the certificate that signed it and where the upload
stands (``partial`` while bytes arrive, ``stored``, ``deleted`` after
retention — the row stays so the audit trail keeps its subject).
`EvidenceRequest` is the server asking a node for a file it does not send
by itself (a plate crop). `EvidenceCase` is a case or FIR that evidence is
attached to (`EvidenceCaseItem`); while a case is ``open`` its evidence is
on legal hold and retention leaves it alone. `EvidenceExport` is a request
to export a bundle, with its stated purpose and, where the policy wants
one, the approver. The rules live in `fleet_server.evidence`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, new_id, utcnow

__all__ = [
    "EvidenceCase",
    "EvidenceCaseItem",
    "EvidenceExport",
    "EvidenceItem",
    "EvidenceRequest",
]


class EvidenceItem(SQLModel, table=True):
    """One node-signed evidence file (see the module docstring)."""

    __tablename__ = "evidenceitem"
    __table_args__ = (
        Index("ix_evidenceitem_retention", "state", "data_class", "captured_at"),
        Index("ix_evidenceitem_alert", "alert_id"),
        Index("ix_evidenceitem_event", "event_id"),
    )

    sha256: str = Field(primary_key=True, max_length=64)
    data_class: str = Field(max_length=16)
    node_id: str = Field(max_length=64)
    district: str | None = Field(default=None, max_length=64)
    camera_id: str | None = Field(default=None, max_length=64)
    event_id: str | None = Field(default=None, max_length=26)
    event_type: str | None = Field(default=None, max_length=32)
    alert_id: str | None = Field(default=None, max_length=26)
    captured_at: datetime = Field(sa_type=UtcDateTime)
    size: int
    content_type: str = Field(max_length=64)
    claim: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    signature: str = Field(max_length=256)
    cert_serial: str = Field(max_length=64)
    cert_pem: str = Field(max_length=8000)
    state: str = Field(default="partial", max_length=16)
    received_bytes: int = 0
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    stored_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    delete_reason: str | None = Field(default=None, max_length=200)


class EvidenceRequest(SQLModel, table=True):
    """The server asks a node for a file by SHA-256 (a plate crop it keeps until asked)."""

    __tablename__ = "evidencerequest"

    sha256: str = Field(primary_key=True, max_length=64)
    node_id: str = Field(max_length=64, index=True)
    requested_by: str = Field(max_length=128)
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    purpose: str = Field(max_length=600)
    fulfilled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class EvidenceCase(SQLModel, table=True):
    """A case (or FIR) evidence is attached to; ``open`` holds its evidence (legal hold)."""

    __tablename__ = "evidencecase"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    reference: str = Field(max_length=64, unique=True)
    title: str = Field(default="", max_length=200)
    district: str | None = Field(default=None, max_length=64)
    state: str = Field(default="open", max_length=16)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    released_by: str | None = Field(default=None, max_length=128)
    released_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    release_note: str | None = Field(default=None, max_length=500)


class EvidenceCaseItem(SQLModel, table=True):
    """A file attached to a case."""

    __tablename__ = "evidencecaseitem"

    case_id: str = Field(primary_key=True, max_length=26, foreign_key="evidencecase.id")
    sha256: str = Field(primary_key=True, max_length=64, foreign_key="evidenceitem.sha256")
    added_by: str = Field(max_length=128)
    added_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class EvidenceExport(SQLModel, table=True):
    """An export of an alert's or a case's evidence: purpose, requester, approver, result."""

    __tablename__ = "evidenceexport"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    subject: str = Field(max_length=64)
    purpose: str = Field(max_length=600)
    requested_by: str = Field(max_length=128)
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    state: str = Field(default="pending", max_length=16)
    approved_by: str | None = Field(default=None, max_length=128)
    decided_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    manifest_sha256: str | None = Field(default=None, max_length=64)
