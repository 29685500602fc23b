"""On PostgreSQL the node power history is partitioned by day; its 30 days go by dropping days.

`powersample` (migration 0018) is range-partitioned on `bucket_start` (the
node's clock), a partition a day, made a week ahead by `PartitionJob`, which
drops each day once it ended more than `fleet_server.power.RETENTION` ago. A
bucket from a clock far off lands in `powersample_default` and is kept (it
goes by the node's own row prune, as on SQLite). The charts, the overview
and the API read the partitioned table unchanged. Real PostgreSQL
(tests/support/db.py: skipped, saying so, when unreachable).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import ensure_default_policies, load_policies
from fleet_server.app import create_app
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Node
from fleet_server.partitions import (
    POWERSAMPLE,
    PartitionJob,
    ensure_partitions,
    partition_names,
    partition_starts,
)
from fleet_server.power import RETENTION, node_history, power_overview
from fleet_server.runtime import Runtime
from fleet_server.schema import differences, migrate
from fleet_server.settings import Settings
from proto.codec import encode, topic_for
from proto.messages import Birth, Firmware, GeoPoint, PowerTelemetry, Telemetry, WireModel
from tests.support.db import migrated

LAHORE = GeoPoint(lat=31.52, lon=74.36)
FAR_AHEAD = datetime(2099, 1, 1, 0, 5, tzinfo=timezone.utc)
FAR_BEHIND = datetime(1999, 6, 1, 12, 0, tzinfo=timezone.utc)
JOB = {"powersample": RETENTION / timedelta(days=1)}


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    with migrated(pg_url) as eng:
        yield eng


def _now() -> datetime:
    # Mid-day, so a reading at "now" and a few minutes on stay in one UTC day.
    return datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)


def _birth(node: str) -> Birth:
    return Birth(
        node_id=node, ts=_now(), bd_seq=1, serial=f"S-{node}", hardware="sim",
        firmware=Firmware(version="1"), capabilities=["panic_button", "power_monitor"],
        config_hash="0" * 64, site_id="gulberg-001", district="lahore-gulberg", location=LAHORE,
    )  # fmt: skip


def _reading(node: str, at: datetime, **power: Any) -> Telemetry:
    values: dict[str, Any] = {"panel_w": 0.0, "battery_soc": 0.8, "load_w": 26.0}
    values.update(power)
    values.setdefault("autonomy_h", 30.0)
    values.setdefault("mains_present", False)
    return Telemetry(node_id=node, ts=at, uptime_s=10.0, power=PowerTelemetry(**values))


def _ingest(engine: Engine, *messages: WireModel, now: datetime | None = None) -> None:
    envelopes, rejections = decode_all([(topic_for(m), encode(m)) for m in messages])
    assert not rejections
    with Session(engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=now or _now(), policies=policies)
        session.commit()


def _buckets(engine: Engine, node: str) -> dict[datetime, str]:
    """The node's buckets and the partition each sits in."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT bucket_start, tableoid::regclass::text FROM powersample "
            "WHERE node_id = %s ORDER BY 1",
            (node,),
        ).all()
    return {row[0].replace(tzinfo=timezone.utc): str(row[1]) for row in rows}


def _run_job(engine: Engine, at: datetime) -> None:
    with Session(engine) as session:
        PartitionJob(retention_days=JOB).run(session, at)
        session.commit()


def test_the_power_history_is_partitioned_by_day_a_week_ahead_and_matches_the_models(
    engine: Engine,
) -> None:
    today = POWERSAMPLE.start_of(datetime.now(timezone.utc))
    with engine.connect() as conn:
        days = partition_starts(conn, POWERSAMPLE)
        names = partition_names(conn)
    assert [today + timedelta(days=d) for d in range(-1, 8)] == days
    assert POWERSAMPLE.default in names
    assert POWERSAMPLE.partition(today) == f"powersample_p{today:%Y%m%d}"
    assert differences(engine) == []  # partitions are not tables of the models


def test_a_reading_lands_in_its_day_and_the_history_and_overview_read_it(
    engine: Engine,
) -> None:
    now = _now()
    node = "lhr-pgp-0001"
    _ingest(
        engine,
        _birth(node),
        _reading(node, now - timedelta(minutes=20), autonomy_h=9.0),
        _reading(node, now, autonomy_h=8.5, battery_soc=0.4),
    )
    assert set(_buckets(engine, node).values()) == {POWERSAMPLE.partition(now)}
    with Session(engine) as session:
        row = session.get(Node, node)
        assert row is not None
        history = node_history(session=session, node=row, hours=48)
        overview = power_overview(session=session)
    assert [p.at for p in history.points] == [now - timedelta(minutes=20), now]
    assert history.points[-1].battery_soc == 0.4
    assert [i.node_id for i in overview.data] == [node]


def test_clock_skewed_buckets_land_in_the_default_partition_and_are_not_lost(
    engine: Engine,
) -> None:
    _ingest(engine, _birth("lhr-ahead-01"), _reading("lhr-ahead-01", FAR_AHEAD))
    _ingest(engine, _birth("lhr-behind-1"), _reading("lhr-behind-1", FAR_BEHIND))
    assert list(_buckets(engine, "lhr-ahead-01").values()) == [POWERSAMPLE.default]
    assert list(_buckets(engine, "lhr-behind-1").values()) == [POWERSAMPLE.default]

    _run_job(engine, datetime.now(timezone.utc))  # the job never drops the default partition
    assert list(_buckets(engine, "lhr-behind-1")) == [FAR_BEHIND]
    with Session(engine) as session:
        row = session.get(Node, "lhr-ahead-01")
        assert row is not None
        history = node_history(session=session, node=row, hours=1)
    assert [p.at for p in history.points] == [FAR_AHEAD.replace(minute=0)]

    # When the server's days reach the far-ahead bucket, its day takes it over.
    _run_job(engine, FAR_AHEAD - timedelta(days=3))
    assert _buckets(engine, "lhr-ahead-01") == {
        FAR_AHEAD.replace(minute=0): POWERSAMPLE.partition(FAR_AHEAD)
    }


def test_a_bucket_past_retention_lives_in_a_day_the_job_drops(engine: Engine) -> None:
    now = _now()
    with engine.begin() as conn:  # days back to before the retention (as 0018 makes them)
        ensure_partitions(conn, POWERSAMPLE, now=now, back=40)
    node = "lhr-pgp-0002"
    old = now - RETENTION - timedelta(days=2)
    _ingest(engine, _birth(node), _reading(node, old), _reading(node, old + timedelta(days=1)))
    # The node's first bucket of today: on SQLite this deletes its buckets past 30 days
    # row by row; here they sit in their days, which the job drops whole.
    midnight = POWERSAMPLE.start_of(now)
    _ingest(engine, _reading(node, midnight), _reading(node, now))
    assert _buckets(engine, node) == {
        old: POWERSAMPLE.partition(old),
        old + timedelta(days=1): POWERSAMPLE.partition(old + timedelta(days=1)),
        midnight: POWERSAMPLE.partition(now),
        now: POWERSAMPLE.partition(now),
    }

    _run_job(engine, now)
    with engine.connect() as conn:
        days = partition_starts(conn, POWERSAMPLE)
    assert POWERSAMPLE.start_of(old) not in days
    assert POWERSAMPLE.start_of(old + timedelta(days=1)) not in days  # ended 31 days ago
    assert days[0] == POWERSAMPLE.start_of(now) - RETENTION  # ends 29 days ago: kept
    assert list(_buckets(engine, node)) == [midnight, now]


def test_a_clock_far_off_is_pruned_by_the_node_s_own_days_as_on_sqlite(engine: Engine) -> None:
    node = "lhr-ahead-02"
    early = FAR_AHEAD - RETENTION - timedelta(days=5)
    _ingest(engine, _birth(node), _reading(node, early))
    assert list(_buckets(engine, node).values()) == [POWERSAMPLE.default]
    _ingest(engine, _reading(node, FAR_AHEAD))
    # FAR_AHEAD's bucket (00:00) is the node's first of its day: its clock's 30 days apply.
    assert list(_buckets(engine, node)) == [FAR_AHEAD.replace(minute=0)]


def test_upgrading_keeps_the_power_history_and_downgrading_undoes_it(pg_url: str) -> None:
    from alembic import command

    from fleet_server.schema import _config

    eng = make_engine(pg_url)
    try:
        with eng.begin() as connection:
            command.upgrade(_config(connection), "0017")  # before powersample partitions
        with Session(eng) as session:
            ensure_default_policies(session=session)
        now = _now()
        node = "lhr-mig-0001"
        ahead = FAR_AHEAD + timedelta(hours=1)  # not a day's first bucket: no prune
        times = [FAR_BEHIND, now - timedelta(days=3), now, ahead]
        _ingest(eng, _birth(node), *(_reading(node, at) for at in times))

        assert migrate(eng)[0] == "0017"
        assert _buckets(eng, node) == {
            FAR_BEHIND: POWERSAMPLE.default,
            now - timedelta(days=3): POWERSAMPLE.partition(now - timedelta(days=3)),
            now: POWERSAMPLE.partition(now),
            ahead.replace(minute=0): POWERSAMPLE.default,
        }
        assert differences(eng) == []

        with eng.begin() as connection:
            command.downgrade(_config(connection), "0017")
        with eng.connect() as conn:
            assert not {n for n in partition_names(conn) if n.startswith("powersample")}
        assert set(_buckets(eng, node).values()) == {"powersample"}
        kept = [FAR_BEHIND, now - timedelta(days=3), now, ahead.replace(minute=0)]
        assert list(_buckets(eng, node)) == kept
        assert differences(eng) == []  # the plain table and its key are back
    finally:
        eng.dispose()


def test_the_power_api_reads_the_partitioned_table(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, db_url=pg_url, broker_url=None, admin_username="admin",
        admin_password="admin-password", secret_key="test-secret-key-that-is-long-enough",
    )  # fmt: skip
    now = _now()
    node = "lhr-api-0101"
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        _ingest(
            runtime.engine,
            _birth(node),
            _reading(node, now - timedelta(hours=1), autonomy_h=30.0),
            _reading(node, now, autonomy_h=6.0, battery_soc=0.3),
        )
        token = client.post(
            "/api/v1/login/access-token",
            data={"username": "admin", "password": "admin-password"},
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        history = client.get(f"/api/v1/power/nodes/{node}/history?hours=48", headers=auth)
        overview = client.get("/api/v1/power/overview", headers=auth)
        chart = client.get(f"/api/v1/power/nodes/{node}/chart.svg", headers=auth)
    assert history.status_code == 200, history.text
    assert [p["autonomy_h"] for p in history.json()["points"]] == [30.0, 6.0]
    assert [i["node_id"] for i in overview.json()["data"]] == [node]
    assert chart.status_code == 200
    assert 'data-points="2"' in chart.text
