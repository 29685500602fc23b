"""Starting, waiting for, stopping and crashing a private Mosquitto process.

Used by the fleet server in the embedded deployment, by `nigehbaan demo`, and
by tests, which start one per session on a free port. `kill()` is a real
SIGKILL so chaos tests exercise what a crash does, and `start()` again reuses
the same port and persistence directory, as a restarted broker would.

With `BrokerConfig.read_denials` the broker logs to its stdout (line-buffered
through coreutils' ``stdbuf``; Mosquitto block-buffers a pipe) and a reader
thread passes each line on: ACL denials to `ManagedBroker.denials`
(`fleet_server.broker.denials`), per-packet traces nowhere, everything else
to ``mosquitto.log`` as before. Mosquitto ignores SIGPIPE, so a server killed
hard leaves a broker that still serves (the next start stops it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from fleet_server.broker.config import BrokerConfig, Listener
from fleet_server.broker.denials import DenialCounter, parse_denial

logger = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be found, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError(
            "mosquitto not found; run `make test` or `make demo` (they install it), "
            "or `sudo apt-get install mosquitto`"
        )
    return found


def stop_leftover(data_dir: Path, *, timeout: float = 10.0) -> int | None:
    """SIGTERM (then SIGKILL) a Mosquitto left running under `data_dir`; its pid, or None.

    A managed broker outlives its server only when the server was killed
    hard. Its pid file names it; the process is touched only if its command
    line is mosquitto with a config under `data_dir`, so a reused pid is safe.
    """
    pid_path = data_dir / "mosquitto.pid"
    try:
        pid = int(pid_path.read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    if "mosquitto" not in cmdline or str(data_dir) not in cmdline:
        return None
    logger.warning("stopping mosquitto pid %s left running under %s", pid, data_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return pid
            time.sleep(0.05)
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


# What Mosquitto's `debug` level says about every packet: not worth a disk.
_PACKET_TRACES = ("Received ", "Sending ", "No will message", "Will message specified", "\t")


def is_packet_trace(line: str) -> bool:
    """Whether a broker log line (after its timestamp) is a per-packet debug trace."""
    _, sep, rest = line.partition(": ")
    return rest.startswith(_PACKET_TRACES) if sep else line.startswith(_PACKET_TRACES)


class ManagedBroker:
    """A Mosquitto process we own, configured from a BrokerConfig."""

    def __init__(self, config: BrokerConfig, *, binary: str | None = None) -> None:
        self.binary = binary or find_mosquitto()
        self._stdbuf = shutil.which("stdbuf")
        if config.read_denials and self._stdbuf is None:
            logger.warning("stdbuf (coreutils) not found: broker ACL denials are not counted")
            config = dataclasses.replace(config, read_denials=False)
        self.config = config
        # Survives restarts: the totals are the server's, not one broker process's.
        self.denials = DenialCounter()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_reader: threading.Thread | None = None

    @classmethod
    def loopback(cls, data_dir: Path, *, port: int | None = None) -> ManagedBroker:
        """A development broker: one anonymous plain listener on 127.0.0.1."""
        listener = Listener(port=port or free_port(), allow_anonymous=True)
        return cls(BrokerConfig(data_dir=data_dir, listeners=(listener,)))

    @property
    def host(self) -> str:
        return self.config.listeners[0].bind_address

    @property
    def port(self) -> int:
        return self.config.listeners[0].port

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.config.listeners[0].tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        """`mqtts://host:port` of the first TLS listener, if there is one."""
        for listener in self.config.listeners:
            if listener.tls is not None:
                wildcard = listener.bind_address in ("0.0.0.0", "::")  # noqa: S104 - a comparison
                host = "127.0.0.1" if wildcard else listener.bind_address
                return f"mqtts://{host}:{listener.port}"
        return None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, *, timeout: float = 10.0) -> None:
        """Write the config, start mosquitto and wait until every listener accepts."""
        if self.running:
            return
        config_path = self.config.write()
        command = [self.binary, "-c", str(config_path)]
        reading = self.config.read_denials and self._stdbuf is not None
        if reading:
            command = [str(self._stdbuf), "-oL", *command]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if reading else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if reading and self._process.stdout is not None:
            self._log_reader = threading.Thread(
                target=self._read_log,
                args=(self._process.stdout,),
                name="mosquitto-log",
                daemon=True,
            )
            self._log_reader.start()
        self.wait_ready(timeout=timeout)
        logger.info("mosquitto pid %s ready at %s", self._process.pid, self.url)

    def wait_ready(self, *, timeout: float = 10.0) -> None:
        """Block until each listener accepts a TCP connection, or raise BrokerError."""
        deadline = time.monotonic() + timeout
        pending = list(self.config.listeners)
        while pending:
            proc = self._process
            if proc is None or proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc and proc.stderr else ""
                raise BrokerError(
                    f"mosquitto exited during start-up (code {proc.returncode if proc else '?'})"
                    f"\n{err}\n--- log ---\n{self.log_text()}"
                )
            listener = pending[0]
            try:
                with socket.create_connection((listener.bind_address, listener.port), 0.2):
                    pending.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(
                    f"mosquitto did not accept on {listener.bind_address}:{listener.port} "
                    f"within {timeout}s\n--- log ---\n{self.log_text()}"
                )
            time.sleep(0.02)

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop cleanly (SIGTERM lets mosquitto save its persistent store)."""
        proc = self._process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("mosquitto ignored SIGTERM for %ss; killing", timeout)
                proc.kill()
                proc.wait(timeout=timeout)
        self._close(proc)

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would; nothing is saved."""
        proc = self._process
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self._close(proc)

    def restart(self, *, hard: bool = False, down_for: float = 0.0) -> None:
        """Stop (or kill, when `hard`) and start again on the same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads ACL, password and CRL files."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGHUP)

    def _read_log(self, stream: IO[bytes]) -> None:
        """Until the broker exits: denials counted, packet traces dropped, the rest to the log."""
        with stream, self.config.log_path.open("ab", buffering=0) as log:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace")
                denial = parse_denial(line)
                if denial is not None:
                    self.denials.record(denial)
                elif is_packet_trace(line):
                    continue
                log.write(raw)

    def _close(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stderr is not None:
            proc.stderr.close()
        reader, self._log_reader = self._log_reader, None
        if reader is not None:
            reader.join(timeout=5)
        self._process = None

    def log_text(self, *, tail: int = 200) -> str:
        """The last `tail` lines of the broker's log, for failure reports."""
        try:
            lines = self.config.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log written yet)"
        return "\n".join(lines[-tail:])

    def __enter__(self) -> ManagedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
