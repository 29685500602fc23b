"""A small loopback cluster for a test module, and signing in to its workers.

`two_district_cluster` is what `nigehbaan cluster up` builds, scaled down:
one RabbitMQ node, districts north and south, two workers on a PostgreSQL
schema of their own (dropped after). It skips, saying why, where RabbitMQ or
PostgreSQL is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from fleet_server.cluster.supervisor import Supervisor
from tests.support.db import PG_URL, pg_unreachable
from tests.support.rabbit import rabbit_missing

__all__ = ["admin_token", "two_district_cluster"]


@contextmanager
def two_district_cluster(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, admin_password: str
) -> Iterator[Supervisor]:
    """Started on entry (or the test skipped), stopped on exit."""
    for reason in (rabbit_missing(), pg_unreachable()):
        if reason:
            pytest.skip(reason)
    supervisor = Supervisor(
        directory=tmp_path_factory.mktemp(f"cluster-{name}"), rabbit_nodes=1,
        districts=("north", "south"), workers=2, db_url=PG_URL, keep_db=False,
        schema=f"nb{name}_{os.urandom(5).hex()}", admin_password=admin_password,
    )  # fmt: skip
    try:
        supervisor.start(timeout=180, should_stop=lambda: False)
        yield supervisor
    finally:
        supervisor.stop()


def admin_token(base: str, password: str) -> str:
    """A bearer token for `admin` on the worker at `base`."""
    response = httpx.post(f"{base}/api/v1/login/access-token",
                          data={"username": "admin", "password": password}, timeout=20)  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
