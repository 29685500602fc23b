"""`nigehbaan demo`: a whole fleet on this machine with the embedded defaults.

Starts the fleet server as its own process (it brings its own Mosquitto,
generated config, loopback) with a SQLite database, and simulated panic
pillars running the real edge agent on mock pins, each on a simulated solar
site (panel, battery, load; `hardware.solar_site`) so the console's Power
page shows what a pillar on solar does; presses a random pillar now and then
so the console has something to show. With the ``anpr`` extra installed, the
first ``--camera-nodes`` nodes (2 by default) also carry a simulated camera
whose rendered street scenes (`simulators.camera_scenes`) go through the real
camera pipeline, so the console's Plate reads page fills with what they read;
without it the demo says so and runs pillars only. State lives in `var/demo/` and
survives restarts of the demo. It says plainly what is not built yet.

The demo owns what it starts: Ctrl-C and SIGTERM stop the pillars, then the
server (which stops its broker), then any broker the server left behind; the
server dies with the demo even when the demo is killed (`PR_SET_PDEATHSIG`).
It refuses to start — one line, exit 1 — when the console port is taken or
another demo holds the data directory, and it never takes an answering
server on its port for the one it started (`ServerProcess` waits for its own
child's ready line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulators.fleet import SimFleet
    from simulators.server_process import ServerProcess

NOT_BUILT = (
    "face recognition and watchlists (camera nodes read plates only)",
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
    parser.add_argument(
        "--camera-nodes", type=int, default=2, choices=range(0, 9), metavar="0-8",
        help="nodes that also read plates from rendered scenes (needs the anpr extra)",
    )  # fmt: skip
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 2000:
        print("nigehbaan demo: --nodes 1-2000", file=sys.stderr)
        return 2
    args.data_dir = args.data_dir.resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    refusal = port_refusal(args.port)
    if refusal is not None:
        print(f"nigehbaan demo: {refusal}", file=sys.stderr)
        return 1
    with _data_dir_lock(args.data_dir) as held_by:
        if held_by is not None:
            print(
                f"nigehbaan demo: another demo (pid {held_by}) is using {args.data_dir}; "
                "stop it first or give --data-dir",
                file=sys.stderr,
            )
            return 1
        try:
            return asyncio.run(_demo(args))
        except KeyboardInterrupt:
            return 0


def port_refusal(port: int, host: str = "127.0.0.1") -> str | None:
    """Why the console/API port cannot be used (one line), or None when it is free.

    Checked before anything starts: an old server (an orphan of a killed
    demo, or anything else) still holding the port would otherwise answer
    for the new one, and the new server would fail to bind with its error
    buried in its log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port with connections in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"cannot use port {port} on {host}: {exc.strerror}"
            return (
                f"port {port} on {host} is already in use (another demo or fleet server "
                "still running?); stop it, or pass --port"
            )
    return None


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[int | None]:
    """Hold `data_dir/demo.lock` while the demo runs; yields the holder's pid if it is taken.

    Two demos on one data directory would share the server's database and
    broker directory, and the second server would stop the first one's broker.
    """
    path = data_dir / "demo.lock"
    handle: IO[str] = path.open("a+", encoding="ascii")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            yield int(text) if text.isdigit() else -1
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield None
    finally:
        handle.close()


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


# The demo's districts are in these cities (`simulators.fleet.DISTRICTS`).
_CITY_OF_DISTRICT = {"lahore": "lahore", "karachi": "karachi", "peshawar": "peshawar"}
# A panic pillar (no camera): controller, LTE modem, button light; a little less
# when shedding, and the dark step's trickle (as the scenarios' pillars).
PILLAR_LOADS_W = (9.0, 9.0, 9.0, 8.0, 0.3)


def pillar_site(index: int, district: str) -> dict[str, Any]:
    """Agent config sections for demo pillar `index`: its position and its solar site.

    Sites differ the way a real roll-out does (panel size, battery bank,
    charge when the demo starts, a few on mains, some cloud), deterministically
    by index so a restarted demo shows the same fleet. The battery is never so
    low that a pillar sheds its panic path during a demo.
    """
    from hardware.solar import CITIES

    city_name = _CITY_OF_DISTRICT.get(district.split("-", 1)[0], "lahore")
    city = CITIES[city_name]
    lat = round(city.lat + (index % 10) * 0.004, 6)
    lon = round(city.lon + (index // 10 % 10) * 0.004, 6)
    capacity_ah = (60.0, 100.0, 150.0)[index % 3]
    return {
        "location": {"lat": lat, "lon": lon},
        "telemetry": {"interval_s": 15.0},
        "power": {
            "enabled": True,
            "interval_s": 15.0,
            "chemistry": "lifepo4",
            "capacity_ah": capacity_ah,
            "autonomy_target_h": 24.0 if city_name == "peshawar" else 8.0,
            "monitor": {
                "type": "sim",
                "city": city_name,
                "lat": lat,
                "lon": lon,
                "panel_w": (100.0, 150.0, 200.0, 300.0)[index % 4],
                "capacity_ah": capacity_ah,
                "mains": index % 6 == 5,
                "loads_w": list(PILLAR_LOADS_W),
                "cloud_cover": (0.1, 0.3, 0.6)[index % 3],
                "soc": round(0.55 + 0.45 * ((index * 7) % 10) / 9, 3),
            },
        },
    }


def demo_node_configs(*, count: int, data_dir: Path) -> list[dict[str, Any]]:
    """The plain-mode configs of the demo's pillars, as enrollment takes them (no power yet)."""
    from simulators.fleet import node_config

    return [
        node_config(
            node_id=f"sim-{i:05d}",
            index=i,
            data_dir=data_dir,
            broker_url="mqtt://127.0.0.1:1883",  # replaced by the server's broker_url
        )
        for i in range(count)
    ]


def on_solar(config: dict[str, Any], index: int) -> dict[str, Any]:
    """`config` with demo pillar `index`'s position, telemetry and solar site (`pillar_site`).

    Applied on every run after enrollment (whose agent.toml holds flat
    sections only), so pillars enrolled by an earlier demo get today's site.
    """
    return {**config, **pillar_site(index, str(config.get("district") or ""))}


def with_cameras(configs: list[dict[str, Any]], count: int) -> tuple[list[dict[str, Any]], str]:
    """The first `count` configs with a simulated camera and the real pipeline, and a line
    saying which nodes read plates (or why none do: the ``anpr`` extra is not installed)."""
    if count <= 0:
        return configs, "none (--camera-nodes 0)"
    from simulators.camera_scenes import anpr_missing, camera_analytics

    missing = anpr_missing()
    if missing is not None:
        return configs, f"none: the camera pipeline cannot run here ({missing})"
    count = min(count, len(configs))
    out = [{**c, **camera_analytics("gate")} if i < count else c for i, c in enumerate(configs)]
    names = ", ".join(str(c["node_id"]) for c in out[:count])
    return out, f"{names} read plates from rendered street scenes (console: Plate reads)"


def start_scene_players(fleet: SimFleet, count: int) -> list[Any]:
    """A `ScenePlayer` on each of the first `count` nodes' simulated camera, started."""
    from simulators.camera_scenes import ScenePlayer, pipeline_camera

    players = [
        ScenePlayer(pipeline_camera(node.agent.node, "gate"), seed=i)
        for i, node in enumerate(fleet.nodes[:count])
    ]
    for player in players:
        player.start()
    return players


def _cancel_on_sigterm(task: asyncio.Task[Any]) -> Any:
    """SIGTERM stops the demo like Ctrl-C: the main task is cancelled and cleans up in order.

    Returns the previous handler, to put back when the loop is gone.
    """
    loop = asyncio.get_running_loop()

    def cancel(_signum: int, _frame: object) -> None:
        # A plain handler, not loop.add_signal_handler: it also runs while the
        # loop is blocked in a synchronous start-up step; the cancel lands at
        # the next await.
        if not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    return signal.signal(signal.SIGTERM, cancel)


async def _demo(args: argparse.Namespace) -> int:
    main = asyncio.current_task()
    assert main is not None
    previous = _cancel_on_sigterm(main)
    try:
        return await _run_fleet(args)
    except asyncio.CancelledError:
        print("nigehbaan demo: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        # Stopping is done; a second SIGTERM from here on ends the process at once.
        signal.signal(signal.SIGTERM, previous)


async def _run_fleet(args: argparse.Namespace) -> int:
    import httpx

    from fleet_server.broker import free_port, stop_leftover
    from simulators.enrollment import EnrollmentPlan, enroll_fleet
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
            die_with_parent=True,
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
        # Last in, first out: the server stops (and stops its broker), then any
        # broker it left behind is stopped.
        stack.callback(stop_leftover, (server.data_dir / "broker").resolve())
        stack.callback(server.stop)
        server.start()
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
        mqtts_url = f"mqtts://127.0.0.1:{mqtts_port}"
        enrolled = await asyncio.to_thread(
            enroll_fleet, plan, demo_node_configs(count=args.nodes, data_dir=data_dir / "nodes")
        )
        # Ports change between runs; pillars enrolled earlier get today's.
        configs = [
            on_solar({**config, "mqtt": {**config["mqtt"], "url": mqtts_url}}, i)
            for i, config in enumerate(enrolled)
        ]
        configs, args.camera_line = with_cameras(configs, args.camera_nodes)
        cameras = sum(1 for c in configs if "cameras" in c)
        fleet = SimFleet(
            broker_url=mqtts_url, data_dir=data_dir / "nodes", count=len(configs),
            node_configs=configs,
        )  # fmt: skip
        players: list[Any] = []
        try:
            await fleet.start()
            players = start_scene_players(fleet, cameras)
            await _announce_and_press(args, server=server, fleet=fleet, password=password,
                                      plain_port=plain_port, mqtts_url=mqtts_url)  # fmt: skip
        finally:
            for player in players:
                player.stop()
            await fleet.stop()
    return 0


async def _announce_and_press(
    args: argparse.Namespace,
    *,
    server: ServerProcess,
    fleet: SimFleet,
    password: str,
    plain_port: int,
    mqtts_url: str,
) -> None:
    data_dir: Path = args.data_dir
    watch = f"mosquitto_sub -h 127.0.0.1 -p {plain_port} -t 'nb/v1/#' -v"
    print(
        f"""
Nigehbaan demo fleet is running.
  console   {server.base_url}/console/   (user admin, password {password})
  API       {server.base_url}/docs
  broker    {mqtts_url} (mutual TLS)   watch (read-only): {watch}
  pillars   {len(fleet.nodes)} simulated nodes ({fleet.nodes[0].node_id} …) on simulated solar
            sites, enrolled with certificates from the dev CA in {server.data_dir / "pki"}
  cameras   {getattr(args, "camera_line", "none")}
  state     {data_dir}
Not built yet: {"; ".join(NOT_BUILT)}.
Press Ctrl-C to stop.
""",
        flush=True,
    )
    rng = random.Random()
    started = time.monotonic()
    while not args.duration or time.monotonic() - started < args.duration:
        wait = rng.expovariate(1.0 / args.press_every) if args.press_every > 0 else 3600
        remaining = args.duration - (time.monotonic() - started) if args.duration else wait
        await asyncio.sleep(max(0.0, min(wait, remaining)))
        if args.duration and time.monotonic() - started >= args.duration:
            break
        index = rng.randrange(len(fleet.nodes))
        await fleet.press(index)
        print(f"pressed the panic button on {fleet.nodes[index].node_id}", flush=True)
