"""Retention by data class, and the legal hold that suspends it.

Each deployment sets how long each data class is kept (`Settings`:
``evidence_retention_plate_crop_days``, ``…_face_crop_days``,
``…_panic_snapshot_days``, ``…_case_days``; unset keeps it). A file counts
by its capture class (plate crop, face crop, panic snapshot) from its
capture time — unless it is attached to a case: then it is *case evidence*,
never deleted while any of its cases is open (legal hold), and kept for the
case retention from the last release. Expiry deletes the bytes, keeps the
row as ``deleted`` (so the audit trail's subject stays known) and appends
``evidence.expired`` to the audit log. Nodes learn what the server expired
and what is held through `node_instructions` and delete their own copies,
reporting back (``evidence.deleted_on_node``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from fleet_server import audit
from fleet_server.evidence.service import held_sha256s
from fleet_server.evidence.store import EvidenceBlobStore
from fleet_server.models.evidence import EvidenceCase, EvidenceCaseItem, EvidenceItem
from fleet_server.settings import Settings

__all__ = [
    "EvidenceRetentionJob",
    "RetentionPolicy",
    "evidence_retention_job",
    "expire_evidence",
    "node_instructions",
]

logger = logging.getLogger(__name__)

SWEEP_MAX = 500
# How long after a server-side expiry a node is still told to delete its copy.
NODE_DELETE_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class RetentionPolicy:
    """Days kept per data class (None: kept), and for case evidence after release."""

    days: dict[str, float | None] = field(default_factory=dict)
    case_days: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            days={
                "plate_crop": settings.evidence_retention_plate_crop_days,
                "face_crop": settings.evidence_retention_face_crop_days,
                "panic_snapshot": settings.evidence_retention_panic_snapshot_days,
            },
            case_days=settings.evidence_retention_case_days,
        )

    def as_dict(self) -> dict[str, Any]:
        return {**self.days, "case_evidence": self.case_days}


def _case_release_times(session: Session, shas: Sequence[str]) -> dict[str, datetime | None]:
    """sha → last release time of its cases (None when a case is still open)."""
    rows = session.exec(
        select(EvidenceCaseItem.sha256, EvidenceCase.state, EvidenceCase.released_at)
        .join(EvidenceCase, col(EvidenceCase.id) == col(EvidenceCaseItem.case_id))
        .where(col(EvidenceCaseItem.sha256).in_(list(shas)))
    ).all()
    out: dict[str, datetime | None] = {}
    for sha, state, released_at in rows:
        if state == "open" or released_at is None:
            out[sha] = None  # any open case holds it
            continue
        if sha in out:
            last = out[sha]
            if last is not None:
                out[sha] = max(last, released_at)
        else:
            out[sha] = released_at
    return out


def expire_evidence(
    *, session: Session, store: EvidenceBlobStore, policy: RetentionPolicy, now: datetime,
    limit: int = SWEEP_MAX,
) -> list[str]:  # fmt: skip
    """Delete what retention says is due at `now` (held evidence never); the SHA-256s deleted."""
    deleted: list[str] = []
    candidates: list[EvidenceItem] = []
    for data_class, days in policy.days.items():
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        candidates += session.exec(
            select(EvidenceItem)
            .where(col(EvidenceItem.state) != "deleted")
            .where(col(EvidenceItem.data_class) == data_class)
            .where(col(EvidenceItem.captured_at) < cutoff)
            .limit(limit)
        ).all()
    releases = _case_release_times(session, [c.sha256 for c in candidates])
    # Case evidence whose capture class would keep it may still be due by case retention.
    if policy.case_days is not None:
        case_cutoff = now - timedelta(days=policy.case_days)
        released = session.exec(
            select(EvidenceCaseItem.sha256)
            .join(EvidenceCase, col(EvidenceCase.id) == col(EvidenceCaseItem.case_id))
            .group_by(col(EvidenceCaseItem.sha256))
            .having(func.max(EvidenceCase.released_at) < case_cutoff)
            .limit(limit)
        ).all()
        more = [s for s in released if s not in releases]
        if more:
            releases.update(_case_release_times(session, more))
            candidates += session.exec(
                select(EvidenceItem)
                .where(col(EvidenceItem.sha256).in_(more))
                .where(col(EvidenceItem.state) != "deleted")
            ).all()
    held = held_sha256s(session)
    seen: set[str] = set()
    for item in candidates:
        if item.sha256 in seen or item.sha256 in held:
            continue
        seen.add(item.sha256)
        reason = f"retention:{item.data_class}"
        if item.sha256 in releases:
            last_release = releases[item.sha256]
            if last_release is None:
                continue  # an open case holds it
            if policy.case_days is None or last_release > now - timedelta(days=policy.case_days):
                continue  # case evidence: kept for the case retention after release
            reason = "retention:case_evidence"
        store.delete(item.sha256)
        item.state = "deleted"
        item.deleted_at = now
        item.delete_reason = reason
        session.add(item)
        audit.record(
            session, actor="system", action="evidence.expired", object=f"evidence:{item.sha256}",
            now=now, detail={"reason": reason, "node_id": item.node_id,
                             "captured_at": item.claim.get("captured_at")},
        )  # fmt: skip
        deleted.append(item.sha256)
    if deleted:
        logger.info("evidence retention deleted %d file(s)", len(deleted))
    return deleted


def node_instructions(
    *, session: Session, node_id: str, now: datetime, wanted: Sequence[str]
) -> dict[str, list[str]]:
    """What a node should do with its copies: upload `wanted`, keep held ones, delete expired."""
    held = held_sha256s(session)
    mine = session.exec(
        select(EvidenceItem.sha256, EvidenceItem.state, EvidenceItem.deleted_at).where(
            col(EvidenceItem.node_id) == node_id
        )
    ).all()
    hold = sorted(sha for sha, _, _ in mine if sha in held)
    delete = sorted(
        sha for sha, state, at in mine
        if state == "deleted" and at is not None and at > now - NODE_DELETE_WINDOW
    )  # fmt: skip
    return {"upload": sorted(wanted), "hold": hold, "delete": delete}


@dataclass
class EvidenceRetentionJob:
    """The timer job: `expire_evidence` every `every_s`."""

    store: EvidenceBlobStore
    policy: RetentionPolicy
    every_s: float = 60.0
    name: str = "evidence-retention"
    _next_at: datetime | None = field(default=None, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[Any]:
        if self._next_at is not None and now < self._next_at:
            return []
        self._next_at = now + timedelta(seconds=self.every_s)
        expire_evidence(session=session, store=self.store, policy=self.policy, now=now)
        return []


def evidence_retention_job(settings: Settings) -> EvidenceRetentionJob:
    """The server's retention job over its local evidence store (``DATA_DIR/evidence``)."""
    from fleet_server.evidence.store import LocalEvidenceStore

    store = LocalEvidenceStore(settings.data_dir.resolve() / "evidence")
    return EvidenceRetentionJob(store=store, policy=RetentionPolicy.from_settings(settings))
