"""Dedicated document-signing keys: one key per purpose, certified by the issuing CA.

Audit checkpoints and watchlist bundles are signed by keys of their own
(``DATA_DIR/pki/<name>.key``), never by the issuing CA's key: that key mints
node identities, and a bug in what signs documents must not be able to mint
one. Each signer's certificate has CN ``<name>``, digital signature only and
no extended key usage, so no node or service certificate can pass for it;
a verifier holding only the fleet CA checks it through the issuing CA's
certificate that every signed document carries after the signer's.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet_server.pki.ca import CLOCK_SKEW, cert_pem, generate_key, load_key, private_key_pem
from fleet_server.pki.store import IssuingCa, PkiPaths, load_cert, write_private, write_public

__all__ = ["DocumentSigner"]

logger = logging.getLogger(__name__)

SIGNER_DAYS = 365
RENEW_BEFORE = timedelta(days=30)

S = TypeVar("S", bound="DocumentSigner")


def _issue(
    ca: IssuingCa, name: str, key: ec.EllipticCurvePrivateKey, now: datetime
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Nigehbaan"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=True, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + timedelta(days=SIGNER_DAYS), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


@dataclass(frozen=True)
class DocumentSigner:
    """A signing key, its certificate and the issuing CA's; subclasses name the purpose."""

    name: ClassVar[str]

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    issuer: x509.Certificate

    @classmethod
    def from_pki(cls: type[S], paths: PkiPaths, *, now: datetime) -> S:
        """Load the signer from `paths`, (re)issuing it when missing, expiring or from an old CA."""
        cert_path, key_path = paths.root / f"{cls.name}.pem", paths.root / f"{cls.name}.key"
        ca = IssuingCa(paths)
        if cert_path.exists() and key_path.exists():
            cert = load_cert(cert_path)
            fresh = cert.not_valid_after_utc - now > RENEW_BEFORE
            if fresh and cert.issuer == ca.cert.subject:
                return cls(key=load_key(key_path.read_bytes()), cert=cert, issuer=ca.cert)
        key = generate_key()
        cert = _issue(ca, cls.name, key, now)
        write_private(key_path, private_key_pem(key))
        write_public(cert_path, cert_pem(cert))
        logger.info("%s issued: %s", cls.name, cert_path)
        return cls(key=key, cert=cert, issuer=ca.cert)

    @property
    def chain_pem(self) -> str:
        """The signing certificate, then the issuing CA's (what a signed document carries)."""
        return (cert_pem(self.cert) + cert_pem(self.issuer)).decode("ascii")

    def sign(self, payload: bytes) -> str:
        """Base64 DER ECDSA-SHA256 signature of `payload`."""
        return base64.b64encode(self.key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
