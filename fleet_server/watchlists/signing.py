"""The dedicated key that signs watchlist bundles, and bundle building.

Same pattern as the audit checkpoint signer (fleet_server.audit.checkpoints):
a key of its own in ``DATA_DIR/pki/watchlist-signer.key`` with a certificate
the online issuing CA issues (CN ``watchlist-signer``, digital signature, no
extended key usage, so no node or service certificate can pass for it). A
node trusts a bundle because that certificate chains to the fleet CA it
already holds; the bundle carries the signer and the issuing CA certificate.
Why not the issuing CA's key: it mints node identities, and a bug in
watchlist signing must not be able to mint one.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet_server.pki.ca import cert_pem, generate_key, load_key, private_key_pem
from fleet_server.pki.store import IssuingCa, PkiPaths, load_cert, write_private, write_public
from proto.watchlist import SIGNER_NAME, SignedWatchlist, WatchlistBody, signed_payload

__all__ = ["WatchlistSigner", "sign_bundle"]

logger = logging.getLogger(__name__)

SIGNER_DAYS = 365
RENEW_BEFORE = timedelta(days=30)


def _issue_signer(
    ca: IssuingCa, key: ec.EllipticCurvePrivateKey, now: datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Nigehbaan"),
            x509.NameAttribute(NameOID.COMMON_NAME, SIGNER_NAME),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=True, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=SIGNER_DAYS), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


@dataclass(frozen=True)
class WatchlistSigner:
    """The watchlist signing key, its certificate and the issuing CA's."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    issuer: x509.Certificate

    @classmethod
    def from_pki(cls, paths: PkiPaths, *, now: datetime) -> WatchlistSigner:
        """Load the signer from `paths`, (re)issuing it when missing, expiring or from an old CA."""
        cert_path, key_path = paths.root / f"{SIGNER_NAME}.pem", paths.root / f"{SIGNER_NAME}.key"
        ca = IssuingCa(paths)
        if cert_path.exists() and key_path.exists():
            cert = load_cert(cert_path)
            key = load_key(key_path.read_bytes())
            fresh = cert.not_valid_after_utc - now > RENEW_BEFORE
            if fresh and cert.issuer == ca.cert.subject:
                return cls(key=key, cert=cert, issuer=ca.cert)
        key = generate_key()
        cert = _issue_signer(ca, key, now)
        write_private(key_path, private_key_pem(key))
        write_public(cert_path, cert_pem(cert))
        logger.info("watchlist signer issued: %s", cert_path)
        return cls(key=key, cert=cert, issuer=ca.cert)

    @property
    def chain_pem(self) -> str:
        """The signing certificate, then the issuing CA's (what a bundle carries)."""
        return (cert_pem(self.cert) + cert_pem(self.issuer)).decode("ascii")

    def sign(self, payload: bytes) -> str:
        """Base64 DER ECDSA-SHA256 signature of `payload`."""
        return base64.b64encode(self.key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def sign_bundle(body: WatchlistBody, *, signer: WatchlistSigner) -> SignedWatchlist:
    """`body` signed by `signer`, ready to encode and deliver."""
    return SignedWatchlist(
        body=body, signature=signer.sign(signed_payload(body)), signer_pem=signer.chain_pem
    )
