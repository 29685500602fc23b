"""Runs a real `nigehbaan server` as a separate process, for tests, benchmarks and the demo.

A separate process is the point: chaos runs `kill -9` it and start it again on
the same database, exactly as a crash in the field would, and nothing in the
test shares memory with it.

Start-up waits for *this* child's ``nigehbaan server ready`` line (in its log,
after the point where this start began) as well as for ``/healthz``, so an
old server still holding the port is never mistaken for the new one. With
``die_with_parent`` the child gets SIGTERM from the kernel when the process
that started it dies (Linux ``PR_SET_PDEATHSIG``), even by ``kill -9``, and
then stops its managed broker itself.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

from fleet_server.broker import free_port

logger = logging.getLogger(__name__)

READY_LINE = b"nigehbaan server ready "
_PR_SET_PDEATHSIG = 1


class ServerProcessError(RuntimeError):
    """The server process could not be started or did not become healthy."""


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the kernel SIGTERMs the child when the thread that forked it dies.

    libc is loaded here, in the parent, so the child does no dynamic loading
    between fork and exec; a parent that died before the prctl took effect
    is caught by comparing the parent pid.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_child() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


class ServerProcess:
    """A `nigehbaan server` subprocess on a loopback port with its own data dir."""

    def __init__(
        self,
        *,
        data_dir: Path,
        broker_url: str | None,
        port: int | None = None,
        db_url: str | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.broker_url = broker_url
        self.port = port or free_port()
        self.db_url = db_url or f"sqlite:///{data_dir / 'fleet.db'}"
        self.extra_args = extra_args
        self.env = env or {}
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only for
        # callers that start the server from a thread that lives as long as they do.
        self.die_with_parent = die_with_parent
        self.log_path = data_dir / "server.log"
        self._log_offset = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (for profilers and CPU accounting)."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, *args: str) -> list[str]:
        """The `nigehbaan` command line with this server's database and data dir."""
        return [
            sys.executable,
            "-m",
            "edge_agent.console",
            "server",
            "--db",
            self.db_url,
            "--data-dir",
            str(self.data_dir),
            *args,
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("NIGEHBAAN_ENV", "dev")
        env.update(self.env)
        return env

    def run_cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a one-shot server CLI command (create a user, …) against this database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self._environment(), **(env or {})},
            check=False,
        )

    def login(self, username: str, password: str, *, timeout: float = 30.0) -> str:
        """An API access token for a user of this server (`httpx.HTTPStatusError` if refused)."""
        response = httpx.post(
            f"{self.base_url}/api/v1/login/access-token",
            data={"username": username, "password": password},
            timeout=timeout,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def start(self, *, timeout: float = 30.0) -> None:
        """Start the server and wait until /healthz answers."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._log_file = log
        self._log_offset = log.tell()
        self._process = subprocess.Popen(
            self.command(
                # None: the server brings its own broker (--managed-broker in extra_args).
                *(("--broker-url", self.broker_url) if self.broker_url else ()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.extra_args,
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            start_new_session=True,
            preexec_fn=_die_with_parent() if self.die_with_parent else None,
        )
        self.wait_healthy(timeout=timeout)

    def _said_ready(self) -> bool:
        """Whether this start's child printed its ready line (not an earlier run's)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return READY_LINE in log.read()
        except FileNotFoundError:
            return False

    def wait_healthy(self, *, timeout: float = 30.0) -> None:
        """Wait for our child's ready line and a 200 from /healthz, or raise with the log.

        A server that answers /healthz but is not our child (an orphan of an
        earlier run on the same port) is not adopted: our child cannot bind
        the port, exits, and this raises.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise ServerProcessError(f"server exited during start-up\n{self.log_text()}")
            if not self._said_ready():
                time.sleep(0.1)
                continue
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ServerProcessError(f"server not healthy within {timeout}s\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        proc = self._process
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("server ignored SIGTERM for %ss; killing", timeout)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._process = None
        self._close_log()

    def log_text(self, *, tail: int = 200) -> str:
        """The last lines of the server's output, for failure reports."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(lines[-tail:])
