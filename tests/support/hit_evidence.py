"""A watchlist hit's pictures as the server holds them: the node's crop and an enrolment photo.

The upload (node-signed, over mTLS: tests/integration/test_evidence_upload_export.py)
and the enrolment (face checked by the node's model: test_watchlist_faces_e2e.py)
are tested where they are built; tests of what the hit page *shows* seed the
result of both directly: an `EvidenceItem` stored in the evidence store (by
SHA-256, as `finish` leaves it) and a `WatchlistPhoto` row with its bytes in
the photo store. The images are small real PNGs, so a browser decodes them.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.evidence.store import LocalEvidenceStore
from fleet_server.models import utcnow
from fleet_server.models.evidence import EvidenceItem
from fleet_server.models.watchlist import WatchlistPhoto
from fleet_server.watchlists.enrolment import PhotoStore

__all__ = ["seed_crop", "seed_photo", "tiny_png"]


def tiny_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid RGB PNG of one colour with a darker diagonal (so no two are alike)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    dark = bytes(v // 2 for v in rgb)
    rows = b"".join(
        b"\x00" + b"".join(dark if x == y else bytes(rgb) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def seed_crop(
    engine: Engine,
    data_dir: Path,
    data: bytes,
    *,
    node_id: str,
    district: str,
    event_id: str,
    state: str = "stored",
    data_class: str = "face_crop",
) -> str:
    """A hit's crop as an upload leaves it (``stored``, or ``partial`` half way); its SHA-256."""
    sha = hashlib.sha256(data).hexdigest()
    store = LocalEvidenceStore(data_dir.resolve() / "evidence")
    half = len(data) // 2
    held = store.received(sha)  # a partial upload seeded before continues, as a node's does
    upto = half if state == "partial" else len(data)
    if upto > held:
        store.append(sha, held, data[held:upto], size=len(data))
    if state == "stored":
        store.finish(sha, size=len(data))
    with Session(engine) as session:
        session.add(
            EvidenceItem(
                sha256=sha, data_class=data_class, node_id=node_id, district=district,
                camera_id="gate", event_id=event_id, event_type="watchlist_hit",
                captured_at=utcnow(), size=len(data), content_type="image/png", claim={},
                signature="x" * 8, cert_serial="1", cert_pem="", state=state,
                received_bytes=half if state == "partial" else len(data),
                stored_at=utcnow() if state == "stored" else None,
            )
        )  # fmt: skip
        session.commit()
    return sha


def seed_photo(engine: Engine, data_dir: Path, data: bytes, *, entry_id: str) -> str:
    """An enrolment photo of a person entry, as enrolment keeps it; its SHA-256."""
    sha = PhotoStore(data_dir / "watchlist-photos").put(data)
    with Session(engine) as session:
        session.add(
            WatchlistPhoto(
                entry_id=entry_id, sha256=sha, size=len(data), template="AAAA", dim=1,
                model="seeded-for-the-test", model_sha256="0" * 64, uploaded_by="admin",
            )
        )  # fmt: skip
        session.commit()
    return sha
