"""The fleet PKI on disk: the offline root, the online issuing CA, service certificates, the CRL.

Layout (docs/provisioning.md):

- root directory (offline, e.g. a USB stick): ``root-ca.pem``, ``root-ca.key``
  (PKCS#8 encrypted with the passphrase, mode 0600);
- ``<data_dir>/pki/``: ``issuing-ca.pem`` + ``issuing-ca.key`` (0600,
  unencrypted: the online server signs with it), ``ca-chain.pem`` (issuing +
  root), ``broker.pem/.key``, ``api.pem/.key``, ``fleet-server.pem/.key``,
  ``fleet.crl``; in development also the root and ``root-ca.passphrase``.

Private keys are written 0600 through a temporary file and ``os.replace``, so
a crash never leaves a half-written key or a world-readable one.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet_server.pki.ca import (
    PkiError,
    build_crl,
    cert_pem,
    generate_key,
    issue_node_certificate,
    issue_service_certificate,
    load_key,
    make_issuing_ca,
    make_root_ca,
    private_key_pem,
)

logger = logging.getLogger(__name__)

ROOT_CERT = "root-ca.pem"
ROOT_KEY = "root-ca.key"
PASSPHRASE_FILE = "root-ca.passphrase"  # noqa: S105 - a file name
SERVICE_RENEW_BEFORE = timedelta(days=30)
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (certificate, CRL) atomically with mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def load_cert(path: Path) -> x509.Certificate:
    """One PEM certificate (the first in the file)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read certificate {path}: {exc}") from None


def init_root(root_dir: Path, *, passphrase: bytes, now: datetime) -> Path:
    """Make the root CA in `root_dir` (refuses to overwrite one); returns the cert path."""
    if not passphrase:
        raise PkiError("the root CA key needs a non-empty passphrase")
    cert_path, key_path = root_dir / ROOT_CERT, root_dir / ROOT_KEY
    if cert_path.exists() or key_path.exists():
        raise PkiError(f"{root_dir} already holds a root CA; refusing to overwrite it")
    key = generate_key()
    cert = make_root_ca(key=key, now=now)
    write_private(key_path, private_key_pem(key, passphrase=passphrase))
    write_public(cert_path, cert_pem(cert))
    logger.info("root CA written to %s", cert_path)
    return cert_path


def load_root(
    root_dir: Path, *, passphrase: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The root CA certificate and its decrypted key."""
    cert = load_cert(root_dir / ROOT_CERT)
    try:
        pem = (root_dir / ROOT_KEY).read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read the root key: {exc}") from None
    key = load_key(pem, passphrase=passphrase)
    return cert, key


@dataclass(frozen=True)
class PkiPaths:
    """Where the online server keeps its PKI files (``<data_dir>/pki``)."""

    root: Path

    @property
    def issuing_cert(self) -> Path:
        return self.root / "issuing-ca.pem"

    @property
    def issuing_key(self) -> Path:
        return self.root / "issuing-ca.key"

    @property
    def chain(self) -> Path:
        return self.root / "ca-chain.pem"

    @property
    def crl(self) -> Path:
        return self.root / "fleet.crl"

    @property
    def crl_number(self) -> Path:
        return self.root / "fleet.crl.number"

    @property
    def passphrase(self) -> Path:
        return self.root / PASSPHRASE_FILE

    def service(self, name: str) -> tuple[Path, Path]:
        """(cert, key) paths of a service certificate: broker, api, fleet-server."""
        return self.root / f"{name}.pem", self.root / f"{name}.key"

    @property
    def exists(self) -> bool:
        return self.issuing_cert.exists() and self.issuing_key.exists() and self.chain.exists()


def issue_intermediate(
    root_dir: Path, *, passphrase: bytes, paths: PkiPaths, now: datetime
) -> Path:
    """Sign a new issuing CA with the root and install it in `paths` (replacing an old one)."""
    root_cert, root_key = load_root(root_dir, passphrase=passphrase)
    key = generate_key()
    cert = make_issuing_ca(key=key.public_key(), root_cert=root_cert, root_key=root_key, now=now)
    write_private(paths.issuing_key, private_key_pem(key))
    write_public(paths.issuing_cert, cert_pem(cert))
    write_public(paths.chain, cert_pem(cert) + cert_pem(root_cert))
    logger.info("issuing CA written to %s", paths.issuing_cert)
    return paths.issuing_cert


def init_dev_pki(paths: PkiPaths, *, passphrase: bytes | None, now: datetime) -> bool:
    """Development/demo: root and issuing CA both in `paths.root`; False when already there.

    Without a passphrase one is generated and kept next to the root key (0600);
    that is acceptable only because this path is refused outside `dev`.
    """
    if paths.exists:
        return False
    if not passphrase:
        if paths.passphrase.exists():
            passphrase = paths.passphrase.read_bytes().strip()
        else:
            passphrase = secrets.token_urlsafe(32).encode()
            write_private(paths.passphrase, passphrase + b"\n")
    if not (paths.root / ROOT_CERT).exists():
        init_root(paths.root, passphrase=passphrase, now=now)
    issue_intermediate(paths.root, passphrase=passphrase, paths=paths, now=now)
    logger.warning("development PKI created in %s (never use it in production)", paths.root)
    return True


class IssuingCa:
    """The online issuing CA loaded from `PkiPaths`: signs nodes, services and CRLs."""

    def __init__(self, paths: PkiPaths) -> None:
        if not paths.exists:
            raise PkiError(
                f"no issuing CA in {paths.root}; run `nigehbaan server ca issue-intermediate` "
                "(or --init-pki in development)"
            )
        self.paths = paths
        self.cert = load_cert(paths.issuing_cert)
        self.key = load_key(paths.issuing_key.read_bytes())
        self.chain_pem = paths.chain.read_text(encoding="ascii")

    def issue_node(
        self,
        *,
        key: ec.EllipticCurvePublicKey,
        node_id: str,
        serial: str,
        now: datetime,
        days: float,
    ) -> x509.Certificate:
        """A node certificate signed by this CA."""
        return issue_node_certificate(
            key=key,
            issuer_cert=self.cert,
            issuer_key=self.key,
            node_id=node_id,
            serial=serial,
            now=now,
            days=days,
        )

    def ensure_service(
        self,
        name: str,
        *,
        now: datetime,
        hostnames: Sequence[str] = (),
        server: bool = True,
        client: bool = False,
    ) -> tuple[Path, Path]:
        """(cert, key) of a service certificate, (re)issued when missing, expiring or renamed.

        The certificate file carries the issuing CA after the leaf, so a client
        that trusts only the root can still build the chain.
        """
        cert_path, key_path = self.paths.service(name)
        if cert_path.exists() and key_path.exists():
            current = load_cert(cert_path)
            fresh = current.not_valid_after_utc - now > SERVICE_RENEW_BEFORE
            same_issuer = current.issuer == self.cert.subject
            if fresh and same_issuer and _sans(current) == set(hostnames):
                return cert_path, key_path
        key = generate_key()
        cert = issue_service_certificate(
            key=key.public_key(),
            issuer_cert=self.cert,
            issuer_key=self.key,
            common_name=name,
            now=now,
            hostnames=hostnames,
            server=server,
            client=client,
        )
        write_private(key_path, private_key_pem(key))
        write_public(cert_path, cert_pem(cert) + cert_pem(self.cert))
        logger.info("issued %s certificate %s", name, cert_path)
        return cert_path, key_path

    def write_crl(self, *, revoked: Iterable[tuple[int, datetime]], now: datetime) -> Path:
        """Sign and atomically install ``fleet.crl`` listing `revoked`; returns its path."""
        try:
            number = int(self.paths.crl_number.read_text().strip()) + 1
        except (OSError, ValueError):
            number = 1
        crl = build_crl(
            issuer_cert=self.cert, issuer_key=self.key, revoked=revoked, now=now, number=number
        )
        write_public(self.paths.crl, crl.public_bytes(serialization.Encoding.PEM))
        write_public(self.paths.crl_number, f"{number}\n".encode())
        return self.paths.crl


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names: set[str] = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    names.update(ext.get_values_for_type(x509.DNSName))
    return names


def cert_common_name(cert: x509.Certificate) -> str | None:
    """The certificate's CN, or None."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        return None
    value = cns[0].value
    return value if isinstance(value, str) else value.decode()
