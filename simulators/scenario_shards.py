"""One scenario over several processes: `nigehbaan sim --scenario F --processes N`.

A node holds three open files (four behind a network-cut relay) and the hard
RLIMIT_NOFILE cannot always be raised, so a city's 8,333 nodes do not fit one
process. The parent (`ShardedRun`) keeps what a run owns — the broker and the
server (`simulators.scenario_stack.ScenarioStack`) — and starts N children
(``python -m simulators.scenario_shards``), each a `ScenarioRunner` over its
`Shard` of the same scenario (nodes at fleet position ≡ k mod N). The
protocol is JSON lines, as in `simulators.bench_background`:

    child → parent (stdout)           parent → child (stdin)
    ready   {nodes}   all connected   start  {at_monotonic}  time starts then
    status  {figures} every summary   broker {state: down|up}
    broker_kill       about to count
    report  {path, usage}  done
    error   {message}

Simulated time starts in every process at one instant (CLOCK_MONOTONIC is
machine-wide) once every shard said ready. Steps keep their meaning: node
picks are pure functions of the whole scenario (`pick_targets`,
`storm_plan`), so each shard acts on its share of the same global picks; a
``broker_restart`` is done once, by the parent, which waits (bounded) until
every shard has counted its connected nodes, kills the broker, and tells the
shards when it is down and up again (`ParentBroker`). The parent prints one
combined summary line and merges the shards' reports
(`simulators.scenario_merge`). Every wait is bounded; a shard that dies,
says it failed or overstays ends the run (`ShardError`, naming the shard and
the end of its stderr) and the others are stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from hardware.sim_clock import ScaledClock, sleep_on
from simulators.bench_harness import stop_children
from simulators.scenario import (
    BrokerControl,
    BrokerRestartStep,
    Scenario,
    ScenarioError,
    ScenarioRunner,
    Shard,
    format_summary,
    load_scenario,
    shard_fds_needed,
)
from simulators.scenario_merge import merge_reports, merge_status

__all__ = ["ParentBroker", "ParentLink", "ShardError", "ShardedRun", "child_main"]

logger = logging.getLogger(__name__)

# Loggers silenced in the children unless --node-logs (as in one process).
NODE_LOGGERS = ("edge_agent", "hardware", "simulators.netcut", "httpx")
START_LEAD_S = 1.0  # "start" is sent this long before the instant it names
BROKER_WAIT_S = 120.0  # a shard waits this long for the parent's broker news
KILL_BARRIER_S = 10.0  # the parent waits this long for every shard before a kill
STDERR_TAIL = 40


class ShardError(RuntimeError):
    """A shard died, failed, or did not answer in time; the message names it."""


# ------------------------------------------------------------------ child


class ParentLink:
    """A shard's end of the protocol: JSON lines to the parent, commands from it."""

    def __init__(self, out: TextIO, inp: TextIO) -> None:
        self._out = out
        self._in = inp
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._start_at = 0.0
        self.broker_down = threading.Semaphore(0)
        self.broker_up = threading.Semaphore(0)

    def send(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, **fields})
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def listen(self, on_eof: Callable[[], None]) -> None:
        """Read the parent's commands in a thread; `on_eof` when the parent is gone."""
        threading.Thread(target=self._read, args=(on_eof,), daemon=True).start()

    def _read(self, on_eof: Callable[[], None]) -> None:
        for line in iter(self._in.readline, ""):
            try:
                message = json.loads(line)
            except ValueError:
                logger.warning("ignoring a line from the parent: %r", line[:200])
                continue
            kind = message.get("kind")
            if kind == "start":
                self._start_at = float(message["at_monotonic"])
                self._started.set()
            elif kind == "broker":
                (self.broker_up if message.get("state") == "up" else self.broker_down).release()
        on_eof()

    async def wait_start(self, *, timeout: float) -> float:
        """The monotonic instant simulated time starts, once the parent names it."""
        if not await asyncio.to_thread(self._started.wait, timeout):
            raise ScenarioError(f"the parent did not say start within {timeout:.0f} s")
        return self._start_at


class ParentBroker:
    """The broker as a shard sees it: the parent kills and starts it, once for every shard.

    The `broker_restart` step (`simulators.scenario.steps`) runs these in a
    worker thread, so blocking until the parent's news keeps a shard's
    timings (down for, back after) about the broker the parent really
    restarted.
    """

    def __init__(self, link: ParentLink) -> None:
        self._link = link

    def kill(self) -> None:
        self._link.send("broker_kill")  # this shard has counted its connected nodes
        if not self._link.broker_down.acquire(timeout=BROKER_WAIT_S):
            raise ScenarioError(f"the parent did not kill the broker within {BROKER_WAIT_S:.0f} s")

    def start(self) -> None:
        if not self._link.broker_up.acquire(timeout=BROKER_WAIT_S):
            raise ScenarioError(f"the parent did not restart the broker in {BROKER_WAIT_S:.0f} s")


def _child_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.scenario_shards",
        description="one shard of `nigehbaan sim --scenario F --processes N` (started by it)",
    )
    parser.add_argument("--scenario", type=Path, required=True, help="the scaled scenario (JSON)")
    parser.add_argument("--shard", type=int, required=True, help="0-based")
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="node outboxes")
    parser.add_argument("--report-file", type=Path, required=True)
    parser.add_argument("--summary-every", type=float, default=5.0)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--owns-broker", action="store_true", help="the parent restarts it")
    parser.add_argument("--node-logs", action="store_true")
    parser.add_argument("--log-level", default="INFO")
    return parser


def child_main(argv: list[str] | None = None) -> int:
    """A shard: run its nodes, talk to the parent on stdin/stdout; 0 once the report is out."""
    args = _child_parser().parse_args(argv)
    shard = Shard(args.shard, args.processes)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format=f"%(asctime)s %(levelname)s [shard {shard}] %(name)s: %(message)s",
    )
    if not args.node_logs:
        for name in NODE_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    # The protocol gets the real stdout; anything else printed lands on stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    link = ParentLink(protocol_out, sys.stdin)
    try:
        scenario = load_scenario(args.scenario)
        from simulators.bench_harness import raise_fd_limit

        raise_fd_limit(shard_fds_needed(scenario, shard))
        report = asyncio.run(_play_shard(args, scenario, shard, link))
        args.report_file.parent.mkdir(parents=True, exist_ok=True)
        args.report_file.write_text(json.dumps(report), encoding="utf-8")
    except (Exception, asyncio.CancelledError) as exc:
        logger.exception("shard %s failed", shard)
        with contextlib.suppress(OSError, ValueError):
            link.send("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    link.send("report", path=str(args.report_file), usage=_usage())
    return 0


async def _play_shard(
    args: argparse.Namespace, scenario: Scenario, shard: Shard, link: ParentLink
) -> dict[str, Any]:
    runner = ScenarioRunner(
        scenario,
        broker_url=args.broker_url,
        data_dir=args.data_dir,
        broker=ParentBroker(link) if args.owns_broker else None,
        summary_every_s=args.summary_every,
        freeze_gc=True,
        shard=shard,
    )
    loop, task = asyncio.get_running_loop(), asyncio.current_task()

    def parent_gone() -> None:  # stdin closed: nobody will read the report
        if task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(task.cancel)

    link.listen(parent_gone)

    async def gate() -> None:
        link.send("ready", nodes=len(runner.sites))
        start_at = await link.wait_start(timeout=args.start_timeout)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))

    def progress(_line: str) -> None:
        link.send("status", **runner.status())

    report = await runner.run(progress=progress, gate=gate)
    return report.to_json()


def _usage() -> dict[str, float]:
    """This process's peak resident memory (VmHWM) and CPU time, for the report."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "max_rss_mb": round(usage.ru_maxrss / 1024.0, 1),  # KiB on Linux
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }


# ----------------------------------------------------------------- parent


@dataclass
class _Child:
    """One shard process as the parent sees it, fed by its stdout/stderr reader threads."""

    shard: Shard
    process: subprocess.Popen[str]
    ready: bool = False
    nodes: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    usage: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    kill_requests: int = 0
    statuses: int = 0  # how many status lines arrived
    tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL)
    )
    readers: list[threading.Thread] = field(default_factory=list)

    def read_protocol(self, stream: IO[str]) -> None:
        for line in iter(stream.readline, ""):
            try:
                message = json.loads(line)
            except ValueError:
                self.tail.append(line.rstrip())
                continue
            kind = message.pop("kind", None)
            if kind == "ready":
                self.nodes, self.ready = int(message["nodes"]), True
            elif kind == "status":
                self.status = message
                self.statuses += 1
            elif kind == "broker_kill":
                self.kill_requests += 1
            elif kind == "report":
                self.usage = dict(message.get("usage") or {})
                self.report_path = Path(message["path"])
            elif kind == "error":
                self.error = str(message.get("message"))

    def read_log(self, stream: IO[str], echo: Callable[[str], None]) -> None:
        for line in iter(stream.readline, ""):
            self.tail.append(line.rstrip())
            echo(line.rstrip())

    def finished_reading(self, timeout: float = 5.0) -> None:
        """Let the readers take in what the process wrote before it exited."""
        for reader in self.readers:
            reader.join(timeout)

    def describe(self) -> str:
        return f"shard {self.shard} (pid {self.process.pid})"

    def stderr_tail(self) -> str:
        return "\n".join(self.tail) or "(nothing on stderr)"


class ShardedRun:
    """The parent of a multi-process scenario run; see the module docstring."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        processes: int,
        broker_url: str,
        broker: BrokerControl | None,
        work_dir: Path,
        summary_every_s: float = 5.0,
        log_level: str = "INFO",
        node_logs: bool = False,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.processes = processes
        self.broker_url = broker_url
        self.broker = broker
        self.work_dir = work_dir
        self.summary_every_s = summary_every_s
        self.log_level = log_level
        self.node_logs = node_logs
        self.echo = echo or _to_stderr
        self.clock = ScaledClock(start=scenario.start, speed=scenario.speed, paused=True)
        self.children: list[_Child] = []
        self.broker_records: list[dict[str, Any]] = []
        per_shard = -(-scenario.node_count // processes)
        # A shard's own connect bound is max(60, nodes / 20); add its start-up.
        self.ready_timeout = max(60.0, per_shard / 20) + 90.0
        # Simulated time, then the shard's bounded drain (steps ≤ 130 s, outboxes 30 s).
        self.run_timeout = scenario.duration_h * 3600.0 / scenario.speed + 130.0 + 30.0 + 180.0

    async def run(self) -> dict[str, Any]:
        """Start the shards, start time together, restart the broker, merge; `ShardError`."""
        wall0 = time.monotonic()
        broker_task: asyncio.Task[None] | None = None
        try:
            scenario_file = self._write_scenario()
            self.children = [
                self._spawn(Shard(k, self.processes), scenario_file) for k in range(self.processes)
            ]
            await self._wait(lambda c: c.ready, self.ready_timeout, "connect all its nodes")
            start_at = time.monotonic() + START_LEAD_S
            for child in self.children:
                self._send(child, {"kind": "start", "at_monotonic": start_at})
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            self.clock.restart()
            self.echo(
                f"nigehbaan sim: {self.scenario.node_count} nodes up in {self.processes} "
                f"processes after {time.monotonic() - wall0:.1f} s; simulated time starts"
            )
            if self.broker is not None:
                broker_task = asyncio.ensure_future(self._broker_restarts())
            await self._follow(wall0, broker_task)
            reports = [
                json.loads(c.report_path.read_text(encoding="utf-8"))
                for c in self.children
                if c.report_path is not None
            ]
            await self._wait(lambda c: c.process.poll() is not None, 60.0, "exit")
        finally:
            if broker_task is not None and not broker_task.done():
                broker_task.cancel()
            self.stop()
        return merge_reports(
            self.scenario,
            reports,
            wall_s=time.monotonic() - wall0,
            parent_steps=self.broker_records,
            shards=[
                {"shard": c.shard.index, "nodes": c.nodes, "pid": c.process.pid, **c.usage}
                for c in self.children
            ],
        )

    def _write_scenario(self) -> Path:
        """The scaled scenario every shard loads, so all of them play the very same one."""
        path = self.work_dir / "shards" / "scenario.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.scenario.model_dump_json(), encoding="utf-8")
        return path

    def _spawn(self, shard: Shard, scenario_file: Path) -> _Child:
        # fmt: off
        command = [
            sys.executable, "-m", "simulators.scenario_shards",
            "--scenario", str(scenario_file),
            "--shard", str(shard.index), "--processes", str(shard.count),
            "--broker-url", self.broker_url,
            "--data-dir", str(self.work_dir / "nodes"),
            "--report-file", str(self.work_dir / "shards" / f"report-{shard.index}.json"),
            "--summary-every", str(self.summary_every_s),
            "--start-timeout", str(self.ready_timeout + 60.0),
            "--log-level", self.log_level,
        ]
        # fmt: on
        if self.broker is not None:
            command.append("--owns-broker")
        if self.node_logs:
            command.append("--node-logs")
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        child = _Child(shard=shard, process=process)
        assert process.stdout is not None
        assert process.stderr is not None
        child.readers = [
            threading.Thread(target=child.read_protocol, args=(process.stdout,), daemon=True),
            threading.Thread(target=child.read_log, args=(process.stderr, self.echo), daemon=True),
        ]
        for reader in child.readers:
            reader.start()
        return child

    def _send(self, child: _Child, message: dict[str, Any]) -> None:
        stdin = child.process.stdin
        if stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):  # it died: `_check` says so
            stdin.write(json.dumps(message) + "\n")
            stdin.flush()

    def _check(self) -> None:
        """`ShardError` for the first shard that failed or exited without its report."""
        for child in self.children:
            if child.error is None and child.process.poll() is None:
                continue
            child.finished_reading()
            if child.error is not None:
                raise ShardError(
                    f"{child.describe()} failed: {child.error}; stderr ends:\n{child.stderr_tail()}"
                )
            if child.report_path is None:
                raise ShardError(
                    f"{child.describe()} exited with code {child.process.returncode} before its "
                    f"report; stderr ends:\n{child.stderr_tail()}"
                )

    async def _wait(self, done: Callable[[_Child], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not all(done(c) for c in self.children):
            self._check()
            if time.monotonic() > deadline:
                late = next(c for c in self.children if not done(c))
                raise ShardError(
                    f"{late.describe()} did not {what} within {timeout:.0f} s; stderr ends:\n"
                    f"{late.stderr_tail()}"
                )
            await asyncio.sleep(0.1)

    async def _follow(self, wall0: float, broker_task: asyncio.Task[None] | None) -> None:
        """Print the combined summary until every shard has reported (bounded)."""
        deadline = time.monotonic() + self.run_timeout
        next_summary = time.monotonic() + self.summary_every_s
        last_events, last_time, last_heard, rate = 0, time.monotonic(), 0, 0.0
        while not all(c.report_path is not None for c in self.children):
            self._check()
            if broker_task is not None and broker_task.done() and broker_task.exception():
                raise ShardError(f"the broker restart failed: {broker_task.exception()}")
            now = time.monotonic()
            if now > deadline:
                late = [str(c.shard) for c in self.children if c.report_path is None]
                raise ShardError(
                    f"shard(s) {', '.join(late)} did not finish within {self.run_timeout:.0f} s"
                )
            if now >= next_summary:
                status = self.status()
                heard = sum(c.statuses for c in self.children)
                if heard != last_heard:  # a busy shard reports late: keep the last rate till then
                    rate = (status["events"] - last_events) / max(1e-3, now - last_time)
                    last_events, last_time, last_heard = status["events"], now, heard
                self.echo(self.summary_line(now - wall0, status, rate))
                next_summary = now + self.summary_every_s
            await asyncio.sleep(0.1)
        self.echo(self.summary_line(time.monotonic() - wall0, self.status(), 0.0) + "  (drained)")

    def status(self) -> dict[str, Any]:
        """The shards' latest figures added up (nodes: the whole fleet until all have said)."""
        merged = merge_status([c.status for c in self.children], sim_s=self.clock.elapsed())
        merged["nodes"] = max(merged["nodes"], self.scenario.node_count)
        return merged

    def summary_line(self, elapsed_s: float, status: dict[str, Any], rate: float) -> str:
        """The same line one process prints, over the whole fleet."""
        return format_summary(status, elapsed_s=elapsed_s, rate=rate, speed=self.scenario.speed)

    async def _broker_restarts(self) -> None:
        """Each ``broker_restart`` once, for every shard, on the shared clock."""
        assert self.broker is not None
        steps = sorted(
            (s.at_s, i, s)
            for i, s in enumerate(self.scenario.steps)
            if isinstance(s, BrokerRestartStep)
        )
        for number, (_, order, step) in enumerate(steps):
            await sleep_on(self.clock, step.at_s - self.clock.elapsed())
            # Every shard counts its connected nodes before the kill (bounded).
            asked = time.monotonic()
            everyone = await self._kill_asked_by_all(number + 1, timeout=KILL_BARRIER_S)
            killed = time.monotonic()
            await asyncio.to_thread(self.broker.kill)
            self._send_all({"kind": "broker", "state": "down"})
            self.echo(
                f"nigehbaan sim: broker killed at sim {self.clock.elapsed():.1f} s ("
                + (
                    f"{killed - asked:.1f} s waiting for the shards"
                    if everyone
                    else f"not every shard was ready after {KILL_BARRIER_S:.0f} s"
                )
                + f"); back in {step.down_s:g} s"
            )
            # Down for `down_s` from the kill itself, however late the shards let it come.
            await sleep_on(self.clock, step.down_s - (time.monotonic() - killed) * self.clock.speed)
            await asyncio.to_thread(self.broker.start)
            self._send_all({"kind": "broker", "state": "up"})
            self.broker_records.append(
                {
                    "step": order,
                    "action": step.action,
                    "at_s": round(step.at_s, 2),
                    "down_for_s": round(time.monotonic() - killed, 2),
                }
            )

    async def _kill_asked_by_all(self, count: int, *, timeout: float) -> bool:
        """Until every shard has asked for its `count`-th kill (True) or `timeout` (False)."""
        deadline = time.monotonic() + timeout
        while not all(c.kill_requests >= count for c in self.children):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _send_all(self, message: dict[str, Any]) -> None:
        for child in self.children:
            self._send(child, message)

    def stop(self) -> None:
        """End every shard still running: stdin closed, SIGTERM, then SIGKILL (bounded)."""
        for child in self.children:
            if child.process.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    child.process.stdin.close()
        stop_children([child.process for child in self.children])


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(child_main())
