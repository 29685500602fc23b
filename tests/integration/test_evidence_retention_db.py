"""Retention and legal hold on both databases: expired files go, held ones stay until release.

The rules (`fleet_server.evidence.retention`) run on a migrated SQLite file
and a throwaway PostgreSQL schema: a plate crop past its 30 days is deleted
(bytes gone, row kept as ``deleted``, ``evidence.expired`` in the audit log);
one on an open case is kept; after the case's release it is kept for the
case retention, then deleted as case evidence. A class with no retention
keeps its files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.db import make_engine
from fleet_server.evidence import service
from fleet_server.evidence.retention import RetentionPolicy, expire_evidence, node_instructions
from fleet_server.evidence.store import LocalEvidenceStore
from fleet_server.models import utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.evidence import EvidenceCase, EvidenceItem
from fleet_server.schema import migrate

NOW = utcnow()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def _item(session: Session, store: LocalEvidenceStore, name: str, data_class: str) -> str:
    data = name.encode() * 10
    sha = hashlib.sha256(data).hexdigest()
    store.append(sha, 0, data, size=len(data))
    store.finish(sha, size=len(data))
    session.add(EvidenceItem(
        sha256=sha, data_class=data_class, node_id="lhr-0001", district="Gulberg",
        captured_at=NOW, size=len(data), content_type="image/jpeg", claim={},
        signature="s" * 8, cert_serial="1", cert_pem="", state="stored", stored_at=NOW,
    ))  # fmt: skip
    session.commit()
    return sha


def test_expiry_deletes_what_is_due_keeps_what_is_held_and_deletes_it_after_release(
    engine: Engine, tmp_path: Path
) -> None:
    store = LocalEvidenceStore(tmp_path / "evidence")
    policy = RetentionPolicy(days={"plate_crop": 30.0, "panic_snapshot": None}, case_days=60.0)
    with Session(engine, expire_on_commit=False) as session:
        due = _item(session, store, "due", "plate_crop")
        held = _item(session, store, "held", "plate_crop")
        kept = _item(session, store, "kept", "panic_snapshot")  # no retention for its class
        case = service.open_case(
            session=session, actor="duty", reference="FIR-1/2026", title="", district="Gulberg"
        )
        row = session.get(EvidenceItem, held)
        assert row is not None
        service.attach_to_case(session=session, actor="duty", case=case, items=[row])
    later = NOW + timedelta(days=31)
    with Session(engine) as session:
        assert expire_evidence(session=session, store=store, policy=policy, now=later) == [due]
        session.commit()
    assert not store.has(due)
    assert store.has(held)
    assert store.has(kept)
    with Session(engine) as session:
        row = session.get(EvidenceItem, due)
        assert row is not None
        assert (row.state, row.delete_reason) == ("deleted", "retention:plate_crop")
        actions = session.exec(
            select(AuditRecord.action).where(col(AuditRecord.object) == f"evidence:{due}")
        ).all()
        assert list(actions) == ["evidence.expired"]
        told = node_instructions(session=session, node_id="lhr-0001", now=later, wanted=[])
        assert (told["hold"], told["delete"]) == ([held], [due])
    with Session(engine, expire_on_commit=False) as session:
        opened = session.get(EvidenceCase, case.id)
        assert opened is not None
        service.release_case(session=session, actor="auditor", case=opened, note="closed")
    with Session(engine) as session:  # released now: within the case retention still
        assert expire_evidence(session=session, store=store, policy=policy, now=later) == []
        session.commit()
    with Session(engine) as session:
        gone = expire_evidence(
            session=session, store=store, policy=policy, now=utcnow() + timedelta(days=61)
        )
        session.commit()
    assert gone == [held]
    assert not store.has(held)
    assert store.has(kept)
