"""`nigehbaan cluster up|down|status`: the whole cluster topology on one machine, on loopback.

For development and demonstrations: RabbitMQ nodes of its own (never the
machine's RabbitMQ), district Mosquittos bridged into them, N `nigehbaan
server` workers in cluster mode, and a PostgreSQL schema of its own, all
under one directory (``--dir``, default ``./nigehbaan-cluster``):

- ``up`` starts a supervisor in the background (``run`` is the same in the
  foreground), waits until everything answers and prints where it is;
- ``status`` probes every part (ports, each worker's /healthz) and prints a
  table, or JSON with ``--json``; exit code 0 only when all is healthy;
- ``down`` stops the supervisor, which stops the workers, the district
  brokers and the RabbitMQ nodes and drops the schema (``--keep-db`` keeps it).

The state file ``cluster.json`` (mode 0600: it holds the development
passwords) says where every part listens. Nodes connect to a district
broker's mTLS node listener (``mqtts://127.0.0.1:PORT``, ACL, CRL: the
one-box fleet broker's) with a certificate from the cluster's one fleet PKI
(``<dir>/pki``, CA chain ``<dir>/pki/ca-chain.pem``), enrolled through any
worker; the plain loopback listener (``mqtt://127.0.0.1:PORT``, anonymous)
is kept for the workers' downlink and simulators on this machine
(docs/cluster.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

STATE_FILE = "cluster.json"
DEFAULT_DIR = Path("./nigehbaan-cluster")
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `cluster` subcommand (imports nothing heavy)."""
    parser = subparsers.add_parser(
        "cluster",
        help="run the cluster topology on loopback (RabbitMQ, district brokers, workers)",
        description="District Mosquittos bridged into a RabbitMQ cluster, N fleet-server "
        "workers and a PostgreSQL schema, all on loopback (docs/cluster.md).",
    )
    commands = parser.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    for name, helptext in (
        ("up", "start everything in the background and wait until it answers"),
        ("run", "the same in the foreground (Ctrl-C stops it)"),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
        sub.add_argument("--rabbit-nodes", type=int, default=3, help="RabbitMQ nodes (3)")
        sub.add_argument("--districts", default="north,south", help="district brokers (comma list)")
        sub.add_argument("--workers", type=int, default=3, help="fleet-server workers (3)")
        sub.add_argument("--db", default=DEFAULT_DB, help="PostgreSQL to make a schema in")
        sub.add_argument("--keep-db", action="store_true", help="keep the schema at `down`")
        sub.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for up")
        sub.set_defaults(func=_up if name == "up" else _run)
    down = commands.add_parser("down", help="stop everything `up` started")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    down.set_defaults(func=_down)
    status = commands.add_parser("status", help="probe every part; exit 0 when all is healthy")
    status.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)


# -- state -----------------------------------------------------------------------------


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return None


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=1)
    os.replace(tmp, path)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    return True


# -- up / run --------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    directory: Path = args.dir.resolve()
    state = _read_state(directory)
    if state is not None and _alive(state.get("supervisor_pid")):
        print(f"nigehbaan cluster: already running under {directory} (`status` to see it)")
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "edge_agent.console", "cluster", "run", "--dir", str(directory),
        "--rabbit-nodes", str(args.rabbit_nodes), "--districts", args.districts,
        "--workers", str(args.workers), "--db", args.db, "--timeout", str(args.timeout),
        *(["--keep-db"] if args.keep_db else []),
    ]  # fmt: skip
    (directory / STATE_FILE).unlink(missing_ok=True)
    with (directory / "supervisor.log").open("ab") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + args.timeout + 30
    while time.monotonic() < deadline:
        state = _read_state(directory)
        if state is not None and state.get("state") in ("up", "failed"):
            break
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    state = _read_state(directory) or {}
    if state.get("state") != "up":
        print(
            f"nigehbaan cluster: did not come up ({state.get('error', 'see supervisor.log')}); "
            f"log: {directory / 'supervisor.log'}",
            file=sys.stderr,
        )
        if proc.poll() is None:
            proc.terminate()
        return 1
    _print_summary(state)
    return 0


def _print_summary(state: dict[str, Any]) -> None:
    print(f"cluster up under {state['dir']}")
    for node in state["rabbit"]:
        print(f"  rabbitmq {node['nodename']}: amqp {node['amqp_port']}, mqtt {node['mqtt_port']}")
    for district in state["districts"]:
        print(
            f"  district {district['name']}: nodes connect to {district.get('mtls_url')} "
            f"(mTLS, CA {district.get('ca')}); loopback {district['url']}"
        )
    for worker in state["workers"]:
        print(f"  worker {worker['index']}: {worker['url']} (log {worker['log']})")
    print(f"  database schema {state['schema']}; admin password in {STATE_FILE}")
    print("`nigehbaan cluster status` probes it; `nigehbaan cluster down` stops it.")


def _run(args: argparse.Namespace) -> int:
    """The supervisor: start everything, write the state, wait for a signal, stop everything."""
    from fleet_server.cluster.supervisor import Supervisor

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    districts = tuple(d.strip() for d in args.districts.split(",") if d.strip())
    supervisor = Supervisor(
        directory=directory,
        rabbit_nodes=args.rabbit_nodes,
        districts=districts,
        workers=args.workers,
        db_url=args.db,
        keep_db=args.keep_db,
        schema=f"nbcluster_{uuid.uuid4().hex[:10]}",
        admin_password=secrets.token_urlsafe(12),
    )
    state: dict[str, Any] = {"state": "starting", "supervisor_pid": os.getpid()}
    _write_state(directory, state)
    try:
        supervisor.start(timeout=args.timeout, should_stop=stop.is_set)
    except Exception as exc:
        _write_state(directory, {**state, "state": "failed", "error": str(exc)})
        print(f"nigehbaan cluster: {exc}", file=sys.stderr, flush=True)
        supervisor.stop()
        return 1
    state = {**supervisor.describe(), "state": "up", "supervisor_pid": os.getpid()}
    _write_state(directory, state)
    print("nigehbaan cluster up", flush=True)
    try:
        while not stop.wait(1.0):
            supervisor.watch()
    finally:
        _write_state(directory, {**state, "state": "stopping"})
        supervisor.stop()
        _write_state(directory, {**state, "state": "down", "supervisor_pid": None})
    return 0


# -- down / status ---------------------------------------------------------------------


def _down(args: argparse.Namespace) -> int:
    directory: Path = args.dir.resolve()
    state = _read_state(directory)
    pid = state.get("supervisor_pid") if state else None
    if not _alive(pid):
        print(f"nigehbaan cluster: nothing running under {directory}")
        return 0
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 120
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _alive(pid):
        print(f"nigehbaan cluster: supervisor {pid} still running after 120 s", file=sys.stderr)
        return 1
    print("cluster down")
    return 0


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def probe(state: dict[str, Any]) -> dict[str, Any]:
    """Every part's state now: ports answering, each worker's /healthz."""
    import httpx

    report: dict[str, Any] = {
        "supervisor": _alive(state.get("supervisor_pid")),
        "state": state.get("state"),
    }
    report["rabbit"] = {
        n["nodename"]: _port_open(n["amqp_port"]) and _port_open(n["mqtt_port"])
        for n in state.get("rabbit", [])
    }
    report["districts"] = {
        d["name"]: _port_open(d["port"]) and _port_open(d.get("mtls_port", d["port"]))
        for d in state.get("districts", [])
    }
    # Where a technician points a node: each district broker's mTLS listener and the CA.
    report["endpoints"] = {
        d["name"]: {"mtls_url": d.get("mtls_url"), "ca": d.get("ca"), "loopback_url": d["url"]}
        for d in state.get("districts", [])
    }
    workers: dict[str, Any] = {}
    for w in state.get("workers", []):
        try:
            response = httpx.get(f"{w['url']}/healthz", timeout=3)
            body = response.json()
            cluster = body.get("cluster", {})
            workers[str(w["index"])] = {
                "healthy": response.status_code == 200,
                "leads": [
                    d for d, p in cluster.get("partitions", {}).items() if p.get("processed")
                ],
                "stored": body.get("cluster", {}).get("ingest", {}).get("inserted"),
                "uplinks": {d: u.get("uplink") for d, u in cluster.get("districts", {}).items()},
            }
        except (httpx.HTTPError, ValueError) as exc:
            workers[str(w["index"])] = {"healthy": False, "error": str(exc)}
    report["workers"] = workers
    # Each district's uplink bridge as the first answering worker sees it (its district link).
    report["uplinks"] = next((w["uplinks"] for w in workers.values() if w.get("uplinks")), {})
    report["healthy"] = (
        report["supervisor"]
        and report["state"] == "up"
        and all(report["rabbit"].values())
        and all(report["districts"].values())
        and all(w["healthy"] for w in workers.values())
        and all(u == "up" for u in report["uplinks"].values())
    )
    return report


def _status(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe otherwise
    directory: Path = args.dir.resolve()
    state = _read_state(directory)
    if state is None:
        print(f"nigehbaan cluster: no cluster under {directory} (`nigehbaan cluster up`)")
        return 3
    report = probe(state)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"cluster under {directory}: {'healthy' if report['healthy'] else 'NOT healthy'}")
        print(f"  supervisor: {'running' if report['supervisor'] else 'not running'}")
        for name, ok in report["rabbit"].items():
            print(f"  rabbitmq {name}: {'up' if ok else 'DOWN'}")
        for name, ok in report["districts"].items():
            uplink = report["uplinks"].get(name, "unknown")
            bridge = "uplink bridge up" if uplink == "up" else f"uplink bridge {uplink.upper()}"
            print(f"  district {name}: {'up' if ok else 'DOWN'}, {bridge}")
            endpoint = report["endpoints"].get(name, {})
            print(f"    nodes: {endpoint.get('mtls_url')} (CA {endpoint.get('ca')})")
        for index, w in report["workers"].items():
            text = "healthy" if w["healthy"] else f"UNHEALTHY {w.get('error', '')}"
            print(f"  worker {index}: {text}")
    return 0 if report["healthy"] else 1
