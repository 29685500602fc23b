"""`nigehbaan tech …`: the field technician's tools (docs/provisioning.md, "Technician CLI").

- ``tech flash TARGET``: write the first-boot bundle onto a mounted boot
  partition (a directory) or into a disk image / card device (FAT partition
  found from the MBR, written with mtools; no mounting, no root).
- ``tech token``: make a single-use enrollment token for a site/district.
- ``tech register``: register a node (id, serial, site) before it enrolls.
- ``tech commission NODE``: the on-site checklist; pass/fail report, ``--json``.

Commands that talk to the server take ``--server URL --user U --password-env
VAR`` (or a bearer token in ``NIGEHBAAN_TOKEN``) and ``--ca-chain FILE`` to
verify an https server against the fleet CA.

Exit codes: 0 pass/done, 1 checklist failed, 2 bad input, 3 server refused or
unreachable.

A technician's laptop does not install the `server` extra: these commands are
an HTTP client of the fleet server and import only `proto`, the standard
library and httpx (the `tech` extra; `tech flash` needs not even that).
`tests/integration/test_tech_without_server_extra.py` holds them to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SERVER = 3
# The line a simulator waits for before pressing its mock pin (with --simulated-press).
PRESS_NOW = "nigehbaan-tech: press-now"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `tech` subcommand and its own subcommands."""
    parser = subparsers.add_parser("tech", help="technician tools: flash, register, commission")
    sub = parser.add_subparsers(dest="tech_command", required=True, metavar="COMMAND")

    flash = sub.add_parser("flash", help="write the first-boot bundle onto a boot partition/image")
    flash.add_argument("target", type=Path, help="mounted boot directory, disk image or device")
    flash.add_argument("--server-url", required=True, help="the fleet server's API, https://…")
    flash.add_argument("--ca-chain", type=Path, required=True, help="fleet CA chain PEM file")
    flash.add_argument("--token", default=None, help="enrollment token (omit for preauthorized)")
    flash.add_argument("--token-env", metavar="VAR", help="read the token from this env var")
    flash.add_argument("--site", dest="site_id", help="site id")
    flash.add_argument("--district", help="district")
    flash.add_argument("--lat", type=float)
    flash.add_argument("--lon", type=float)
    flash.add_argument("--node-id", help="requested node id (default: derived from the serial)")
    flash.set_defaults(func=_flash)

    token = sub.add_parser("token", help="make a single-use enrollment token")
    _server_args(token)
    token.add_argument("--site", dest="site_id")
    token.add_argument("--district")
    token.add_argument("--ttl", type=int, default=86_400, help="seconds (default 24 h)")
    token.add_argument("--note", default="")
    token.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    token.set_defaults(func=_token)

    reg = sub.add_parser("register", help="register a node to a site before it enrolls")
    _server_args(reg)
    reg.add_argument("--node-id", required=True)
    reg.add_argument("--serial", required=True)
    reg.add_argument("--site", dest="site_id", required=True)
    reg.add_argument("--district", required=True)
    reg.add_argument("--lat", type=float)
    reg.add_argument("--lon", type=float)
    reg.set_defaults(func=_register)

    com = sub.add_parser("commission", help="run the on-site commissioning checklist")
    com.add_argument("node_id", metavar="NODE")
    _server_args(com)
    com.add_argument("--json", action="store_true", help="print the report as JSON")
    com.add_argument(
        "--simulated-press",
        action="store_true",
        help=f"for simulators: print '{PRESS_NOW} NODE' on stderr and wait for the test press",
    )
    com.add_argument("--press-timeout", type=float, default=None, help="seconds (120; sim 30)")
    com.add_argument(
        "--no-lifecycle", action="store_true", help="do not mark the node commissioned on pass"
    )
    com.set_defaults(func=_commission)


def _server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="fleet server URL")
    parser.add_argument("--user", help="user name (technician or admin)")
    parser.add_argument("--password-env", metavar="VAR", help="env var holding the password")
    parser.add_argument("--ca-chain", type=Path, help="verify an https server against this CA")


def _client(args: argparse.Namespace) -> Any:
    from fleet_server.tech.client import TechClient

    verify: str | bool = str(args.ca_chain) if args.ca_chain else True
    token = os.environ.get("NIGEHBAAN_TOKEN")
    if args.user:
        if not args.password_env or not os.environ.get(args.password_env):
            raise _Usage("--user needs --password-env VAR with the password in $VAR")
        return TechClient.login(
            args.server, user=args.user, password=os.environ[args.password_env], verify=verify
        )
    if token:
        return TechClient(args.server, token=token, verify=verify)
    raise _Usage("give --user U --password-env VAR (or set NIGEHBAAN_TOKEN)")


class _Usage(Exception):
    pass


def _location(args: argparse.Namespace) -> dict[str, float] | None:
    if args.lat is None and args.lon is None:
        return None
    if args.lat is None or args.lon is None:
        raise _Usage("--lat and --lon go together")
    return {"lat": args.lat, "lon": args.lon}


def _run_guarded(fn: Any, args: argparse.Namespace) -> int:
    try:
        from fleet_server.tech.client import TechApiError
    except ImportError as exc:  # httpx: the `tech` extra, not installed
        print(
            f"nigehbaan tech: the server commands need an HTTP client ({exc}); "
            "install it with: pip install 'nigehbaan[tech]'",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT

    try:
        result: int = fn(args)
        return result
    except _Usage as exc:
        print(f"nigehbaan tech: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TechApiError as exc:
        print(f"nigehbaan tech: {exc}", file=sys.stderr)
        return EXIT_SERVER


def _flash(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fleet_server.tech.flash import FlashError, flash_bundle
    from proto.bundle import Bundle

    token = args.token
    if args.token_env:
        token = os.environ.get(args.token_env) or None
    try:
        ca_chain = args.ca_chain.read_text(encoding="ascii")
        bundle = Bundle(
            server_url=args.server_url,
            ca_chain_pem=ca_chain,
            token=token,
            site_id=args.site_id,
            district=args.district,
            location=_location(args),
            node_id=args.node_id,
        )
    except (OSError, ValueError, _Usage) as exc:
        if isinstance(exc, ValidationError):
            text = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
        else:
            text = str(exc)
        print(f"nigehbaan tech flash: {text}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "BEGIN CERTIFICATE" not in ca_chain:
        print(f"nigehbaan tech flash: {args.ca_chain} holds no PEM certificate", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        where = flash_bundle(args.target, bundle)
    except FlashError as exc:
        print(f"nigehbaan tech flash: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    kind = "token" if token else "preauthorized serial (no token)"
    print(f"wrote the first-boot bundle to {where} ({kind}, site {args.site_id or '-'})")
    return 0


def _token(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            data = client.create_enrollment_token(
                site_id=args.site_id, district=args.district, ttl_s=args.ttl, note=args.note
            )
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(data["token"])
            print(f"(expires {data.get('expires_at')}; shown once)", file=sys.stderr)
        return 0

    return _run_guarded(run, args)


def _register(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        location = _location(args)
        with _client(args) as client:
            node = client.register_node(
                node_id=args.node_id,
                serial=args.serial,
                site_id=args.site_id,
                district=args.district,
                location=location,
            )
        print(f"registered {node.get('node_id', args.node_id)} (serial {args.serial}) "
              f"at {args.site_id}, {args.district}")  # fmt: skip
        return 0

    return _run_guarded(run, args)


def _commission(args: argparse.Namespace) -> int:
    from fleet_server.tech.commission import commission

    def prompt(text: str) -> None:
        if args.simulated_press:
            print(f"{PRESS_NOW} {args.node_id}", file=sys.stderr, flush=True)
        else:
            print(f">>> {text}", file=sys.stderr, flush=True)

    def run(args: argparse.Namespace) -> int:
        timeout = args.press_timeout or (30.0 if args.simulated_press else 120.0)
        with _client(args) as client:
            report = commission(
                client,
                args.node_id,
                on_prompt=prompt,
                press_timeout_s=timeout,
                set_commissioned=not args.no_lifecycle,
            )
        print(json.dumps(report.as_dict(), indent=2) if args.json else report.as_text())
        return 0 if report.passed else EXIT_FAILED

    return _run_guarded(run, args)
