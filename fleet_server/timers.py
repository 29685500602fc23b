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

Today's jobs are the silence check, presence settling, escalation and OTA
waves (`fleet_server.ota.job`) and plate read retention
(`fleet_server.plates`); other retention joins by adding a job to the list
(`default_jobs`), not by editing the loop.

With N workers on one PostgreSQL database (docs/scaling-postgresql.md) the
loop is given `Leases` (`fleet_server.leases`): a job that claims its own due
rows with `FOR UPDATE SKIP LOCKED` says so (`claims_rows = True`, the
escalation job) and runs on every worker; every other job runs only on the
worker holding its lease, fenced inside its transaction. Without leases
(SQLite, one process) every job runs every tick, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import AlertNotice, Notifier, PolicyCache, escalate_due
from fleet_server.ingest import Publisher
from fleet_server.leases import Leases
from fleet_server.models import utcnow
from fleet_server.ota.job import OtaWaveJob
from fleet_server.ota.signing import SignedRepository
from fleet_server.partitions import PartitionJob
from fleet_server.plates import PlateRetentionJob
from fleet_server.power import RETENTION as POWER_RETENTION
from fleet_server.presence import (
    OFFLINE_SWEEP_MAX,
    Silence,
    find_silent_nodes,
    mark_silent_nodes,
    settle_offline_nodes,
)
from fleet_server.privacy.service import ExpiryWarningJob, PrivacyDeliveryJob

__all__ = [
    "EscalationJob",
    "PresenceJob",
    "SilenceJob",
    "TimerJob",
    "TimerLoop",
    "default_jobs",
    "run_jobs_once",
    "run_timers_once",
]

logger = logging.getLogger(__name__)


class TimerJob(Protocol):
    """One kind of timed work, run every tick inside its own transaction.

    A job may also say `claims_rows = True`: it locks the rows it works on
    with `SELECT … FOR UPDATE SKIP LOCKED`, so it is safe on every worker at
    once. Without it the job is a singleton under `Leases`.
    """

    @property
    def name(self) -> str: ...

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        """Do what is due at `now` (the loop commits); return what to announce."""
        ...


@dataclass
class SilenceJob:
    """Online nodes that sent nothing for several telemetry intervals start an outage.

    Whatever their last status said: a node whose will never came (or came
    for a session the server did not know) does not stay online for ever.
    The outage is dated when the node was last heard and settled by the
    presence job, which runs next. Silence is counted only while the server
    was listening (`link_up`, and from this job's first run in this process),
    so a server restart or a lost broker link does not take the fleet
    offline. The database is read every `every_s` (a scan of the online
    nodes' last-seen times), or at once again while a chunk of `limit` was
    full.
    """

    silence: Silence = field(default_factory=Silence)
    link_up: Callable[[], bool] | None = None
    every_s: float = 5.0
    limit: int = OFFLINE_SWEEP_MAX
    name: str = "silence"
    listening_since: datetime | None = field(default=None, init=False)
    _next_at: datetime | None = field(default=None, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        if self.link_up is not None and not self.link_up():
            self.listening_since = None  # nothing is heard now: nobody is silent
            return []
        if self.listening_since is None:
            self.listening_since = now
        if self._next_at is not None and now < self._next_at:
            return []
        silent = find_silent_nodes(
            session=session, now=now, silence=self.silence,
            listening_since=self.listening_since, limit=self.limit,
        )  # fmt: skip
        mark_silent_nodes(session=session, silent=silent)
        full = len(silent) >= self.limit
        self._next_at = None if full else now + timedelta(seconds=self.every_s)
        return []


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
    """Alerts whose next escalation step is due take it.

    `escalate_due` claims the due alerts with `FOR UPDATE SKIP LOCKED`, at
    most `limit` per tick, so every worker runs this job and each due step is
    taken once (`claims_rows`).
    """

    policies: PolicyCache
    name: str = "escalation"
    limit: int = 500
    claims_rows: ClassVar[bool] = True

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        return escalate_due(
            session=session, now=now, policies=self.policies.get(session), limit=self.limit
        )


def default_jobs(
    *,
    ack_timeout_s: float,
    offline_grace_s: float,
    silence: Silence | None = None,
    link_up: Callable[[], bool] | None = None,
    ota_publisher: Callable[[], Publisher | None] | None = None,
    ota_repository: Callable[[], SignedRepository | None] | None = None,
    plate_retention_days: float | None = None,
    event_partitions: bool = False,
    event_retention_days: float | None = None,
) -> list[TimerJob]:
    """The server's jobs in the order they run.

    Silence first (it starts outages), then presence (it settles them and
    opens alerts), then escalation, then OTA waves (`fleet_server.ota.job`).
    `link_up` says whether the server is receiving from the broker (None:
    always); `ota_publisher` gives the MQTT publisher for update offers
    (None: no offers are sent and campaign nodes stay pending) and
    `ota_repository` the signed repository offers are assigned in (None:
    offers go out unsigned, and nodes find nothing new). Plate reads older than
    `plate_retention_days` are deleted in chunks (`fleet_server.plates`; None:
    kept). With `event_partitions` (PostgreSQL) the monthly partitions of the
    event and plate read tables are made ahead and dropped when older than
    `event_retention_days` and `plate_retention_days`, and the power history's
    daily ones after `fleet_server.power.RETENTION`, and watchlist hits' months
    with the events' (`fleet_server.partitions`).
    """
    policies = PolicyCache(ack_timeout_s=ack_timeout_s)
    jobs: list[TimerJob] = [
        SilenceJob(silence=silence or Silence(), link_up=link_up),
        PresenceJob(policies=policies, grace_s=offline_grace_s),
        EscalationJob(policies),
        OtaWaveJob(
            publisher=ota_publisher or (lambda: None),
            repository=ota_repository or (lambda: None),
        ),
    ]
    if plate_retention_days is not None:
        jobs.append(PlateRetentionJob(days=plate_retention_days))
    # Private cameras' agreements about to expire: one alert each (fleet_server.privacy).
    jobs.append(ExpiryWarningJob(ack_timeout_s=ack_timeout_s))
    # Online nodes behind their privacy version get it again (fleet_server.privacy).
    jobs.append(PrivacyDeliveryJob(publisher=ota_publisher or (lambda: None)))
    if event_partitions:  # PostgreSQL: made ahead, dropped after retention
        retention = {
            "event": event_retention_days,
            "plateread": plate_retention_days,
            "powersample": POWER_RETENTION / timedelta(days=1),  # its days, as the row prune
            "watchlisthit": event_retention_days,  # a hit goes with its event
        }
        jobs.append(PartitionJob(retention_days=retention))
    return jobs


def run_jobs_once(
    *,
    engine: Engine,
    jobs: Sequence[TimerJob],
    now: datetime,
    notify: Notifier | None = None,
    leases: Leases | None = None,
) -> list[AlertNotice]:
    """One tick: every job in its own transaction; each job's notices after its commit.

    With `leases` (N workers on PostgreSQL) a singleton job runs only where
    its lease is held, and only if its fence is free (module docstring).
    """
    notices: list[AlertNotice] = []
    if leases is not None:
        leases.check()
    for job in jobs:
        # A singleton's leases; None: the job runs here (one process, or it claims rows).
        lease = None if leases is None or getattr(job, "claims_rows", False) else leases
        if lease is not None and not lease.hold(job.name):
            continue
        try:
            with Session(engine, expire_on_commit=False) as session:
                if lease is not None and not lease.fence(session, job.name):
                    logger.info("timer job %s is running elsewhere; skipped", job.name)
                    continue
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
    """One tick of the default jobs (tests and tools; the server keeps a `TimerLoop`).

    The jobs are made afresh, so the silence job has heard nothing before
    this tick and takes no node offline; keep a job list for that.
    """
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
    leases: Leases | None = None  # N workers on PostgreSQL (`fleet_server.leases`)
    ticks: int = field(default=0, init=False)

    async def run(self) -> None:
        names = ", ".join(job.name for job in self.jobs)
        logger.info("timer loop running every %.2fs: %s", self.tick_s, names)
        try:
            while True:
                try:
                    await asyncio.to_thread(
                        run_jobs_once,
                        engine=self.engine,
                        jobs=self.jobs,
                        now=self.clock(),
                        notify=self.notify,
                        leases=self.leases,
                    )
                except Exception:
                    logger.exception("timer tick failed; retrying next tick")
                self.ticks += 1
                await asyncio.sleep(self.tick_s)
        finally:
            if self.leases is not None:  # a clean stop hands the singletons over at once
                self.leases.close()
