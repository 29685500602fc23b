"""The real agent, run by `nigehbaan ota launch` from its app slot against a real broker:
a new version commits through the agent's own health gate, and a version that cannot
even be imported is switched back by the launcher's boot budget, after which the old
version's agent reports the rollback (the failed version and its campaign).

The app artifacts are copies of this repository's `edge_agent`, `ota`, `proto` and
`hardware` packages built with `nigehbaan ota build --kind app`; each copy's
`edge_agent/__init__.py` gains one line that records which version was imported, from
which file, so the test sees the slot's code run rather than the installed package.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.broker import ManagedBroker
from ota.artifacts import ArtifactKind
from ota.slots import SlotStore
from proto.codec import decode_uplink
from proto.messages import OtaEvent
from proto.topics import PREFIX
from tests.support.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_agent", "ota", "proto", "hardware")


def _build(tmp_path: Path, version: str, *, broken: bool = False) -> Path:
    src = tmp_path / f"src-{version}"
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / "edge_agent" / "__init__.py", "a", encoding="utf-8") as init:
        init.write(
            "\nimport os as _os\n"
            'if _os.environ.get("PROBE_LOG"):\n'
            '    with open(_os.environ["PROBE_LOG"], "a") as _log:\n'
            f'        _log.write("{version} " + __file__ + "\\n")\n'
        )
        if broken:
            init.write("raise SystemExit(4)  # the new version cannot start at all\n")
    out = tmp_path / f"agent-{version}.tar"
    done = subprocess.run(
        [
            sys.executable, "-m", "edge_agent.console", "ota", "build", str(src),
            "--kind", "app", "--name", "agent", "--version", version, "--hardware", "sim",
            "--out", str(out),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


class Node:
    def __init__(self, tmp_path: Path, broker: ManagedBroker) -> None:
        self.data = tmp_path / "node"
        self.slots = self.data / "ota" / "slots"
        self.config = tmp_path / "agent.toml"
        self.config.write_text(
            f'node_id = "pillar-5"\nserial = "SN5"\ndata_dir = "{self.data}"\n'
            f'dev_mode = true\n[hardware]\ntype = "sim"\n'
            f'[mqtt]\nurl = "{broker.url}"\nreconnect_min_s = 0.1\n'
            '[ota]\nenabled = true\nkinds = ["app"]\nhardware = "sim"\nmax_boots = 1\n'
            'first_check_s = 86400\nrepository_url = "http://127.0.0.1:9/ota"\n'
        )
        self.probe = tmp_path / "imported.txt"
        self.store = SlotStore(self.slots, ArtifactKind.APP, max_boots=1)

    def install(self, artifact: Path, campaign: str) -> None:
        """What the OTA component does with a verified artifact: install, switch, restart."""
        first = self.store.active_slot() is None
        self.store.install(artifact)
        if not first:
            self.store.switch(now=_now(), deadline_s=600.0, campaign=campaign)
            self.store.mark_clean_shutdown()

    def launch(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING",
                "ota", "launch", "--config", str(self.config), "--poll-s", "0.2",
            ],
            env={**os.environ, "PROBE_LOG": str(self.probe)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def imported(self) -> list[str]:
        return self.probe.read_text().splitlines() if self.probe.exists() else []


class Uplink:
    """The node's `ota` events as the server would receive them (never acked: resent ok)."""

    def __init__(self, broker: ManagedBroker) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, OtaEvent] = {}
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="srv-pillar-5", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda client, *_: client.subscribe(f"{PREFIX}/pillar-5/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def _message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if "/cmd/" in msg.topic or msg.topic.endswith("/ack"):
            return
        message = decode_uplink(msg.topic, bytes(msg.payload)).message
        if isinstance(message, OtaEvent):
            with self.lock:
                self.events[message.event_id] = message

    def phases(self) -> list[tuple[str, str]]:
        with self.lock:
            ordered = sorted(self.events.values(), key=lambda e: e.seq)
        return [(e.phase, e.version) for e in ordered]

    def of_phase(self, phase: str) -> list[OtaEvent]:
        with self.lock:
            return [e for e in self.events.values() if e.phase == phase]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _now() -> float:
    import time

    return time.time()


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_the_real_agent_runs_from_its_slot_commits_and_a_broken_one_is_rolled_back(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    node = Node(tmp_path, broker)
    uplink = Uplink(broker)
    assert uplink.subscribed.wait(10)
    try:
        _story(node, uplink, tmp_path)
    finally:
        uplink.close()


def _story(node: Node, uplink: Uplink, tmp_path: Path) -> None:
    node.install(_build(tmp_path, "1.0.0"), "first")
    node.install(_build(tmp_path, "2.0.0"), "spring")

    running = node.launch()
    try:
        wait_for(
            lambda: node.store.status().committed_version == "2.0.0" or running.poll() is not None,
            "2.0.0 committed by the agent's health gate",
            timeout=90,
        )
    finally:
        code = _stop(running)
    output = running.stdout.read() if running.stdout else ""
    assert node.store.status().committed_version == "2.0.0", output
    assert code == 0, output  # a stop asked of it
    assert node.imported() == [f"2.0.0 {node.slots}/app/slots/b/edge_agent/__init__.py"]
    wait_for(lambda: uplink.of_phase("healthy"), "the healthy event", timeout=30)
    assert uplink.phases() == [("healthy", "2.0.0")]

    node.install(_build(tmp_path, "3.0.0", broken=True), "summer")
    codes: list[int] = []
    back: subprocess.Popen[str] | None = None
    for _ in range(6):  # systemd's Restart=always, bounded
        process = node.launch()
        wait_for(
            lambda p=process: (
                p.poll() is not None  # type: ignore[misc]
                or any(line.startswith("2.0.0") for line in node.imported()[1:])
            ),
            "the launcher to end, or 2.0.0 to start again",
            timeout=90,
        )
        if process.poll() is None:
            back = process
            break
        codes.append(process.returncode)
    assert back is not None, f"never back on 2.0.0: exit codes {codes}"
    try:  # 2.0.0 runs again: its agent reports the rollback
        wait_for(
            lambda: uplink.of_phase("rolled_back"),
            "the rollback reported",
            timeout=60,
        )
    finally:
        _stop(back)
    # The deliberate restart into 3.0.0, then max_boots (1) unplanned one: two failed
    # starts with the agent's own exit code; the third start is back on 2.0.0.
    assert codes == [4, 4]
    assert [line.split()[0] for line in node.imported()] == ["2.0.0", "3.0.0", "3.0.0", "2.0.0"]
    status = node.store.status()
    assert (status.active_version, status.committed_version, status.trial) == (
        "2.0.0",
        "2.0.0",
        None,
    )
    (rolled,) = uplink.of_phase("rolled_back")
    assert (rolled.version, rolled.campaign_id, rolled.reason) == ("3.0.0", "summer", "boot")
    assert "2 unplanned restarts on trial" in (rolled.detail or "")
