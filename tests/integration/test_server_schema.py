"""The database schema is versioned: migrations build it, upgrades keep data, bad states refuse.

A fleet server upgraded in the field migrates its own database at start. These
stories run the real migrations on SQLite and (when reachable) PostgreSQL, and
the real `nigehbaan server` commands an admin would type.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import column, insert, inspect, table
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from fleet_server.db import make_engine
from fleet_server.models import Node
from fleet_server.schema import (
    MIGRATIONS,
    SchemaError,
    differences,
    head_revision,
    migrate,
    schema_state,
)

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]


def test_the_migrations_build_exactly_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert migrate(engine) == (None, head_revision())
        assert differences(engine) == []
        state = schema_state(engine)
        assert state.up_to_date
        assert state.tables == len(SQLModel.metadata.tables)
        assert migrate(engine) == (head_revision(), head_revision())  # nothing left to do
    finally:
        engine.dispose()


def test_the_migration_history_is_one_line_and_every_step_can_be_undone(tmp_path: Path) -> None:
    scripts = ScriptDirectory(str(MIGRATIONS))
    assert len(scripts.get_heads()) == 1, "two heads: merge the migration branches"
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        from alembic import command

        from fleet_server.schema import _config

        migrate(engine)
        with engine.begin() as connection:
            command.downgrade(_config(connection), "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
        migrate(engine)
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_data(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        SQLModel.metadata.create_all(engine)  # how the first release made its schema
        with Session(engine) as session:
            session.add(Node(node_id="lhr-0001", district="lahore-gulberg"))
            session.commit()

        assert migrate(engine) == (None, head_revision())

        assert schema_state(engine).current == head_revision()
        with Session(engine) as session:
            node = session.exec(select(Node)).one()
        assert (node.node_id, node.district) == ("lhr-0001", "lahore-gulberg")
    finally:
        engine.dispose()


def test_an_unversioned_database_that_differs_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        SQLModel.metadata.create_all(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE powerstate")

        with pytest.raises(SchemaError, match=r"no migration history.*powerstate"):
            migrate(engine)

        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
        assert "alembic_version" not in tables
        assert "powerstate" not in tables
    finally:
        engine.dispose()


def test_a_database_migrated_by_a_newer_server_is_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        migrate(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0999'")
        with pytest.raises(SchemaError, match=r"0999.*newer server"):
            migrate(engine)
        assert schema_state(engine).known is False
    finally:
        engine.dispose()


@pytest.mark.timeout(120)  # without the lock the workers block each other's DDL for good
def test_workers_starting_together_on_postgresql_migrate_one_after_the_other(
    pg_url: str,
) -> None:
    # The advisory lock is PostgreSQL's; SQLite has one writer anyway.
    engines = [make_engine(pg_url) for _ in range(3)]
    results: list[tuple[str | None, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def worker(engine: Engine) -> None:
        try:
            start.wait(10)
            results.append(migrate(engine))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert errors == []
    head = head_revision()
    assert sorted(results, key=str) == sorted([(None, head), (head, head), (head, head)], key=str)


# ------------------------------------------------------------------- commands


def _nigehbaan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NIGEHBAAN, *args], capture_output=True, text=True, timeout=60)


def test_an_admin_sees_and_upgrades_the_schema_from_the_command_line(tmp_path: Path) -> None:
    data = str(tmp_path / "server")
    head = head_revision()

    before = _nigehbaan("server", "--data-dir", data, "db", "current")
    upgrade = _nigehbaan("server", "--data-dir", data, "db", "upgrade")
    after = _nigehbaan("server", "--data-dir", data, "db", "current")
    check = _nigehbaan("server", "--data-dir", data, "db", "check")

    assert before.returncode == 0, before.stderr
    assert "revision none" in before.stdout
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"empty → {head}" in upgrade.stdout
    assert after.returncode == 0
    assert f"revision {head}, newest {head}: up to date" in after.stdout
    assert check.returncode == 0
    assert "0 difference(s)" in check.stdout


def test_the_check_command_fails_on_a_database_that_drifted_from_the_models(
    tmp_path: Path,
) -> None:
    data = tmp_path / "server"
    assert _nigehbaan("server", "--data-dir", str(data), "db", "upgrade").returncode == 0
    with sqlite3.connect(data / "fleet.db") as conn:
        conn.execute("CREATE TABLE hand_made (id INTEGER PRIMARY KEY)")

    check = _nigehbaan("server", "--data-dir", str(data), "db", "check")

    assert check.returncode == 1
    assert "hand_made" in check.stdout


def test_stamping_a_revision_the_server_does_not_have_is_refused(tmp_path: Path) -> None:
    result = _nigehbaan("server", "--data-dir", str(tmp_path / "s"), "db", "stamp", "0999")
    assert result.returncode == 1
    assert "no schema revision '0999'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_server_will_not_start_on_a_database_from_a_newer_release(tmp_path: Path) -> None:
    data = tmp_path / "server"
    assert _nigehbaan("server", "--data-dir", str(data), "db", "upgrade").returncode == 0
    with sqlite3.connect(data / "fleet.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")

    result = _nigehbaan("server", "--data-dir", str(data), "--no-mqtt", "--port", "0")

    assert result.returncode == 2
    assert "schema revision 0999" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_url_that_is_not_one_is_refused_as_bad_settings(tmp_path: Path) -> None:
    nonsense = _nigehbaan("server", "--db", "nonsense", "db", "current")
    mysql = _nigehbaan("server", "--db", "mysql://fleet@127.0.0.1/fleet", "db", "upgrade")

    assert nonsense.returncode == 2
    assert "not a database URL: 'nonsense'" in nonsense.stderr
    assert mysql.returncode == 2
    assert "database 'mysql' is not supported" in mysql.stderr


def test_an_unreachable_database_is_one_clear_line_not_a_traceback() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    result = _nigehbaan("server", "--db", "postgresql://fleet@127.0.0.1:1/fleet", "db", "current")

    assert result.returncode == 1
    assert "cannot use the database postgresql://fleet@127.0.0.1:1/fleet" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_server_does_not_start_on_an_unreachable_database() -> None:
    db = "postgresql://fleet@127.0.0.1:1/fleet"
    result = _nigehbaan("server", "--db", db, "--no-mqtt", "--port", "0")

    assert result.returncode == 1
    assert f"nigehbaan server: cannot use the database {db}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_at_an_older_revision_is_upgraded_in_place_with_its_data(
    db_url: str,
) -> None:
    from alembic import command

    from fleet_server.schema import _config

    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            command.upgrade(_config(connection), "0001")  # the first release's schema
        # A row as the first release wrote it: only the columns its schema had (the
        # model has more now).
        first_release_node = table(
            "node", column("node_id"), column("district"), column("online"),
            column("test_mode"), column("created_at"), column("lifecycle"),
        )  # fmt: skip
        with engine.begin() as connection:
            row = dict(
                node_id="lhr-0002", district="lahore-ravi", online=False, test_mode=False,
                created_at=datetime(2025, 3, 1, 9, 0), lifecycle="registered",
            )  # fmt: skip
            connection.execute(insert(first_release_node).values(**row))

        assert migrate(engine) == ("0001", head_revision())

        assert differences(engine) == []
        with Session(engine) as session:
            assert session.exec(select(Node.node_id)).all() == ["lhr-0002"]
    finally:
        engine.dispose()
