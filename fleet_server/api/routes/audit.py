"""`/audit`: auditors and admins read, export and verify the audit log; nobody writes it.

Read-only by construction: this router has no POST, PUT, PATCH or DELETE,
and no other route edits or deletes a record (the database refuses it too).
The log is fleet-wide (it records users, enrollment and settings, which
belong to no district), so it takes `FleetScope`: an auditor scoped to some
districts gets 403, not a partial log.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.api.deps import RuntimeDep, SessionDep, require_roles
from fleet_server.api.scope import FleetScope
from fleet_server.audit.checkpoints import load_trusted
from fleet_server.audit.export import AuditFilter, find_records, records_csv, records_json
from fleet_server.models import Role, User, utcnow
from fleet_server.models.audit import (
    AuditCheckpoint,
    AuditCheckpointPublic,
    AuditRecordPublic,
    AuditRecordsPublic,
)

router = APIRouter(prefix="/audit", tags=["audit"])

AuditorUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.AUDITOR))]


def _filter(
    actor: Annotated[str | None, Query(max_length=120, description="prefix: user:alice")] = None,
    action: Annotated[str | None, Query(max_length=64, description="prefix, e.g. login.")] = None,
    object: Annotated[str | None, Query(max_length=200, description="prefix, e.g. node:")] = None,
    since: Annotated[datetime | None, Query(description="at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="before (ISO 8601)")] = None,
) -> AuditFilter:
    return AuditFilter(actor=actor, action=action, object=object, since=since, until=until)


FilterDep = Annotated[AuditFilter, Depends(_filter)]


class AuditVerdict(BaseModel):
    """What `nigehbaan server audit verify` would say about the chain now."""

    ok: bool
    records: int
    checkpoints: int
    last_seq: int
    broken: str | None
    broken_seq: int | None
    note: str | None
    summary: str


@router.get("/records")
def read_audit_records(
    session: SessionDep,
    _user: AuditorUser,
    _fleet: FleetScope,
    where: FilterDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> AuditRecordsPublic:
    """Matching records, newest first, with their chain fields."""
    rows, count = find_records(session=session, where=where, limit=limit, offset=offset)
    return AuditRecordsPublic(
        data=[AuditRecordPublic.model_validate(r, from_attributes=True) for r in rows], count=count
    )


@router.get("/checkpoints")
def read_audit_checkpoints(
    session: SessionDep, _user: AuditorUser, _fleet: FleetScope
) -> list[AuditCheckpointPublic]:
    """Every signed checkpoint, newest first."""
    rows = session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq).desc())).all()
    return [AuditCheckpointPublic.model_validate(r, from_attributes=True) for r in rows]


def _encoded(lines: Iterator[str]) -> Iterator[bytes]:
    for line in lines:
        yield line.encode("utf-8")


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def export_audit_records(
    session: SessionDep,
    runtime: RuntimeDep,
    _user: AuditorUser,
    _fleet: FleetScope,
    where: FilterDep,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> StreamingResponse:
    """The matching records with their chain fields (JSON also carries the checkpoints).

    `nigehbaan server audit verify --file` checks the file on another machine.
    """
    now = utcnow()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    # The request's session (it loaded the user) ends here: on SQLite every transaction
    # holds the write lock, and the stream below reads in its own session after we return.
    session.close()

    def pieces() -> Iterator[bytes]:
        with Session(runtime.engine) as reader:
            if format == "csv":
                yield from _encoded(records_csv(session=reader, where=where))
            else:
                yield from records_json(session=reader, where=where, now=now)

    media = "text/csv" if format == "csv" else "application/json"
    body: Iterator[bytes] = pieces()
    if runtime.engine.dialect.name == "sqlite":
        # A SQLite reader holds the write lock: read it all now rather than keep ingest
        # waiting on a slow download. PostgreSQL streams from the cursor.
        body = iter([b"".join(body)])
    return StreamingResponse(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.{format}"'},
    )


@router.get("/verify")
def verify_audit_chain(
    session: SessionDep, runtime: RuntimeDep, _user: AuditorUser, _fleet: FleetScope
) -> AuditVerdict:
    """Walk the chain and checkpoints now (against the fleet CA when the server has one)."""
    chain_file = runtime.settings.pki_path / "ca-chain.pem"
    trusted = load_trusted(chain_file.read_bytes()) if chain_file.exists() else None
    verdict = audit.verify_database(session, trusted=trusted)
    return AuditVerdict(
        ok=verdict.ok, records=verdict.records, checkpoints=verdict.checkpoints,
        last_seq=verdict.last_seq, broken=verdict.broken, broken_seq=verdict.broken_seq,
        note=verdict.note, summary=verdict.summary(),
    )  # fmt: skip
