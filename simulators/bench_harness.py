"""What every `nigehbaan bench …` benchmark shares: the result, its output, and the loopback stack.

A benchmark measures; it never asserts. Each prints one JSON line — its
result — and saves it as ``<bench>-<UTC timestamp>.json`` in
``var/bench-results/`` (ignored by git: results are local artifacts, and
docs/benchmarks.md keeps the figures that matter). A result is the bench's
own figures in an envelope (`bench_result`, `publish`): the machine it ran
on, when it started and finished, and the command line that ran it.

Everything runs on loopback, in a work directory thrown away afterwards
unless one is given (`bench_work_dir`): a private Mosquitto
(`loopback_broker`) and, where the server is measured, a ``nigehbaan
server`` process with an MQTT client id of its own (`bench_server`). A
benchmark's child processes (sinks, measured fleets) answer their parent
with `emit` lines on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `nigehbaan` imports this for its options: nothing heavy at import time
    from fleet_server.broker import ManagedBroker
    from simulators.server_process import ServerProcess

# Relative to where the benchmark runs (the checkout): ignored by git (/var/ in .gitignore).
DEFAULT_RESULTS_DIR = Path("var") / "bench-results"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # 1, 5 and 15 minute load averages when the result is made: shared machines vary.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def utc_iso(at: float | None = None) -> str:
    """A wall-clock time (default now) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def bench_result(bench: str, figures: Mapping[str, Any], *, started_at: float) -> dict[str, Any]:
    """`figures` in the envelope every result carries: bench name, machine, start and finish.

    `started_at` is the wall-clock time (``time.time()``) the run began.
    """
    return {
        "bench": bench,
        **figures,
        "machine": machine(),
        "started_at": utc_iso(started_at),
        "finished_at": utc_iso(),
    }


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran the benchmark, as one shell-quoted line."""
    return shlex.join(["nigehbaan", *(sys.argv[1:] if argv is None else argv)])


def save_result(result: Mapping[str, Any], results_dir: Path) -> Path:
    """Write `result` as ``<bench>-<timestamp>.json`` in `results_dir` and return the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = results_dir / f"{result['bench']}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--results-dir``, the same on every benchmark."""
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        help=f"where to save results (default {DEFAULT_RESULTS_DIR}/, ignored by git)",
    )


def publish(result: dict[str, Any], args: argparse.Namespace) -> Path:
    """Add the command line, save the result, print its JSON line (and where it went)."""
    result["command"] = command_line()
    path = save_result(result, args.results_dir)
    # The CLI's output (this module is not named *_cli, where print is the rule).
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()
    if not args.json:
        sys.stderr.write(f"saved {path}\n")
    return path


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit towards `wanted` (each node holds a socket and a db)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def stop_children(processes: list[subprocess.Popen[str]], *, grace_s: float = 10.0) -> None:
    """End child processes: SIGTERM to all, then SIGKILL any still running after `grace_s`."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace_s)


def emit(line: str) -> None:
    """A line for the parent process on stdout (a benchmark child's whole output)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def own_cpu_s() -> float:
    """User + system CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def bench_work_dir(work_dir: Path | None, *, prefix: str = "nb-bench-") -> Iterator[Path]:
    """`work_dir` (made if missing, kept), or a temporary directory removed afterwards."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def loopback_broker(work: Path) -> Iterator[ManagedBroker]:
    """A private Mosquitto on a free loopback port, state under ``work/broker``, stopped after."""
    from fleet_server.broker import ManagedBroker

    broker = ManagedBroker.loopback(work / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def bench_server(
    *,
    work: Path,
    broker_url: str,
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """A ``nigehbaan server`` process (not started) under ``work/server`` on `broker_url`.

    Its MQTT client id is its own, so a server left over from an earlier run
    on the same broker cannot take its session over.
    """
    from simulators.server_process import ServerProcess

    return ServerProcess(
        data_dir=work / "server",
        broker_url=broker_url,
        db_url=db_url,
        env={
            "NIGEHBAAN_MQTT_CLIENT_ID": f"fleet-server-bench-{secrets.token_hex(4)}",
            **(env or {}),
        },
    )
