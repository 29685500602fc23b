"""Enrollment API: tokens, preauthorized serials, `/enroll`, renewal, accept queue, certificates.

Every refusal is ``{"detail": {"reason": CODE, "message": TEXT}}`` (the
contract's `RefusalBody`) with the status `proto.enrollment.REFUSAL_STATUS`
gives, so a node or a technician's tool can act on the code and show the
message (docs/provisioning.md). The node-facing paths and bodies are the
contract's too (`proto.enrollment`); this module only maps them onto FastAPI.
`/enroll`, `/enroll/{request_id}` and `/enroll/renew` need no user: a node
has none. They are rate-limited per client address and per token (or
certificate) by an in-memory token bucket.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlmodel import col, func, select

from fleet_server import audit
from fleet_server.api.deps import AdminUser, RuntimeDep, SessionDep, require_roles
from fleet_server.api.scope import FleetScope, ScopeDep, not_in_scope
from fleet_server.enrollment import (
    EnrollmentRefused,
    Issued,
    accept_request,
    create_token,
    enroll,
    enrollment_result,
    hash_token,
    import_preauthorized,
    reject_request,
    renew,
    revoke_token,
)
from fleet_server.models import (
    DecisionIn,
    EnrollmentRequest,
    EnrollmentRequestPublic,
    EnrollmentRequestsPublic,
    EnrollmentRequestState,
    EnrollmentToken,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
    EnrollmentTokensPublic,
    NodeCertificate,
    NodeCertificatePublic,
    NodeCertificatesPublic,
    PreauthorizedImport,
    Role,
    User,
    utcnow,
)
from fleet_server.pki.store import IssuingCa
from fleet_server.runtime import Runtime
from proto.enrollment import (
    ENROLL_POLL_ROUTE,
    ENROLL_RENEW_ROUTE,
    ENROLL_ROUTE,
    EnrollPending,
    EnrollRequest,
    EnrollResponse,
    RefusalBody,
    RefusalReason,
    RenewRequest,
    refusal_detail,
    refusal_status,
)

__all__ = ["refusal", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["enrollment"])

EnrollerUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.TECHNICIAN))]
MAX_CSV_BYTES = 5 * 1024 * 1024


def refusal(
    reason: RefusalReason | str, message: str, *, status_code: int | None = None
) -> HTTPException:
    """The HTTPException for a refusal, in the contract's shape (`RefusalBody`).

    The status is the contract's for its code (`REFUSAL_STATUS`); codes of the
    admin API outside the enrollment contract give theirs or get 400.
    """
    return HTTPException(
        status_code=status_code or refusal_status(reason),
        detail=refusal_detail(reason, message),
    )


def _refused(exc: EnrollmentRefused) -> HTTPException:
    return refusal(exc.reason, exc.message)


def _ca(runtime: Runtime) -> IssuingCa:
    if runtime.pki is None:
        raise refusal(
            RefusalReason.PKI_UNAVAILABLE,
            "this server has no issuing CA; run `nigehbaan server ca issue-intermediate`",
        )
    return runtime.pki.ca


def _rate_limit(runtime: Runtime, *keys: str) -> None:
    limiter = runtime.enroll_limiter
    if limiter is None:
        return
    for key in keys:
        if not limiter.allow(key):
            raise refusal(
                RefusalReason.RATE_LIMITED, "too many enrollment requests; wait a minute and retry"
            )


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _enroll_answer(issued: Issued, *, runtime: Runtime, request: Request) -> EnrollResponse:
    settings = runtime.settings
    host = settings.public_hostname or request.url.hostname or "127.0.0.1"
    mqtts_port = settings.mqtts_port
    if runtime.broker is not None and runtime.broker.tls_url:
        mqtts_port = int(runtime.broker.tls_url.rsplit(":", 1)[1])
    api_port = request.url.port
    api_url = f"{request.url.scheme}://{host}" + (f":{api_port}" if api_port else "")
    return EnrollResponse(
        node_id=issued.node_id,
        certificate_pem=issued.certificate_pem,
        ca_chain_pem=_ca(runtime).chain_pem,
        broker_url=f"mqtts://{host}:{mqtts_port}",
        api_url=api_url,
        not_after=issued.not_after,
    )


# ----------------------------------------------------------------- tokens


@router.post("/enrollment-tokens", status_code=status.HTTP_201_CREATED)
def create_enrollment_token(
    session: SessionDep, user: EnrollerUser, scope: ScopeDep, token_in: EnrollmentTokenCreate
) -> EnrollmentTokenCreated:
    """A single-use enrollment token; its value is shown in this answer only.

    Only for a district of the caller's scope (403 otherwise; a token with no
    district needs an every-district scope).
    """
    if not scope.allows(token_in.district):
        raise refusal("forbidden", "that district is outside your scope", status_code=403)
    row, value = create_token(
        session=session, token_in=token_in, created_by=user.username, now=utcnow()
    )
    session.commit()
    logger.info("enrollment token %s created by %s", row.id, user.username)
    return EnrollmentTokenCreated(
        id=row.id,
        token=value,
        expires_at=row.expires_at,
        district=row.district,
        site_id=row.site_id,
    )


@router.get("/enrollment-tokens")
def read_enrollment_tokens(
    session: SessionDep, _user: EnrollerUser, scope: ScopeDep
) -> EnrollmentTokensPublic:
    """Tokens of the caller's scope, newest first (never their values)."""
    count = session.exec(
        scope.filter(select(func.count()).select_from(EnrollmentToken), EnrollmentToken.district)
    ).one()
    rows = session.exec(
        scope.filter(select(EnrollmentToken), EnrollmentToken.district)
        .order_by(col(EnrollmentToken.created_at).desc())
        .limit(200)
    ).all()
    return EnrollmentTokensPublic(
        data=[EnrollmentTokenPublic.model_validate(r) for r in rows], count=int(count)
    )


@router.delete("/enrollment-tokens/{token_id}")
def withdraw_enrollment_token(
    session: SessionDep, user: EnrollerUser, scope: ScopeDep, token_id: str
) -> EnrollmentTokenPublic:
    """Withdraw an unused token; 404 when there is no such token (or not in scope)."""
    token = session.get(EnrollmentToken, token_id)
    if token is not None and not scope.allows(token.district):
        raise refusal(RefusalReason.TOKEN_UNKNOWN, "no such enrollment token", status_code=404)
    try:
        row = revoke_token(session=session, token_id=token_id, now=utcnow())
    except EnrollmentRefused as exc:
        # For a node an unknown token is a 403 like any refused one; here an
        # admin names a resource that does not exist.
        not_found = exc.reason == RefusalReason.TOKEN_UNKNOWN
        raise refusal(exc.reason, exc.message, status_code=404 if not_found else None) from None
    audit.record(
        session, actor=f"user:{user.username}", action="enrollment.token_revoked",
        object=f"enrollment-token:{row.id}",
    )  # fmt: skip
    session.commit()
    return EnrollmentTokenPublic.model_validate(row)


# ---------------------------------------------------------- preauthorized


@router.post(
    "/preauthorized",
    openapi_extra={
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            }
        }
    },
)
async def import_preauthorized_serials(
    request: Request, session: SessionDep, _user: AdminUser, _fleet: FleetScope
) -> PreauthorizedImport:
    """Import `serial,public_key_pem[,district,site_id,node_id]` rows (text/csv body or file)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload: Any = form.get("file")
        if upload is None or isinstance(upload, str):
            raise refusal(RefusalReason.BAD_CSV, "send the CSV as the form field 'file'")
        raw = await upload.read(MAX_CSV_BYTES + 1)
    else:
        raw = await request.body()
    if len(raw) > MAX_CSV_BYTES:
        raise refusal(RefusalReason.BAD_CSV, f"the CSV is larger than {MAX_CSV_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise refusal(RefusalReason.BAD_CSV, "the CSV must be UTF-8") from None

    def work() -> PreauthorizedImport:
        result = import_preauthorized(session=session, csv_text=text, now=utcnow())
        session.commit()
        return result

    try:
        return await run_in_threadpool(work)
    except EnrollmentRefused as exc:
        raise _refused(exc) from None


# ---------------------------------------------------------------- enroll


@router.post(
    ENROLL_ROUTE,
    responses={
        202: {"model": EnrollPending, "description": "queued for manual accept"},
        403: {"model": RefusalBody, "description": "refused (any 4xx/5xx has this shape)"},
    },
)
def enroll_node(
    request: Request, session: SessionDep, runtime: RuntimeDep, enroll_in: EnrollRequest
) -> Any:
    """A node asks for its certificate (token, preauthorized serial, or the accept queue)."""
    keys = [f"addr:{_client(request)}"]
    if enroll_in.token:
        keys.append(f"token:{hash_token(enroll_in.token)}")
    _rate_limit(runtime, *keys)
    ca = _ca(runtime)
    try:
        outcome = enroll(
            session=session,
            ca=ca,
            enroll_in=enroll_in,
            now=utcnow(),
            cert_days=runtime.settings.node_cert_days,
            manual_accept=runtime.settings.enrollment_manual_accept,
            client_address=_client(request),
        )
    except EnrollmentRefused as exc:
        logger.info("enrollment of serial %r refused: %s", enroll_in.serial, exc)
        session.rollback()
        audit.record(
            session, actor=f"serial:{enroll_in.serial.strip()}"[:120],
            action="enrollment.refused", object=f"node:{enroll_in.node_id or '?'}",
            detail={"reason": str(exc.reason), "message": exc.message,
                    "address": _client(request)},
        )  # fmt: skip
        session.commit()
        raise _refused(exc) from None
    session.commit()
    if isinstance(outcome, Issued):
        return _enroll_answer(outcome, runtime=runtime, request=request)
    return JSONResponse(
        EnrollPending(request_id=outcome.id).model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
    )


@router.get(ENROLL_POLL_ROUTE, responses={202: {"model": EnrollPending}})
def poll_enrollment(
    request: Request, session: SessionDep, runtime: RuntimeDep, request_id: str
) -> Any:
    """A queued node asks again: 200 with its certificate, 202 still pending, 403 rejected."""
    _ca(runtime)
    try:
        outcome = enrollment_result(session=session, request_id=request_id)
    except EnrollmentRefused as exc:
        raise _refused(exc) from None
    if isinstance(outcome, Issued):
        return _enroll_answer(outcome, runtime=runtime, request=request)
    return JSONResponse(
        EnrollPending(request_id=outcome.id).model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
    )


@router.post(ENROLL_RENEW_ROUTE)
def renew_certificate(
    request: Request, session: SessionDep, runtime: RuntimeDep, renew_in: RenewRequest
) -> EnrollResponse:
    """A new certificate for the same key, before (or up to 7 days after) the current expires."""
    _rate_limit(runtime, f"addr:{_client(request)}", f"cert:{hash_token(renew_in.certificate_pem)}")
    ca = _ca(runtime)
    try:
        issued = renew(
            session=session,
            ca=ca,
            certificate_pem=renew_in.certificate_pem,
            csr_pem=renew_in.csr_pem,
            now=utcnow(),
            cert_days=runtime.settings.node_cert_days,
        )
    except EnrollmentRefused as exc:
        logger.info("renewal refused: %s", exc)
        raise _refused(exc) from None
    session.commit()
    return _enroll_answer(issued, runtime=runtime, request=request)


# ----------------------------------------------------------- accept queue


@router.get("/enrollment-requests")
def read_enrollment_requests(
    session: SessionDep,
    _user: EnrollerUser,
    scope: ScopeDep,
    state: Annotated[EnrollmentRequestState | None, Query()] = None,
) -> EnrollmentRequestsPublic:
    """The manual accept queue of the caller's scope (`state=pending` for what waits)."""
    query = scope.filter(select(EnrollmentRequest), EnrollmentRequest.district)
    count_query = scope.filter(
        select(func.count()).select_from(EnrollmentRequest), EnrollmentRequest.district
    )
    if state is not None:
        query = query.where(EnrollmentRequest.state == state)
        count_query = count_query.where(EnrollmentRequest.state == state)
    rows = session.exec(query.order_by(col(EnrollmentRequest.created_at)).limit(200)).all()
    return EnrollmentRequestsPublic(
        data=[EnrollmentRequestPublic.model_validate(r) for r in rows],
        count=int(session.exec(count_query).one()),
    )


def _request_in_scope(session: SessionDep, scope: ScopeDep, request_id: str) -> None:
    row = session.get(EnrollmentRequest, request_id)
    if row is not None and not scope.allows(row.district):
        raise not_in_scope(f"enrollment request {request_id!r}")


@router.post("/enrollment-requests/{request_id}/accept")
def accept_enrollment_request(
    session: SessionDep,
    runtime: RuntimeDep,
    user: AdminUser,
    scope: ScopeDep,
    request_id: str,
    decision: DecisionIn | None = None,
) -> EnrollmentRequestPublic:
    """Approve a queued node; it gets its certificate on its next poll."""
    _request_in_scope(session, scope, request_id)
    ca = _ca(runtime)
    try:
        accept_request(
            session=session,
            ca=ca,
            request_id=request_id,
            decided_by=user.username,
            now=utcnow(),
            cert_days=runtime.settings.node_cert_days,
            note=decision.note if decision else "",
        )
    except EnrollmentRefused as exc:
        raise _refused(exc) from None
    session.commit()
    return EnrollmentRequestPublic.model_validate(session.get(EnrollmentRequest, request_id))


@router.post("/enrollment-requests/{request_id}/reject")
def reject_enrollment_request(
    session: SessionDep,
    user: AdminUser,
    scope: ScopeDep,
    request_id: str,
    decision: DecisionIn | None = None,
) -> EnrollmentRequestPublic:
    """Refuse a queued node; its next poll gets 403 `rejected`."""
    _request_in_scope(session, scope, request_id)
    try:
        row = reject_request(
            session=session,
            request_id=request_id,
            decided_by=user.username,
            now=utcnow(),
            note=decision.note if decision else "",
        )
    except EnrollmentRefused as exc:
        raise _refused(exc) from None
    session.commit()
    return EnrollmentRequestPublic.model_validate(row)


# ----------------------------------------------------------- certificates


@router.get("/certificates")
def read_certificates(
    session: SessionDep, scope: ScopeDep, node_id: str | None = None
) -> NodeCertificatesPublic:
    """Certificates of nodes in the caller's scope, newest first (serial, validity, revocation)."""
    query = scope.filter_nodes(select(NodeCertificate), NodeCertificate.node_id)
    count_query = scope.filter_nodes(
        select(func.count()).select_from(NodeCertificate), NodeCertificate.node_id
    )
    if node_id is not None:
        query = query.where(NodeCertificate.node_id == node_id)
        count_query = count_query.where(NodeCertificate.node_id == node_id)
    rows = session.exec(query.order_by(col(NodeCertificate.issued_at).desc()).limit(500)).all()
    return NodeCertificatesPublic(
        data=[NodeCertificatePublic.model_validate(r) for r in rows],
        count=int(session.exec(count_query).one()),
    )
