"""Two real `nigehbaan server` processes on one PostgreSQL schema share the timers correctly.

Not threads with engines of their own (tests/integration/test_pg_timers.py):
two worker processes started as `nigehbaan cluster run` starts them (own
ports, own data directories, one database URL, `--no-mqtt`), each with its
own timer loop. With both alive, every timed step of an escalation ladder
fires exactly once per alert and each singleton lease has one holder; after
`kill -9` of the worker holding the presence job's lease (its advisory locks
die with its connection), the other takes every singleton job over, and
neither the escalation steps due across the kill nor the presence job's
offline alerts fire twice. Real PostgreSQL (tests/support/db.py: skipped,
saying so, when unreachable). Every wait is bounded; how long the handover
took is printed, not asserted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import set_policy
from fleet_server.cluster.rabbit import loopback_port
from fleet_server.cluster.supervisor import READY_LINE
from fleet_server.leases import LEASE_NAMESPACE, advisory_key
from fleet_server.models import Alert, AlertEscalation, AlertType, Node, utcnow
from tests.support.db import migrated

ALERTS = 30  # per phase
LADDER_S = (0.0, 3.0, 6.0)  # level 0 on arrival, then two timed steps; no repeat
TIMED_LEVELS = (1, 2)
START_TIMEOUT_S = 60.0
LADDER_TIMEOUT_S = 60.0
HANDOVER_TIMEOUT_S = 30.0
_LEASE_LINE = re.compile(rb"this worker now runs timer job (\S+) \(lease on backend (\d+)\)")


@dataclass
class Worker:
    """One `nigehbaan server` process of this test."""

    index: int
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> bytes:
        return (self.data_dir / "server.log").read_bytes()

    def leases(self) -> dict[str, int]:
        """The singleton jobs this worker said it took, with the backend holding each."""
        return {m.group(1).decode(): int(m.group(2)) for m in _LEASE_LINE.finditer(self.log)}

    def alive(self) -> bool:
        return self.process.poll() is None


def _start(index: int, *, db_url: str, work: Path) -> Worker:
    """A worker started like the cluster supervisor starts one (its `_start_worker`)."""
    data_dir = work / f"worker-{index}"
    data_dir.mkdir(parents=True)
    port = loopback_port()
    env = {
        **os.environ,
        "NIGEHBAAN_ENV": "dev",
        "NIGEHBAAN_ESCALATION_TICK_S": "0.2",
        "NIGEHBAAN_OFFLINE_GRACE_S": "1",
    }
    command = [
        sys.executable, "-m", "edge_agent.console", "server", "--no-mqtt", "--db", db_url,
        "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with (data_dir / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    return Worker(index=index, port=port, data_dir=data_dir, process=process)


def _wait_ready(worker: Worker) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker {worker.index} exited:\n{worker.log.decode()[-3000:]}"
        if READY_LINE in worker.log:
            try:
                if httpx.get(f"http://127.0.0.1:{worker.port}/healthz", timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    raise AssertionError(f"worker {worker.index} not ready:\n{worker.log.decode()[-3000:]}")


def _wait_for(what: str, done: Callable[[], bool], timeout_s: float) -> float:
    """Poll `done` every 0.2 s until it holds; seconds it took, or fail saying what."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if done():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def _stop(worker: Worker) -> None:
    if worker.alive():
        os.killpg(worker.process.pid, signal.SIGTERM)
        try:
            worker.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(5)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    """The schema, migrated once before the workers start (as `cluster run` does)."""
    with migrated(pg_url) as eng:
        with Session(eng) as session:
            set_policy(
                session=session, name="tamper-ladder", alert_type=AlertType.TAMPER,
                levels=[(after, None) for after in LADDER_S],
            )  # fmt: skip
            session.commit()
        yield eng


@pytest.fixture
def workers(engine: Engine, pg_url: str, tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        started = [_start(i, db_url=pg_url, work=tmp_path) for i in range(2)]
        for worker in started:
            _wait_ready(worker)
        yield started
    finally:
        for worker in started:
            _stop(worker)


def _tamper_alerts(engine: Engine, count: int, *, node_prefix: str) -> list[str]:
    """`count` open tamper alerts at level 0, their first timed step due `LADDER_S[1]` from now."""
    now = utcnow()
    with Session(engine) as session:
        alerts = [
            Alert(node_id=f"{node_prefix}-{i:03d}", type=AlertType.TAMPER, severity="P2",
                  received_at=now, updated_at=now, escalation_level=0,
                  next_escalation_at=now + timedelta(seconds=LADDER_S[1]))
            for i in range(count)
        ]  # fmt: skip
        session.add_all(alerts)
        session.commit()
        return [a.id for a in alerts]


def _ladders_done(engine: Engine, ids: list[str]) -> bool:
    with Session(engine) as session:
        left = session.exec(
            select(Alert.id)
            .where(col(Alert.id).in_(ids))
            .where((col(Alert.escalation_level) < 2) | col(Alert.next_escalation_at).is_not(None))
        ).all()
    return not left


def _steps(engine: Engine, ids: list[str]) -> Counter[tuple[str, int]]:
    with Session(engine) as session:
        rows = session.exec(
            select(AlertEscalation.alert_id, AlertEscalation.level).where(
                col(AlertEscalation.alert_id).in_(ids)
            )
        ).all()
    return Counter((alert_id, level) for alert_id, level in rows)


def _lease_holders(engine: Engine, schema: str, names: set[str]) -> dict[str, list[int]]:
    """Per singleton job: the backend PIDs holding its lease now (one, when all is well)."""
    keys = {advisory_key(schema, name): name for name in names}
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT objid::bigint, pid FROM pg_locks WHERE locktype = 'advisory' "
            "AND granted AND classid = %s AND objsubid = 2",
            (LEASE_NAMESPACE,),
        ).all()
    held: dict[str, list[int]] = {name: [] for name in names}
    for objid, pid in rows:
        key = objid - (1 << 32) if objid >= (1 << 31) else objid  # oid back to a signed key
        if key in keys:
            held[keys[key]].append(int(pid))
    return held


def _schema_of(url: str) -> str:
    return unquote(url.split("options=", 1)[1]).split("search_path=", 1)[1]


def test_two_server_processes_fire_each_step_once_and_survive_a_kill_9_of_the_leader(
    engine: Engine, workers: list[Worker], pg_url: str
) -> None:
    schema = _schema_of(pg_url)
    # Both alive: every timed ladder step fires once, whichever worker claims it.
    first = _tamper_alerts(engine, ALERTS, node_prefix="lhr-cam")
    _wait_for("the first ladders finished", lambda: _ladders_done(engine, first), LADDER_TIMEOUT_S)
    assert _steps(engine, first) == Counter({(a, lvl): 1 for a in first for lvl in TIMED_LEVELS})
    shares = [w.log.count(b" escalated to level ") for w in workers]
    print(f"escalation steps taken per worker with both alive: {shares}")  # which one: timing

    # Each singleton job runs on one worker: the first to ask for its lease (the two
    # workers' first ticks interleave, so the jobs may be split between them).
    singletons = set(workers[0].leases()) | set(workers[1].leases())
    assert {"presence", "silence", "event_partitions"} <= singletons
    holders = _lease_holders(engine, schema, singletons)
    assert all(len(pids) == 1 for pids in holders.values()), holders
    owner = {
        name: [w.index for w in workers if w.leases().get(name) == pids[0]]
        for name, pids in holders.items()
    }
    assert all(len(found) == 1 for found in owner.values()), owner
    print(f"singleton jobs by worker: {sorted((o[0], n) for n, o in owner.items())}")
    leader = workers[owner["presence"][0]]  # the one to kill: it settles offline nodes
    (standby,) = [w for w in workers if w is not leader]

    # Work due across the kill: ladders whose steps fall just after it, and nodes whose
    # offline grace (1 s) runs out after it (the presence job, a singleton, settles them).
    second = _tamper_alerts(engine, ALERTS, node_prefix="khi-cam")
    offline = [f"khi-pillar-{i:03d}" for i in range(10)]
    with Session(engine) as session:
        session.add_all(
            Node(node_id=n, online=True, offline_pending_since=utcnow() + timedelta(seconds=2))
            for n in offline
        )
        session.commit()
    os.killpg(leader.process.pid, signal.SIGKILL)
    leader.process.wait(10)
    killed_at = time.monotonic()

    def taken_over() -> bool:
        held = _lease_holders(engine, schema, singletons)
        return set(standby.leases()) >= singletons and all(
            pids == [standby.leases()[name]] for name, pids in held.items()
        )

    took = _wait_for("the standby took every singleton lease", taken_over, HANDOVER_TIMEOUT_S)
    print(f"singleton leases handed over {took:.2f} s after kill -9 ({len(singletons)} jobs)")
    _wait_for("the second ladders finished", lambda: _ladders_done(engine, second),
              LADDER_TIMEOUT_S)  # fmt: skip

    def settled() -> bool:
        with Session(engine) as session:
            pending = session.exec(
                select(Node.node_id).where(col(Node.offline_pending_since).is_not(None))
            ).all()
        return not pending

    _wait_for("the offline nodes settled", settled, LADDER_TIMEOUT_S)
    assert _steps(engine, second) == Counter({(a, lvl): 1 for a in second for lvl in TIMED_LEVELS})
    with Session(engine) as session:
        outages = session.exec(
            select(Alert.node_id).where(Alert.type == AlertType.NODE_OFFLINE)
        ).all()
        still_online = session.exec(
            select(Node.node_id).where(col(Node.node_id).in_(offline)).where(col(Node.online))
        ).all()
    assert Counter(outages) == Counter(dict.fromkeys(offline, 1))  # one outage alert each
    assert still_online == []
    assert standby.alive()
    # The standby did the presence work: the node-offline lines are in its log only.
    assert all(f"node {n} is offline".encode() in standby.log for n in offline)
    assert not any(f"node {n} is offline".encode() in leader.log for n in offline)
    print(f"kill -9 to all work settled: {time.monotonic() - killed_at:.1f} s")
