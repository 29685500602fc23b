"""Signing keys for the OTA repository: offline keys kept passphrase-encrypted, online keys.

The root keys (and the top-level targets key) are made at a key ceremony on an offline
machine and stored as PKCS#8 PEM encrypted with a passphrase, mode 0600, the way the
fleet CA's root key is kept (fleet_server/pki/store.py). They are loaded only to sign a
new root (rotation) or new top-level targets (a new artifact kind). The online keys
(timestamp, snapshot, release, director) live on the server that publishes artifacts;
their compromise is bounded by what the offline roles delegate to them and is repaired by
rotating them with the offline keys. Uses `cryptography` and securesystemslib directly:
`ota` must not import the server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import (  # type: ignore[attr-defined]
    CryptoSigner,
    SSlibKey,
)

from ota.errors import RepositoryError

__all__ = [
    "OnlineKeys",
    "generate_signer",
    "load_signer",
    "public_key",
    "save_signer",
]

ONLINE_ROLES = ("timestamp", "snapshot", "release", "director")


def generate_signer() -> CryptoSigner:
    """A fresh Ed25519 key pair as a signer."""
    return CryptoSigner(Ed25519PrivateKey.generate())


def public_key(signer: CryptoSigner) -> SSlibKey:
    """The TUF public key (with its key id) of a signer."""
    return signer.public_key


def _private_key(signer: CryptoSigner) -> Ed25519PrivateKey:
    key = signer._private_key
    if not isinstance(key, Ed25519PrivateKey):
        raise RepositoryError(f"unsupported key type {type(key).__name__}")
    return key


def save_signer(path: Path, signer: CryptoSigner, *, passphrase: bytes | None) -> None:
    """Write a private key as PKCS#8 PEM, mode 0600; encrypted when a passphrase is given.

    Offline keys must have one; online keys may rely on the server's disk protection.
    """
    if passphrase is not None and not passphrase:
        raise RepositoryError("an offline key needs a non-empty passphrase")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = _private_key(signer).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.replace(tmp, path)


def load_signer(path: Path, *, passphrase: bytes | None) -> CryptoSigner:
    """Load a private key written by `save_signer`; a wrong passphrase is a RepositoryError."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (ValueError, TypeError) as exc:
        raise RepositoryError(f"cannot load key {path.name}: {exc}") from exc
    except OSError as exc:
        raise RepositoryError(f"cannot read key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise RepositoryError(f"{path.name} is not an Ed25519 key")
    return CryptoSigner(key)


@dataclass(frozen=True)
class OnlineKeys:
    """The keys the publishing server holds: timestamp, snapshot, release (kinds), director."""

    timestamp: CryptoSigner
    snapshot: CryptoSigner
    release: CryptoSigner
    director: CryptoSigner

    @classmethod
    def generate(cls) -> OnlineKeys:
        """Fresh online keys (a new repository, or a rotation)."""
        return cls(*(generate_signer() for _ in ONLINE_ROLES))

    def save(self, directory: Path, *, passphrase: bytes | None = None) -> None:
        """Write them as `<role>.pem` in `directory`."""
        for role in ONLINE_ROLES:
            save_signer(directory / f"{role}.pem", getattr(self, role), passphrase=passphrase)

    @classmethod
    def load(cls, directory: Path, *, passphrase: bytes | None = None) -> OnlineKeys:
        """Read the keys `save` wrote."""
        return cls(
            *(
                load_signer(directory / f"{role}.pem", passphrase=passphrase)
                for role in ONLINE_ROLES
            )
        )
