"""End to end: nodes get their identity through the real enrollment API and talk over mutual TLS.

A real `nigehbaan server` process with its dev PKI and its managed Mosquitto
(TLS listener, client certificates, ACL, CRL), nodes running the real agent
on mock pins. Written to docs/provisioning.md; skipped, naming what is
missing, while the server side of issue 4 is not there.

Stories: a node flashed with a token enrolls through ``nigehbaan agent
--enroll`` and its press reaches the operator over mqtts; a preauthorized
fleet enrolls through `SimFleet.enrolled`; a short-lived certificate is
renewed while the node keeps working and loses no press; a commissioning run
(`nigehbaan tech commission --simulated-press`) passes with a test press that
does not escalate.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config_file
from edge_agent.renewal import CertificateRenewer
from fleet_server.broker import free_port
from fleet_server.tech_cli import PRESS_NOW
from hardware.backends import SimBackend
from hardware.button import SimButton
from simulators.enrollment import EnrollmentPlan
from simulators.fleet import SimFleet
from simulators.server_process import ServerProcess
from tests.support.e2e import until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

API = "/api/v1"
NEEDED_PATHS = (
    f"{API}/enroll",
    f"{API}/enroll/renew",
    f"{API}/enrollment-tokens",
    f"{API}/preauthorized",
    f"{API}/nodes/{{node_id}}/commands",
    f"{API}/nodes/{{node_id}}/lifecycle",
)
FAST: dict[str, dict[str, Any]] = {
    "mqtt": {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "keepalive_s": 5},
}


@dataclass
class PkiStack:
    """A server with its PKI and managed TLS broker; an admin token; the CA chain."""

    server: ServerProcess
    token: str
    password: str
    ca_chain_pem: str
    work: Path

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent.console", *args],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "NB_PW": self.password, **(env or {})},
        )  # fmt: skip

    def login_args(self) -> list[str]:
        return ["--server", self.server.base_url, "--user", "chief", "--password-env", "NB_PW"]


def _start(tmp_path: Path, env: dict[str, str]) -> Iterator[PkiStack]:
    server = ServerProcess(
        data_dir=tmp_path / "server",
        broker_url=None,
        extra_args=("--managed-broker", "--managed-broker-port", str(free_port())),
        env={
            "NIGEHBAAN_MQTT_CLIENT_ID": "fleet-server",
            "NIGEHBAAN_OFFLINE_GRACE_S": "1",
            "NIGEHBAAN_ESCALATION_TICK_S": "0.2",
            "NIGEHBAAN_MQTTS_PORT": "0",  # a free port, reported in broker_url
            "NIGEHBAAN_ENROLL_RATE_PER_MIN": "600",
            **env,
        },
    )  # fmt: skip
    password = secrets.token_urlsafe(12)
    created = server.run_cli(
        "--create-admin", "chief", "--password-env", "NB_PW", env={"NB_PW": password}
    )
    if created.returncode != 0:
        pytest.skip(
            f"server cannot be prepared for PKI stories yet: {created.stderr.strip()[-300:]}"
        )
    try:
        server.start()
    except Exception as exc:
        pytest.skip(f"server does not start with the provisioning options yet: {str(exc)[-500:]}")
    try:
        paths = httpx.get(f"{server.base_url}{API}/openapi.json", timeout=10).json()["paths"]
        missing = [p for p in NEEDED_PATHS if p not in paths]
        if missing:
            pytest.skip(f"server side of issue 4 not built yet (missing {', '.join(missing)})")
        token = httpx.post(
            f"{server.base_url}{API}/login/access-token",
            data={"username": "chief", "password": password},
            timeout=10,
        ).json()["access_token"]
        ca_chain = (server.data_dir / "pki" / "ca-chain.pem").read_text(encoding="ascii")
        yield PkiStack(server, token, password, ca_chain, tmp_path)
    except BaseException:
        print("--- server log ---\n" + server.log_text())
        raise
    finally:
        server.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[PkiStack]:
    yield from _start(tmp_path, {})


def panic_alerts(stack: PkiStack, node_id: str) -> list[dict[str, Any]]:
    with stack.api() as api:
        rows: list[dict[str, Any]] = api.get(f"{API}/alerts", params={"node_id": node_id}).json()[
            "data"
        ]
    return [a for a in rows if a["type"] == "panic"]


def panic_event_ids(stack: PkiStack, node_id: str) -> set[str]:
    with stack.api() as api:
        rows = api.get(f"{API}/events", params={"node_id": node_id, "type": "panic"}).json()
    return {r["event_id"] for r in rows["data"]}


def flash_and_enroll(stack: PkiStack, serial: str, *, node_id: str | None = None) -> Path:
    """A technician makes a token and flashes; the node enrolls at first boot (real CLIs)."""
    token = stack.cli("tech", "token", *stack.login_args(), "--site", "lahore-gulberg-site-0001",
                      "--district", "lahore-gulberg")  # fmt: skip
    assert token.returncode == 0, token.stderr
    boot = stack.work / f"boot-{serial}"
    boot.mkdir()
    ca_file = stack.work / "ca-chain.pem"
    ca_file.write_text(stack.ca_chain_pem, encoding="ascii")
    flashed = stack.cli(
        "tech", "flash", str(boot), "--server-url", stack.server.base_url, "--ca-chain",
        str(ca_file), "--token-env", "NB_TOKEN", "--site", "lahore-gulberg-site-0001",
        "--district", "lahore-gulberg", *(["--node-id", node_id] if node_id else []),
        env={"NB_TOKEN": token.stdout.strip()},
    )  # fmt: skip
    assert flashed.returncode == 0, flashed.stderr
    data_dir = stack.work / f"node-{serial}"
    enrolled = stack.cli("agent", "--enroll", str(boot / "nigehbaan-bundle.json"),
                         "--data-dir", str(data_dir), "--serial", serial)  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    return data_dir


def node_agent(data_dir: Path, **identity: Any) -> Agent:
    config = load_config_file(data_dir / "agent.toml")
    data = config.model_dump(mode="json")
    for section, values in {**FAST, "identity": identity}.items():
        data[section] = {**data[section], **values}
    data["hardware"] = {"type": "sim"}  # named: a node never falls back to simulation by itself
    return Agent.from_dict(data, backend=SimBackend())


async def press(agent: Agent) -> None:
    button = agent.button
    assert isinstance(button, SimButton)
    button.press()
    await asyncio.sleep(0.08)
    button.release()


def test_a_node_flashed_with_a_token_enrolls_and_its_press_reaches_the_server_over_mqtts(
    stack: PkiStack,
) -> None:
    data_dir = flash_and_enroll(stack, "PI-10000000A1B2C3D4", node_id="lhr-gulberg-0001")
    assert load_config_file(data_dir / "agent.toml").mqtt.url.startswith("mqtts://")
    agent = node_agent(data_dir)

    async def story() -> None:
        task = asyncio.ensure_future(agent.run())
        try:
            await until(lambda: agent.connected, what="mqtts connection")
            await press(agent)
            await until(lambda: panic_alerts(stack, agent.node_id), what="the alert")
            await until(lambda: agent.outbox_depth == 0, what="the ack")
        finally:
            agent.stop()
            await task

    asyncio.run(story())
    with stack.api() as api:
        node = api.get(f"{API}/nodes/{agent.node_id}").json()
    assert node["serial"] == "PI-10000000A1B2C3D4"
    # A used token cannot enroll a second node.
    bundle = json.loads(
        (stack.work / "boot-PI-10000000A1B2C3D4" / "nigehbaan-bundle.json").read_text()
    )
    again = stack.cli("agent", "--enroll", str(stack.work / "boot-PI-10000000A1B2C3D4" /
                      "nigehbaan-bundle.json"), "--data-dir", str(stack.work / "thief"),
                      "--serial", "OTHER-1")  # fmt: skip
    assert bundle["token"]
    assert again.returncode == 4
    assert "token_used" in again.stderr


def test_a_preauthorized_fleet_enrolls_through_the_factory_csv_and_presses_arrive(
    stack: PkiStack,
) -> None:
    async def story() -> None:
        plan = EnrollmentPlan(
            server_url=stack.server.base_url, ca_chain_pem=stack.ca_chain_pem,
            admin_token=stack.token, mode="preauthorized",
        )  # fmt: skip
        fleet = await SimFleet.enrolled(
            plan, data_dir=stack.work / "nodes", count=3, overrides=FAST
        )
        assert fleet.broker_url.startswith("mqtts://")
        await fleet.start(connect_timeout=30)
        try:
            for i in range(3):
                await fleet.press(i)
            await until(lambda: fleet.outbox_depth() == 0, what="every press acked")
            for node in fleet.nodes:
                assert panic_alerts(stack, node.node_id)
        finally:
            await fleet.stop()

    asyncio.run(story())


def test_certificates_renewed_again_and_again_keep_the_node_working_and_lose_no_press(
    stack: PkiStack,
) -> None:
    # The server's shortest lifetime is a day (node_cert_days), so the node is
    # told to renew when less than 99.99999 % is left: every check renews.
    data_dir = flash_and_enroll(stack, "PI-RENEW-0001", node_id="lhr-gulberg-0002")
    agent = node_agent(
        data_dir, renew_check_interval_s=3.0, renew_retry_s=1.0, renew_when_left=0.9999999
    )
    renewer = CertificateRenewer(agent)
    cert_before = (data_dir / "identity" / "node.pem").read_bytes()

    async def story() -> None:
        task = asyncio.ensure_future(agent.run())
        renewal = asyncio.ensure_future(renewer.run())
        try:
            await until(lambda: agent.connected, what="mqtts connection")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # press every 0.5 s across the renewals
                await press(agent)
                await asyncio.sleep(0.5)
            assert renewer.renewals >= 3, renewer.last_error
            assert agent.transport is not None
            assert agent.transport.connects >= 3  # type: ignore[attr-defined]
            await until(lambda: agent.connected and agent.outbox_depth == 0, what="all acked")
        finally:
            renewer.stop()
            agent.stop()
            await task
            renewal.cancel()

    asyncio.run(story())
    assert (data_dir / "identity" / "node.pem").read_bytes() != cert_before
    assert set(agent.panic_event_ids) <= panic_event_ids(stack, agent.node_id)
    (alert,) = panic_alerts(stack, agent.node_id)
    assert alert["press_count"] == len(agent.panic_event_ids)


def test_commissioning_passes_with_a_test_press_that_does_not_escalate(stack: PkiStack) -> None:
    data_dir = flash_and_enroll(stack, "PI-COMM-0001", node_id="lhr-gulberg-0003")
    agent = node_agent(data_dir)

    async def story() -> subprocess.CompletedProcess[str]:
        task = asyncio.ensure_future(agent.run())
        try:
            await until(lambda: agent.connected, what="mqtts connection")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edge_agent.console", "tech", "commission", agent.node_id,
                *stack.login_args(), "--json", "--simulated-press",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "NB_PW": stack.password},
            )  # fmt: skip
            assert proc.stderr is not None
            prompt = ""
            while PRESS_NOW not in prompt:
                line = await asyncio.wait_for(proc.stderr.readline(), 60)
                if not line:
                    out = await proc.stdout.read() if proc.stdout else b""
                    raise AssertionError(f"commissioning ended before the press:\n{out.decode()}")
                prompt = line.decode()
            assert agent.test_mode
            await press(agent)  # the technician's test press, on the mock pin
            out, err = await asyncio.wait_for(proc.communicate(), 90)
            return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), err.decode())
        finally:
            agent.stop()
            await task

    done = asyncio.run(story())
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["passed"] is True
    assert report["lifecycle"] == "commissioned"
    assert not agent.test_mode
    (alert,) = panic_alerts(stack, agent.node_id)
    assert alert["state"] == "test"
    with stack.api() as api:
        assert api.get(f"{API}/alerts/{alert['id']}/escalations").json() == []
