"""`nigehbaan demo` owns what it starts, and never takes someone else's server for its own.

The stories: a demo stopped with SIGTERM (what `systemd`, `docker stop` or a
closed terminal send) stops its pillars, its fleet server and the server's
Mosquitto, and frees every port it used; a demo started while something
already answers on the console port says so in one line and exits at once,
instead of adopting the old server and hanging; `ServerProcess` does not
take an old server answering `/healthz` on its port for the child it started.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import pytest

from fleet_server.broker import free_port
from simulators.server_process import ServerProcess, ServerProcessError
from tests.support.polling import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]
READY = "Nigehbaan demo fleet is running."


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _demo(data_dir: Path, port: int, stderr: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*NIGEHBAAN, "demo", "--nodes", "2", "--port", str(port), "--data-dir", str(data_dir),
         "--press-every", "0"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
        env={**os.environ, "NIGEHBAAN_DEMO_PASSWORD": "demo-pw-lifecycle"},
    )  # fmt: skip


def _lines(stream: object) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until_ready(
    demo: subprocess.Popen[str], lines: queue.Queue[str], *, timeout: float
) -> str:
    seen: list[str] = []

    def ready() -> bool:
        assert demo.poll() is None, f"the demo exited ({demo.returncode}): {''.join(seen)}"
        while not lines.empty():
            seen.append(lines.get())
        text = "".join(seen)
        return READY in text and "Press Ctrl-C" in text

    wait_for(ready, "the demo's banner", timeout=timeout, interval=0.1)
    return "".join(seen)


@pytest.mark.parametrize(
    ("sig", "exit_code"),
    [(signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["sigterm", "kill-9"],
)
def test_a_stopped_demo_takes_its_server_and_broker_with_it_and_frees_the_ports(
    tmp_path: Path, sig: signal.Signals, exit_code: int
) -> None:
    """SIGTERM: an orderly stop (exit 0). kill -9: the kernel's PDEATHSIG stops the server."""
    port = free_port()
    stderr = (tmp_path / "demo.err").open("w")
    demo = _demo(tmp_path / "demo", port, stderr)
    survivors: list[int] = []
    try:
        try:
            banner = _read_until_ready(demo, _lines(demo.stdout), timeout=120)
        except AssertionError as exc:  # say why: the demo's own stderr (a port taken, …)
            stderr.flush()
            tail = (tmp_path / "demo.err").read_text()[-3000:]
            raise AssertionError(f"{exc}\n--- demo stderr ---\n{tail}") from None
        server_pids = [p for p in _children(demo.pid) if _alive(p)]
        assert server_pids, "the demo runs its fleet server as a child process"
        pid_file = tmp_path / "demo" / "server" / "broker" / "mosquitto.pid"
        broker_pid = int(pid_file.read_text().strip())
        survivors = [*server_pids, broker_pid]
        assert all(_alive(p) for p in survivors)
        mqtts = int(re.search(r"mqtts://127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
        watch = int(re.search(r"-p (\d+) -t", banner).group(1))  # type: ignore[union-attr]
        ports = [port, mqtts, watch]
        assert not any(_port_free(p) for p in ports)

        demo.send_signal(sig)

        assert demo.wait(timeout=60) == exit_code, (tmp_path / "demo.err").read_text()
        wait_for(lambda: not any(_alive(p) for p in survivors), "children to stop", timeout=20)
        wait_for(lambda: all(_port_free(p) for p in ports), "the ports to be free", timeout=10)
    finally:
        for pid in [demo.pid, *survivors]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        demo.wait(timeout=10)
        stderr.close()


class _OldServer(BaseHTTPRequestHandler):
    """An orphaned server from an earlier run: healthy, and not ours."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815 - the name http.server dispatches to

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def old_server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OldServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_taken_console_port_is_refused_at_once_with_one_clear_line(
    tmp_path: Path, old_server: int
) -> None:
    result = subprocess.run(
        [*NIGEHBAAN, "demo", "--nodes", "2", "--port", str(old_server),
         "--data-dir", str(tmp_path / "demo"), "--duration", "5"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NIGEHBAAN_DEMO_PASSWORD": "demo-pw-lifecycle"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {old_server} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "demo" / "server").exists(), "nothing was started"


def test_a_server_process_never_adopts_an_old_server_answering_on_its_port(
    tmp_path: Path, old_server: int
) -> None:
    server = ServerProcess(
        data_dir=tmp_path / "server", broker_url=None, port=old_server, extra_args=("--no-mqtt",)
    )
    try:
        with pytest.raises(ServerProcessError, match="exited during start-up"):
            server.start(timeout=60)
    finally:
        server.stop()
