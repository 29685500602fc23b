"""The audit chain's rules on records in memory: every kind of tampering names its link."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fleet_server.audit import GENESIS_HASH, record_hash, verify_chain
from fleet_server.audit.checkpoints import (
    CheckpointSigner,
    checkpoint_payload,
    load_trusted,
    signer_problem,
)
from fleet_server.audit.server import public_settings
from fleet_server.models.audit import AuditCheckpoint, AuditRecord
from fleet_server.pki import PkiPaths, init_dev_pki
from fleet_server.pki.ca import cert_pem, generate_key, issue_node_certificate
from fleet_server.settings import Settings

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)


def chain(n: int) -> list[AuditRecord]:
    """A well-formed chain of `n` records."""
    rows: list[AuditRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        fields: dict[str, Any] = {
            "seq": seq,
            "at": T0 + timedelta(seconds=seq),
            "actor": "user:alice",
            "action": "alert.transition",
            "object": f"alert:{seq}",
            "detail": {"to": "acknowledged", "n": seq},
            "prev_hash": prev,
        }
        digest = record_hash(**fields)
        rows.append(AuditRecord(**fields, hash=digest))
        prev = digest
    return rows


def rehash(row: AuditRecord) -> None:
    """What a careful tamperer does after editing a row: recompute its own hash."""
    row.hash = record_hash(
        seq=row.seq, at=row.at, actor=row.actor, action=row.action, object=row.object,
        detail=row.detail, prev_hash=row.prev_hash,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    paths = PkiPaths(tmp_path_factory.mktemp("pki"))
    init_dev_pki(paths, passphrase=b"test-passphrase", now=T0)
    return paths


@pytest.fixture(scope="module")
def signer(pki: PkiPaths) -> CheckpointSigner:
    return CheckpointSigner.from_pki(pki, now=T0)


@pytest.fixture(scope="module")
def trusted(pki: PkiPaths) -> list[x509.Certificate]:
    return load_trusted(pki.chain.read_bytes())


def checkpoint(signer: CheckpointSigner, row: AuditRecord, *, cp_id: int = 1) -> AuditCheckpoint:
    at = T0 + timedelta(hours=1)
    payload = checkpoint_payload(seq=row.seq, hash=row.hash, at=at)
    return AuditCheckpoint(
        id=cp_id, at=at, seq=row.seq, hash=row.hash, signature=signer.sign(payload),
        signer_pem=(cert_pem(signer.cert) + cert_pem(signer.issuer)).decode(),
    )  # fmt: skip


def test_an_untouched_chain_verifies_with_its_head() -> None:
    rows = chain(5)
    verdict = verify_chain(rows, head=(5, rows[-1].hash))
    assert verdict.ok, verdict.broken
    assert (verdict.records, verdict.last_seq) == (5, 5)


def test_the_hash_covers_every_field() -> None:
    row = chain(1)[0]
    base = {
        "seq": row.seq, "at": row.at, "actor": row.actor, "action": row.action,
        "object": row.object, "detail": row.detail, "prev_hash": row.prev_hash,
    }  # fmt: skip
    changed = {
        "seq": 2, "at": row.at + timedelta(microseconds=1), "actor": "user:bob",
        "action": "alert.other", "object": "alert:x", "detail": {"to": "closed", "n": 1},
        "prev_hash": "1" * 64,
    }  # fmt: skip
    for name, value in changed.items():
        assert record_hash(**{**base, name: value}) != row.hash, name  # type: ignore[arg-type]


def test_an_edited_record_is_named() -> None:
    rows = chain(5)
    rows[2].detail = {"to": "false_alarm", "n": 3}
    verdict = verify_chain(rows)
    assert not verdict.ok
    assert verdict.broken_seq == 3
    assert "record 3: its content does not match its hash" in (verdict.broken or "")


def test_an_edited_and_rehashed_record_breaks_the_next_link() -> None:
    rows = chain(5)
    rows[2].actor = "user:mallory"
    rehash(rows[2])
    verdict = verify_chain(rows)
    assert verdict.broken_seq == 4
    assert "record 4: prev_hash does not match the hash of record 3" in (verdict.broken or "")


def test_a_deleted_record_is_named() -> None:
    rows = chain(5)
    del rows[1]
    verdict = verify_chain(rows)
    assert verdict.broken_seq == 2
    assert "record 2 missing after record 1" in (verdict.broken or "")


def test_a_deleted_record_with_the_rest_renumbered_breaks_the_link() -> None:
    rows = chain(5)
    del rows[1]
    for row in rows[1:]:
        row.seq -= 1
        rehash(row)
    verdict = verify_chain(rows)
    assert verdict.broken_seq == 2
    assert "prev_hash does not match" in (verdict.broken or "")


def test_records_cut_off_the_end_disagree_with_the_head() -> None:
    rows = chain(5)
    head = (5, rows[-1].hash)
    verdict = verify_chain(rows[:3], head=head)
    assert "the chain head says record 5" in (verdict.broken or "")


def test_a_signed_checkpoint_verifies(
    signer: CheckpointSigner, trusted: list[x509.Certificate]
) -> None:
    rows = chain(5)
    verdict = verify_chain(rows, checkpoints=[checkpoint(signer, rows[3])], trusted=trusted)
    assert verdict.ok, verdict.broken
    assert verdict.checkpoints == 1


def test_only_the_root_is_enough_to_trust_a_checkpoint(
    signer: CheckpointSigner, pki: PkiPaths
) -> None:
    root = [c for c in load_trusted(pki.chain.read_bytes()) if c.issuer == c.subject]
    rows = chain(3)
    verdict = verify_chain(rows, checkpoints=[checkpoint(signer, rows[2])], trusted=root)
    assert verdict.ok, verdict.broken


def test_a_rewritten_tail_is_caught_by_the_checkpoint(
    signer: CheckpointSigner, trusted: list[x509.Certificate]
) -> None:
    rows = chain(6)
    cp = checkpoint(signer, rows[3])
    # Everything from record 3 on rewritten and re-chained: the chain alone holds.
    rows[2].detail = {"to": "closed", "n": 3}
    for i in range(2, 6):
        rows[i].prev_hash = rows[i - 1].hash
        rehash(rows[i])
    assert verify_chain(rows).ok
    verdict = verify_chain(rows, checkpoints=[cp], trusted=trusted)
    assert verdict.broken_seq == 4
    assert "records up to 4 rewritten" in (verdict.broken or "")


def test_a_forged_checkpoint_signature_is_caught(
    signer: CheckpointSigner, trusted: list[x509.Certificate]
) -> None:
    rows = chain(4)
    cp = checkpoint(signer, rows[3])
    forged = AuditCheckpoint(**{**cp.model_dump(), "hash": "f" * 64})
    verdict = verify_chain(rows, checkpoints=[forged], trusted=trusted)
    assert "signature does not verify" in (verdict.broken or "")


def test_a_checkpoint_signed_by_a_key_the_ca_never_certified_is_caught(
    signer: CheckpointSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    # A whole second PKI with its own audit signer: self-consistent, not ours.
    other = PkiPaths(tmp_path / "other")
    init_dev_pki(other, passphrase=b"other", now=T0)
    rogue = CheckpointSigner.from_pki(other, now=T0)
    rows = chain(4)
    verdict = verify_chain(rows, checkpoints=[checkpoint(rogue, rows[3])], trusted=trusted)
    assert "not issued by the fleet CA" in (verdict.broken or "")


def test_a_node_certificate_cannot_sign_checkpoints(
    pki: PkiPaths, trusted: list[x509.Certificate]
) -> None:
    from fleet_server.pki import IssuingCa

    ca = IssuingCa(pki)
    key = generate_key()
    node = issue_node_certificate(
        key=key.public_key(), issuer_cert=ca.cert, issuer_key=ca.key, node_id="audit-signer",
        serial="S1", now=T0, days=30,
    )  # fmt: skip
    why = signer_problem([node, ca.cert], trusted=trusted, at=T0 + timedelta(hours=1))
    assert why is not None
    assert "extended key usage" in why
    rows = chain(2)
    at = T0 + timedelta(hours=1)
    payload = checkpoint_payload(seq=2, hash=rows[1].hash, at=at)
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    cp = AuditCheckpoint(
        id=1, at=at, seq=2, hash=rows[1].hash, signature=signature,
        signer_pem=(cert_pem(node) + cert_pem(ca.cert)).decode(),
    )  # fmt: skip
    assert not verify_chain(rows, checkpoints=[cp], trusted=trusted).ok


def test_a_checkpoint_past_the_end_of_the_chain_means_records_were_deleted(
    signer: CheckpointSigner, trusted: list[x509.Certificate]
) -> None:
    rows = chain(5)
    cp = checkpoint(signer, rows[4])
    verdict = verify_chain(rows[:3], checkpoints=[cp], head=(3, rows[2].hash), trusted=trusted)
    assert "chain ends at record 3" in (verdict.broken or "")


def test_without_a_ca_the_verdict_says_signers_were_not_checked(
    signer: CheckpointSigner,
) -> None:
    rows = chain(2)
    verdict = verify_chain(rows, checkpoints=[checkpoint(signer, rows[1])])
    assert verdict.ok
    assert "not checked against a CA" in verdict.summary()


def test_a_partial_export_allows_gaps_but_not_edits() -> None:
    rows = chain(6)
    kept = [rows[0], rows[2], rows[3], rows[5]]
    assert verify_chain(kept, partial=True).ok
    assert not verify_chain(kept).ok
    kept[2].object = "alert:other"
    assert verify_chain(kept, partial=True).broken_seq == 4


def test_settings_in_the_log_never_carry_a_secret(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        secret_key="a-secret-that-must-not-appear",
        admin_password="admin-password-not-to-appear",
        db_url="postgresql://fleet:db-password@db.example/fleet",
        broker_url="mqtt://user:broker-password@127.0.0.1:1883",
    )
    shown = public_settings(settings)
    text = repr(shown)
    for secret in ("a-secret-that", "admin-password-not", "db-password", "broker-password"):
        assert secret not in text
    assert shown["secret_key"] == "set"
    assert shown["db_url"] == "postgresql://fleet:***@db.example/fleet"
