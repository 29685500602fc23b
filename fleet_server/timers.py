"""The server's one timer loop and the jobs it runs every tick.

Work that is due at a time rather than on a message (a node's offline grace
period running out, an alert's escalation step) is a `TimerJob`: a name and
`run(session, now)`, which reads what is due from the database, changes it
and returns the `AlertNotice`s to announce. The `TimerLoop` runs its jobs in
order every `tick_s`, each in its own transaction off the event loop, and
announces a job's notices only after that job committed; a job that fails is
logged and rolled back without holding up the others, and runs again next
tick. Because every due time lives in the database, a restarted server picks
up where the old one stopped.

Today's jobs are presence settling and escalation; OTA waves and retention
join by adding a job to the list (`default_jobs`), not by editing the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import AlertNotice, Notifier, PolicyCache, escalate_due
from fleet_server.models import utcnow
from fleet_server.presence import settle_offline_nodes

__all__ = [
    "EscalationJob",
    "PresenceJob",
    "TimerJob",
    "TimerLoop",
    "default_jobs",
    "run_jobs_once",
    "run_timers_once",
]

logger = logging.getLogger(__name__)


class TimerJob(Protocol):
    """One kind of timed work, run every tick inside its own transaction."""

    @property
    def name(self) -> str: ...

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        """Do what is due at `now` (the loop commits); return what to announce."""
        ...


@dataclass
class PresenceJob:
    """Nodes whose offline status outlived the grace period go offline, with an alert."""

    policies: PolicyCache
    grace_s: float
    name: str = "presence"

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        return settle_offline_nodes(
            session=session, now=now, grace_s=self.grace_s, policies=self.policies.get(session)
        )


@dataclass
class EscalationJob:
    """Alerts whose next escalation step is due take it."""

    policies: PolicyCache
    name: str = "escalation"

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        return escalate_due(session=session, now=now, policies=self.policies.get(session))


def default_jobs(*, ack_timeout_s: float, offline_grace_s: float) -> list[TimerJob]:
    """The server's jobs in the order they run: presence first (it may open alerts)."""
    policies = PolicyCache(ack_timeout_s=ack_timeout_s)
    return [PresenceJob(policies=policies, grace_s=offline_grace_s), EscalationJob(policies)]


def run_jobs_once(
    *, engine: Engine, jobs: Sequence[TimerJob], now: datetime, notify: Notifier | None = None
) -> list[AlertNotice]:
    """One tick: every job in its own transaction; each job's notices after its commit."""
    notices: list[AlertNotice] = []
    for job in jobs:
        try:
            with Session(engine, expire_on_commit=False) as session:
                done = list(job.run(session, now))
                session.commit()
        except Exception:
            logger.exception("timer job %s failed; retrying next tick", job.name)
            continue
        if done and notify is not None:
            notify(done)
        notices += done
    return notices


def run_timers_once(
    *, engine: Engine, now: datetime, ack_timeout_s: float, offline_grace_s: float
) -> list[AlertNotice]:
    """One tick of the default jobs (tests and tools; the server keeps a `TimerLoop`)."""
    jobs = default_jobs(ack_timeout_s=ack_timeout_s, offline_grace_s=offline_grace_s)
    return run_jobs_once(engine=engine, jobs=jobs, now=now)


@dataclass
class TimerLoop:
    """The async loop that runs the jobs off the event loop every tick."""

    engine: Engine
    notify: Notifier
    tick_s: float
    jobs: Sequence[TimerJob]
    clock: Callable[[], datetime] = utcnow
    ticks: int = field(default=0, init=False)

    async def run(self) -> None:
        names = ", ".join(job.name for job in self.jobs)
        logger.info("timer loop running every %.2fs: %s", self.tick_s, names)
        while True:
            try:
                await asyncio.to_thread(
                    run_jobs_once,
                    engine=self.engine,
                    jobs=self.jobs,
                    now=self.clock(),
                    notify=self.notify,
                )
            except Exception:
                logger.exception("timer tick failed; retrying next tick")
            self.ticks += 1
            await asyncio.sleep(self.tick_s)
