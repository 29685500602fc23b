"""Three server workers on one PostgreSQL database run every due timer item exactly once.

Each worker is a thread with its own engine (its own connections), as N
`nigehbaan server` processes would have: escalation claims due alerts with
`FOR UPDATE SKIP LOCKED` on every worker; singleton jobs run only on the
worker holding their advisory-lock lease, and a standby takes over when the
leader's connection is cut. Real PostgreSQL (tests/support/db.py: skipped,
saying so, when unreachable).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from fleet_server.alerting import AlertNotice, PolicyCache, ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.leases import Leases, database_reachable, leases_for
from fleet_server.models import Alert, AlertEscalation
from fleet_server.schema import migrate
from fleet_server.timers import EscalationJob, run_jobs_once
from tests.support.db import PG_URL
from tests.support.ingest import T0

WORKERS = 3
DUE_ALERTS = 300


@pytest.fixture
def engines(pg_url: str) -> Iterator[list[Engine]]:
    first = make_engine(pg_url)
    migrate(first)
    with Session(first) as session:
        ensure_default_policies(session=session)
    made = [first, *(make_engine(pg_url) for _ in range(WORKERS - 1))]
    yield made
    for engine in made:
        engine.dispose()


def _due_alerts(engine: Engine, count: int, *, due: datetime) -> list[str]:
    with Session(engine) as session:
        alerts = [
            Alert(node_id=f"lhr-{i:04d}", type="panic", severity="P1", received_at=T0,
                  updated_at=T0, escalation_level=0, next_escalation_at=due)
            for i in range(count)
        ]  # fmt: skip
        session.add_all(alerts)
        session.commit()
        return [a.id for a in alerts]


@dataclass
class RecordingJob:
    """A singleton job that records which worker ran it on which tick."""

    worker: int
    runs: list[tuple[int, datetime]]
    name: str = "recording"
    ran: int = field(default=0, init=False)

    def run(self, session: Session, now: datetime) -> list[AlertNotice]:
        self.runs.append((self.worker, now))
        self.ran += 1
        return []


def test_three_workers_fire_every_due_escalation_exactly_once(engines: list[Engine]) -> None:
    ids = _due_alerts(engines[0], DUE_ALERTS, due=T0 + timedelta(seconds=30))
    later = T0 + timedelta(seconds=31)
    fired: list[list[str]] = [[] for _ in engines]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        # Small claims so the workers interleave over many ticks instead of one taking all.
        jobs = [EscalationJob(PolicyCache(ack_timeout_s=120.0), limit=7)]
        leases = leases_for(engines[i])
        try:
            start.wait(10)
            for _tick in range(200):  # bounded: 300 alerts / 7 per claim need far fewer
                notices = run_jobs_once(engine=engines[i], jobs=jobs, now=later, leases=leases)
                fired[i] += [n.alert.id for n in notices]
                if not notices:
                    with Session(engines[i]) as session:
                        left = session.exec(
                            select(func.count()).where(col(Alert.next_escalation_at) <= later)
                        ).one()
                    if left == 0:
                        return
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            if leases is not None:
                leases.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    every = Counter(alert_id for mine in fired for alert_id in mine)
    assert set(every) == set(ids)
    assert max(every.values()) == 1, [a for a, n in every.items() if n > 1][:5]
    assert sum(1 for mine in fired if mine) >= 2, "one worker claimed everything"
    with Session(engines[0]) as session:
        steps = Counter(session.exec(select(AlertEscalation.alert_id)).all())
    assert steps == Counter(dict.fromkeys(ids, 1))  # one recorded escalation step each


def test_a_singleton_job_runs_on_one_worker_and_moves_when_its_connection_is_cut(
    engines: list[Engine],
) -> None:
    runs: list[tuple[int, datetime]] = []
    jobs = [[RecordingJob(worker=i, runs=runs)] for i in range(len(engines))]
    leases = [Leases(engine) for engine in engines]

    def tick(n: int, workers: range = range(WORKERS)) -> None:
        for i in workers:
            at = T0 + timedelta(seconds=n)
            run_jobs_once(engine=engines[i], jobs=jobs[i], now=at, leases=leases[i])

    try:
        for n in range(3):
            tick(n)
        assert [w for w, _ in runs] == [0, 0, 0]  # the first to ask leads, every tick
        # The leader's lease connection dies (its backend killed, as a cut link or
        # a crashed worker would leave it) while the leader is away for a tick.
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            pid = leases[0]._conn.info.backend_pid
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        tick(3, range(1, WORKERS))
        standby = runs[-1][0]
        assert len(runs) == 4, runs
        assert standby != 0, runs
        for n in range(4, 6):  # the old leader is back: it finds its lease gone, the standby leads
            tick(n)
        assert [w for w, _ in runs[4:]] == [standby, standby], runs
        assert "recording" not in leases[0].held
        assert len({t for _, t in runs}) == len(runs)  # never two runs in one tick
        # A clean stop of the new leader hands the job over at once.
        leases[standby].close()
        tick(6, range(0, 1))
        assert runs[-1] == (0, T0 + timedelta(seconds=6))
        assert leases[standby].hold("recording") is False  # a stopped worker takes none again
    finally:
        for lease in leases:
            lease.close()


def test_a_lease_holder_without_its_fence_skips_the_run(engines: list[Engine]) -> None:
    """During a handover the old leader may still think it leads; the fence stops it."""
    runs: list[tuple[int, datetime]] = []
    leases = Leases(engines[0])
    try:
        with Session(engines[1]) as other:  # another worker is mid-run of the same job
            assert leases.fence(other, "recording")
            run_jobs_once(engine=engines[0], jobs=[RecordingJob(0, runs)], now=T0, leases=leases)
            assert runs == []
        run_jobs_once(engine=engines[0], jobs=[RecordingJob(0, runs)], now=T0, leases=leases)
        assert [w for w, _ in runs] == [0]
    finally:
        leases.close()


def test_on_sqlite_there_are_no_leases_and_every_job_runs(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        assert leases_for(engine) is None
        assert database_reachable(engine)
    finally:
        engine.dispose()


def test_an_unreachable_postgresql_is_reported_not_raised() -> None:
    # Port 9 on loopback: nothing listens there, so the connection is refused.
    engine = make_engine("postgresql://postgres@127.0.0.1:9/test?connect_timeout=2")
    try:
        assert database_reachable(engine) is False
    finally:
        engine.dispose()


def test_a_reachable_postgresql_is_reported_so(engines: list[Engine]) -> None:
    assert all(database_reachable(engine) for engine in engines)
