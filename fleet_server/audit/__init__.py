"""The tamper-evident audit log (docs/audit.md).

Everything security-relevant the server does is appended with
`record(session, actor=…, action=…, object=…, detail=…)` inside the action's
own transaction; records form a SHA-256 hash chain (`chain`), signed
checkpoints pin it (`checkpoints`), and `verify` walks it and names the first
broken link (`nigehbaan server audit verify`). Nothing here edits or deletes
a record, and on PostgreSQL and SQLite a trigger refuses it.
"""

from fleet_server.audit.chain import (
    GENESIS_HASH,
    canonical_record,
    format_time,
    record,
    record_hash,
)
from fleet_server.audit.errors import AuditError, ChainBroken
from fleet_server.audit.verify import Verdict, verify_chain, verify_database

__all__ = [
    "GENESIS_HASH",
    "AuditError",
    "ChainBroken",
    "Verdict",
    "canonical_record",
    "format_time",
    "record",
    "record_hash",
    "verify_chain",
    "verify_database",
]
