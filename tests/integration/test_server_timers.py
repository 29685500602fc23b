"""The timer loop runs a list of jobs; a new kind of timed work is a job, not an edit.

Each job runs in its own transaction; its notices are announced only after
its commit, and a job that fails is rolled back and logged without keeping
the others from running (they run again next tick).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.alerting import AlertNotice, notice
from fleet_server.models import Alert, Node
from fleet_server.ota.job import OtaWaveJob
from fleet_server.privacy.service import ExpiryWarningJob, PrivacyDeliveryJob
from fleet_server.timers import (
    EscalationJob,
    PresenceJob,
    SilenceJob,
    TimerJob,
    TimerLoop,
    default_jobs,
    run_jobs_once,
)
from tests.support.ingest import T0, sqlite_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


@dataclass
class RetentionSweep:
    """A stand-in for a job that joins later: renames a node (a visible, committed change)."""

    name: str = "retention"
    ran_at: list[datetime] = field(default_factory=list)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        self.ran_at.append(now)
        session.add(Node(node_id=f"swept-{len(self.ran_at)}", created_at=now))
        return []


@dataclass
class Broken:
    """A job whose bug must not stop escalation."""

    name: str = "broken"

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        session.add(Node(node_id="half-written", created_at=now))
        session.flush()
        raise RuntimeError("a bug in one job")


@dataclass
class Announcer:
    """Opens nothing; announces a notice about an alert it reads, to check the order."""

    name: str = "announcer"

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        alert = Alert(node_id="lhr-0001", type="panic", severity="P1", state="new",
                      received_at=now, updated_at=now)  # fmt: skip
        session.add(alert)
        session.flush()
        return [notice("created", alert, now=now, command=False)]


def test_the_server_runs_silence_then_presence_then_escalation() -> None:
    jobs = default_jobs(ack_timeout_s=120.0, offline_grace_s=15.0)
    assert [type(j) for j in jobs] == [
        SilenceJob, PresenceJob, EscalationJob, OtaWaveJob, ExpiryWarningJob, PrivacyDeliveryJob,
    ]  # fmt: skip
    assert [j.name for j in jobs] == [
        "silence", "presence", "escalation", "ota-waves", "privacy_agreement_expiry",
        "privacy_delivery",
    ]  # fmt: skip


def test_a_failing_job_is_rolled_back_and_the_others_still_run(engine: Engine) -> None:
    sweep = RetentionSweep()
    jobs: list[TimerJob] = [Broken(), sweep, *default_jobs(ack_timeout_s=120, offline_grace_s=15)]
    run_jobs_once(engine=engine, jobs=jobs, now=T0)
    run_jobs_once(engine=engine, jobs=jobs, now=T0 + timedelta(seconds=1))
    assert sweep.ran_at == [T0, T0 + timedelta(seconds=1)]
    with Session(engine) as session:
        names = set(session.exec(select(Node.node_id)).all())
    assert names == {"swept-1", "swept-2"}  # the broken job's row never committed


def test_a_jobs_notices_are_announced_after_its_commit(engine: Engine) -> None:
    seen: list[tuple[str, bool]] = []

    def notify(notices: Sequence[AlertNotice]) -> None:
        with Session(engine) as session:  # another connection: only committed rows
            for n in notices:
                seen.append((n.op, session.get(Alert, n.alert.id) is not None))

    with Session(engine) as session:
        session.add(Node(node_id="lhr-0001", created_at=T0))
        session.commit()
    run_jobs_once(engine=engine, jobs=[Announcer()], now=T0, notify=notify)
    assert seen == [("created", True)]


def test_the_loop_ticks_its_jobs_until_cancelled(engine: Engine) -> None:
    sweep = RetentionSweep()
    clock = iter(T0 + timedelta(seconds=i) for i in range(1000))
    three_ticks = threading.Event()

    def notify(notices: Sequence[AlertNotice]) -> None:
        del notices  # nothing to announce in this test

    @dataclass
    class Counting:
        name: str = "counting"

        def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
            if len(sweep.ran_at) >= 3:
                three_ticks.set()
            return []

    async def run_a_few_ticks() -> TimerLoop:
        loop = TimerLoop(engine=engine, notify=notify, tick_s=0.01, jobs=[sweep, Counting()],
                         clock=lambda: next(clock))  # fmt: skip
        task = asyncio.create_task(loop.run())
        assert await asyncio.to_thread(three_ticks.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return loop

    loop = asyncio.run(run_a_few_ticks())
    assert loop.ticks >= 2
    assert sweep.ran_at[:3] == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
