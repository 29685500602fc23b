"""`nigehbaan server audit verify|checkpoint`: check the audit chain, or sign its head now.

`verify` walks the whole chain in the server's database (or an export file
an auditor took away) and names the first broken link; it exits 1 when the
chain is broken, 0 when it holds, 2 when it could not check (no database,
an unreadable file). Checkpoint signers are checked against the
fleet CA certificates (`--ca`, default `DATA_DIR/pki/ca-chain.pem`)::

    nigehbaan server --data-dir /var/lib/nigehbaan audit verify
    nigehbaan server audit verify --file audit-2026-11.json --ca fleet-root.pem

`checkpoint` signs the chain head at once (the server also does so
periodically). Imports nothing heavy at module level: the dispatcher imports
registrars on every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fleet_server.settings_cli import settings_or_none

__all__ = ["register_audit"]


def register_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit …` under `nigehbaan server`."""
    audit = commands.add_parser(
        "audit",
        help="verify the tamper-evident audit log (docs/audit.md)",
        description="Uses the server's --db / --data-dir (give them before `audit`).",
    )
    audit_commands = audit.add_subparsers(
        dest="audit_command", required=True, metavar="{verify,checkpoint}"
    )
    verify = audit_commands.add_parser(
        "verify", help="walk the chain and its signed checkpoints; exit 1 at a broken link"
    )
    verify.add_argument(
        "--file", type=Path, help="verify an export (JSON or CSV) instead of the database"
    )
    verify.add_argument(
        "--ca",
        type=Path,
        help="fleet CA certificate(s), PEM (default DATA_DIR/pki/ca-chain.pem if present)",
    )
    audit_commands.add_parser("checkpoint", help="sign the chain head now (needs the PKI)")
    audit.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    """Exit 0: the chain holds; 1: it is broken; 2: it could not be checked (says why)."""
    from sqlalchemy.exc import SQLAlchemyError

    from fleet_server.audit import AuditError

    settings = settings_or_none(args, prog="nigehbaan server audit")
    if settings is None:
        return 2
    try:
        if args.audit_command == "checkpoint":
            return _checkpoint(settings)
        return _verify(args, settings)
    except AuditError as exc:
        print(f"nigehbaan server audit: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # Not a broken chain: no database, or one the server never migrated.
        print(f"nigehbaan server audit: cannot read the audit log: {exc}", file=sys.stderr)
        return 2


def _trusted(args: argparse.Namespace, settings: Any) -> Any:
    from fleet_server.audit.checkpoints import load_trusted

    path: Path | None = args.ca
    if path is None:
        default = settings.pki_path / "ca-chain.pem"
        path = default if default.exists() else None
    if path is None:
        return None
    try:
        return load_trusted(path.read_bytes())
    except OSError as exc:
        print(f"nigehbaan server audit: cannot read {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _verify(args: argparse.Namespace, settings: Any) -> int:
    from sqlmodel import Session

    from fleet_server.audit import verify_chain, verify_database
    from fleet_server.audit.export import parse_export
    from fleet_server.db import make_engine

    trusted = _trusted(args, settings)
    if args.file is not None:
        try:
            data = args.file.read_bytes()
        except OSError as exc:
            print(f"nigehbaan server audit: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        export = parse_export(data)
        verdict = verify_chain(
            export.records, checkpoints=export.checkpoints, head=export.head, trusted=trusted,
            partial=export.partial,
        )  # fmt: skip
    else:
        engine = make_engine(settings.database_url)
        try:
            with Session(engine) as session:
                verdict = verify_database(session, trusted=trusted)
        finally:
            engine.dispose()
    print(verdict.summary())
    return 0 if verdict.ok else 1


def _checkpoint(settings: Any) -> int:
    from sqlmodel import Session

    from fleet_server.audit.checkpoints import CheckpointSigner, make_checkpoint
    from fleet_server.db import make_engine
    from fleet_server.models import utcnow
    from fleet_server.pki import PkiError, PkiPaths

    try:
        signer = CheckpointSigner.from_pki(PkiPaths(settings.pki_path.resolve()), now=utcnow())
    except PkiError as exc:
        print(f"nigehbaan server audit: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            row = make_checkpoint(session, signer=signer, now=utcnow())
            session.commit()
            print(f"checkpoint at record {row.seq}" if row else "nothing new since the last one")
    finally:
        engine.dispose()
    return 0
