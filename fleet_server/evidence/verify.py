"""Verify an evidence export bundle offline, with only the fleet CA certificate.

``nigehbaan evidence verify BUNDLE --ca ca.pem`` runs this on any machine: it
needs `cryptography`, `pydantic` and `proto`, never a database or the web
stack (a test runs it with those blocked). A bundle is a zip
(docs/evidence.md)::

    manifest.json        what is in the bundle: every file with its SHA-256
    manifest.sig.json    the server's signature over manifest.json + its certificate chain
    files/<sha256>.<ext> the original evidence files, byte for byte
    claims/<sha256>.json each file's node-signed claim (proto.evidence.SignedClaim)
    certs/<sha256>.pem   the capturing node's certificate and its issuing CA
    audit.json           the audit records of who captured, viewed and exported it
    crl.pem              the fleet CRL at export time (when the server had one)

Checks, each failure naming the file it is about: the manifest's signer is an
``evidence-signer`` issued under the trusted CA and its signature holds; every
file the manifest lists is present with the listed SHA-256, and nothing else
is in the zip; each evidence file matches its claim (hash, size); the claim's
node certificate chains to the trusted CA, names the claim's node, was valid
at capture time and was not revoked before it (by the bundled CRL, itself
checked against the CA); the node's signature over the claim holds; each
audit record's hash is its content's.

Errors::

    BundleError            the bundle or the CA file cannot be read at all
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from proto.codec import encode_canonical
from proto.evidence import SignedClaim, signed_payload

__all__ = [
    "BUNDLE_FORMAT",
    "SIGNER_NAME",
    "BundleError",
    "BundleVerdict",
    "audit_record_hash",
    "chain_problem",
    "load_ca",
    "verify_bundle",
    "verify_claim",
]

BUNDLE_FORMAT = "nigehbaan.evidence.bundle.v1"
SIGNER_NAME = "evidence-signer"
MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig.json"
# A bundle's members are read whole; this bounds what a hostile zip can make us read.
MAX_MEMBER_BYTES = 256 * 1024 * 1024


class BundleError(Exception):
    """The bundle or the CA certificates cannot be read (not a verdict on the evidence)."""


@dataclass
class BundleVerdict:
    """The outcome: `ok` when nothing failed; `problems` as (file, why)."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    audit_records: int = 0
    subject: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, name: str, why: str) -> None:
        self.problems.append((name, why))


def load_ca(pem: bytes) -> list[x509.Certificate]:
    """The trusted CA certificates in a PEM file (the fleet root, or root and issuing CA)."""
    try:
        certs = list(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise BundleError(f"cannot read the CA certificates: {exc}") from None
    if not certs:
        raise BundleError("the CA file holds no certificate")
    return certs


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def chain_problem(
    chain: Sequence[x509.Certificate], *, trusted: Sequence[x509.Certificate], at: datetime
) -> str | None:
    """Why `chain[0]` does not chain to `trusted` at time `at` (None: it does).

    The leaf must not be a CA and must be valid at `at`; it is issued by a
    trusted certificate directly, or by a CA certificate later in `chain`
    that a trusted certificate issued (a bundle carries the issuing CA, so
    the fleet root alone is enough to verify it).
    """
    if not chain:
        return "no certificate"
    leaf = chain[0]
    if _is_ca(leaf):
        return "the certificate is a CA certificate"
    if not (leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc):
        return f"the certificate was not valid at {at.isoformat()}"
    issuers = list(trusted) + [
        ca for ca in chain[1:] if _is_ca(ca) and any(_issued_by(ca, t) for t in trusted)
    ]
    if not any(_issued_by(leaf, ca) for ca in issuers):
        return "the certificate was not issued under the trusted fleet CA"
    return None


def _verify_signature(cert: x509.Certificate, signature_b64: str, payload: bytes) -> bool:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(
            base64.b64decode(signature_b64, validate=True), payload, ec.ECDSA(hashes.SHA256())
        )
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_claim(
    signed: SignedClaim,
    chain: Sequence[x509.Certificate],
    *,
    trusted: Sequence[x509.Certificate],
    revoked: dict[int, datetime] | None = None,
) -> str | None:
    """Why a node-signed claim does not hold (None: it holds). Used by the server on upload too.

    The certificate must chain to `trusted` and be valid at capture time, name
    the claim's node (CN), not be revoked at or before capture (`revoked`:
    serial → revocation time), and its key must have signed the claim.
    """
    claim = signed.claim
    problem = chain_problem(chain, trusted=trusted, at=claim.captured_at)
    if problem is not None:
        return f"node certificate: {problem}"
    cert = chain[0]
    if _common_name(cert) != claim.node_id:
        return f"the certificate is {_common_name(cert)!r}'s, the claim names {claim.node_id!r}"
    if revoked and cert.serial_number in revoked:
        when = revoked[cert.serial_number]
        if when <= claim.captured_at:
            return f"the node certificate was revoked at {when.isoformat()}, before capture"
    if not _verify_signature(cert, signed.signature, signed_payload(claim)):
        return "the node's signature over the claim does not hold"
    return None


def audit_record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of an audit record's chain fields (the definition in fleet_server.audit.chain)."""
    fields = ("seq", "at", "actor", "action", "object", "detail", "prev_hash")
    return hashlib.sha256(encode_canonical({k: record[k] for k in fields})).hexdigest()


def _read(zf: zipfile.ZipFile, name: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES:
        raise BundleError(f"{name}: {info.file_size} bytes is more than this verifier reads")
    return zf.read(name)


def _signed_crl(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or ca.subject != crl.issuer:
        return False
    return crl.is_signature_valid(key)


def _crl_revocations(
    data: bytes, *, trusted: Sequence[x509.Certificate], chains: list[list[x509.Certificate]]
) -> dict[int, datetime] | str:
    """Serial → revocation time from a PEM CRL signed by a CA the bundle trusts; str: why not."""
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        return "the CRL cannot be read"
    candidates = list(trusted) + [c for chain in chains for c in chain[1:] if _is_ca(c)]
    if not any(_signed_crl(crl, ca) for ca in candidates):
        return "the CRL is not signed by the fleet CA"
    return {r.serial_number: r.revocation_date_utc for r in crl}


def verify_bundle(bundle: Path | bytes, *, trusted: Sequence[x509.Certificate]) -> BundleVerdict:
    """Check a bundle (a path or its bytes) against the `trusted` CA; see the module docstring."""
    verdict = BundleVerdict()
    try:
        raw = bundle if isinstance(bundle, bytes) else Path(bundle).read_bytes()
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"cannot read the bundle: {exc}") from None
    with zf:
        names = set(zf.namelist())
        for required in (MANIFEST, MANIFEST_SIG):
            if required not in names:
                verdict.fail(required, "missing")
        if not verdict.ok:
            return verdict
        manifest_bytes = _read(zf, MANIFEST)
        _check_manifest_signature(zf, manifest_bytes, trusted=trusted, verdict=verdict)
        try:
            manifest = json.loads(manifest_bytes)
            if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
                raise ValueError(MANIFEST)
            listed: dict[str, str] = dict(manifest["documents"])
            items: list[dict[str, Any]] = list(manifest["items"])
        except (ValueError, KeyError, TypeError):
            verdict.fail(MANIFEST, f"not a {BUNDLE_FORMAT} manifest")
            return verdict
        verdict.subject = str(manifest.get("subject", ""))
        contents: dict[str, bytes] = {}
        for name, digest in sorted(listed.items()):
            if name not in names:
                verdict.fail(name, "listed in the manifest but missing from the bundle")
                continue
            data = _read(zf, name)
            if hashlib.sha256(data).hexdigest() != digest:
                verdict.fail(name, "its SHA-256 is not the one the signed manifest lists (altered)")
                continue
            contents[name] = data
        for extra in sorted(names - set(listed) - {MANIFEST, MANIFEST_SIG}):
            if not extra.endswith("/"):
                verdict.fail(extra, "in the bundle but not listed in the signed manifest")
        chains: list[list[x509.Certificate]] = []
        parsed: list[tuple[dict[str, Any], SignedClaim, list[x509.Certificate]]] = []
        for item in items:
            try:
                signed = SignedClaim.model_validate_json(contents[item["claim"]])
                chain = list(x509.load_pem_x509_certificates(contents[item["certs"]]))
            except KeyError:
                continue  # already reported as missing or altered
            except (ValueError, ValidationError) as exc:
                verdict.fail(str(item.get("claim")), f"unreadable claim or certificates: {exc}")
                continue
            chains.append(chain)
            parsed.append((item, signed, chain))
        revoked: dict[int, datetime] | None = None
        if "crl.pem" in contents:
            found = _crl_revocations(contents["crl.pem"], trusted=trusted, chains=chains)
            if isinstance(found, str):
                verdict.fail("crl.pem", found)
            else:
                revoked = found
        for item, signed, chain in parsed:
            path = str(item["path"])
            blob = contents.get(path)
            if blob is None:
                continue
            verdict.files += 1
            digest = hashlib.sha256(blob).hexdigest()
            if digest != signed.claim.sha256 or len(blob) != signed.claim.size:
                verdict.fail(path, "the file is not the one the node signed for")
            why = verify_claim(signed, chain, trusted=trusted, revoked=revoked)
            if why is not None:
                verdict.fail(str(item["claim"]), why)
        if "audit.json" in contents:
            _check_audit(contents["audit.json"], verdict)
    return verdict


def _check_manifest_signature(
    zf: zipfile.ZipFile,
    manifest_bytes: bytes,
    *,
    trusted: Sequence[x509.Certificate],
    verdict: BundleVerdict,
) -> None:
    try:
        sig = json.loads(_read(zf, MANIFEST_SIG))
        chain = list(x509.load_pem_x509_certificates(str(sig["chain_pem"]).encode("ascii")))
        signature = str(sig["signature"])
    except (ValueError, KeyError, TypeError):
        verdict.fail(MANIFEST_SIG, "unreadable signature or certificate chain")
        return
    if not chain or _common_name(chain[0]) != SIGNER_NAME:
        verdict.fail(MANIFEST_SIG, f"the manifest is not signed by an {SIGNER_NAME}")
        return
    try:
        chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        verdict.fail(MANIFEST_SIG, "the signer has an extended key usage (not a document signer)")
        return
    except x509.ExtensionNotFound:
        pass
    try:
        signed_at = datetime.fromisoformat(str(json.loads(manifest_bytes)["created_at"]))
    except (ValueError, KeyError, TypeError):
        signed_at = datetime.now(timezone.utc)
    problem = chain_problem(chain, trusted=trusted, at=signed_at)
    if problem is not None:
        verdict.fail(MANIFEST_SIG, f"server signer: {problem}")
    elif not _verify_signature(chain[0], signature, manifest_bytes):
        verdict.fail(MANIFEST, "the server's signature over the manifest does not hold (altered)")


def _check_audit(data: bytes, verdict: BundleVerdict) -> None:
    try:
        records = json.loads(data)["records"]
        if not isinstance(records, list):
            raise TypeError("records")
    except (ValueError, KeyError, TypeError):
        verdict.fail("audit.json", "not an audit record list")
        return
    for record in records:
        verdict.audit_records += 1
        try:
            ok = audit_record_hash(record) == record["hash"]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            verdict.fail("audit.json", f"record {record.get('seq')!r}: hash does not match")
