"""Evidence API (docs/evidence.md): node uploads over mTLS, views, requests, exports, cases.

Nodes call `/evidence/uploads…` and `/evidence/node/…` with their client
certificate (verified by the TLS layer against the fleet CA and handed to
the app as the ASGI ``tls`` extension, `fleet_server.ota.mtls`); users call
the rest with their token, within their scope: evidence belongs to its
node's district, an alert or case outside the scope is a 404 worded like a
missing one. Viewing a file and exporting need a stated purpose
(``X-Purpose``), recorded in the audit log; an export needs a second
user's approval when ``evidence_export_approval`` is set. Refusals are
``{"detail": {"reason", "message"}}`` with the code from
`fleet_server.evidence.service.EvidenceRefused`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography import x509
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.api.deps import Offset, RuntimeDep, SessionDep, require_roles
from fleet_server.api.routes.enrollment import refusal
from fleet_server.api.scope import PurposeDep, ScopeDep, not_in_scope
from fleet_server.evidence import service
from fleet_server.evidence.bundle import build_bundle
from fleet_server.evidence.retention import node_instructions
from fleet_server.evidence.service import EvidenceRefused, EvidenceSigner
from fleet_server.evidence.store import LocalEvidenceStore
from fleet_server.evidence.verify import load_ca
from fleet_server.models import Alert, Event, Node, Role, User, utcnow
from fleet_server.models.evidence import (
    EvidenceCase,
    EvidenceExport,
    EvidenceItem,
    EvidenceRequest,
)
from fleet_server.ota.errors import OtaServerError
from fleet_server.ota.mtls import node_for_certificate
from fleet_server.pki.store import PkiPaths
from fleet_server.runtime import Runtime
from fleet_server.scope import Scope, record_access
from proto.evidence import SignedClaim

__all__ = ["alert_of", "router", "store_for"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/evidence", tags=["evidence"])

MAX_CHUNK = 4 * 1024 * 1024
Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Reference = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ./_-]{0,63}$")]
StaffUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.OPERATOR, Role.AUDITOR))]
CaseUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.OPERATOR))]
ApproverUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.AUDITOR))]

_STATUS = {
    "node_mismatch": 403, "cert_unknown": 403, "signature": 422, "claim_invalid": 422,
    "too_large": 413, "offset": 409, "hash_mismatch": 422, "deleted": 410, "not_found": 404,
    "case_exists": 409, "case_released": 409, "not_approved": 409, "self_approval": 403,
    "nothing_to_export": 409,
}  # fmt: skip


def _refused(exc: EvidenceRefused) -> HTTPException:
    http = refusal(exc.reason, exc.message, status_code=_STATUS.get(exc.reason, 400))
    if exc.received is not None:
        http.headers = {"X-Evidence-Received": str(exc.received)}
    return http


@cache
def _store(root: Path) -> LocalEvidenceStore:
    return LocalEvidenceStore(root)


def store_for(runtime: Runtime) -> LocalEvidenceStore:
    """The server's evidence store (``DATA_DIR/evidence``)."""
    return _store(runtime.settings.data_dir.resolve() / "evidence")


def _pki(runtime: Runtime) -> PkiPaths:
    return runtime.pki.paths if runtime.pki is not None else PkiPaths(runtime.settings.pki_path)


def _trust(runtime: Runtime) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(trusted fleet CA certificates, the issuing CA) or 503 without a PKI."""
    paths = _pki(runtime)
    if not paths.exists:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no fleet PKI on this server")
    trusted = load_ca(paths.chain.read_bytes())
    issuing = load_ca(paths.issuing_cert.read_bytes())
    return trusted, issuing


# ------------------------------------------------------------------ nodes (mTLS)


def uploading_node(request: Request, runtime: RuntimeDep) -> tuple[str, str]:
    """(node id, certificate PEM) of the node calling with its client certificate; else 401/403."""
    extensions = request.scope.get("extensions") or {}
    chain = (extensions.get("tls") or {}).get("client_cert_chain") or []
    if not chain:
        raise refusal(
            "cert_required", "evidence uploads need the node's client certificate", status_code=401
        )
    with Session(runtime.engine) as session:
        try:
            return node_for_certificate(session=session, pem=chain[0]), chain[0]
        except OtaServerError as exc:
            raise refusal(exc.reason, exc.message, status_code=403) from None


UploadingNode = Annotated[tuple[str, str], Depends(uploading_node)]


class UploadState(BaseModel):
    """Where an upload stands: bytes held of `size`; `state` stored once whole."""

    sha256: str
    size: int
    received: int
    state: str


def _upload_state(item: EvidenceItem) -> UploadState:
    received = item.size if item.state == "stored" else item.received_bytes
    return UploadState(sha256=item.sha256, size=item.size, received=received, state=item.state)


@router.post("/uploads", response_model=UploadState)
def begin_upload(
    session: SessionDep, runtime: RuntimeDep, node: UploadingNode, signed: SignedClaim
) -> UploadState:
    """A node's signed claim for a file; answers how many bytes the server already holds."""
    trusted, issuing = _trust(runtime)
    try:
        item = service.begin_upload(
            session=session, node_id=node[0], cert_pem=node[1], signed=signed, trusted=trusted,
            issuing=issuing, store=store_for(runtime),
            max_bytes=runtime.settings.evidence_max_bytes,
        )  # fmt: skip
    except EvidenceRefused as exc:
        logger.warning("evidence upload from %s refused: %s", node[0], exc.message)
        raise _refused(exc) from None
    return _upload_state(item)


@router.put("/uploads/{sha256}", response_model=UploadState)
async def upload_chunk(
    request: Request, runtime: RuntimeDep, node: UploadingNode, sha256: Sha,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> UploadState:  # fmt: skip
    """Bytes of the file from `offset` (where the server said it continues); at most 4 MiB."""
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_CHUNK:
            raise refusal("too_large", f"a chunk is at most {MAX_CHUNK} bytes", status_code=413)
    from fastapi.concurrency import run_in_threadpool

    def write() -> EvidenceItem:
        with Session(runtime.engine, expire_on_commit=False) as session:
            return service.append_chunk(
                session=session, node_id=node[0], sha256=sha256, offset=offset,
                data=bytes(body), store=store_for(runtime),
            )  # fmt: skip

    try:
        item = await run_in_threadpool(write)
    except EvidenceRefused as exc:
        raise _refused(exc) from None
    return _upload_state(item)


class NodeInstructions(BaseModel):
    """What the node should do with its evidence copies."""

    upload: list[str]
    hold: list[str]
    delete: list[str]


@router.get("/node/instructions", response_model=NodeInstructions)
def instructions(session: SessionDep, node: UploadingNode) -> NodeInstructions:
    """Files the server asks for (plate crops on request), holds, and expired copies to delete."""
    wanted = session.exec(
        select(EvidenceRequest.sha256)
        .where(col(EvidenceRequest.node_id) == node[0])
        .where(col(EvidenceRequest.fulfilled_at).is_(None))
    ).all()
    stored = set(
        session.exec(
            select(EvidenceItem.sha256)
            .where(col(EvidenceItem.sha256).in_(list(wanted)))
            .where(col(EvidenceItem.state) == "stored")
        ).all()
    )
    for sha in stored:
        request_row = session.get(EvidenceRequest, sha)
        if request_row is not None:
            request_row.fulfilled_at = utcnow()
            session.add(request_row)
    session.commit()
    found = node_instructions(
        session=session,
        node_id=node[0],
        now=utcnow(),
        wanted=[w for w in wanted if w not in stored],
    )
    return NodeInstructions(**found)


class NodeDeletions(BaseModel):
    """Files a node deleted from its own store, and why (retention, server expiry)."""

    model_config = ConfigDict(extra="forbid")

    sha256s: Annotated[list[Sha], Field(max_length=1000)]
    reason: Annotated[str, StringConstraints(pattern=r"^[a-z_:]{1,64}$")]


@router.post("/node/deleted", status_code=status.HTTP_204_NO_CONTENT)
def node_deleted(session: SessionDep, node: UploadingNode, deletions: NodeDeletions) -> None:
    """Record (audit) that a node deleted its copies of these files."""
    for sha in deletions.sha256s:
        audit.record(
            session, actor=f"node:{node[0]}", action="evidence.deleted_on_node",
            object=f"evidence:{sha}", detail={"reason": deletions.reason},
        )  # fmt: skip
    session.commit()


# ------------------------------------------------------------------ users


def _alert_in_scope(session: Session, scope: Scope, alert_id: str) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None or not scope.allows(alert.district):
        raise not_in_scope(f"alert {alert_id!r}")
    return alert


def _case_in_scope(session: Session, scope: Scope, case_id: str) -> EvidenceCase:
    case = session.get(EvidenceCase, case_id)
    if case is None or not scope.allows(case.district):
        raise not_in_scope(f"case {case_id!r}")
    return case


def _in_scope(scope: Scope, items: Sequence[EvidenceItem]) -> list[EvidenceItem]:
    return [i for i in items if scope.allows(i.district)]


class EvidenceList(BaseModel):
    """Evidence files (metadata; the bytes need a stated purpose)."""

    data: list[dict[str, Any]]
    count: int


@router.get("", response_model=EvidenceList)
def list_evidence(
    session: SessionDep, scope: ScopeDep, _user: StaffUser,
    alert_id: Annotated[str | None, Query(max_length=26)] = None,
    case_id: Annotated[str | None, Query(max_length=26)] = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EvidenceList:  # fmt: skip
    """An alert's, a case's or a node's evidence, or the newest files, within the scope."""
    if alert_id is not None:
        _alert_in_scope(session, scope, alert_id)
        items = service.items_for_alert(session, alert_id)
    elif case_id is not None:
        _case_in_scope(session, scope, case_id)
        items = service.items_for_case(session, case_id)
    else:
        query = scope.filter(select(EvidenceItem), EvidenceItem.district)
        if node_id is not None:
            query = query.where(col(EvidenceItem.node_id) == node_id)
        query = query.order_by(col(EvidenceItem.received_at).desc()).offset(offset).limit(limit)
        items = list(session.exec(query).all())
    held = service.held_sha256s(session)
    rows = [{**service.public_item(i), "held": i.sha256 in held} for i in _in_scope(scope, items)]
    return EvidenceList(data=rows, count=len(rows))


def alert_of(session: Session, item: EvidenceItem) -> str | None:
    """The alert a file is evidence on: named in its claim, or its event's alert."""
    if item.alert_id is not None:
        return item.alert_id
    event = session.get(Event, item.event_id) if item.event_id else None
    return event.alert_id if event is not None else None


@router.get(
    "/{sha256}/file",
    responses={200: {"content": {"image/jpeg": {}, "application/octet-stream": {}}}},
)
def view_file(
    session: SessionDep, runtime: RuntimeDep, scope: ScopeDep, user: StaffUser,
    purpose: PurposeDep, sha256: Sha,
    alert_id: Annotated[
        str | None, Query(max_length=26, description="the alert it is viewed on (checked)")
    ] = None,
) -> Response:  # fmt: skip
    """The file's bytes, for a stated purpose (recorded with its alert before it is served).

    The view is recorded with the alert the file is evidence on; an
    `alert_id` the file is not evidence on is a 404, like a missing file.
    """
    item = session.get(EvidenceItem, sha256)
    if item is None or not scope.allows(item.district) or item.state != "stored":
        raise not_in_scope(f"evidence {sha256!r}")
    on_alert = alert_of(session, item)
    if alert_id is not None and alert_id != on_alert:
        raise not_in_scope(f"evidence {sha256!r} on alert {alert_id!r}")
    record_access(
        session=session, actor=f"user:{user.username}", agency=user.agency,
        resource="evidence", object_id=sha256, purpose=purpose, alert_id=on_alert,
    )  # fmt: skip
    with store_for(runtime).open(sha256) as handle:
        data = handle.read()
    return Response(data, media_type=item.content_type, headers={"Cache-Control": "no-store"})


class RequestIn(BaseModel):
    """Ask a node for a file it keeps until asked (a plate read's crop)."""

    model_config = ConfigDict(extra="forbid")

    sha256: Sha
    node_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]


@router.post("/requests", status_code=status.HTTP_202_ACCEPTED)
def request_file(
    session: SessionDep, scope: ScopeDep, user: CaseUser, purpose: PurposeDep, body: RequestIn
) -> dict[str, str]:
    """The node uploads it at its next poll (`/evidence/node/instructions`); audited."""
    node = session.get(Node, body.node_id)
    if node is None or not scope.allows(node.district):  # an unknown node: 404 for everyone
        raise not_in_scope(f"node {body.node_id!r}")
    if session.get(EvidenceRequest, body.sha256) is None:
        session.add(
            EvidenceRequest(
                sha256=body.sha256, node_id=body.node_id, requested_by=user.username,
                purpose=str(purpose),
            )
        )  # fmt: skip
        audit.record(
            session, actor=f"user:{user.username}", action="evidence.requested",
            object=f"evidence:{body.sha256}",
            detail={"node_id": body.node_id, "purpose": purpose.kind,
                    "reference": purpose.reference},
        )  # fmt: skip
        session.commit()
    return {"sha256": body.sha256, "state": "requested"}


# ------------------------------------------------------------------ exports


class ExportIn(BaseModel):
    """What to export: ``alert:<id>`` or ``case:<id>``."""

    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, StringConstraints(pattern=r"^(alert|case):[0-9A-Z]{26}$")]


def _subject_items(session: Session, scope: Scope, subject: str) -> list[EvidenceItem]:
    kind, _, ref = subject.partition(":")
    if kind == "alert":
        _alert_in_scope(session, scope, ref)
        items = service.items_for_alert(session, ref)
    else:
        _case_in_scope(session, scope, ref)
        items = service.items_for_case(session, ref)
    return [i for i in _in_scope(scope, items) if i.state == "stored"]


def _export_public(row: EvidenceExport) -> dict[str, Any]:
    return row.model_dump(mode="json")


@router.post("/exports", status_code=status.HTTP_201_CREATED)
def request_export(
    session: SessionDep, runtime: RuntimeDep, scope: ScopeDep, user: StaffUser,
    purpose: PurposeDep, body: ExportIn,
) -> dict[str, Any]:  # fmt: skip
    """Ask to export; `approved` at once unless the policy wants a second user's approval."""
    items = _subject_items(session, scope, body.subject)
    if not items:
        raise _refused(
            EvidenceRefused("nothing_to_export", f"{body.subject} has no stored evidence")
        )
    needs = runtime.settings.evidence_export_approval
    row = EvidenceExport(
        subject=body.subject, purpose=str(purpose), requested_by=user.username,
        state="pending" if needs else "approved",
    )  # fmt: skip
    session.add(row)
    audit.record(
        session, actor=f"user:{user.username}", action="evidence.export_requested",
        object=f"export:{row.id}",
        detail={"subject": body.subject, "purpose": purpose.kind, "reference": purpose.reference,
                "files": [i.sha256 for i in items], "needs_approval": needs},
    )  # fmt: skip
    session.commit()
    return _export_public(row)


@router.get("/exports")
def list_exports(
    session: SessionDep, scope: ScopeDep, _user: StaffUser,
    state: Literal["pending", "approved", "refused", "exported"] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Export requests (approvers look for ``pending`` ones), within the scope."""
    query = select(EvidenceExport).order_by(col(EvidenceExport.requested_at).desc()).limit(200)
    if state is not None:
        query = query.where(col(EvidenceExport.state) == state)
    rows = []
    for row in session.exec(query).all():
        try:
            _subject_items(session, scope, row.subject)
        except HTTPException:
            continue
        rows.append(_export_public(row))
    return {"data": rows, "count": len(rows)}


def _export_in_scope(session: Session, scope: Scope, export_id: str) -> EvidenceExport:
    row = session.get(EvidenceExport, export_id)
    if row is None:
        raise not_in_scope(f"export {export_id!r}")
    try:
        _subject_items(session, scope, row.subject)
    except HTTPException:
        raise not_in_scope(f"export {export_id!r}") from None
    return row


class DecisionIn(BaseModel):
    """An approver's decision on an export."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approved", "refused"]
    note: Annotated[str, StringConstraints(max_length=500)] = ""


@router.post("/exports/{export_id}/decision")
def decide_export(
    session: SessionDep, scope: ScopeDep, user: ApproverUser, export_id: str, body: DecisionIn
) -> dict[str, Any]:
    """A second user (admin or auditor, not the requester) approves or refuses; audited."""
    row = _export_in_scope(session, scope, export_id)
    if row.requested_by == user.username:
        raise _refused(EvidenceRefused("self_approval", "an export is approved by another user"))
    if row.state != "pending":
        raise _refused(EvidenceRefused("not_approved", f"the export is {row.state} already"))
    row.state = body.decision
    row.approved_by = user.username
    row.decided_at = utcnow()
    session.add(row)
    audit.record(
        session, actor=f"user:{user.username}", action=f"evidence.export_{body.decision}",
        object=f"export:{row.id}", detail={"subject": row.subject, "note": body.note},
    )  # fmt: skip
    session.commit()
    return _export_public(row)


@router.get("/exports/{export_id}/bundle", responses={200: {"content": {"application/zip": {}}}})
def download_bundle(
    session: SessionDep, runtime: RuntimeDep, scope: ScopeDep, user: StaffUser, export_id: str
) -> Response:
    """The signed bundle of an approved export (for the user who asked for it); audited."""
    row = _export_in_scope(session, scope, export_id)
    if row.requested_by != user.username:
        raise not_in_scope(f"export {export_id!r}")
    if row.state not in ("approved", "exported"):
        raise _refused(EvidenceRefused("not_approved", f"the export is {row.state}"))
    items = _subject_items(session, scope, row.subject)
    now = utcnow()
    paths = _pki(runtime)
    try:
        signer = EvidenceSigner.from_pki(paths, now=now)
    except Exception as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"no evidence signer: {exc}"
        ) from None
    audit.record(
        session, actor=f"user:{user.username}", action="evidence.exported",
        object=f"export:{row.id}", now=now,
        detail={"subject": row.subject, "purpose": row.purpose, "approved_by": row.approved_by,
                "files": [i.sha256 for i in items]},
    )  # fmt: skip
    for item in items:
        audit.record(
            session, actor=f"user:{user.username}", action="evidence.exported",
            object=f"evidence:{item.sha256}", now=now, detail={"export": row.id},
        )  # fmt: skip
    session.flush()
    data, manifest_sha = build_bundle(
        session=session, items=items, subject=row.subject, export_id=row.id,
        purpose=row.purpose, exported_by=user.username, approved_by=row.approved_by,
        signer=signer, store=store_for(runtime), crl_path=paths.crl, now=now,
    )  # fmt: skip
    row.state = "exported"
    row.manifest_sha256 = manifest_sha
    session.add(row)
    session.commit()
    name = f"evidence-{row.subject.replace(':', '-')}-{row.id}.zip"
    return Response(
        data, media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"',
                 "Cache-Control": "no-store"},
    )  # fmt: skip


# ------------------------------------------------------------------ cases and holds


class CaseIn(BaseModel):
    """A case (or FIR) to attach evidence to; its evidence is held while it is open."""

    model_config = ConfigDict(extra="forbid")

    reference: Reference
    title: Annotated[str, StringConstraints(max_length=200)] = ""
    district: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


def _case_public(session: Session, case: EvidenceCase) -> dict[str, Any]:
    return {**case.model_dump(mode="json"), "items": len(service.items_for_case(session, case.id))}


@router.post("/cases", status_code=status.HTTP_201_CREATED)
def create_case(
    session: SessionDep, scope: ScopeDep, user: CaseUser, body: CaseIn
) -> dict[str, Any]:
    """Open a case (audited); a district-scoped user opens cases in their districts only."""
    if body.district is None and not scope.is_all:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "name the case's district")
    if body.district is not None and not scope.allows(body.district):
        raise not_in_scope(f"district {body.district!r}")
    try:
        case = service.open_case(
            session=session, actor=user.username, reference=body.reference, title=body.title,
            district=body.district,
        )  # fmt: skip
    except EvidenceRefused as exc:
        raise _refused(exc) from None
    return _case_public(session, case)


@router.get("/cases")
def list_cases(session: SessionDep, scope: ScopeDep, _user: StaffUser) -> dict[str, Any]:
    """Cases in the scope, newest first."""
    query = scope.filter(select(EvidenceCase), EvidenceCase.district)
    rows = session.exec(query.order_by(col(EvidenceCase.created_at).desc()).limit(500)).all()
    data = [_case_public(session, c) for c in rows]
    return {"data": data, "count": len(data)}


@router.get("/cases/{case_id}")
def get_case(
    session: SessionDep, scope: ScopeDep, _user: StaffUser, case_id: str
) -> dict[str, Any]:
    """One case with its evidence."""
    case = _case_in_scope(session, scope, case_id)
    items = [service.public_item(i) for i in service.items_for_case(session, case.id)]
    return {**_case_public(session, case), "evidence": items}


class AttachIn(BaseModel):
    """Files to attach: by SHA-256, or every file of an alert."""

    model_config = ConfigDict(extra="forbid")

    sha256s: Annotated[list[Sha], Field(max_length=500)] = []
    alert_id: Annotated[str, StringConstraints(max_length=26)] | None = None


@router.post("/cases/{case_id}/items")
def attach(
    session: SessionDep, scope: ScopeDep, user: CaseUser, case_id: str, body: AttachIn
) -> dict[str, Any]:
    """Attach evidence to an open case: it is held (legal hold) from now on; audited."""
    case = _case_in_scope(session, scope, case_id)
    items: list[EvidenceItem] = []
    if body.alert_id is not None:
        _alert_in_scope(session, scope, body.alert_id)
        items += service.items_for_alert(session, body.alert_id)
    for sha in body.sha256s:
        item = session.get(EvidenceItem, sha)
        if item is None or not scope.allows(item.district):
            raise not_in_scope(f"evidence {sha!r}")
        items.append(item)
    try:
        added = service.attach_to_case(session=session, actor=user.username, case=case, items=items)
    except EvidenceRefused as exc:
        raise _refused(exc) from None
    return {**_case_public(session, case), "added": added}


class ReleaseIn(BaseModel):
    """Why the hold ends (the case closed, the court released it)."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, StringConstraints(min_length=3, max_length=500)]


@router.post("/cases/{case_id}/release")
def release(
    session: SessionDep, scope: ScopeDep, user: ApproverUser, case_id: str, body: ReleaseIn
) -> dict[str, Any]:
    """Release the legal hold (admin or auditor): retention applies again; audited."""
    case = _case_in_scope(session, scope, case_id)
    try:
        service.release_case(session=session, actor=user.username, case=case, note=body.note)
    except EvidenceRefused as exc:
        raise _refused(exc) from None
    return _case_public(session, case)
