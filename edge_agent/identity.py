"""The node's identity: its private key, the CSRs it signs, and its certificate.

The key pair is made on the node at first boot and never leaves it; the fleet
CA only ever sees certificate signing requests (CN = node id, serialNumber =
hardware serial). Keys live behind the small `KeyStore` interface so a TPM or
secure element can hold them later; `FileKeyStore` keeps an EC P-256 key as
PKCS#8 PEM in a file only its owner can read (mode 0600).

Certificate helpers are pure: they take PEM bytes and a time and return
values (`certificate_info`, `needs_renewal`), so renewal timing is tested
without clocks or files. `write_atomically` is the one way identity files are
written: temporary name, fsync, `os.replace`, so a power cut leaves either the
old or the new file, never half of one.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.errors import AgentError

__all__ = [
    "RENEW_WHEN_LEFT",
    "CertificateInfo",
    "FileKeyStore",
    "IdentityError",
    "KeyStore",
    "build_csr",
    "certificate_info",
    "hardware_serial",
    "needs_renewal",
    "node_id_from_serial",
    "public_key_fingerprint",
    "write_atomically",
]

logger = logging.getLogger(__name__)

# Renew when less than this fraction of the certificate's lifetime is left.
RENEW_WHEN_LEFT = 1.0 / 3.0

_SERIAL_SOURCES = (
    Path("/sys/firmware/devicetree/base/serial-number"),  # Raspberry Pi, Jetson
    Path("/proc/device-tree/serial-number"),
)


class IdentityError(AgentError):
    """The node's key or certificate cannot be read, made or used."""


class KeyStore(abc.ABC):
    """Where the node's private key lives; a TPM/secure element implements this later."""

    @abc.abstractmethod
    def load_or_create(self) -> ec.EllipticCurvePrivateKey:
        """The node's private key, made on first use."""

    def public_key_pem(self) -> str:
        """The public key as PEM SubjectPublicKeyInfo (what a factory CSV carries)."""
        public = self.load_or_create().public_key()
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign_csr(self, node_id: str, serial: str) -> str:
        """A PEM CSR for `node_id` (CN) and `serial` (serialNumber), signed by this key."""
        return build_csr(self.load_or_create(), node_id=node_id, serial=serial)


class FileKeyStore(KeyStore):
    """An EC P-256 key in a PKCS#8 PEM file with mode 0600, created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: ec.EllipticCurvePrivateKey | None = None

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def load_or_create(self) -> ec.EllipticCurvePrivateKey:
        if self._key is not None:
            return self._key
        if self.path.exists():
            self._key = self._load()
        else:
            self._key = self._create()
        return self._key

    def _load(self) -> ec.EllipticCurvePrivateKey:
        try:
            data = self.path.read_bytes()
            key = serialization.load_pem_private_key(data, password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise IdentityError(f"cannot read the node key {self.path}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise IdentityError(f"{self.path} is not an EC P-256 key")
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning("node key %s was readable by others (%o); fixing", self.path, mode)
            self.path.chmod(0o600)
        return key

    def _create(self) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomically(self.path, pem, mode=0o600)
        logger.info("made a new node key at %s", self.path)
        return key


def build_csr(key: ec.EllipticCurvePrivateKey, *, node_id: str, serial: str) -> str:
    """A PEM CSR with CN = node id and serialNumber = hardware serial, signed SHA-256."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def public_key_fingerprint(public_key_pem: str) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (the CSV's short form)."""
    public = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return "sha256:" + digest.finalize().hex()


@dataclass(frozen=True)
class CertificateInfo:
    """What the node needs to know about its certificate."""

    common_name: str
    serial_number: str | None
    not_before: datetime
    not_after: datetime
    public_key_pem: str

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    def renew_at(self, *, when_left: float = RENEW_WHEN_LEFT) -> datetime:
        """The moment less than `when_left` of the lifetime remains."""
        return self.not_after - self.lifetime * when_left


def certificate_info(pem: bytes | str) -> CertificateInfo:
    """Parse the first certificate of a PEM (the leaf) into `CertificateInfo`."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise IdentityError(f"not a PEM certificate: {exc}") from exc
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    serials = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    public = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CertificateInfo(
        common_name=str(cns[0].value) if cns else "",
        serial_number=str(serials[0].value) if serials else None,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        public_key_pem=public.decode("ascii"),
    )


def needs_renewal(
    info: CertificateInfo, *, now: datetime | None = None, when_left: float = RENEW_WHEN_LEFT
) -> bool:
    """True once less than `when_left` (a third) of the certificate's lifetime is left."""
    now = now or datetime.now(timezone.utc)
    return now >= info.renew_at(when_left=when_left)


def node_id_from_serial(serial: str) -> str:
    """The node id the server derives from a serial: lower case, ``[^a-z0-9_-]`` → ``-``."""
    return re.sub(r"[^a-z0-9_-]", "-", serial.strip().lower())


def hardware_serial(sources: tuple[Path, ...] = _SERIAL_SOURCES) -> str | None:
    """The board's serial number (device tree, then /proc/cpuinfo), or None."""
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_bytes().rstrip(b"\x00").decode("ascii", "replace").strip()
            if text:
                return text
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "serial" and value.strip().strip("0"):
                return value.strip()
    return None


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
