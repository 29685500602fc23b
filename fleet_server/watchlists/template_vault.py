"""Face templates encrypted at rest in the server's database (`watchlistphoto.template`).

A face template is biometric data: a copy of the database (a backup, a
replica, a dump handed to a contractor) must not carry it in clear. The
server must still read it to seal it for each node at delivery
(`sealing.seal_faces`), so it is encrypted with a key the server holds and
the database does not: AES-256-GCM under ``DATA_DIR/pki/watchlist-templates.key``
(32 random bytes, mode 0600, written atomically like every other PKI
secret; `fleet_server.pki.store.write_private`), made at first use.

A stored template reads ``aesgcm1:<key id>:<base64 nonce + ciphertext>``;
the key id is the first 16 hex digits of the key's SHA-256, and the
associated data binds the ciphertext to its row (entry id and photo
SHA-256), so a template moved to another entry's row does not decrypt.

Rotation (`rotate_key`, ``nigehbaan server watchlist-templates rotate``):
the current key moves to ``pki/watchlist-templates.retired/<key id>.key``, a
new one is made, and every row is re-encrypted under it (`reseal_templates`)
in one transaction; retired keys still open rows until then, and may be
deleted once a reseal has run. Rows written before this existed (plain
base64) are sealed by the same reseal, which delivery also runs first.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlmodel import Session, select

from fleet_server.models.watchlist import WatchlistPhoto
from fleet_server.pki.store import PkiPaths, write_private
from fleet_server.watchlists.errors import WatchlistError

__all__ = [
    "KEY_FILE",
    "RETIRED_DIR",
    "TemplateVault",
    "TemplateVaultError",
    "reseal_templates",
    "rotate_key",
]

logger = logging.getLogger(__name__)

KEY_FILE = "watchlist-templates.key"
RETIRED_DIR = "watchlist-templates.retired"
PREFIX = "aesgcm1"
_NONCE = 12


class TemplateVaultError(WatchlistError):
    """A stored template cannot be opened: unknown key, altered row, or a broken key file."""


def key_id(key: bytes) -> str:
    """A short public name for a key (never the key): 16 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


def _aad(entry_id: str, photo_sha256: str) -> bytes:
    return f"nigehbaan.watchlist.template.v1|{entry_id.upper()}|{photo_sha256}".encode()


def _read_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != 32:
        raise TemplateVaultError(f"{path} is not a 32-byte template key ({len(data)} bytes)")
    return data


def _make_key(path: Path) -> None:
    """Make the key once, even with several server workers starting together.

    Written 0600 to a temporary name, then hard-linked to its name, which
    fails if another worker made it first: a key replaced after rows were
    sealed under it would lose those templates for good.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    write_private(tmp, secrets.token_bytes(32))
    try:
        os.link(tmp, path)
        logger.info("watchlist template key made: %s", path)
    except FileExistsError:
        pass  # another worker's key stands
    finally:
        tmp.unlink(missing_ok=True)


class TemplateVault:
    """The template key in use and any retired ones still able to open older rows."""

    def __init__(self, current: bytes, retired: Mapping[str, bytes] | None = None) -> None:
        if len(current) != 32:
            raise TemplateVaultError("a template key is 32 bytes")
        self._current = current
        self.key_id = key_id(current)
        self._keys = {**(retired or {}), self.key_id: current}

    @classmethod
    def from_pki(cls, paths: PkiPaths) -> TemplateVault:
        """The vault kept beside the server's other secrets, its key made on first use."""
        path = paths.root / KEY_FILE
        if not path.exists():
            _make_key(path)
        retired: dict[str, bytes] = {}
        folder = paths.root / RETIRED_DIR
        if folder.is_dir():
            for old in sorted(folder.glob("*.key")):
                data = _read_key(old)
                retired[key_id(data)] = data
        return cls(_read_key(path), retired)

    @staticmethod
    def is_sealed(stored: str) -> bool:
        """Whether a stored template is encrypted (else a row from before encryption)."""
        return stored.startswith(PREFIX + ":")

    def seal(self, vector: bytes, *, entry_id: str, photo_sha256: str) -> str:
        """`vector` (little-endian float32 bytes) encrypted under the current key, as stored."""
        nonce = os.urandom(_NONCE)
        box = AESGCM(self._current).encrypt(nonce, vector, _aad(entry_id, photo_sha256))
        return f"{PREFIX}:{self.key_id}:{base64.b64encode(nonce + box).decode('ascii')}"

    def open(self, stored: str, *, entry_id: str, photo_sha256: str) -> bytes:
        """The template's bytes; `TemplateVaultError` when it cannot be opened."""
        if not self.is_sealed(stored):
            raise TemplateVaultError(f"the template of photo {photo_sha256[:12]}… is not sealed")
        try:
            _, kid, body = stored.split(":", 2)
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raise TemplateVaultError(f"photo {photo_sha256[:12]}…: malformed template") from None
        key = self._keys.get(kid)
        if key is None:
            raise TemplateVaultError(
                f"photo {photo_sha256[:12]}…: sealed under key {kid}, which this server "
                f"does not hold (pki/{KEY_FILE} or pki/{RETIRED_DIR}/)"
            )
        try:
            return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], _aad(entry_id, photo_sha256))
        except InvalidTag:
            raise TemplateVaultError(
                f"photo {photo_sha256[:12]}…: the template does not decrypt (altered, or "
                "moved from another entry)"
            ) from None

    def needs_reseal(self, stored: str) -> bool:
        """Plain (from before encryption) or under a retired key."""
        return not stored.startswith(f"{PREFIX}:{self.key_id}:")


def reseal_templates(session: Session, vault: TemplateVault) -> int:
    """Every template not under the current key re-encrypted under it (not committed).

    Plain rows (base64, written before templates were encrypted) are sealed;
    rows under a retired key are opened with it and sealed again. Returns how
    many rows changed.
    """
    changed = 0
    for row in session.exec(select(WatchlistPhoto)).all():
        if not vault.needs_reseal(row.template):
            continue
        if vault.is_sealed(row.template):
            vector = vault.open(row.template, entry_id=row.entry_id, photo_sha256=row.sha256)
        else:
            try:
                vector = base64.b64decode(row.template, validate=True)
            except ValueError:
                raise TemplateVaultError(f"photo {row.sha256[:12]}…: unreadable template") from None
        row.template = vault.seal(vector, entry_id=row.entry_id, photo_sha256=row.sha256)
        session.add(row)
        changed += 1
    if changed:
        logger.info("%d face template(s) sealed under key %s", changed, vault.key_id)
    return changed


def rotate_key(paths: PkiPaths) -> TemplateVault:
    """A new template key; the old one kept under ``RETIRED_DIR`` to open rows until resealed."""
    path = paths.root / KEY_FILE
    if path.exists():
        old = _read_key(path)
        write_private(paths.root / RETIRED_DIR / f"{key_id(old)}.key", old)
    write_private(path, secrets.token_bytes(32))
    vault = TemplateVault.from_pki(paths)
    logger.info("watchlist template key rotated to %s", vault.key_id)
    return vault
