"""`nigehbaan demo`: a whole fleet on this machine with the embedded defaults.

Starts a private Mosquitto (generated config, loopback), the fleet server as
its own process with a SQLite database, and simulated panic pillars running
the real edge agent on mock pins; presses a random pillar now and then so the
console has something to show. State lives in `var/demo/` and survives
restarts of the demo. It says plainly what is not built yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import sys
import time
from pathlib import Path

NOT_BUILT = (
    "the camera pipeline (ANPR and face recognition; camera nodes in `nigehbaan sim` "
    "send synthetic plate reads)",
    "OTA updates (`nigehbaan ota`)",
    "evidence export, watchlists, webhooks and CAP 1.2 for command centres",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser("demo", help="run a demo fleet: broker + server + pillars")
    parser.add_argument("--nodes", type=int, default=24, help="simulated pillars (1-2000)")
    parser.add_argument("--port", type=int, default=8080, help="console/API port")
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="demo state")
    parser.add_argument(
        "--press-every", type=float, default=20.0, help="mean seconds between random presses"
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: Ctrl-C)"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 2000:
        print("nigehbaan demo: --nodes 1-2000", file=sys.stderr)
        return 2
    args.data_dir = args.data_dir.resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 0


def _admin_password(data_dir: Path) -> str:
    """The demo admin's password: from the environment, or made once and kept."""
    from_env = os.environ.get("NIGEHBAAN_DEMO_PASSWORD")
    if from_env:
        return from_env
    path = data_dir / "admin-password"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(12)
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return password


async def _demo(args: argparse.Namespace) -> int:
    import httpx

    from fleet_server.broker import free_port
    from simulators.enrollment import EnrollmentPlan
    from simulators.fleet import SimFleet
    from simulators.server_process import ServerProcess

    data_dir: Path = args.data_dir
    password = _admin_password(data_dir)
    with contextlib.ExitStack() as stack:
        # The server runs its own Mosquitto and dev PKI: pillars enroll (preauthorized
        # serials) and connect over mutual TLS; the plain loopback listener is for watching.
        plain_port, mqtts_port = free_port(), free_port()
        server = ServerProcess(
            data_dir=data_dir / "server",
            broker_url=None,
            port=args.port,
            extra_args=("--managed-broker", "--managed-broker-port", str(plain_port)),
            env={"NIGEHBAAN_MQTTS_PORT": str(mqtts_port), "NIGEHBAAN_ENROLL_RATE_PER_MIN": "6000"},
        )
        created = server.run_cli(
            "--create-user",
            "admin",
            "--role",
            "admin",
            "--password-env",
            "NB_DEMO_PASSWORD",
            env={"NB_DEMO_PASSWORD": password},
        )
        if created.returncode != 0 and "exists" not in (created.stderr + created.stdout):
            print(f"nigehbaan demo: could not create the admin: {created.stderr}", file=sys.stderr)
            return 1
        server.start()
        stack.callback(server.stop)
        login = await asyncio.to_thread(
            httpx.post,
            f"{server.base_url}/api/v1/login/access-token",
            data={"username": "admin", "password": password},
            timeout=10,
        )
        token = login.json()["access_token"]
        plan = EnrollmentPlan(
            server_url=server.base_url,
            ca_chain_pem=(server.data_dir / "pki" / "ca-chain.pem").read_text(encoding="ascii"),
            admin_token=token,
        )
        # Ports change between runs; pillars enrolled earlier get today's.
        mqtts_url = f"mqtts://127.0.0.1:{mqtts_port}"
        fleet = await SimFleet.enrolled(
            plan,
            data_dir=data_dir / "nodes",
            count=args.nodes,
            overrides={"mqtt": {"url": mqtts_url}},
        )
        await fleet.start()
        watch = f"mosquitto_sub -h 127.0.0.1 -p {plain_port} -t 'nb/v1/#' -v"
        print(
            f"""
Nigehbaan demo fleet is running.
  console   {server.base_url}/console/   (user admin, password {password})
  API       {server.base_url}/docs
  broker    {mqtts_url} (mutual TLS)   watch: {watch}
  pillars   {len(fleet.nodes)} simulated nodes ({fleet.nodes[0].node_id} …), enrolled with
            certificates from the dev CA in {server.data_dir / "pki"}
  state     {data_dir}
Not built yet: {"; ".join(NOT_BUILT)}.
Press Ctrl-C to stop.
""",
            flush=True,
        )
        rng = random.Random()
        started = time.monotonic()
        try:
            while not args.duration or time.monotonic() - started < args.duration:
                wait = rng.expovariate(1.0 / args.press_every) if args.press_every > 0 else 3600
                remaining = args.duration - (time.monotonic() - started) if args.duration else wait
                await asyncio.sleep(max(0.0, min(wait, remaining)))
                if args.duration and time.monotonic() - started >= args.duration:
                    break
                index = rng.randrange(len(fleet.nodes))
                await fleet.press(index)
                print(f"pressed the panic button on {fleet.nodes[index].node_id}", flush=True)
        finally:
            await fleet.stop()
    return 0
