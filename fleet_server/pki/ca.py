"""The fleet certificate authority's cryptography: keys, CA and leaf certificates, CSRs, CRLs.

Pure functions over `cryptography` objects and bytes — no files, no database —
so every rule (what a node certificate may contain, what a CSR must prove) is
testable on its own; `fleet_server.pki.store` puts the results on disk.

Everything is ECDSA P-256 with SHA-256 (small, fast handshakes on a Pi;
supported by Mosquitto/OpenSSL and Python's ssl). Nothing from a CSR but its
public key is ever copied into a certificate: the subject and extensions of
a node certificate are built here from what the server decided.

Errors::

    PkiError                  root of everything in fleet_server.pki
    └── CsrInvalid            a CSR we refuse (bad PEM, signature, key type, CN)
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet_server.errors import FleetServerError

__all__ = [
    "CLOCK_SKEW",
    "RESERVED_NAMES",
    "CsrInvalid",
    "PkiError",
    "build_crl",
    "cert_pem",
    "cert_serial_hex",
    "check_csr",
    "generate_key",
    "issue_node_certificate",
    "issue_service_certificate",
    "key_fingerprint",
    "load_key",
    "make_issuing_ca",
    "make_root_ca",
    "parse_csr",
    "private_key_pem",
    "verify_issued_by",
]

# Certificates start a little in the past so a node whose clock is a few
# minutes behind the server's does not see a "not yet valid" certificate.
CLOCK_SKEW = timedelta(minutes=5)
# Names a node id may never take: they are principals in the broker's ACL or
# would read as administrative identities in logs.
RESERVED_NAMES = frozenset({"fleet-server", "admin", "root"})
MAX_CSR_BYTES = 8192


class PkiError(FleetServerError):
    """Root of fleet_server.pki errors."""


class CsrInvalid(PkiError):
    """A certificate signing request we refuse; the message says why."""


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey, *, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with `passphrase` when one is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_key(pem: bytes, *, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """An EC private key from PEM (raises PkiError on a wrong passphrase or other key type)."""
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"cannot load private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("private key is not an EC key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM bytes of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_serial_hex(cert: x509.Certificate) -> str:
    """The serial as lower-case hex, how the database and API name a certificate."""
    return f"{cert.serial_number:x}"


def key_fingerprint(public_key: ec.EllipticCurvePublicKey | x509.Certificate) -> str:
    """SHA-256 hex of the DER SubjectPublicKeyInfo (the `sha256:` form of the CSV import)."""
    if isinstance(public_key, x509.Certificate):
        key = public_key.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        public_key = key
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _name(common_name: str, *, serial: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Nigehbaan"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if serial is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _public(
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
) -> ec.EllipticCurvePublicKey:
    return key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key


def make_root_ca(
    *,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    days: int = 3650,
    name: str = "Nigehbaan Root CA",
) -> x509.Certificate:
    """A self-signed root (no path length limit below it; it signs only issuing CAs)."""
    subject = _name(name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_issuing_ca(
    *,
    key: ec.EllipticCurvePublicKey,
    root_cert: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    days: int = 1825,
    name: str = "Nigehbaan Issuing CA",
) -> x509.Certificate:
    """The online CA (pathlen 0: it signs nodes and services, never another CA)."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(root_cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + timedelta(days=days), root_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_public(root_key)), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )


def _leaf_builder(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    days: float,
    usages: Sequence[x509.ObjectIdentifier],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + timedelta(days=days), issuer_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_public(issuer_key)),
            critical=False,
        )
    )


def issue_service_certificate(
    *,
    key: ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    now: datetime,
    hostnames: Iterable[str] = (),
    server: bool = True,
    client: bool = False,
    days: int = 365,
) -> x509.Certificate:
    """A certificate for one of our own services: broker, HTTPS API, the fleet server's MQTT client.

    `hostnames` become SANs (IP addresses as IP SANs, everything else as DNS).
    """
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = _leaf_builder(
        subject=_name(common_name),
        key=key,
        issuer_cert=issuer_cert,
        issuer_key=issuer_key,
        now=now,
        days=days,
        usages=usages,
    )
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def parse_csr(pem: str | bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR and check its self-signature and key type (P-256)."""
    raw = pem.encode() if isinstance(pem, str) else pem
    if len(raw) > MAX_CSR_BYTES:
        raise CsrInvalid(f"CSR is {len(raw)} bytes; at most {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as exc:
        raise CsrInvalid(f"not a PEM certificate signing request: {exc}") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature):
        valid = False
    if not valid:
        raise CsrInvalid("the CSR's signature does not verify with its own key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CsrInvalid("the CSR's key must be ECDSA P-256")
    return csr


def csr_common_name(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR's CN, or None when it has none (or more than one)."""
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        return None
    value = cns[0].value
    return value if isinstance(value, str) else value.decode()


def check_csr(
    csr: x509.CertificateSigningRequest, *, expected_cn: str
) -> ec.EllipticCurvePublicKey:
    """The CSR's public key, if its CN is exactly `expected_cn`; else CsrInvalid."""
    cn = csr_common_name(csr)
    if cn != expected_cn:
        raise CsrInvalid(f"the CSR's CN is {cn!r}; it must be the node id {expected_cn!r}")
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # parse_csr checked
    return key


def issue_node_certificate(
    *,
    key: ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    node_id: str,
    serial: str,
    now: datetime,
    days: float,
) -> x509.Certificate:
    """A node's client certificate: CN = node id, serialNumber = hardware serial, clientAuth."""
    return _leaf_builder(
        subject=_name(node_id, serial=serial),
        key=key,
        issuer_cert=issuer_cert,
        issuer_key=issuer_key,
        now=now,
        days=days,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    ).sign(issuer_key, hashes.SHA256())


def verify_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `cert` (name and signature; validity dates are the caller's)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def build_crl(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked: Iterable[tuple[int, datetime]],
    now: datetime,
    number: int,
    next_update: timedelta = timedelta(days=7),
) -> x509.CertificateRevocationList:
    """A CRL listing `(serial, revoked_at)` pairs, valid until `now + next_update`."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_public(issuer_key)),
            critical=False,
        )
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(issuer_key, hashes.SHA256())
