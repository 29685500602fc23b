"""Evidence rules on the server: node uploads, views, cases and legal holds.

Data functions know nothing of HTTP (routes map `EvidenceRefused.reason` to a
status). An upload is two steps: `begin_upload` takes the node's signed claim
— refused unless the claim names the node that presents the certificate, the
certificate is one this server issued, it chains to the fleet CA, was valid
and not revoked at capture time, and the node's key signed the claim — and
answers how many bytes the server holds already (0, some: resume, or all:
nothing to do); `append_chunk` adds bytes at that offset and, once the claimed
size is reached, checks the hash and keeps the file, recording who captured
it in the audit log (``evidence.captured``, actor ``node:<id>``). Uploads are
idempotent by SHA-256: the same file twice is stored once.

Evidence belongs to an alert through its event (the hit or the press it
was captured for), so a file that arrives before its event is still found.
Viewing one needs a stated purpose and is recorded (`record_access`).
A case holds its evidence (legal hold) until released; both are audited.

Errors::

    FleetServerError
     └── EvidenceRefused     reason: claim_invalid, node_mismatch, cert_unknown, signature,
                             too_large, offset, hash_mismatch, deleted, not_found, case_*
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from sqlalchemy import or_
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.errors import FleetServerError
from fleet_server.evidence.store import BlobMismatch, EvidenceBlobStore, OffsetMismatch
from fleet_server.evidence.verify import verify_claim
from fleet_server.models import Alert, Event, Node, NodeCertificate, utcnow
from fleet_server.models.evidence import EvidenceCase, EvidenceCaseItem, EvidenceItem
from fleet_server.pki.signer import DocumentSigner
from proto.evidence import SignedClaim

__all__ = [
    "EvidenceRefused",
    "EvidenceSigner",
    "append_chunk",
    "attach_to_case",
    "begin_upload",
    "held_sha256s",
    "items_for_alert",
    "items_for_case",
    "open_case",
    "public_item",
    "release_case",
]

logger = logging.getLogger(__name__)


class EvidenceSigner(DocumentSigner):
    """The server key that signs export manifests (CN ``evidence-signer``)."""

    name = "evidence-signer"


class EvidenceRefused(FleetServerError):
    """An evidence operation refused, with a stable `reason` code."""

    def __init__(self, reason: str, message: str, *, received: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.received = received


def revocations(session: Session) -> dict[int, datetime]:
    """Serial (int) → revocation time of every revoked node certificate."""
    rows = session.exec(
        select(NodeCertificate.serial, NodeCertificate.revoked_at).where(
            col(NodeCertificate.revoked_at).is_not(None)
        )
    ).all()
    return {int(serial, 16): at for serial, at in rows if at is not None}


def begin_upload(
    *,
    session: Session,
    node_id: str,
    cert_pem: str,
    signed: SignedClaim,
    trusted: Sequence[x509.Certificate],
    issuing: Sequence[x509.Certificate],
    store: EvidenceBlobStore,
    max_bytes: int,
) -> EvidenceItem:
    """Accept a node's signed claim (see the module docstring); the item, `received_bytes` set."""
    claim = signed.claim
    if claim.node_id != node_id:
        raise EvidenceRefused(
            "node_mismatch", f"the claim names {claim.node_id!r}; the certificate is {node_id!r}'s"
        )
    if claim.size > max_bytes:
        raise EvidenceRefused(
            "too_large", f"{claim.size} bytes is more than evidence_max_bytes ({max_bytes})"
        )
    existing = session.get(EvidenceItem, claim.sha256)
    if existing is not None:
        if existing.state == "deleted":
            raise EvidenceRefused("deleted", f"evidence {claim.sha256} was deleted by retention")
        if existing.state == "partial":
            existing.received_bytes = store.received(claim.sha256)
        return existing
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    except ValueError:
        raise EvidenceRefused("cert_unknown", "the client certificate cannot be read") from None
    serial = format(cert.serial_number, "x")
    row = session.get(NodeCertificate, serial)
    if row is None or row.node_id != node_id:
        raise EvidenceRefused("cert_unknown", f"certificate {serial} was not issued to {node_id}")
    revoked = revocations(session)
    why = verify_claim(signed, [cert, *issuing], trusted=trusted, revoked=revoked)
    if why is not None:
        # Captured under an earlier certificate of the same key (renewal keeps the key):
        # the one valid at capture time is the one that vouches for the claim.
        earlier = session.exec(
            select(NodeCertificate)
            .where(col(NodeCertificate.node_id) == node_id)
            .where(col(NodeCertificate.serial) != serial)
            .order_by(col(NodeCertificate.not_before).desc())
        ).all()
        for other in earlier:
            candidate = x509.load_pem_x509_certificate(other.pem.encode("ascii"))
            if (
                verify_claim(signed, [candidate, *issuing], trusted=trusted, revoked=revoked)
                is None
            ):
                cert, serial, cert_pem, why = candidate, other.serial, other.pem, None
                break
    if why is not None:
        raise EvidenceRefused("signature", why)
    node = session.get(Node, node_id)
    event = session.get(Event, claim.event_id) if claim.event_id else None
    alert_id = event.alert_id if event is not None else None
    if alert_id is None and claim.alert_id is not None:
        # A snapshot the server asked for names its alert; only a real alert of the
        # node's own district is taken, so a node cannot file evidence under any alert.
        alert = session.get(Alert, claim.alert_id)
        if alert is not None and node is not None and alert.district == node.district:
            alert_id = alert.id
    item = EvidenceItem(
        sha256=claim.sha256, data_class=claim.data_class, node_id=node_id,
        district=node.district if node is not None else None, camera_id=claim.camera_id,
        event_id=claim.event_id, event_type=claim.event_type,
        alert_id=alert_id, captured_at=claim.captured_at,
        size=claim.size, content_type=claim.content_type,
        claim=claim.model_dump(mode="json", exclude_none=True), signature=signed.signature,
        cert_serial=serial, cert_pem=cert_pem, received_bytes=store.received(claim.sha256),
    )  # fmt: skip
    session.add(item)
    session.commit()
    return item


def append_chunk(
    *,
    session: Session,
    node_id: str,
    sha256: str,
    offset: int,
    data: bytes,
    store: EvidenceBlobStore,
) -> EvidenceItem:
    """Add bytes to an upload begun by `begin_upload`; keep and audit the file once whole."""
    item = session.get(EvidenceItem, sha256)
    if item is None or item.node_id != node_id:
        raise EvidenceRefused("not_found", f"no upload of {sha256} begun by {node_id}")
    if item.state == "stored":
        return item
    if item.state == "deleted":
        raise EvidenceRefused("deleted", f"evidence {sha256} was deleted by retention")
    try:
        held = store.append(sha256, offset, data, size=item.size)
    except OffsetMismatch as exc:
        raise EvidenceRefused("offset", str(exc), received=exc.received) from None
    except BlobMismatch as exc:
        store.delete(sha256)
        raise EvidenceRefused("hash_mismatch", str(exc), received=0) from None
    item.received_bytes = held
    if held == item.size:
        try:
            store.finish(sha256, size=item.size)
        except BlobMismatch as exc:
            item.received_bytes = 0
            session.add(item)
            session.commit()
            raise EvidenceRefused("hash_mismatch", str(exc), received=0) from None
        now = utcnow()
        item.state = "stored"
        item.stored_at = now
        audit.record(
            session, actor=f"node:{node_id}", action="evidence.captured",
            object=f"evidence:{sha256}", now=now,
            detail={
                "data_class": item.data_class, "camera_id": item.camera_id,
                "event_id": item.event_id, "captured_at": item.claim.get("captured_at"),
                "size": item.size, "cert_serial": item.cert_serial,
            },
        )  # fmt: skip
        logger.info("evidence %s from %s stored", sha256, node_id)
    session.add(item)
    session.commit()
    return item


def items_for_alert(session: Session, alert_id: str) -> list[EvidenceItem]:
    """An alert's evidence: files whose event belongs to it (or that name it)."""
    events = select(Event.event_id).where(col(Event.alert_id) == alert_id)
    query = select(EvidenceItem).where(
        or_(col(EvidenceItem.alert_id) == alert_id, col(EvidenceItem.event_id).in_(events))
    )
    return list(session.exec(query.order_by(col(EvidenceItem.captured_at))).all())


def items_for_case(session: Session, case_id: str) -> list[EvidenceItem]:
    """The files attached to a case."""
    shas = select(EvidenceCaseItem.sha256).where(col(EvidenceCaseItem.case_id) == case_id)
    query = select(EvidenceItem).where(col(EvidenceItem.sha256).in_(shas))
    return list(session.exec(query.order_by(col(EvidenceItem.captured_at))).all())


def held_sha256s(session: Session) -> set[str]:
    """Every file attached to an open case (on legal hold)."""
    rows = session.exec(
        select(EvidenceCaseItem.sha256)
        .join(EvidenceCase, col(EvidenceCase.id) == col(EvidenceCaseItem.case_id))
        .where(col(EvidenceCase.state) == "open")
    ).all()
    return set(rows)


def open_case(
    *, session: Session, actor: str, reference: str, title: str, district: str | None
) -> EvidenceCase:
    """Open a case (its evidence is held until it is released); audited."""
    if session.exec(select(EvidenceCase).where(col(EvidenceCase.reference) == reference)).first():
        raise EvidenceRefused("case_exists", f"a case {reference!r} exists already")
    case = EvidenceCase(reference=reference, title=title, district=district, created_by=actor)
    session.add(case)
    audit.record(
        session, actor=f"user:{actor}", action="evidence.case_opened", object=f"case:{case.id}",
        detail={"reference": reference, "title": title, "district": district},
    )  # fmt: skip
    session.commit()
    return case


def attach_to_case(
    *, session: Session, actor: str, case: EvidenceCase, items: Sequence[EvidenceItem]
) -> int:
    """Attach files to an open case (legal hold from now on); audited; how many were new."""
    if case.state != "open":
        raise EvidenceRefused("case_released", f"case {case.reference} is released")
    added = 0
    for item in items:
        if item.state == "deleted":
            raise EvidenceRefused("deleted", f"evidence {item.sha256} was deleted by retention")
        if session.get(EvidenceCaseItem, (case.id, item.sha256)) is not None:
            continue
        session.add(EvidenceCaseItem(case_id=case.id, sha256=item.sha256, added_by=actor))
        added += 1
        audit.record(
            session, actor=f"user:{actor}", action="evidence.hold_placed",
            object=f"evidence:{item.sha256}", detail={"case": case.reference, "case_id": case.id},
        )  # fmt: skip
    session.commit()
    return added


def release_case(*, session: Session, actor: str, case: EvidenceCase, note: str) -> EvidenceCase:
    """Release a case's legal hold: its evidence falls under retention again; audited."""
    if case.state != "open":
        raise EvidenceRefused("case_released", f"case {case.reference} is released already")
    now = utcnow()
    case.state = "released"
    case.released_by = actor
    case.released_at = now
    case.release_note = note
    session.add(case)
    audit.record(
        session, actor=f"user:{actor}", action="evidence.hold_released",
        object=f"case:{case.id}", now=now, detail={"reference": case.reference, "note": note},
    )  # fmt: skip
    session.commit()
    return case


def public_item(item: EvidenceItem) -> dict[str, Any]:
    """An item as the API shows it (no certificate PEM)."""
    data = item.model_dump(mode="json", exclude={"cert_pem", "claim", "signature"})
    return data
