"""The audit log in a real database: append-only, tamper caught by `audit verify`, no forks.

Runs on SQLite and, where reachable, PostgreSQL (tests/support/db.py). A
tamperer here is someone with the database owner's rights: they switch the
append-only trigger off first, as they could, and the chain still gives
them away.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.audit.checkpoints import CheckpointSigner, make_checkpoint
from fleet_server.audit.export import AuditFilter, records_csv, records_json
from fleet_server.db import make_engine
from fleet_server.models import utcnow
from fleet_server.models.audit import AuditCheckpoint, AuditRecord
from fleet_server.pki import PkiPaths, init_dev_pki
from fleet_server.schema import migrate


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    made = make_engine(db_url)
    migrate(made)
    try:
        yield made
    finally:
        made.dispose()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    paths = PkiPaths(tmp_path_factory.mktemp("data") / "pki")
    init_dev_pki(paths, passphrase=b"audit-test", now=utcnow())
    return paths


def append(engine: Engine, n: int, *, actor: str = "user:alice") -> None:
    with Session(engine) as session:
        for i in range(n):
            audit.record(
                session, actor=actor, action="alert.transition", object=f"alert:{i}",
                detail={"to": "acknowledged", "i": i},
            )  # fmt: skip
        session.commit()


def switch_off_append_only(engine: Engine) -> None:
    """What a database owner can do; the chain must still tell."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE auditrecord DISABLE TRIGGER USER"))
            conn.execute(text("ALTER TABLE auditcheckpoint DISABLE TRIGGER USER"))
        else:
            for table in ("auditrecord", "auditcheckpoint"):
                for event in ("update", "delete"):
                    conn.execute(text(f"DROP TRIGGER {table}_no_{event}"))


def cli_verify(db_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "server", "--db", db_url, "audit", "verify",
         *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_records_chain_and_verify(engine: Engine) -> None:
    append(engine, 5)
    with Session(engine) as session:
        rows = session.exec(select(AuditRecord).order_by(col(AuditRecord.seq))).all()
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert rows[0].prev_hash == audit.GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
        verdict = audit.verify_database(session, trusted=None)
    assert verdict.ok, verdict.broken


def test_a_record_rolls_back_with_its_action(engine: Engine) -> None:
    append(engine, 2)
    with Session(engine) as session:
        audit.record(session, actor="user:alice", action="user.changed", object="user:bob")
        session.rollback()
    append(engine, 1)
    with Session(engine) as session:
        assert audit.verify_database(session, trusted=None).ok
        assert session.exec(select(AuditRecord.seq).order_by(col(AuditRecord.seq))).all() == [
            1, 2, 3,
        ]  # fmt: skip


@pytest.mark.parametrize(
    "statement", ["UPDATE auditrecord SET actor = 'x'", "DELETE FROM auditrecord"]
)
def test_the_database_refuses_to_change_or_delete_a_record(engine: Engine, statement: str) -> None:
    append(engine, 2)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with Session(engine) as session:
        assert audit.verify_database(session, trusted=None).records == 2


def test_a_row_edited_in_the_database_is_caught_by_audit_verify(
    engine: Engine, db_url: str
) -> None:
    append(engine, 6)
    ok = cli_verify(db_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit chain OK: 6 record(s)" in ok.stdout
    switch_off_append_only(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE auditrecord SET actor = 'user:mallory' WHERE seq = 4"))
    broken = cli_verify(db_url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "record 4: its content does not match its hash" in broken.stdout


def test_a_row_deleted_in_the_database_is_caught_by_audit_verify(
    engine: Engine, db_url: str
) -> None:
    append(engine, 6)
    switch_off_append_only(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM auditrecord WHERE seq = 3"))
    broken = cli_verify(db_url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "record 3 missing after record 2" in broken.stdout


def test_the_last_rows_deleted_are_caught_by_the_head(engine: Engine) -> None:
    append(engine, 6)
    switch_off_append_only(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM auditrecord WHERE seq >= 5"))
    with Session(engine) as session:
        verdict = audit.verify_database(session, trusted=None)
    assert verdict.broken_seq == 5
    assert "cut off the end" in (verdict.broken or "")


def test_a_forged_checkpoint_in_the_database_is_caught(
    engine: Engine, db_url: str, pki: PkiPaths
) -> None:
    append(engine, 4)
    signer = CheckpointSigner.from_pki(pki, now=utcnow())
    with Session(engine) as session:
        assert make_checkpoint(session, signer=signer, now=utcnow()) is not None
        session.commit()
    good = cli_verify(db_url, "--ca", str(pki.chain))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "1 signed checkpoint(s) verified" in good.stdout
    # A forger without the key writes a checkpoint for the hash they want.
    with Session(engine) as session:
        real = session.exec(select(AuditCheckpoint)).one()
        session.add(
            AuditCheckpoint(
                at=real.at,
                seq=2,
                hash="a" * 64,
                signature=real.signature,
                signer_pem=real.signer_pem,
            )
        )
        session.commit()
    forged = cli_verify(db_url, "--ca", str(pki.chain))
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "(record 2): the signature does not verify" in forged.stdout


def test_make_checkpoint_signs_only_something_new(engine: Engine, pki: PkiPaths) -> None:
    signer = CheckpointSigner.from_pki(pki, now=utcnow())
    with Session(engine) as session:
        assert make_checkpoint(session, signer=signer, now=utcnow()) is None  # empty chain
    append(engine, 2)
    with Session(engine) as session:
        assert make_checkpoint(session, signer=signer, now=utcnow()) is not None
        session.commit()
        assert make_checkpoint(session, signer=signer, now=utcnow()) is None
    with engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("DELETE FROM auditcheckpoint"))


def test_an_export_verifies_offline_and_an_edited_export_does_not(
    engine: Engine, pki: PkiPaths, tmp_path: Path
) -> None:
    append(engine, 3, actor="user:alice")
    append(engine, 2, actor="user:bob")
    signer = CheckpointSigner.from_pki(pki, now=utcnow())
    with Session(engine) as session:
        make_checkpoint(session, signer=signer, now=utcnow())
        session.commit()
        full = b"".join(records_json(session=session, where=AuditFilter(), now=utcnow()))
        bobs = b"".join(
            records_json(session=session, where=AuditFilter(actor="user:bob"), now=utcnow())
        )
        csv_text = "".join(records_csv(session=session, where=AuditFilter()))
    # Offline: only the export and the root CA certificate on another machine.
    root = tmp_path / "root.pem"
    root.write_bytes(pki.chain.read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1])
    for name, data in (("full.json", full), ("bobs.json", bobs), ("all.csv", csv_text.encode())):
        (tmp_path / name).write_bytes(data)
        result = cli_verify("sqlite://", "--file", str(tmp_path / name), "--ca", str(root))
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    assert (
        "1 signed checkpoint(s) verified"
        in cli_verify("sqlite://", "--file", str(tmp_path / "full.json"), "--ca", str(root)).stdout
    )
    (tmp_path / "edited.json").write_bytes(full.replace(b'"user:bob"', b'"user:eve"', 1))
    edited = cli_verify("sqlite://", "--file", str(tmp_path / "edited.json"), "--ca", str(root))
    assert edited.returncode == 1
    assert "record 4: its content does not match its hash" in edited.stdout


def test_two_workers_appending_at_once_never_fork_the_chain(pg_url: str) -> None:
    """Two engines (two server workers' connection pools) append at the same time."""
    engines = [make_engine(pg_url) for _ in range(2)]
    migrate(engines[0])
    per_worker, errors = 40, []
    start = threading.Barrier(2)

    def worker(engine: Engine, name: str) -> None:
        try:
            start.wait()
            for i in range(per_worker):
                with Session(engine) as session:
                    audit.record(session, actor=f"system:{name}", action="test.append",
                                 object=f"n:{i}")  # fmt: skip
                    session.commit()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e, f"w{i}")) for i, e in enumerate(engines)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert not errors, errors
        with Session(engines[0]) as session:
            rows = session.exec(select(AuditRecord).order_by(col(AuditRecord.seq))).all()
            verdict = audit.verify_database(session, trusted=None)
        assert verdict.ok, verdict.broken
        assert [r.seq for r in rows] == list(range(1, 2 * per_worker + 1))
        assert len({r.prev_hash for r in rows}) == len(rows)  # no two records share a parent
        assert {r.actor for r in rows} == {"system:w0", "system:w1"}
    finally:
        for engine in engines:
            engine.dispose()


def test_the_checkpoint_job_signs_at_most_every_interval(engine: Engine, pki: PkiPaths) -> None:
    from datetime import timedelta

    from fleet_server.audit.server import AuditCheckpointJob

    job = AuditCheckpointJob(signer=CheckpointSigner.from_pki(pki, now=utcnow()), every_s=300)
    t0 = utcnow()

    def tick(at_s: float) -> None:
        with Session(engine) as session:
            assert job.run(session, t0 + timedelta(seconds=at_s)) == []
            session.commit()

    def signed() -> list[int]:
        with Session(engine) as session:
            return [cp.seq for cp in session.exec(select(AuditCheckpoint)).all()]

    append(engine, 2)
    tick(0)
    append(engine, 1)
    tick(60)  # too soon: nothing
    assert signed() == [2]
    tick(301)
    assert signed() == [2, 3]
    tick(700)  # nothing new since record 3
    assert signed() == [2, 3]


def test_a_database_without_the_log_is_not_called_broken(tmp_path: Path) -> None:
    result = cli_verify(f"sqlite:///{tmp_path / 'never-migrated.db'}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot read the audit log" in result.stderr
    assert "BROKEN" not in result.stdout


def test_a_view_of_data_with_its_stated_purpose_joins_the_chain(engine: Engine) -> None:
    from fleet_server.scope import parse_purpose, record_access

    purpose = parse_purpose("fir:FIR-123/2026 Gulberg")
    with Session(engine) as session:
        record_access(session=session, actor="alice", agency="CTD", resource="alert",
                      object_id="01JABC", purpose=purpose)  # fmt: skip
        row = session.exec(select(AuditRecord).where(AuditRecord.action == "data.viewed")).one()
        assert (row.actor, row.object) == ("user:alice", "alert:01JABC")
        assert row.detail == {
            "agency": "CTD", "purpose": purpose.kind, "reference": purpose.reference,
        }  # fmt: skip
        assert audit.verify_database(session, trusted=None).ok
