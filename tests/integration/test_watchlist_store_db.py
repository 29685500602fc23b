"""Photos, sealed templates and delivered bundles in a real database (SQLite and PostgreSQL).

The template command is a stand-in script here (the real one, with the real
models, runs in test_watchlist_enrolment.py and the end-to-end test): it
shows the server's side of the subprocess contract — one JSON line in, a
template kept with its model, or a refusal passed on with its reason — and
that a command that answers garbage, a wrong size or nothing is a clear
error that keeps nothing. A delivered bundle is kept byte for byte by its
SHA-256, and the node in scope opens the template the server sealed for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from edge_agent.watchlist import BundleRefused, WatchlistStore
from fleet_server.db import make_engine
from fleet_server.models import Node, NodeCertificate, utcnow
from fleet_server.models.watchlist import (
    WatchlistBundle,
    WatchlistEntryIn,
    WatchlistIn,
    WatchlistPhoto,
)
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.schema import migrate
from fleet_server.watchlists import service
from fleet_server.watchlists.enrolment import PhotoRefused, PhotoStore
from fleet_server.watchlists.errors import WatchlistError
from fleet_server.watchlists.signing import WatchlistSigner
from fleet_server.watchlists.template_vault import (
    KEY_FILE,
    TemplateVault,
    TemplateVaultError,
    reseal_templates,
    rotate_key,
)
from tests.support.pki import FleetCA, csr_pem, new_key

NODE = "lhr-db-0001"
VECTOR = (np.arange(128, dtype="<f4") + 1.0) / 1000.0
MODEL_SHA = "cd" * 32


def command(answer: dict[str, object] | str) -> list[str]:
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return [sys.executable, "-c", f"import sys; sys.stdin.buffer.read(); print({text!r})"]


GOOD = {
    "ok": True, "template": base64.b64encode(VECTOR.tobytes()).decode(), "dim": 128,
    "model": "sface", "model_version": "test", "model_sha256": MODEL_SHA,
    "quality": {"eye_distance_px": 80.0},
}  # fmt: skip


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def test_photos_templates_and_bundles_are_kept_and_sealed_for_the_node(
    engine: Engine, tmp_path: Path
) -> None:
    now = utcnow()
    paths = PkiPaths(tmp_path / "pki")
    init_dev_pki(paths, passphrase=b"test-passphrase", now=now - timedelta(minutes=5))
    signer = WatchlistSigner.from_pki(paths, now=now)
    vault = TemplateVault.from_pki(paths)
    key = new_key()
    pem = FleetCA().sign_csr(csr_pem(key, cn=NODE), lifetime=timedelta(days=5))
    cert = x509.load_pem_x509_certificate(pem.encode())
    photos = PhotoStore(tmp_path / "photos")
    with Session(engine, expire_on_commit=False) as session:
        session.add(Node(node_id=NODE, district="lahore", lifecycle="active"))
        session.add(NodeCertificate(
            serial=format(cert.serial_number, "x"), node_id=NODE, hardware_serial="SN-DB-1",
            key_sha256="0" * 64, not_before=now, not_after=now + timedelta(days=5),
            issued_via="token", pem=pem,
        ))  # fmt: skip
        wl = service.create_watchlist(
            session,
            WatchlistIn(name="wanted-db", category="wanted_person", purpose="warrants",
                        owner_agency="Punjab Police", districts=["lahore"],
                        expires_at=now + timedelta(days=2)),
            actor="user:admin", now=now,
        )  # fmt: skip
        session.flush()
        entry = service.add_entry(
            session, wl, WatchlistEntryIn(kind="person", note="warrant"), actor="user:admin",
            now=now,
        )  # fmt: skip
        session.commit()
        # bad answers from the command: clear errors, nothing kept
        for bad in ("not json", json.dumps({**GOOD, "dim": 64}), ""):
            with pytest.raises(WatchlistError):
                service.add_photo(session, wl, entry, b"photo-x", store=photos, vault=vault,
                                  actor="user:admin", now=now, command=command(bad))  # fmt: skip
        with pytest.raises(PhotoRefused) as refused:
            service.add_photo(
                session, wl, entry, b"photo-x", store=photos, vault=vault, actor="user:admin",
                now=now,
                command=command({"ok": False, "reason": "several_faces", "detail": "2 faces"}),
            )  # fmt: skip
        assert (refused.value.reason, refused.value.detail) == ("several_faces", "2 faces")
        assert session.exec(select(WatchlistPhoto)).all() == []
        assert not (tmp_path / "photos").exists()
        row = service.add_photo(session, wl, entry, b"photo-1", store=photos, vault=vault,
                                actor="user:admin", now=now, command=command(GOOD))  # fmt: skip
        session.commit()
        _assert_no_plaintext(engine, VECTOR)
        assert row.sha256 == hashlib.sha256(b"photo-1").hexdigest()
        assert photos.get(row.sha256) == b"photo-1"
        bundle = service.build_bundle(session, wl, signer=signer, vault=vault, now=now)
        fetch = service.delivery_for(session, wl, bundle)
        session.commit()
    assert fetch is not None
    with Session(engine) as session:
        stored = session.get(WatchlistBundle, fetch.sha256)
        assert stored is not None
        content = bytes(stored.content)
    assert hashlib.sha256(content).hexdigest() == fetch.sha256
    assert len(content) == fetch.size
    trusted = list(x509.load_pem_x509_certificates(paths.chain.read_bytes()))
    node = WatchlistStore(trusted=trusted, district="lahore", node_id=NODE, node_key=key,
                          model_sha256=MODEL_SHA)  # fmt: skip
    node.install(content, now=now)
    [template] = node.templates()
    assert template.entry_id == entry.id.lower()
    assert np.array_equal(template.vector, VECTOR)


def _raw_templates(engine: Engine) -> list[str]:
    """The template column as the database holds it (no model, no decoding)."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT template FROM watchlistphoto")).all()]


def _assert_no_plaintext(engine: Engine, vector: np.ndarray) -> None:
    raw = _raw_templates(engine)
    assert raw
    plain = vector.astype("<f4").tobytes()
    for stored in raw:
        assert stored.startswith("aesgcm1:")
        assert base64.b64encode(plain).decode() not in stored
        assert base64.b64encode(plain[:24]).decode()[:24] not in stored
        assert plain[:16] not in base64.b64decode(stored.split(":", 2)[2])


def test_templates_at_rest_are_sealed_rotated_and_bound_to_their_row(
    engine: Engine, tmp_path: Path
) -> None:
    """A template in the database is ciphertext only; old plain rows get sealed; keys rotate."""
    now = utcnow()
    paths = PkiPaths(tmp_path / "pki")
    init_dev_pki(paths, passphrase=b"test-passphrase", now=now - timedelta(minutes=5))
    vault = TemplateVault.from_pki(paths)
    assert (paths.root / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert TemplateVault.from_pki(paths).key_id == vault.key_id  # made once, then kept
    assert [p.name for p in paths.root.glob(".watchlist-templates*")] == []
    photos = PhotoStore(tmp_path / "photos")
    with Session(engine, expire_on_commit=False) as session:
        wl = service.create_watchlist(
            session,
            WatchlistIn(name="wanted-rest", category="wanted_person", purpose="warrants",
                        owner_agency="Punjab Police", districts=["lahore"],
                        expires_at=now + timedelta(days=2)),
            actor="user:admin", now=now,
        )  # fmt: skip
        session.flush()
        a = service.add_entry(session, wl, WatchlistEntryIn(kind="person", note="a"),
                              actor="user:admin", now=now)  # fmt: skip
        b = service.add_entry(session, wl, WatchlistEntryIn(kind="person", note="b"),
                              actor="user:admin", now=now)  # fmt: skip
        session.flush()
        row = service.add_photo(session, wl, a, b"photo-a", store=photos, vault=vault,
                                actor="user:admin", now=now, command=command(GOOD))  # fmt: skip
        # a row from before encryption at rest (plain base64), written as it was then
        session.add(WatchlistPhoto(
            entry_id=b.id, sha256=hashlib.sha256(b"photo-b").hexdigest(), size=7,
            template=base64.b64encode(VECTOR.tobytes()).decode(), dim=128, model="sface",
            model_sha256=MODEL_SHA, quality={}, uploaded_by="user:admin", uploaded_at=now,
        ))  # fmt: skip
        session.commit()
        assert reseal_templates(session, vault) == 1
        session.commit()
        _assert_no_plaintext(engine, VECTOR)
        assert vault.open(row.template, entry_id=a.id, photo_sha256=row.sha256) == VECTOR.tobytes()
        # moved to another entry's row, it does not open
        with pytest.raises(TemplateVaultError, match="does not decrypt"):
            vault.open(row.template, entry_id=b.id, photo_sha256=row.sha256)
        # rotation: the old key still opens rows until the reseal, which moves them all
        old_id = vault.key_id
        rotated = rotate_key(paths)
        assert rotated.key_id != old_id
        assert rotated.open(row.template, entry_id=a.id, photo_sha256=row.sha256) == (
            VECTOR.tobytes()
        )
        assert reseal_templates(session, rotated) == 2
        session.commit()
        assert all(t.startswith(f"aesgcm1:{rotated.key_id}:") for t in _raw_templates(engine))
        _assert_no_plaintext(engine, VECTOR)
        # a server without the key (a copied database alone) cannot open them
        stranger = TemplateVault(b"\x00" * 32)
        session.refresh(row)
        with pytest.raises(TemplateVaultError, match="does not hold"):
            stranger.open(row.template, entry_id=a.id, photo_sha256=row.sha256)
        # a row altered in the database: delivery refuses, naming the photo, and sends nothing
        signer = WatchlistSigner.from_pki(paths, now=now)
        head, body = row.template[:-8], row.template[-8:]
        row.template = head + ("A" if body[0] != "A" else "B") + body[1:]
        session.add(row)
        session.commit()
        with pytest.raises(TemplateVaultError, match=f"{row.sha256[:12]}.*does not decrypt"):
            service.build_bundle(session, wl, signer=signer, vault=rotated, now=now)
        session.rollback()
        assert session.exec(select(WatchlistBundle)).all() == []


def test_a_node_that_renews_with_a_new_key_gets_templates_sealed_for_it_at_the_next_delivery(
    engine: Engine, tmp_path: Path
) -> None:
    """The bundle after a renewal is sealed for the new key only; the old key opens nothing."""
    now = utcnow()
    paths = PkiPaths(tmp_path / "pki")
    init_dev_pki(paths, passphrase=b"test-passphrase", now=now - timedelta(minutes=5))
    signer = WatchlistSigner.from_pki(paths, now=now)
    vault = TemplateVault.from_pki(paths)
    trusted = list(x509.load_pem_x509_certificates(paths.chain.read_bytes()))
    ca = FleetCA()

    def certificate(key: Any, serial: str, issued: datetime) -> NodeCertificate:
        pem = ca.sign_csr(csr_pem(key, cn=NODE), lifetime=timedelta(days=5))
        cert = x509.load_pem_x509_certificate(pem.encode())
        return NodeCertificate(
            serial=format(cert.serial_number, "x"), node_id=NODE, hardware_serial=serial,
            key_sha256="0" * 64, not_before=issued, issued_at=issued,
            not_after=now + timedelta(days=5), issued_via="token", pem=pem,
        )  # fmt: skip

    def node(key: Any) -> WatchlistStore:
        return WatchlistStore(trusted=trusted, district="lahore", node_id=NODE, node_key=key,
                              model_sha256=MODEL_SHA)  # fmt: skip

    old_key, new_key_ = new_key(), new_key()
    with Session(engine, expire_on_commit=False) as session:
        session.add(Node(node_id=NODE, district="lahore", lifecycle="active"))
        session.add(certificate(old_key, "SN-RENEW-1", now - timedelta(hours=2)))
        wl = service.create_watchlist(
            session,
            WatchlistIn(name="wanted-renew", category="wanted_person", purpose="warrants",
                        owner_agency="Punjab Police", districts=["lahore"],
                        expires_at=now + timedelta(days=2)),
            actor="user:admin", now=now,
        )  # fmt: skip
        session.flush()
        entry = service.add_entry(session, wl, WatchlistEntryIn(kind="person", note="p"),
                                  actor="user:admin", now=now)  # fmt: skip
        service.add_photo(session, wl, entry, b"photo-r", store=PhotoStore(tmp_path / "photos"),
                          vault=vault, actor="user:admin", now=now,
                          command=command(GOOD))  # fmt: skip
        session.commit()
        before = service.build_bundle(session, wl, signer=signer, vault=vault, now=now)
        assert service.delivery_for(session, wl, before) is not None  # kept, as delivered
        service.record_versions(session, NODE, {wl.name: wl.version}, now=now)
        session.commit()
        assert service.lagging_nodes(session, wl, now=now) == []
        # the node renews: a new key, a newer certificate
        session.add(certificate(new_key_, "SN-RENEW-1", now - timedelta(minutes=1)))
        session.commit()
        [lag] = service.lagging_nodes(session, wl, now=now)
        assert (lag.node_id, lag.held, lag.key_renewed) == (NODE, wl.version, True)
        after = service.build_bundle(session, wl, signer=signer, vault=vault, now=now)
        assert service.delivery_for(session, wl, after) is not None
        session.commit()
        assert service.lagging_nodes(session, wl, now=now) == []  # sealed for the new key

    old_node = node(old_key)
    old_node.install(before.model_dump_json(), now=now)
    assert [t.entry_id for t in old_node.templates()] == [entry.id.lower()]
    renewed = node(new_key_)
    with pytest.raises(BundleRefused) as refused:
        renewed.install(before.model_dump_json(), now=now)  # sealed for the old key only
    assert refused.value.reason == "recipient"
    renewed.install(after.model_dump_json(), now=now)
    [template] = renewed.templates()
    assert np.array_equal(template.vector, VECTOR)
    with pytest.raises(BundleRefused) as stale:
        node(old_key).install(after.model_dump_json(), now=now)
    assert stale.value.reason == "recipient"
    assert after.body.faces is not None
    assert len(after.body.faces.recipients) == 1
