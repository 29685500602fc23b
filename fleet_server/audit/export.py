"""Finding audit records (actor, action, object, time) and exporting them for offline checks.

An auditor filters the log on the console and takes the result away; the
export carries every chain field (`seq`, `prev_hash`, `hash`) and, in JSON,
the signed checkpoints, so `nigehbaan server audit verify --file EXPORT`
checks it on another machine with only the fleet CA certificate. A filtered
export is marked partial: its records' own hashes and the links between
neighbours are checked, gaps are what the filter left out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from fleet_server.audit.chain import format_time
from fleet_server.audit.errors import AuditError
from fleet_server.models.audit import AuditChainHead, AuditCheckpoint, AuditRecord
from proto.codec import encode_canonical

__all__ = [
    "CSV_COLUMNS",
    "EXPORT_FORMAT",
    "AuditFilter",
    "Export",
    "find_records",
    "parse_export",
    "records_csv",
    "records_json",
]

EXPORT_FORMAT = "nigehbaan.audit.export.v1"
CSV_COLUMNS = ("seq", "at", "actor", "action", "object", "detail", "prev_hash", "hash")


@dataclass(frozen=True)
class AuditFilter:
    """What an auditor asks for; every field optional. Actor and object match a prefix."""

    actor: str | None = None
    action: str | None = None
    object: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return not any((self.actor, self.action, self.object, self.since, self.until))

    def where(self) -> list[ColumnElement[bool]]:
        """SQL conditions for this filter."""
        conditions: list[ColumnElement[bool]] = []
        if self.actor:
            conditions.append(col(AuditRecord.actor).startswith(self.actor, autoescape=True))
        if self.action:
            conditions.append(col(AuditRecord.action).startswith(self.action, autoescape=True))
        if self.object:
            conditions.append(col(AuditRecord.object).startswith(self.object, autoescape=True))
        if self.since:
            conditions.append(col(AuditRecord.at) >= _utc(self.since))
        if self.until:
            conditions.append(col(AuditRecord.at) < _utc(self.until))
        return conditions

    def as_dict(self) -> dict[str, str]:
        out = {k: v for k in ("actor", "action", "object") if (v := getattr(self, k))}
        if self.since:
            out["since"] = format_time(_utc(self.since))
        if self.until:
            out["until"] = format_time(_utc(self.until))
        return out


def _utc(at: datetime) -> datetime:
    """`at` in UTC; a time without a zone is UTC, the log's own (an auditor types `09:00`).

    A time whose UTC falls outside what a datetime holds (year 1 at +14:00) is
    the earliest or latest time there is, which is what it means as a bound.
    """
    if at.tzinfo is None:
        return at.replace(tzinfo=timezone.utc)
    try:
        return at.astimezone(timezone.utc)
    except OverflowError:
        edge = datetime.min if at.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=timezone.utc)


def find_records(
    *, session: Session, where: AuditFilter, limit: int, offset: int = 0, newest_first: bool = True
) -> tuple[list[AuditRecord], int]:
    """A page of matching records and how many match."""
    conditions = where.where()
    count = session.exec(select(func.count()).select_from(AuditRecord).where(*conditions)).one()
    order = col(AuditRecord.seq).desc() if newest_first else col(AuditRecord.seq)
    rows = session.exec(
        select(AuditRecord).where(*conditions).order_by(order).offset(offset).limit(limit)
    ).all()
    return list(rows), int(count)


def _record_dict(row: AuditRecord) -> dict[str, Any]:
    return {
        "seq": row.seq, "at": format_time(row.at), "actor": row.actor, "action": row.action,
        "object": row.object, "detail": row.detail, "prev_hash": row.prev_hash, "hash": row.hash,
    }  # fmt: skip


def _checkpoint_dict(cp: AuditCheckpoint) -> dict[str, Any]:
    return {
        "id": cp.id, "at": format_time(cp.at), "seq": cp.seq, "hash": cp.hash,
        "signature": cp.signature, "signer_pem": cp.signer_pem,
    }  # fmt: skip


def records_json(
    *, session: Session, where: AuditFilter, now: datetime, batch: int = 1000
) -> Iterator[bytes]:
    """The JSON export, in pieces (records in `seq` order, then checkpoints and the head)."""
    head = session.get(AuditChainHead, 1)
    # Up to the head as read now, so a record appended meanwhile does not outrun it.
    upto = col(AuditRecord.seq) <= (head.seq if head is not None else 0)
    yield (
        b'{"format":"' + EXPORT_FORMAT.encode() + b'","exported_at":"'
        + format_time(now).encode() + b'","filter":' + encode_canonical(where.as_dict())
        + b',"partial":' + (b"false" if where.empty else b"true") + b',"records":['
    )  # fmt: skip
    rows = session.exec(
        select(AuditRecord)
        .where(upto, *where.where())
        .order_by(col(AuditRecord.seq))
        .execution_options(yield_per=batch)
    )
    for i, row in enumerate(rows):
        yield (b"," if i else b"") + encode_canonical(_record_dict(row))
    checkpoints = session.exec(
        select(AuditCheckpoint)
        .where(col(AuditCheckpoint.seq) <= (head.seq if head is not None else 0))
        .order_by(col(AuditCheckpoint.seq))
    ).all()
    yield b'],"checkpoints":' + encode_canonical([_checkpoint_dict(cp) for cp in checkpoints])
    head_data = {"seq": head.seq, "hash": head.hash} if head is not None else None
    yield b',"head":' + encode_canonical(head_data) + b"}\n"


def records_csv(*, session: Session, where: AuditFilter, batch: int = 1000) -> Iterator[str]:
    """The CSV export, a line at a time (`detail` as canonical JSON; no checkpoints)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def line(values: Iterable[Any]) -> str:
        writer.writerow(values)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(CSV_COLUMNS)
    rows = session.exec(
        select(AuditRecord)
        .where(*where.where())
        .order_by(col(AuditRecord.seq))
        .execution_options(yield_per=batch)
    )
    for row in rows:
        data = _record_dict(row)
        data["detail"] = encode_canonical(row.detail).decode("utf-8")
        yield line(data[name] for name in CSV_COLUMNS)


@dataclass(frozen=True)
class Export:
    """An export file read back: records, checkpoints, head, and whether it was filtered."""

    records: list[AuditRecord]
    checkpoints: list[AuditCheckpoint]
    head: tuple[int, str] | None
    partial: bool


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _record(data: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=int(data["seq"]), at=_parse_time(str(data["at"])), actor=str(data["actor"]),
        action=str(data["action"]), object=str(data["object"]), detail=data["detail"],
        prev_hash=str(data["prev_hash"]), hash=str(data["hash"]),
    )  # fmt: skip


def parse_export(data: bytes) -> Export:
    """Read a JSON or CSV export (as written by `records_json` / `records_csv`)."""
    text = data.decode("utf-8")
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
            if doc.get("format") != EXPORT_FORMAT:
                raise AuditError(f"not an audit export ({doc.get('format')!r})")
            checkpoints = [
                AuditCheckpoint(
                    id=cp["id"],
                    at=_parse_time(cp["at"]),
                    seq=int(cp["seq"]),
                    hash=cp["hash"],
                    signature=cp["signature"],
                    signer_pem=cp["signer_pem"],
                )
                for cp in doc["checkpoints"]
            ]
            head = doc.get("head")
            return Export(
                records=[_record(r) for r in doc["records"]],
                checkpoints=checkpoints,
                head=(int(head["seq"]), str(head["hash"])) if head else None,
                partial=bool(doc["partial"]),
            )
        reader = csv.DictReader(io.StringIO(text))
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise AuditError(f"not an audit CSV export (columns {reader.fieldnames})")
        records = [_record({**row, "detail": json.loads(row["detail"])}) for row in reader]
        return Export(records=records, checkpoints=[], head=None, partial=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"cannot read the export: {exc!r}") from None
