"""Walking the audit chain and naming the first broken link.

`verify_chain` is pure: it takes the records in `seq` order (from the
database or from an export file), the checkpoints, the chain head and the
trusted CA certificates, and returns a `Verdict`. It checks, in this order,
and stops at the first failure:

1. records are numbered 1, 2, 3 … with no gap (a gap is a deleted record);
2. each record's `prev_hash` is the hash of the record before (genesis for
   record 1): a record taken out and the rest renumbered, or one slipped in,
   breaks here;
3. each record's `hash` is the hash of its own content (an edited row);
4. the chain head row agrees with the last record (records cut off the end);
5. each checkpoint: its signature verifies, its signer is an audit signer the
   fleet CA issued, and the chain's hash at its `seq` is the signed one
   (a rewrite of the tail with recomputed hashes, or a forged checkpoint).

A partial walk (a filtered export) skips 1, 2 across gaps and 4, and checks
checkpoints only where the export holds their record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from sqlmodel import Session, col, select

from fleet_server.audit.chain import GENESIS_HASH, record_hash
from fleet_server.audit.checkpoints import (
    signer_chain,
    signer_problem,
    verify_checkpoint_signature,
)
from fleet_server.models.audit import AuditChainHead, AuditCheckpoint, AuditRecord

__all__ = ["Verdict", "verify_chain", "verify_database"]


@dataclass(frozen=True)
class Verdict:
    """What a walk found: counts, where the chain ends, and the first broken link if any."""

    records: int
    checkpoints: int
    last_seq: int
    last_hash: str
    broken: str | None = None  # the first broken link, in words
    broken_seq: int | None = None  # the record it is at (None: not one record)
    note: str | None = None  # what was not checked, and why

    @property
    def ok(self) -> bool:
        return self.broken is None

    def summary(self) -> str:
        """One line for a person."""
        if self.broken is not None:
            return f"audit chain BROKEN: {self.broken}"
        text = (
            f"audit chain OK: {self.records} record(s) up to {self.last_seq}, "
            f"{self.checkpoints} signed checkpoint(s) verified"
        )
        return f"{text} ({self.note})" if self.note else text


def _walk(
    records: Iterable[AuditRecord], *, partial: bool, wanted: set[int]
) -> tuple[int, int, str, dict[int, str], tuple[str, int] | None]:
    """(count, last seq, last hash, hashes at `wanted` seqs, first problem)."""
    count, last_seq, last_hash = 0, 0, GENESIS_HASH
    at_seq: dict[int, str] = {}
    for row in records:
        seq = row.seq
        contiguous = seq == last_seq + 1
        if not contiguous and not (partial and seq > last_seq):
            if seq > last_seq + 1:
                gap = f"{last_seq + 1}" if seq == last_seq + 2 else f"{last_seq + 1}..{seq - 1}"
                return count, last_seq, last_hash, at_seq, (
                    f"record {gap} missing after record {last_seq} (deleted?)", last_seq + 1
                )  # fmt: skip
            return count, last_seq, last_hash, at_seq, (
                f"record {seq} is out of order after record {last_seq}", seq
            )  # fmt: skip
        if contiguous and row.prev_hash != last_hash:
            what = "genesis" if seq == 1 else f"the hash of record {last_seq}"
            return count, last_seq, last_hash, at_seq, (
                f"record {seq}: prev_hash does not match {what} (the link {last_seq} → {seq})",
                seq,
            )  # fmt: skip
        digest = record_hash(
            seq=seq, at=row.at, actor=row.actor, action=row.action, object=row.object,
            detail=row.detail, prev_hash=row.prev_hash,
        )  # fmt: skip
        if digest != row.hash:
            return count, last_seq, last_hash, at_seq, (
                f"record {seq}: its content does not match its hash (edited?)", seq
            )  # fmt: skip
        count, last_seq, last_hash = count + 1, seq, row.hash
        if seq in wanted:
            at_seq[seq] = row.hash
    return count, last_seq, last_hash, at_seq, None


def verify_chain(
    records: Iterable[AuditRecord],
    *,
    checkpoints: Sequence[AuditCheckpoint] = (),
    head: tuple[int, str] | None = None,
    trusted: list[x509.Certificate] | None = None,
    partial: bool = False,
) -> Verdict:
    """Walk `records` (in `seq` order) and the checkpoints; see the module docstring.

    `head` is the chain head row's (seq, hash), None to skip that check;
    `trusted` the fleet CA certificates, None to check signatures without
    checking who signed (the verdict's note says so).
    """
    wanted = {cp.seq for cp in checkpoints}
    count, last_seq, last_hash, at_seq, problem = _walk(records, partial=partial, wanted=wanted)

    def verdict(broken: str | None = None, seq: int | None = None, *, checked: int = 0) -> Verdict:
        note = None if trusted is not None else "checkpoint signers not checked against a CA"
        return Verdict(
            records=count, checkpoints=checked, last_seq=last_seq, last_hash=last_hash,
            broken=broken, broken_seq=seq, note=note,
        )  # fmt: skip

    if problem is not None:
        return verdict(*problem)
    if head is not None and not partial and head != (last_seq, last_hash):
        return verdict(
            f"the chain head says record {head[0]} ({head[1][:12]}…) but the last record is "
            f"{last_seq} ({last_hash[:12]}…): records cut off the end?",
            last_seq + 1,
        )
    checked = 0
    for cp in sorted(checkpoints, key=lambda c: (c.seq, c.id or 0)):
        name = f"checkpoint {cp.id} (record {cp.seq})"
        if not verify_checkpoint_signature(cp):
            return verdict(f"{name}: the signature does not verify (forged?)", cp.seq)
        if trusted is not None:
            why = signer_problem(signer_chain(cp), trusted=trusted, at=cp.at)
            if why is not None:
                return verdict(f"{name}: {why} (forged?)", cp.seq)
        if cp.seq > last_seq and not partial:
            return verdict(
                f"{name}: signed, but the chain ends at record {last_seq} (records deleted?)",
                last_seq + 1,
            )
        if cp.seq in at_seq and at_seq[cp.seq] != cp.hash:
            return verdict(
                f"{name}: the chain's hash there is {at_seq[cp.seq][:12]}…, the signed one "
                f"{cp.hash[:12]}… (records up to {cp.seq} rewritten?)",
                cp.seq,
            )
        checked += 1
    return verdict(checked=checked)


def verify_database(
    session: Session, *, trusted: list[x509.Certificate] | None, batch: int = 1000
) -> Verdict:
    """`verify_chain` over the database's records, checkpoints and chain head."""
    checkpoints = list(session.exec(select(AuditCheckpoint)).all())
    head_row = session.get(AuditChainHead, 1)
    head = (head_row.seq, head_row.hash) if head_row is not None else (0, GENESIS_HASH)
    rows = session.exec(
        select(AuditRecord).order_by(col(AuditRecord.seq)).execution_options(yield_per=batch)
    )
    return verify_chain(rows, checkpoints=checkpoints, head=head, trusted=trusted)
