"""Signed checkpoints of the audit chain, and the dedicated key that signs them.

A checkpoint says "the chain up to record `seq` ends in `hash`", signed
(ECDSA P-256, SHA-256) over canonical JSON. The chain alone catches an edit
or a removal in the middle, but someone with write access to the database
could rewrite every record after a point and recompute the hashes; they
cannot make a checkpoint that matches without the signing key, which is not
in the database.

The key is a dedicated one, `DATA_DIR/pki/audit-signer.key`, with a
certificate the online issuing CA issues (CN ``audit-signer``, key usage
digital signature and non-repudiation, no extended key usage, so no node or
service certificate can pass for it). Why not the issuing CA's own key: that
key mints node identities and CRLs, and signing audit data with it would
widen what its use (and a bug in that use) can do; a separate key can be
rotated without re-issuing the fleet, and a checkpoint still verifies with
nothing but the fleet CA certificate, because each checkpoint carries its
signing certificate (docs/audit.md).
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import update
from sqlmodel import Session, col, select

from fleet_server.audit.chain import format_time
from fleet_server.audit.errors import AuditError
from fleet_server.models.audit import AuditChainHead, AuditCheckpoint
from fleet_server.pki.ca import verify_issued_by
from fleet_server.pki.signer import DocumentSigner
from proto.codec import encode_canonical

__all__ = [
    "SIGNER_NAME",
    "CheckpointSigner",
    "checkpoint_payload",
    "load_trusted",
    "make_checkpoint",
    "signer_chain",
    "signer_problem",
    "verify_checkpoint_signature",
]

logger = logging.getLogger(__name__)

SIGNER_NAME = "audit-signer"
PAYLOAD_TYPE = "nigehbaan.audit.checkpoint.v1"


def checkpoint_payload(*, seq: int, hash: str, at: datetime | str) -> bytes:
    """The bytes a checkpoint's signature covers."""
    when = at if isinstance(at, str) else format_time(at)
    return encode_canonical({"type": PAYLOAD_TYPE, "seq": seq, "hash": hash, "at": when})


class CheckpointSigner(DocumentSigner):
    """The audit signing key (``pki/audit-signer.key``) and its certificate."""

    name = SIGNER_NAME


def make_checkpoint(
    session: Session, *, signer: CheckpointSigner, now: datetime
) -> AuditCheckpoint | None:
    """Sign the chain head as it stands (not committed); None if nothing new since the last one."""
    # Take the head row's lock (a no-op update), so the head does not move while it is signed.
    session.execute(
        update(AuditChainHead)
        .where(col(AuditChainHead.id) == 1)
        .values(seq=col(AuditChainHead.seq))
    )
    head = session.get(AuditChainHead, 1, populate_existing=True)
    if head is None or head.seq == 0:
        return None
    last = session.exec(
        select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq).desc()).limit(1)
    ).first()
    if last is not None and last.seq >= head.seq:
        return None
    payload = checkpoint_payload(seq=head.seq, hash=head.hash, at=now)
    row = AuditCheckpoint(
        at=now, seq=head.seq, hash=head.hash, signature=signer.sign(payload),
        signer_pem=signer.chain_pem,
    )  # fmt: skip
    session.add(row)
    logger.info("audit checkpoint at record %s", head.seq)
    return row


def signer_problem(
    chain: list[x509.Certificate], *, trusted: list[x509.Certificate], at: datetime
) -> str | None:
    """Why the first certificate of `chain` may not sign checkpoints (None: it may).

    It must be an audit signer (CN, not a CA, no extended key usage) valid at
    `at`, issued by one of the `trusted` CA certificates directly or through
    a CA certificate later in `chain` that a trusted one issued (the
    checkpoint carries the issuing CA, so the root alone is enough).
    """
    if not chain:
        return "no signing certificate"
    cert = chain[0]
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [a.value for a in cns] != [SIGNER_NAME]:
        return f"signed by {cert.subject.rfc4514_string()}, not an {SIGNER_NAME}"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "the signing certificate has no basic constraints"
    if constraints.ca:
        return "the signing certificate is a CA certificate"
    try:
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        return "the signing certificate has an extended key usage (a node or service certificate)"
    except x509.ExtensionNotFound:
        pass
    if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
        return f"the signing certificate was not valid at {format_time(at)}"
    issuers = list(trusted) + [
        ca for ca in chain[1:] if _is_ca(ca) and any(verify_issued_by(ca, t) for t in trusted)
    ]
    if not any(verify_issued_by(cert, ca) for ca in issuers):
        return "the signing certificate was not issued by the fleet CA"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def signer_chain(checkpoint: AuditCheckpoint) -> list[x509.Certificate]:
    """The certificates a checkpoint carries (signer first); empty if unreadable."""
    try:
        return list(x509.load_pem_x509_certificates(checkpoint.signer_pem.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return []


def verify_checkpoint_signature(checkpoint: AuditCheckpoint) -> bool:
    """Whether the checkpoint's signature is its certificate's over its seq, hash and time."""
    chain = signer_chain(checkpoint)
    if not chain:
        return False
    try:
        key = chain[0].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        payload = checkpoint_payload(seq=checkpoint.seq, hash=checkpoint.hash, at=checkpoint.at)
        key.verify(base64.b64decode(checkpoint.signature), payload, ec.ECDSA(hashes.SHA256()))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_trusted(pem: bytes) -> list[x509.Certificate]:
    """The CA certificates in a PEM file (the fleet's ca-chain.pem, or the root alone)."""
    try:
        return list(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise AuditError(f"cannot read the CA certificates: {exc}") from None
