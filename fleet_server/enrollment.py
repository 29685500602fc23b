"""Enrollment and node identity: tokens, preauthorized serials, the accept queue, certificates,
revocation and the node lifecycle (docs/provisioning.md, "Enrollment API").

Data functions only: they take a `Session` and an `IssuingCa`, change rows
(the caller commits) and raise `EnrollmentRefused(reason, message)` with one
of the reason codes a technician can act on. Both the exception and the codes
are the wire contract's (`proto.enrollment`), the ones the node reads back;
routes turn a refusal into its `RefusalBody` with the HTTP status the
contract gives the code. Writing the CRL and telling the broker happen after
the commit (`fleet_server.pki.runtime`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update
from sqlmodel import Session, col, func, select

from fleet_server import audit
from fleet_server.models import (
    EnrollIn,
    EnrollmentRequest,
    EnrollmentRequestState,
    EnrollmentToken,
    EnrollmentTokenCreate,
    ImportSkip,
    Node,
    NodeCertificate,
    NodeLifecycle,
    NodeRegister,
    Preauthorization,
    PreauthorizedImport,
    new_id,
)
from fleet_server.pki.ca import (
    RESERVED_NAMES,
    CsrInvalid,
    cert_pem,
    cert_serial_hex,
    check_csr,
    csr_common_name,
    key_fingerprint,
    parse_csr,
    verify_issued_by,
)
from fleet_server.pki.store import IssuingCa
from proto.enrollment import EnrollmentRefused
from proto.enrollment import RefusalReason as Reason
from proto.topics import NODE_ID_PATTERN

__all__ = [
    "LIFECYCLE_MOVES",
    "RENEW_GRACE",
    "TOKEN_PREFIX",
    "EnrollmentRefused",
    "Issued",
    "accept_request",
    "create_token",
    "enroll",
    "enrollment_result",
    "hash_token",
    "import_preauthorized",
    "list_certificates",
    "list_requests",
    "list_tokens",
    "node_id_from_serial",
    "register_node",
    "reject_request",
    "renew",
    "revoke_node",
    "revoke_token",
    "revoked_serials",
    "set_lifecycle",
]

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "nbet_"  # noqa: S105 - a prefix that makes leaked tokens greppable
RENEW_GRACE = timedelta(days=7)
_NODE_ID_RE = re.compile(NODE_ID_PATTERN)

# Legal lifecycle moves; any state may also go to decommissioned.
LIFECYCLE_MOVES: dict[str, frozenset[str]] = {
    NodeLifecycle.REGISTERED: frozenset({NodeLifecycle.PROVISIONED}),
    NodeLifecycle.PROVISIONED: frozenset({NodeLifecycle.COMMISSIONED}),
    NodeLifecycle.COMMISSIONED: frozenset({NodeLifecycle.ACTIVE}),
    NodeLifecycle.ACTIVE: frozenset(),
    NodeLifecycle.DECOMMISSIONED: frozenset(),
}


@dataclass(frozen=True)
class Issued:
    """A certificate just issued to a node."""

    node_id: str
    certificate_pem: str
    not_after: datetime


def hash_token(token: str) -> str:
    """SHA-256 hex of a token value (tokens are long random strings; no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def node_id_from_serial(serial: str) -> str:
    """A node id derived from a hardware serial: lower-case, `[^a-z0-9_-]` → `-`."""
    return re.sub(r"[^a-z0-9_-]", "-", serial.strip().lower())


def _check_node_id(node_id: str) -> None:
    if node_id in RESERVED_NAMES:
        raise EnrollmentRefused(Reason.NODE_ID_RESERVED, f"{node_id!r} is a reserved name")
    if not _NODE_ID_RE.match(node_id):
        raise EnrollmentRefused(
            Reason.BAD_NODE_ID,
            f"node id {node_id!r} must be 3-64 characters of a-z, 0-9, '_' and '-'",
        )


# ---------------------------------------------------------------- tokens


def create_token(
    *, session: Session, token_in: EnrollmentTokenCreate, created_by: str, now: datetime
) -> tuple[EnrollmentToken, str]:
    """A new token row and the token value (returned once, stored only as its hash)."""
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = EnrollmentToken(
        id=new_id(),
        token_sha256=hash_token(value),
        district=token_in.district,
        site_id=token_in.site_id,
        note=token_in.note,
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(seconds=token_in.ttl_s),
    )
    session.add(row)
    audit.record(
        session, actor=f"user:{created_by}", action="enrollment.token_created",
        object=f"enrollment-token:{row.id}", now=now,
        detail={
            "district": row.district, "site_id": row.site_id,
            "expires_at": row.expires_at.isoformat(),
        },
    )  # fmt: skip
    return row, value


def list_tokens(*, session: Session, limit: int = 200) -> tuple[list[EnrollmentToken], int]:
    """Newest tokens first, and how many there are."""
    count = session.exec(select(func.count()).select_from(EnrollmentToken)).one()
    rows = session.exec(
        select(EnrollmentToken).order_by(col(EnrollmentToken.created_at).desc()).limit(limit)
    ).all()
    return list(rows), int(count)


def revoke_token(*, session: Session, token_id: str, now: datetime) -> EnrollmentToken:
    """Withdraw an unused token."""
    row = session.get(EnrollmentToken, token_id)
    if row is None:
        raise EnrollmentRefused(Reason.TOKEN_UNKNOWN, f"no enrollment token {token_id!r}")
    if row.used_at is not None:
        raise EnrollmentRefused(
            Reason.TOKEN_USED, f"token was already used by {row.used_by_node_id}"
        )
    if row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
    return row


# ----------------------------------------------------- preauthorized import


def _parse_public_key(value: str) -> str:
    """`sha256:<hex>` or a PEM public key (newlines escaped as \\n) → SHA-256 hex of the SPKI."""
    value = value.strip()
    if value.lower().startswith("sha256:"):
        digest = value[7:].strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("sha256: must be followed by 64 hex digits")
        return digest
    pem = value.replace("\\n", "\n").encode()
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("public key must be ECDSA P-256")
    return key_fingerprint(key)


def import_preauthorized(*, session: Session, csv_text: str, now: datetime) -> PreauthorizedImport:
    """Import `serial,public_key_pem[,district,site_id,node_id]` rows; bad ones are skipped.

    A header row naming the columns is optional. Each good row makes a
    `Preauthorization` and a node in lifecycle `registered`.
    """
    rows = list(csv.reader(io.StringIO(csv_text)))
    columns = ["serial", "public_key_pem", "district", "site_id", "node_id"]
    if rows and rows[0] and rows[0][0].strip().lower() == "serial":
        header = [c.strip().lower() for c in rows[0]]
        unknown = set(header) - set(columns)
        if unknown or "public_key_pem" not in header:
            raise EnrollmentRefused(
                Reason.BAD_CSV, f"header must be {','.join(columns)} (unknown: {sorted(unknown)})"
            )
        columns = header
        rows = rows[1:]
    created: list[str] = []
    skipped: list[ImportSkip] = []
    seen_serials: set[str] = set()
    seen_nodes: set[str] = set()
    for raw in rows:
        if not any(cell.strip() for cell in raw):
            continue
        record = {name: (raw[i].strip() if i < len(raw) else "") for i, name in enumerate(columns)}
        serial = record.get("serial", "")

        def skip(reason: str, serial: str = serial) -> None:
            skipped.append(ImportSkip(serial=serial, reason=reason))

        if len(raw) > len(columns):
            skip(f"{len(raw)} columns; expected at most {len(columns)}")
            continue
        if not serial or len(serial) > 64:
            skip("serial is empty or longer than 64 characters")
            continue
        try:
            digest = _parse_public_key(record.get("public_key_pem", ""))
        except ValueError as exc:
            skip(f"bad public key: {exc}")
            continue
        node_id = record.get("node_id") or node_id_from_serial(serial)
        try:
            _check_node_id(node_id)
        except EnrollmentRefused as exc:
            skip(f"{exc.reason}: {exc.message}")
            continue
        if serial in seen_serials or session.get(Preauthorization, serial) is not None:
            skip("serial already preauthorized")
            continue
        existing = session.get(Node, node_id)
        if node_id in seen_nodes or (
            existing is not None and existing.serial not in (None, serial)
        ):
            skip(f"node_id_taken: node {node_id!r} exists with another serial")
            continue
        district = record.get("district") or None
        site_id = record.get("site_id") or None
        session.add(
            Preauthorization(
                serial=serial, node_id=node_id, key_sha256=digest, district=district,
                site_id=site_id, created_at=now,
            )
        )  # fmt: skip
        if existing is None:
            session.add(
                Node(
                    node_id=node_id, serial=serial, district=district, site_id=site_id,
                    created_at=now, lifecycle=NodeLifecycle.REGISTERED, lifecycle_changed_at=now,
                )
            )  # fmt: skip
        seen_serials.add(serial)
        seen_nodes.add(node_id)
        created.append(node_id)
    return PreauthorizedImport(created=created, skipped=skipped)


# -------------------------------------------------------------- enrollment


def _parse_csr_or_refuse(pem: str) -> x509.CertificateSigningRequest:
    try:
        return parse_csr(pem)
    except CsrInvalid as exc:
        raise EnrollmentRefused(Reason.BAD_CSR, str(exc)) from None


def _within(scope: str | None, wanted: str | None, what: str) -> None:
    if scope is not None and wanted is not None and wanted != scope:
        raise EnrollmentRefused(
            Reason.WRONG_SCOPE, f"the token is for {what} {scope!r}, not {wanted!r}"
        )


def _live_certificates(session: Session, node_id: str, now: datetime) -> list[NodeCertificate]:
    return list(
        session.exec(
            select(NodeCertificate)
            .where(NodeCertificate.node_id == node_id)
            .where(col(NodeCertificate.revoked_at).is_(None))
            .where(col(NodeCertificate.not_after) > now)
        ).all()
    )


def _check_node_free(
    session: Session, *, node_id: str, serial: str, key_sha256: str, now: datetime
) -> Node | None:
    """The existing node row this enrollment may take over (or None); refuses otherwise."""
    node = session.get(Node, node_id)
    if node is None:
        return None
    if node.lifecycle == NodeLifecycle.DECOMMISSIONED:
        raise EnrollmentRefused(Reason.DECOMMISSIONED, f"node {node_id!r} is decommissioned")
    if node.serial is not None and node.serial != serial:
        raise EnrollmentRefused(
            Reason.NODE_ID_TAKEN, f"node {node_id!r} belongs to hardware serial {node.serial!r}"
        )
    for cert in _live_certificates(session, node_id, now):
        if cert.key_sha256 != key_sha256:
            raise EnrollmentRefused(
                Reason.NODE_ID_TAKEN,
                f"node {node_id!r} already has a live certificate (serial {cert.serial}) for "
                "another key; revoke it first",
            )
    return node


def _issue(
    session: Session,
    ca: IssuingCa,
    *,
    node_id: str,
    serial: str,
    key: ec.EllipticCurvePublicKey,
    now: datetime,
    days: float,
    via: str,
) -> Issued:
    cert = ca.issue_node(key=key, node_id=node_id, serial=serial, now=now, days=days)
    pem = cert_pem(cert).decode()
    session.add(
        NodeCertificate(
            serial=cert_serial_hex(cert),
            node_id=node_id,
            hardware_serial=serial,
            key_sha256=key_fingerprint(key),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issued_at=now,
            issued_via=via,
            pem=pem,
        )
    )
    logger.info("issued certificate %s to node %s (%s)", cert_serial_hex(cert), node_id, via)
    return Issued(node_id=node_id, certificate_pem=pem, not_after=cert.not_valid_after_utc)


def _provision_node(
    session: Session,
    node: Node | None,
    *,
    node_id: str,
    serial: str,
    site_id: str | None,
    district: str | None,
    lat: float | None,
    lon: float | None,
    now: datetime,
) -> Node:
    if node is None:
        node = Node(node_id=node_id, created_at=now)
    node.serial = serial
    node.site_id = site_id or node.site_id
    node.district = district or node.district
    if lat is not None and lon is not None:
        node.lat, node.lon = lat, lon
    if node.lifecycle == NodeLifecycle.REGISTERED:
        node.lifecycle = NodeLifecycle.PROVISIONED
        node.lifecycle_changed_at = now
    session.add(node)
    return node


def enroll(
    *,
    session: Session,
    ca: IssuingCa,
    enroll_in: EnrollIn,
    now: datetime,
    cert_days: float,
    manual_accept: bool,
    client_address: str | None = None,
) -> Issued | EnrollmentRequest:
    """Check an enrollment and issue the certificate, or queue it for manual accept.

    Returns `Issued`, or a pending `EnrollmentRequest` (202 for the route).
    """
    csr = _parse_csr_or_refuse(enroll_in.csr_pem)
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    digest = key_fingerprint(key)
    serial = enroll_in.serial.strip()
    preauth = session.get(Preauthorization, serial)
    node_id = (
        enroll_in.node_id or (preauth.node_id if preauth else None) or node_id_from_serial(serial)
    )
    _check_node_id(node_id)
    if preauth is not None and node_id != preauth.node_id:
        raise EnrollmentRefused(
            Reason.WRONG_SCOPE, f"serial {serial!r} is preauthorized as node {preauth.node_id!r}"
        )
    try:
        check_csr(csr, expected_cn=node_id)
    except CsrInvalid as exc:
        raise EnrollmentRefused(Reason.BAD_CSR, str(exc)) from None
    location = enroll_in.location
    lat, lon = (location.lat, location.lon) if location else (None, None)

    if enroll_in.token:
        token = session.exec(
            select(EnrollmentToken).where(
                EnrollmentToken.token_sha256 == hash_token(enroll_in.token)
            )
        ).first()
        if token is None or token.revoked_at is not None:
            raise EnrollmentRefused(
                Reason.TOKEN_UNKNOWN, "no such enrollment token (or it was withdrawn)"
            )
        if token.used_at is not None:
            raise EnrollmentRefused(
                Reason.TOKEN_USED, "this token was already used; ask for a new one"
            )
        if token.expires_at <= now:
            raise EnrollmentRefused(
                Reason.TOKEN_EXPIRED, f"this token expired at {token.expires_at.isoformat()}"
            )
        node = _check_node_free(session, node_id=node_id, serial=serial, key_sha256=digest, now=now)
        site_id = enroll_in.site_id or (node.site_id if node else None) or token.site_id
        district = enroll_in.district or (node.district if node else None) or token.district
        _within(token.site_id, site_id, "site")
        _within(token.district, district, "district")
        # Conditional update: two enrollments racing for one token, exactly one wins.
        won = session.execute(
            update(EnrollmentToken)
            .where(col(EnrollmentToken.id) == token.id)
            .where(col(EnrollmentToken.used_at).is_(None))
            .values(used_at=now, used_by_node_id=node_id)
        )
        if getattr(won, "rowcount", 1) != 1:
            raise EnrollmentRefused(Reason.TOKEN_USED, "this token was just used by another node")
        session.expire(token)
        _provision_node(session, node, node_id=node_id, serial=serial, site_id=site_id,
                        district=district, lat=lat, lon=lon, now=now)  # fmt: skip
        audit.record(
            session, actor=f"node:{node_id}", action="enrollment.accepted",
            object=f"node:{node_id}", now=now,
            detail={"via": "token", "token": token.id, "serial": serial, "key_sha256": digest},
        )  # fmt: skip
        return _issue(session, ca, node_id=node_id, serial=serial, key=key, now=now,
                      days=cert_days, via="token")  # fmt: skip

    if preauth is not None:
        if preauth.key_sha256 != digest:
            raise EnrollmentRefused(
                Reason.KEY_MISMATCH,
                f"the CSR's key (sha256:{digest}) is not the key imported for serial {serial!r}",
            )
        node = _check_node_free(session, node_id=node_id, serial=serial, key_sha256=digest, now=now)
        preauth.enrolled_at = now
        session.add(preauth)
        _provision_node(
            session, node, node_id=node_id, serial=serial,
            site_id=enroll_in.site_id or preauth.site_id,
            district=enroll_in.district or preauth.district, lat=lat, lon=lon, now=now,
        )  # fmt: skip
        audit.record(
            session, actor=f"node:{node_id}", action="enrollment.accepted",
            object=f"node:{node_id}", now=now,
            detail={"via": "preauthorized", "serial": serial, "key_sha256": digest},
        )  # fmt: skip
        return _issue(session, ca, node_id=node_id, serial=serial, key=key, now=now,
                      days=cert_days, via="preauthorized")  # fmt: skip

    if not manual_accept:
        raise EnrollmentRefused(
            Reason.SERIAL_UNKNOWN,
            f"serial {serial!r} is not preauthorized; enroll with a token from the fleet admin",
        )
    _check_node_free(session, node_id=node_id, serial=serial, key_sha256=digest, now=now)
    existing = session.exec(
        select(EnrollmentRequest)
        .where(EnrollmentRequest.serial == serial)
        .where(EnrollmentRequest.key_sha256 == digest)
        .where(EnrollmentRequest.state == EnrollmentRequestState.PENDING)
    ).first()
    if existing is not None:
        return existing
    request = EnrollmentRequest(
        id=new_id(), serial=serial, node_id=node_id, key_sha256=digest, csr_pem=enroll_in.csr_pem,
        district=enroll_in.district, site_id=enroll_in.site_id, lat=lat, lon=lon,
        client_address=client_address, created_at=now,
    )  # fmt: skip
    session.add(request)
    audit.record(
        session, actor=f"node:{node_id}", action="enrollment.queued",
        object=f"enrollment-request:{request.id}", now=now,
        detail={"serial": serial, "key_sha256": digest, "address": client_address},
    )  # fmt: skip
    logger.info("enrollment request %s for node %s queued for approval", request.id, node_id)
    return request


def enrollment_result(*, session: Session, request_id: str) -> Issued | EnrollmentRequest:
    """What a polling node gets: its certificate, or the still-pending request."""
    request = session.get(EnrollmentRequest, request_id)
    if request is None:
        raise EnrollmentRefused(Reason.REQUEST_UNKNOWN, f"no enrollment request {request_id!r}")
    if request.state == EnrollmentRequestState.REJECTED:
        raise EnrollmentRefused(
            Reason.REJECTED, request.note or "the fleet admin rejected this node"
        )
    if request.state == EnrollmentRequestState.ACCEPTED and request.certificate_serial:
        cert = session.get(NodeCertificate, request.certificate_serial)
        if cert is None:
            raise EnrollmentRefused(Reason.REQUEST_UNKNOWN, "the issued certificate is gone")
        if cert.revoked_at is not None:
            raise EnrollmentRefused(
                Reason.REVOKED, "the certificate issued for this request is revoked"
            )
        return Issued(node_id=cert.node_id, certificate_pem=cert.pem, not_after=cert.not_after)
    return request


def list_requests(
    *, session: Session, state: str | None = None, limit: int = 200
) -> tuple[list[EnrollmentRequest], int]:
    """Enrollment requests (oldest first), optionally by state."""
    query = select(EnrollmentRequest)
    count_query = select(func.count()).select_from(EnrollmentRequest)
    if state is not None:
        query = query.where(EnrollmentRequest.state == state)
        count_query = count_query.where(EnrollmentRequest.state == state)
    rows = session.exec(query.order_by(col(EnrollmentRequest.created_at)).limit(limit)).all()
    return list(rows), int(session.exec(count_query).one())


def _pending(session: Session, request_id: str) -> EnrollmentRequest:
    request = session.get(EnrollmentRequest, request_id)
    if request is None:
        raise EnrollmentRefused(Reason.REQUEST_UNKNOWN, f"no enrollment request {request_id!r}")
    if request.state != EnrollmentRequestState.PENDING:
        raise EnrollmentRefused(Reason.REQUEST_DECIDED, f"request is already {request.state}")
    return request


def accept_request(
    *,
    session: Session,
    ca: IssuingCa,
    request_id: str,
    decided_by: str,
    now: datetime,
    cert_days: float,
    note: str = "",
) -> Issued:
    """Approve a queued node: issue its certificate (it collects it on its next poll)."""
    request = _pending(session, request_id)
    csr = _parse_csr_or_refuse(request.csr_pem)
    key = check_csr(csr, expected_cn=request.node_id)
    node = _check_node_free(
        session, node_id=request.node_id, serial=request.serial, key_sha256=request.key_sha256,
        now=now,
    )  # fmt: skip
    _provision_node(
        session, node, node_id=request.node_id, serial=request.serial, site_id=request.site_id,
        district=request.district, lat=request.lat, lon=request.lon, now=now,
    )  # fmt: skip
    issued = _issue(session, ca, node_id=request.node_id, serial=request.serial, key=key,
                    now=now, days=cert_days, via="manual")  # fmt: skip
    request.state = EnrollmentRequestState.ACCEPTED
    request.decided_at, request.decided_by, request.note = now, decided_by, note
    request.certificate_serial = cert_serial_hex(
        x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    )
    session.add(request)
    audit.record(
        session, actor=f"user:{decided_by}", action="enrollment.accepted",
        object=f"node:{request.node_id}", now=now,
        detail={"via": "manual", "request": request.id, "serial": request.serial, "note": note},
    )  # fmt: skip
    return issued


def reject_request(
    *, session: Session, request_id: str, decided_by: str, now: datetime, note: str = ""
) -> EnrollmentRequest:
    """Refuse a queued node; its next poll gets 403 `rejected`."""
    request = _pending(session, request_id)
    request.state = EnrollmentRequestState.REJECTED
    request.decided_at, request.decided_by, request.note = now, decided_by, note
    session.add(request)
    audit.record(
        session, actor=f"user:{decided_by}", action="enrollment.rejected",
        object=f"enrollment-request:{request.id}", now=now,
        detail={"node_id": request.node_id, "serial": request.serial, "note": note},
    )  # fmt: skip
    return request


# ----------------------------------------------------------------- renewal


def renew(
    *,
    session: Session,
    ca: IssuingCa,
    certificate_pem: str,
    csr_pem: str,
    now: datetime,
    cert_days: float,
) -> Issued:
    """A new certificate for the same key and node id (proof of possession: the CSR's signature)."""
    try:
        current = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        raise EnrollmentRefused(
            Reason.CERT_INVALID, "certificate_pem is not a PEM certificate"
        ) from None
    if not verify_issued_by(current, ca.cert):
        raise EnrollmentRefused(
            Reason.CERT_INVALID, "the certificate was not issued by this fleet's CA"
        )
    row = session.get(NodeCertificate, cert_serial_hex(current))
    if row is None:
        raise EnrollmentRefused(Reason.CERT_INVALID, "this fleet has no record of the certificate")
    if row.revoked_at is not None:
        raise EnrollmentRefused(Reason.REVOKED, f"the certificate was revoked at {row.revoked_at}")
    if current.not_valid_after_utc + RENEW_GRACE < now:
        raise EnrollmentRefused(
            Reason.CERT_INVALID,
            f"the certificate expired more than {RENEW_GRACE.days} days ago; enroll again",
        )
    node = session.get(Node, row.node_id)
    if node is not None and node.lifecycle == NodeLifecycle.DECOMMISSIONED:
        raise EnrollmentRefused(Reason.DECOMMISSIONED, f"node {row.node_id!r} is decommissioned")
    csr = _parse_csr_or_refuse(csr_pem)
    cn = csr_common_name(csr)
    if cn != row.node_id:
        raise EnrollmentRefused(
            Reason.BAD_CSR, f"the CSR's CN {cn!r} is not the node id {row.node_id!r}"
        )
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    if key_fingerprint(key) != row.key_sha256:
        raise EnrollmentRefused(Reason.KEY_MISMATCH, "the CSR's key is not the certificate's key")
    return _issue(session, ca, node_id=row.node_id, serial=row.hardware_serial, key=key,
                  now=now, days=cert_days, via="renewal")  # fmt: skip


# ------------------------------------------------- certificates, revocation


def list_certificates(
    *, session: Session, node_id: str | None = None, limit: int = 500
) -> tuple[list[NodeCertificate], int]:
    """Certificates, newest first, optionally of one node."""
    query = select(NodeCertificate)
    count_query = select(func.count()).select_from(NodeCertificate)
    if node_id is not None:
        query = query.where(NodeCertificate.node_id == node_id)
        count_query = count_query.where(NodeCertificate.node_id == node_id)
    rows = session.exec(query.order_by(col(NodeCertificate.issued_at).desc()).limit(limit)).all()
    return list(rows), int(session.exec(count_query).one())


def revoke_node(
    *, session: Session, node_id: str, now: datetime, reason: str
) -> list[NodeCertificate]:
    """Revoke every unrevoked certificate of a node; returns those revoked now."""
    if (
        session.get(Node, node_id) is None
        and not list_certificates(session=session, node_id=node_id)[0]
    ):
        raise EnrollmentRefused(Reason.NODE_UNKNOWN, f"no node {node_id!r}")
    rows = session.exec(
        select(NodeCertificate)
        .where(NodeCertificate.node_id == node_id)
        .where(col(NodeCertificate.revoked_at).is_(None))
    ).all()
    for row in rows:
        row.revoked_at = now
        row.revocation_reason = reason
        session.add(row)
    if rows:
        logger.warning("revoked %s certificate(s) of node %s: %s", len(rows), node_id, reason)
    return list(rows)


def revoked_serials(*, session: Session, now: datetime) -> list[tuple[int, datetime]]:
    """(serial, revoked_at) of revoked certificates that have not expired (what the CRL lists)."""
    rows = session.exec(
        select(NodeCertificate.serial, NodeCertificate.revoked_at)
        .where(col(NodeCertificate.revoked_at).is_not(None))
        .where(col(NodeCertificate.not_after) > now - timedelta(days=1))
    ).all()
    return [(int(serial, 16), when) for serial, when in rows if when is not None]


# ------------------------------------------------------ registration, lifecycle


def register_node(*, session: Session, node_in: NodeRegister, now: datetime) -> Node:
    """A technician registers a node (before or after it enrolls, as long as the serial matches)."""
    _check_node_id(node_in.node_id)
    node = session.get(Node, node_in.node_id)
    if node is not None and node.serial not in (None, node_in.serial):
        raise EnrollmentRefused(
            Reason.NODE_ID_TAKEN, f"node {node_in.node_id!r} belongs to serial {node.serial!r}"
        )
    if node is not None and node.lifecycle == NodeLifecycle.DECOMMISSIONED:
        raise EnrollmentRefused(
            Reason.DECOMMISSIONED, f"node {node_in.node_id!r} is decommissioned"
        )
    if node is None:
        node = Node(
            node_id=node_in.node_id, created_at=now, lifecycle=NodeLifecycle.REGISTERED,
            lifecycle_changed_at=now,
        )  # fmt: skip
    node.serial = node_in.serial
    node.site_id = node_in.site_id or node.site_id
    node.district = node_in.district or node.district
    if node_in.location is not None:
        node.lat, node.lon = node_in.location.lat, node_in.location.lon
    session.add(node)
    return node


def set_lifecycle(
    *, session: Session, node_id: str, to: NodeLifecycle, now: datetime
) -> tuple[Node, list[NodeCertificate]]:
    """Move a node along its lifecycle; decommissioning revokes its certificates."""
    node = session.get(Node, node_id)
    if node is None:
        raise EnrollmentRefused(Reason.NODE_UNKNOWN, f"no node {node_id!r}")
    current = NodeLifecycle(node.lifecycle)
    allowed: Sequence[str] = sorted(LIFECYCLE_MOVES[current]) + (
        [NodeLifecycle.DECOMMISSIONED] if current != NodeLifecycle.DECOMMISSIONED else []
    )
    if to not in allowed:
        raise EnrollmentRefused(
            Reason.ILLEGAL_TRANSITION,
            f"node {node_id!r} cannot go from {current} to {to}; "
            f"allowed: {[str(a) for a in allowed] or 'none'}",
        )
    node.lifecycle = to
    node.lifecycle_changed_at = now
    session.add(node)
    revoked: list[NodeCertificate] = []
    if to == NodeLifecycle.DECOMMISSIONED:
        revoked = revoke_node(session=session, node_id=node_id, now=now, reason="decommissioned")
    return node, revoked
