"""`nigehbaan server watchlist-templates status|reseal|rotate`: the face templates' key.

Face templates sit encrypted in the database (`template_vault`); the key is
``DATA_DIR/pki/watchlist-templates.key``. These commands are for the person
who looks after that key: how many rows are under which key, seal rows
left plain (a database from before encryption) or under a retired key, and
rotate the key (a new key, every row re-encrypted under it in one
transaction). They take the server's own options, so they act on the same
database and data directory:

    nigehbaan server --data-dir /var/lib/nigehbaan watchlist-templates rotate
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from fleet_server.settings_cli import settings_or_none

__all__ = ["register_watchlist_templates"]


def register_watchlist_templates(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `watchlist-templates …` under `nigehbaan server`."""
    parser = commands.add_parser(
        "watchlist-templates",
        help="the key face templates are encrypted under at rest (docs/watchlists.md)",
        description="Uses the server's --db / --data-dir (give them before the command).",
    )
    sub = parser.add_subparsers(
        dest="templates_command", required=True, metavar="{status,reseal,rotate}"
    )
    sub.add_parser("status", help="rows per key id (and plain rows), as JSON")
    sub.add_parser("reseal", help="seal plain rows and rows under a retired key")
    sub.add_parser("rotate", help="a new key, then every row re-encrypted under it")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select

    from fleet_server import audit
    from fleet_server.cli import _cli_actor
    from fleet_server.db import make_engine
    from fleet_server.models.watchlist import WatchlistPhoto
    from fleet_server.pki.store import PkiPaths
    from fleet_server.watchlists.template_vault import (
        TemplateVault,
        TemplateVaultError,
        reseal_templates,
        rotate_key,
    )

    settings = settings_or_none(args, prog="nigehbaan server watchlist-templates")
    if settings is None:
        return 2
    paths = PkiPaths(settings.pki_path)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            if args.templates_command == "status":
                vault = TemplateVault.from_pki(paths)
                keys = Counter(
                    t.split(":", 2)[1] if vault.is_sealed(t) else "plain"
                    for t in session.exec(select(WatchlistPhoto.template)).all()
                )
                print(json.dumps({"current_key": vault.key_id, "rows": dict(keys)}))
                return 0
            vault = rotate_key(paths) if args.templates_command == "rotate" else (
                TemplateVault.from_pki(paths)
            )  # fmt: skip
            changed = reseal_templates(session, vault)
            done = "rotated" if args.templates_command == "rotate" else "resealed"
            audit.record(
                session, actor=_cli_actor(), action=f"watchlist.templates_{done}",
                object="watchlist-templates", detail={"key_id": vault.key_id, "rows": changed},
            )  # fmt: skip
            session.commit()
            print(json.dumps({"current_key": vault.key_id, "resealed": changed}))
            return 0
    except TemplateVaultError as exc:
        print(f"nigehbaan server watchlist-templates: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
