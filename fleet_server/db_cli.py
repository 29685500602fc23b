"""`nigehbaan server db current|upgrade|check|stamp|revision`: the database schema's version.

The server migrates its database by itself at start (`fleet_server.schema`);
these commands are for the people around it: a fleet admin checking what
revision a database is at before and after an upgrade, or upgrading it
ahead of a maintenance window; a developer writing the next migration.
They take the server's own options, so they act on the same database:

    nigehbaan server --data-dir /var/lib/nigehbaan db current
    nigehbaan server --db postgresql://fleet@db/fleet db upgrade
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fleet_server.settings_cli import settings_or_none

__all__ = ["register_db"]


def register_db(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `db …` under `nigehbaan server`."""
    db = commands.add_parser(
        "db",
        help="database schema version and migrations (docs/fleet-server.md)",
        description="Uses the server's --db / --data-dir (give them before `db`).",
    )
    db_commands = db.add_subparsers(
        dest="db_command", required=True, metavar="{current,upgrade,check,stamp,revision}"
    )
    db_commands.add_parser("current", help="the revision the database is at, and the newest")
    db_commands.add_parser("upgrade", help="migrate to the newest revision (the server does too)")
    db_commands.add_parser("check", help="exit 1 if the database differs from the models")
    stamp = db_commands.add_parser(
        "stamp", help="record a revision without running it (a database known to be at it)"
    )
    stamp.add_argument("revision", help="a revision id, or head")
    revision = db_commands.add_parser(
        "revision", help="developers: autogenerate the next migration from the models"
    )
    revision.add_argument("-m", "--message", required=True, help="what the migration changes")
    db.set_defaults(func=_db)


def _db(args: argparse.Namespace) -> int:
    from fleet_server.db import make_engine

    settings = settings_or_none(args, prog="nigehbaan server db")
    if settings is None:
        return 2
    engine = make_engine(settings.database_url)
    try:
        return _command(args, engine, shown=settings.database_url)
    finally:
        engine.dispose()


def _command(args: argparse.Namespace, engine: Any, *, shown: str) -> int:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from fleet_server.schema import (
        SchemaError,
        differences,
        migrate,
        new_revision,
        schema_state,
        stamp,
    )

    where = make_url(shown).render_as_string(hide_password=True)
    try:
        if args.db_command == "current":
            state = schema_state(engine)
            status = "up to date" if state.up_to_date else "needs `db upgrade`"
            if state.current is None and state.tables:
                status = "tables without migration history (the server adopts them if they match)"
            if not state.known:
                status = "unknown to this server (migrated by a newer one); it will refuse it"
            print(f"{where}: revision {state.current or 'none'}, newest {state.head}: {status}")
            return 0
        if args.db_command == "upgrade":
            before, after = migrate(engine)
            print(f"{where}: {before or 'empty'} → {after}")
            return 0
        if args.db_command == "check":
            diffs = differences(engine)
            for diff in diffs:
                print(diff)
            print(f"{where}: {len(diffs)} difference(s) from the models")
            return 1 if diffs else 0
        if args.db_command == "stamp":
            stamp(engine, args.revision)
            print(f"{where}: stamped {args.revision}")
            return 0
        path = new_revision(engine, message=args.message)
        print(f"new migration: {path} (read it before committing it)")
        return 0
    except SchemaError as exc:
        print(f"nigehbaan server db: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"nigehbaan server db: cannot use the database {where}: {exc}", file=sys.stderr)
        return 1
