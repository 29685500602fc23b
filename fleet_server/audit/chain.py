"""Appending to the audit chain: `record(session, actor=…, action=…, object=…, detail=…)`.

The one way anything in the server writes to the audit log. It adds the
record to the caller's session without committing, so an action and its
record commit (or roll back) together. Appends are serialized on the chain
head row: one `UPDATE … RETURNING` both takes the row lock (PostgreSQL) or
the database write lock (SQLite) and hands back the previous record's
number and hash, so two server workers can never both extend the same record
and fork the chain; the second waits for the first to commit.

A record's hash is SHA-256 over the canonical JSON (`proto.codec.encode_canonical`:
sorted keys, no whitespace, UTF-8) of its seven chain fields, the time as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``; `record_hash` is the one definition, used by
the appender, the verifier and anyone checking an export offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from fleet_server.models import utcnow
from fleet_server.models.audit import GENESIS_HASH, AuditChainHead, AuditRecord
from proto.codec import encode_canonical

__all__ = ["GENESIS_HASH", "canonical_record", "format_time", "record", "record_hash"]

logger = logging.getLogger(__name__)

_MAX_FIELD = {"actor": 120, "action": 64, "object": 200}


def format_time(at: datetime) -> str:
    """The chain's spelling of a time: UTC, microseconds, ``Z``."""
    if at.tzinfo is None:
        raise ValueError("naive datetime in an audit record")
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_record(
    *,
    seq: int,
    at: datetime | str,
    actor: str,
    action: str,
    object: str,
    detail: Mapping[str, Any],
    prev_hash: str,
) -> bytes:
    """The bytes a record's hash is taken over (`at` as a datetime or already formatted)."""
    return encode_canonical(
        {
            "seq": seq,
            "at": at if isinstance(at, str) else format_time(at),
            "actor": actor,
            "action": action,
            "object": object,
            "detail": dict(detail),
            "prev_hash": prev_hash,
        }
    )


def record_hash(
    *,
    seq: int,
    at: datetime | str,
    actor: str,
    action: str,
    object: str,
    detail: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of `canonical_record`."""
    data = canonical_record(
        seq=seq, at=at, actor=actor, action=action, object=object, detail=detail,
        prev_hash=prev_hash,
    )  # fmt: skip
    return hashlib.sha256(data).hexdigest()


def _plain(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """`detail` as the JSON the database will give back (tuples → lists, times → text)."""
    if not detail:
        return {}
    plain = json.loads(json.dumps(dict(detail), default=str, allow_nan=False))
    assert isinstance(plain, dict)
    return plain


def _advance_head(session: Session) -> tuple[int, str]:
    """Lock the chain head and move it one on: (new seq, hash of the record before)."""
    statement = (
        update(AuditChainHead)
        .where(col(AuditChainHead.id) == 1)
        .values(seq=col(AuditChainHead.seq) + 1)
        .returning(col(AuditChainHead.seq), col(AuditChainHead.hash))
    )
    row = session.execute(statement).first()
    if row is None:
        # A database built without the migration's head row (metadata.create_all).
        session.add(AuditChainHead(id=1, seq=0, hash=GENESIS_HASH))
        session.flush()
        row = session.execute(statement).one()
    return int(row[0]), str(row[1])


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    object: str,
    detail: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditRecord:
    """Append one record to the chain in the caller's transaction (not committed).

    `actor` is who did it (``user:<name>``, ``node:<id>``, ``system``,
    ``anonymous``), `action` what (``login.failed``, ``user.role_changed``,
    …; docs/audit.md lists them), `object` what it was done to
    (``user:alice``, ``node:lhr-0001``, ``alert:<id>``), `detail` the rest
    (JSON-able; never a secret). The caller's session holds the chain head
    locked until it commits, so commit soon after.
    """
    values = {"actor": actor, "action": action, "object": object}
    for name, value in values.items():
        if not value or len(value) > _MAX_FIELD[name]:
            raise ValueError(f"audit {name} must be 1..{_MAX_FIELD[name]} characters: {value!r}")
    at = (now or utcnow()).astimezone(timezone.utc)
    plain = _plain(detail)
    seq, prev_hash = _advance_head(session)
    digest = record_hash(
        seq=seq, at=at, actor=actor, action=action, object=object, detail=plain,
        prev_hash=prev_hash,
    )  # fmt: skip
    row = AuditRecord(
        seq=seq, at=at, actor=actor, action=action, object=object, detail=plain,
        prev_hash=prev_hash, hash=digest,
    )  # fmt: skip
    session.add(row)
    session.execute(update(AuditChainHead).where(col(AuditChainHead.id) == 1).values(hash=digest))
    logger.debug("audit %s: %s %s %s", seq, actor, action, object)
    return row
