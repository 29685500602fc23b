"""Alembic environment: migrate the connection `fleet_server.schema` passes in.

Batch mode is on for every migration so that ALTERs also work on SQLite
(which rebuilds the table); on PostgreSQL batch operations are plain ALTERs.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from fleet_server import models  # noqa: F401 - registers every table on the metadata
from fleet_server.models.common import UtcDateTime


def _render_type(kind: str, obj: Any, autogen: AutogenContext) -> str | Literal[False]:
    """Write our column types so a migration does not depend on how the models spell them.

    sqlmodel's `AutoString` is a plain `VARCHAR`; `UtcDateTime` is ours and
    stays (it stores naive UTC on SQLite and `timestamptz` on PostgreSQL).
    """
    if kind != "type":
        return False
    if isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    if isinstance(obj, UtcDateTime):
        autogen.imports.add("import fleet_server.models.common")
        return "fleet_server.models.common.UtcDateTime()"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=_render_type,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through `nigehbaan server db …` (fleet_server.schema), "
        "which passes the server's own database connection"
    )
_run(connection)
