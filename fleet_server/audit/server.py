"""What the running server adds to the audit log on its own: settings at start, checkpoints.

Settings are changed by editing the environment and restarting, so the log
records at every start which settings were in effect (never a secret:
keys, passwords and passphrases appear only as "set"/unset, a URL's password
is cut out) and which of them differ from the previous start. The
`AuditCheckpointJob` joins the timer loop and signs the chain head every
`every_s` when there is something new; several workers may run it, the chain
head lock lets one sign and the others find nothing new.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import AlertNotice
from fleet_server.audit.chain import record
from fleet_server.audit.checkpoints import CheckpointSigner, make_checkpoint
from fleet_server.models import utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.pki import PkiError, PkiPaths

__all__ = ["AuditCheckpointJob", "public_settings", "record_start", "start_audit"]

logger = logging.getLogger(__name__)

_SECRET_NAME = re.compile(r"secret|password|passphrase", re.IGNORECASE)
START_ACTION = "server.started"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        return _without_password(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def public_settings(settings: BaseModel) -> dict[str, Any]:
    """The settings as the audit log shows them: secrets only as "set", URLs without passwords."""
    out: dict[str, Any] = {}
    for name, value in sorted(settings.model_dump().items()):
        if _SECRET_NAME.search(name):
            out[name] = "set" if value else None
        else:
            out[name] = _plain(value)
    return out


def record_start(session: Session, *, settings: BaseModel, now: datetime) -> AuditRecord:
    """Record the settings in effect, and which changed since the last start (not committed)."""
    current = public_settings(settings)
    last = session.exec(
        select(AuditRecord)
        .where(AuditRecord.action == START_ACTION)
        .order_by(col(AuditRecord.seq).desc())
        .limit(1)
    ).first()
    before = (last.detail.get("settings") or {}) if last is not None else {}
    changed = sorted(k for k in set(current) | set(before) if current.get(k) != before.get(k))
    return record(
        session, actor="system", action=START_ACTION, object="server:settings", now=now,
        detail={"settings": current, "changed": changed if last is not None else []},
    )  # fmt: skip


@dataclass
class AuditCheckpointJob:
    """Sign the chain head every `every_s` (a `TimerJob`)."""

    signer: CheckpointSigner
    every_s: float = 300.0
    name: str = "audit-checkpoint"
    _last: datetime | None = field(default=None, init=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        if self._last is not None and now - self._last < timedelta(seconds=self.every_s):
            return []
        self._last = now
        make_checkpoint(session, signer=self.signer, now=now)
        return []


def start_audit(
    *, engine: Engine, settings: BaseModel, pki: PkiPaths | None, every_s: float = 300.0
) -> AuditCheckpointJob | None:
    """At server start: record the settings, sign a checkpoint; the job to keep signing.

    None (and a warning) without a PKI: the chain is still kept, unsigned.
    """
    now = utcnow()
    signer: CheckpointSigner | None = None
    if pki is not None:
        try:
            signer = CheckpointSigner.from_pki(pki, now=now)
        except PkiError as exc:
            logger.warning("audit checkpoints are off: %s", exc)
    else:
        logger.warning("no PKI: audit checkpoints are not signed (the chain is still kept)")
    with Session(engine) as session:
        record_start(session, settings=settings, now=now)
        if signer is not None:
            make_checkpoint(session, signer=signer, now=now)
        session.commit()
    return AuditCheckpointJob(signer=signer, every_s=every_s) if signer is not None else None
