"""The audit log's tables: hash-chained records, the chain head, signed checkpoints.

`AuditRecord` rows are appended by `fleet_server.audit.record` and never
changed: each carries the SHA-256 of its own canonical encoding (`hash`) and
the hash of the record before it (`prev_hash`), so an edited, removed or
inserted row breaks the chain at that point (docs/audit.md). `AuditChainHead`
is the one row (`id` 1) every append locks and advances, which is what keeps
appends from several server workers on one chain. `AuditCheckpoint` is a
signed statement "the chain up to `seq` ends in `hash`", which catches a
rewrite of the whole tail that the chain alone could not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime

GENESIS_HASH = "0" * 64  # the `prev_hash` of record 1


class AuditRecord(SQLModel, table=True):
    """One security-relevant action: who did what to which object, chained to the one before."""

    seq: int = Field(
        primary_key=True, sa_column_kwargs={"autoincrement": False}, description="1, 2, 3 …"
    )
    at: datetime = Field(sa_type=UtcDateTime, index=True)
    actor: str = Field(max_length=120, index=True, description="user:<name>, node:<id>, system")
    action: str = Field(max_length=64, index=True, description="e.g. login.failed, user.created")
    object: str = Field(max_length=200, index=True, description="e.g. user:alice, node:lhr-0001")
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditChainHead(SQLModel, table=True):
    """Where the chain ends: the last record's `seq` and `hash` (one row, `id` 1)."""

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int = Field(default=0, ge=0)
    hash: str = Field(default=GENESIS_HASH, max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement that the chain up to `seq` ends in `hash`."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UtcDateTime)
    seq: int = Field(index=True)
    hash: str = Field(max_length=64)
    signature: str = Field(max_length=400, description="base64 ECDSA-SHA256 (DER)")
    signer_pem: str = Field(description="the signing certificate, issued by the fleet CA")


class AuditRecordPublic(SQLModel):
    """A record as the API and the exports show it, chain fields included."""

    seq: int
    at: datetime
    actor: str
    action: str
    object: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditRecordsPublic(SQLModel):
    """A page of records (newest first) and how many match the filter."""

    data: list[AuditRecordPublic]
    count: int


class AuditCheckpointPublic(SQLModel):
    """A checkpoint as the API and the exports show it."""

    id: int
    at: datetime
    seq: int
    hash: str
    signature: str
    signer_pem: str
