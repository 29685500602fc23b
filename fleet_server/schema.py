"""The database schema's version: Alembic migrations, applied at start and from the CLI.

Every server start (and `nigehbaan server db upgrade`) brings the database
to the newest revision in `fleet_server/migrations/versions`, so a server
upgraded in the field migrates its own SQLite file or PostgreSQL database and
keeps its data; nobody recreates a database to change a column.

- An empty database is built by the migrations themselves (not by
  `metadata.create_all`), so the path a new install takes is the path every
  upgrade takes; a test checks the result equals the models.
- A database made before migrations existed (tables, no `alembic_version`)
  is adopted only if it is exactly the current models (then stamped); one that
  differs is refused with the differences, never guessed at.
- A revision this code does not know (the database was migrated by a newer
  server) is refused: downgrading the server must not run against it.
- On PostgreSQL the migration runs under a transaction-scoped advisory lock,
  so several server workers starting at once migrate one after the other
  (the second finds nothing to do).

Errors: `SchemaError` (the database is in a state this server will not touch).
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Alembic logs every plugin it sets up at INFO while it is imported; `migrate`
# logs one line of its own instead.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from alembic.util import CommandError  # noqa: E402
from sqlalchemy import inspect, text  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from fleet_server import models  # noqa: F401, E402 - registers every table on the metadata
from fleet_server.errors import FleetServerError  # noqa: E402
from fleet_server.partitions import partition_names  # noqa: E402

__all__ = [
    "SchemaError",
    "SchemaState",
    "differences",
    "head_revision",
    "migrate",
    "new_revision",
    "schema_state",
    "stamp",
]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key: "nigehbaan schema" folded into a signed 64-bit number.
_PG_LOCK_KEY = int.from_bytes(b"nb-schem", "big") - (1 << 63)
_VERSION_TABLE = "alembic_version"


class SchemaError(FleetServerError, RuntimeError):
    """The database is in a state this server refuses to migrate (the message says why)."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands against this server's migrations."""

    current: str | None  # revision recorded in the database (None: not versioned)
    head: str  # newest revision this server knows
    tables: int  # application tables present
    known: bool = True  # False: `current` is a revision this server does not have

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision shipped with this server."""
    head = _scripts().get_current_head()
    if head is None:
        raise SchemaError(f"no migrations found in {MIGRATIONS}")
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def _app_tables(connection: Connection) -> set[str]:
    # Partitions (PostgreSQL's monthly `event_pYYYYMM`) are parts of their parent table.
    tables = set(inspect(connection).get_table_names())
    return tables - {_VERSION_TABLE} - partition_names(connection)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def schema_state(engine: Engine) -> SchemaState:
    """The database's recorded revision against this server's newest one."""
    with engine.connect() as connection:
        current = _current(connection)
        return SchemaState(
            current=current,
            head=head_revision(),
            tables=len(_app_tables(connection)),
            known=current is None or current in _known_revisions(),
        )


def _differences(connection: Connection) -> list[str]:
    # A partition (PostgreSQL's monthly `event_pYYYYMM`, fleet_server.partitions)
    # is part of its parent table, not a table of the models.
    partitions = partition_names(connection)

    def include(_obj: object, name: str | None, type_: str, reflected: bool, _to: object) -> bool:
        return not (type_ == "table" and reflected and name in partitions)

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": include}
    )
    return [str(diff) for diff in compare_metadata(context, SQLModel.metadata)]


def differences(engine: Engine) -> list[str]:
    """How the database differs from the models (empty: they agree)."""
    with engine.connect() as connection:
        return _differences(connection)


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest revision; returns (from, to). See the module doc."""
    head = head_revision()
    known = _known_revisions()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        current = _current(connection)
        if current is not None and current not in known:
            raise SchemaError(
                f"the database is at schema revision {current}, which this server does not "
                f"know (its newest is {head}); it was migrated by a newer server. Run that "
                "version, or restore a backup taken before the upgrade"
            )
        if current is None and _app_tables(connection):
            diffs = _differences(connection)
            if diffs:
                shown = "; ".join(diffs[:5]) + (
                    f"; … {len(diffs) - 5} more" if len(diffs) > 5 else ""
                )
                raise SchemaError(
                    "the database has tables but no migration history, and they differ from "
                    f"this server's schema: {shown}. Back it up and start from an empty "
                    "database, or stamp the matching revision with `nigehbaan server db stamp`"
                )
            command.stamp(_config(connection), head)
            logger.info("database without migration history adopted at revision %s", head)
            return None, head
        if current != head:
            command.upgrade(_config(connection), head)
            logger.info("database schema migrated %s → %s", current or "empty", head)
    return current, head


def stamp(engine: Engine, revision: str) -> None:
    """Record `revision` without running anything (for a database known to be at it)."""
    try:
        _scripts().get_revision(revision)
    except CommandError as exc:
        raise SchemaError(f"no schema revision {revision!r} in this server: {exc}") from exc
    with engine.begin() as connection:
        command.stamp(_config(connection), revision)


def _next_revision_id() -> str:
    """Revisions are numbered 0001, 0002, …: their order is readable in the file names."""
    numbers = [int(r) for r in _known_revisions() if r.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def new_revision(engine: Engine, *, message: str) -> Path:
    """Autogenerate a migration from the models against an up-to-date database (developers)."""
    with engine.begin() as connection:
        current = _current(connection)
        if current != head_revision():
            raise SchemaError(
                f"the database is at {current or 'no revision'}, not {head_revision()}: "
                "upgrade it first so the new migration holds only the new changes"
            )
        script = command.revision(
            _config(connection), message=message, autogenerate=True, rev_id=_next_revision_id()
        )
    if script is None or isinstance(script, list):
        raise SchemaError("alembic made no single revision")
    path = Path(script.path)
    if importlib.util.find_spec("ruff") is not None:  # the dev extra: house formatting
        for args in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
            subprocess.run([sys.executable, "-m", "ruff", *args, str(path)], check=False)
    return path
