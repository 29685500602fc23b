"""What the end-to-end stories share: a broker + server stack on loopback, and polling.

Each story starts its own Mosquitto and `nigehbaan server` process (so it may
SIGKILL either), with an admin account whose token it uses for the API.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from fleet_server.broker import ManagedBroker
from simulators.server_process import ServerProcess
from tests.support import polling

API = "/api/v1"
T = TypeVar("T")


@dataclass
class Stack:
    """A broker, a server process and an admin token, all on loopback."""

    broker: ManagedBroker
    server: ServerProcess
    token: str
    work: Path

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )


@contextlib.contextmanager
def running_stack(work: Path, *, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Start a broker and a server (extra `NIGEHBAAN_*` settings in `env`); logs on failure."""
    broker = ManagedBroker.loopback(work / "broker")
    broker.start()
    server = ServerProcess(
        data_dir=work / "server",
        broker_url=broker.url,
        env={"NIGEHBAAN_MQTT_CLIENT_ID": f"fleet-server-{secrets.token_hex(4)}", **(env or {})},
    )
    try:
        password = secrets.token_urlsafe(12)
        created = server.run_cli(
            "--create-admin", "chief", "--password-env", "NB_PW", env={"NB_PW": password}
        )
        assert created.returncode == 0, created.stderr
        server.start()
        token = httpx.post(
            f"{server.base_url}{API}/login/access-token",
            data={"username": "chief", "password": password},
            timeout=10,
        ).json()["access_token"]
        yield Stack(broker=broker, server=server, token=token, work=work)
    except BaseException:
        print("--- server log ---\n" + server.log_text())
        print("--- broker log ---\n" + broker.log_text())
        raise
    finally:
        server.stop()
        broker.stop()


async def until(check: Callable[[], T], *, what: str, timeout: float = 30.0) -> T:
    """`polling.until` for checks that do HTTP: each poll runs in a worker thread."""
    return await polling.until(check, what, timeout=timeout, interval=0.1, blocking=True)
