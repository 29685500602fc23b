"""Face templates sealed for the nodes in a watchlist's scope (no plaintext template leaves here).

For each bundle a fresh 32-byte template key encrypts every template with
AES-256-GCM (associated data binds it to its list, version and entry:
`proto.watchlist.template_aad`). The key is then wrapped once per node in
scope: a one-time P-256 key pair, ECDH with the public key of the node's
current certificate, HKDF-SHA256 (info: list, version, node:
`proto.watchlist.key_info`) and AES-256-GCM. Only the node holding that
certificate's private key can unwrap it, and the wrap names the key's
SHA-256, so a node whose certificate was renewed with a new key (or a node
that is not a recipient at all) is told plainly why it cannot open the
templates rather than failing somewhere inside a cipher.

Why one key wrapped per node rather than a bundle per node: one signed
bundle (one SHA-256, one file served over HTTPS) serves every node in
scope, and adding a node costs 150 bytes, not a copy of every template.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proto.watchlist import (
    SealedKey,
    SealedTemplate,
    WatchlistFaces,
    key_info,
    template_aad,
)

__all__ = ["PlainTemplate", "Recipient", "key_sha256", "seal_faces"]


@dataclass(frozen=True)
class PlainTemplate:
    """One entry's template as the server holds it (little-endian float32 bytes)."""

    entry_id: str
    vector: bytes
    photo_sha256: str | None = None


@dataclass(frozen=True)
class Recipient:
    """A node in scope and the public key of its current certificate."""

    node_id: str
    public_key: ec.EllipticCurvePublicKey


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_sha256(key: ec.EllipticCurvePublicKey) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return digest.finalize().hex()


def seal_faces(
    *,
    watchlist_id: str,
    version: int,
    templates: Sequence[PlainTemplate],
    recipients: Sequence[Recipient],
    model: str,
    model_sha256: str,
    dim: int,
) -> WatchlistFaces:
    """The templates under a fresh key, and that key wrapped for each recipient."""
    key = AESGCM.generate_key(bit_length=256)
    aead = AESGCM(key)
    sealed_templates = []
    for template in templates:
        nonce = os.urandom(12)
        aad = template_aad(watchlist_id=watchlist_id, version=version, entry_id=template.entry_id)
        sealed_templates.append(
            SealedTemplate(
                entry_id=template.entry_id,
                photo_sha256=template.photo_sha256,
                nonce=_b64(nonce),
                ciphertext=_b64(aead.encrypt(nonce, template.vector, aad)),
            )
        )
    wraps = []
    for recipient in recipients:
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        shared = ephemeral.exchange(ec.ECDH(), recipient.public_key)
        info = key_info(watchlist_id=watchlist_id, version=version, node_id=recipient.node_id)
        kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        nonce = os.urandom(12)
        point = ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        wraps.append(
            SealedKey(
                node_id=recipient.node_id,
                key_sha256=key_sha256(recipient.public_key),
                ephemeral=_b64(point),
                nonce=_b64(nonce),
                wrapped=_b64(AESGCM(kek).encrypt(nonce, key, info)),
            )
        )
    return WatchlistFaces(
        model=model[:120],
        model_sha256=model_sha256,
        dim=dim,
        recipients=wraps,
        templates=sealed_templates,
    )
