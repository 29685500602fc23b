"""Probe: what a district Mosquitto's bridge loses and reorders when its link is cut.

Not a test (it measures a third-party broker, and the answer depends on its
version); the figures are in docs/cluster.md ("Mosquitto's bridge across a
cut link"). Two Mosquittos on loopback: a "district" broker with the bridge
block our code generates (`fleet_server.broker.bridge.bridge_lines`) and a
"central" one standing in for RabbitMQ's MQTT listener, reached through a
relay that is cut (connections reset) `--cuts` times while `--nodes`
publishers send numbered QoS 1 messages. A subscriber on the central broker
counts, per node, what arrived: lost, duplicated, and forward jumps (a
message arriving before an earlier one). Bounded: at most 3,000 messages per
node and `--cuts` ≤ 20.

    .venv/bin/python scripts/probe_bridge_cut.py --cuts 4 --inflight 100
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.broker.bridge import BridgeSettings, bridge_lines
from fleet_server.broker.process import find_mosquitto, free_port


class Relay:
    """127.0.0.1:port → target; `cut()` resets every open connection (a link lost)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            s.close()

    def cut(self) -> None:
        with self.lock:
            for pair in self.pairs:
                for s in pair:
                    try:  # linger 0: close with a reset, as a dead peer or a cut link
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                        s.close()
                    except OSError:
                        pass
            self.pairs = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=100, help="max_inflight_messages")
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait at the end")
    args = parser.parse_args()
    if not 0 <= args.cuts <= 20 or not 1 <= args.nodes <= 20 or args.inflight < 0:
        parser.error("--cuts 0-20, --nodes 1-20, --inflight >= 0")
    if not 0 < args.drain <= 120:
        parser.error("--drain: 0-120 s")
    work = Path(tempfile.mkdtemp(prefix="bridge-probe-"))
    binary = find_mosquitto()
    central_port, district_port = free_port(), free_port()
    relay = Relay(("127.0.0.1", central_port))
    (work / "central").mkdir()
    (work / "district").mkdir()
    (work / "central.conf").write_text(
        f"user root\nlistener {central_port} 127.0.0.1\nallow_anonymous true\n"
    )
    bridge = BridgeSettings(
        district="probe", addresses=(f"127.0.0.1:{relay.port}",), username="probe",
        password="probe",  # noqa: S106 - a throwaway loopback broker's
        downlink=False,
    )  # fmt: skip
    (work / "district.conf").write_text(
        "\n".join([
            "user root", "persistence true", f"persistence_location {work}/district/",
            "max_queued_messages 100000", f"max_inflight_messages {args.inflight}",
            f"listener {district_port} 127.0.0.1", "allow_anonymous true",
            *bridge_lines(bridge),
        ]) + "\n"
    )  # fmt: skip
    procs = [
        subprocess.Popen(
            [binary, "-c", str(work / f"{name}.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("central", "district")
    ]
    got: dict[str, list[int]] = {f"probe-{k}": [] for k in range(args.nodes)}
    try:
        time.sleep(1.0)
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-sub", clean_session=False)
        sub.on_connect = lambda c, *_a: c.subscribe("d/probe/nb/v1/#", qos=1)
        sub.on_message = lambda _c, _u, m: got[m.topic.split("/")[4]].append(int(m.payload))
        sub.connect("127.0.0.1", central_port)
        sub.loop_start()
        pubs = []
        for node in got:
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node, clean_session=False)
            pub.connect("127.0.0.1", district_port)
            pub.loop_start()
            pubs.append((node, pub))
        time.sleep(1.5)
        stop = threading.Event()
        sent = dict.fromkeys(got, 0)

        def send(node: str, pub: mqtt.Client) -> None:
            while not stop.wait(0.005) and sent[node] < 3000:
                sent[node] += 1
                pub.publish(f"nb/v1/{node}/event/plate_read", str(sent[node]), qos=1)

        threads = [threading.Thread(target=send, args=p) for p in pubs]
        for t in threads:
            t.start()
        for _ in range(args.cuts):
            time.sleep(1.0)
            relay.cut()
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join()
        time.sleep(args.drain)  # the bridge's reconnect back-off and its queue draining
        report = {}
        for node, seqs in got.items():
            report[node] = {
                "sent": sent[node],
                "arrived": len(seqs),
                "lost": len(set(range(1, sent[node] + 1)) - set(seqs)),
                "duplicates": len(seqs) - len(set(seqs)),
                "forward_jumps": sum(1 for a, b in itertools.pairwise(seqs) if b > a + 1),
            }
        print(json.dumps({"inflight": args.inflight, "cuts": args.cuts, "drain_s": args.drain,
                          "nodes": report}))  # fmt: skip
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
