"""A fresh database per test: a SQLite file, and a throwaway PostgreSQL schema when reachable.

PostgreSQL runs at 127.0.0.1:5432 on the development and CI machines; where
it is not reachable the PostgreSQL case is skipped, and the reason is both
printed and given as the skip reason so the test output says so.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting.policies import ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.schema import migrate

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"


@contextlib.contextmanager
def _pg_schema() -> Iterator[str]:
    """A throwaway PostgreSQL schema's URL; skips the test (saying why) when unreachable."""
    reason = pg_unreachable()
    if reason:
        print(reason)
        pytest.skip(reason)
    schema = f"nbtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file, or a throwaway schema in PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    with _pg_schema() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL schema, for what only PostgreSQL has (advisory locks, …)."""
    with _pg_schema() as url:
        yield url


@contextlib.contextmanager
def migrated(url: str) -> Iterator[Engine]:
    """An engine on `url`, migrated to head with the default alert policies; disposed after."""
    eng = make_engine(url)
    migrate(eng)
    with Session(eng) as session:
        ensure_default_policies(session=session)
    try:
        yield eng
    finally:
        eng.dispose()
