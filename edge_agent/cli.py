"""`nigehbaan agent`: enroll a node, or run its agent in the foreground.

The registrar imports nothing heavy, so `nigehbaan --help` stays fast on a
node; the agent modules are imported only when the subcommand runs. This is
the one place the agent's event loop is created (`asyncio.run`); simulators
run many agents in their own loop instead.

- ``nigehbaan agent --config agent.toml``: run with an existing config.
- ``nigehbaan agent --enroll BUNDLE --data-dir DIR``: first-boot enrollment
  only (docs/provisioning.md): key, CSR, certificate, ``DIR/agent.toml``.
- ``nigehbaan agent --data-dir DIR``: run ``DIR/agent.toml``; when the node has
  no certificate yet and a ``nigehbaan-bundle.json`` is found (in DIR,
  /boot/firmware or /boot), enroll first (retrying while the server cannot
  be reached).

The node is assembled by `edge_agent.node.build_node`. When its hardware
does not load (a named backend, or with none named the real board, outside
``dev_mode``), the agent never runs on a simulator instead: it writes a
``node_fault`` event (component ``hardware``) to its outbox, tries for
``--fault-report-s`` seconds to deliver it, and exits 3 with one line saying
what failed and what to change.

Exit codes: 0 done, 2 bad config/bundle/usage, 3 hardware, 4 enrollment
refused (the message says what the technician should do), 5 server
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_HARDWARE = 3
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `agent` subcommand."""
    parser = subparsers.add_parser("agent", help="run the edge agent of one node (or enroll it)")
    parser.add_argument("--config", type=Path, help="agent.toml (or .yaml/.json) for this node")
    parser.add_argument(
        "--data-dir", type=Path, help="node state; enrollment writes DIR/agent.toml"
    )
    parser.add_argument(
        "--enroll", type=Path, metavar="BUNDLE", help="enroll with this first-boot bundle and exit"
    )
    parser.add_argument(
        "--serial",
        default=os.environ.get("NIGEHBAAN_SERIAL"),
        help="hardware serial (default: the board's, from the device tree or /proc/cpuinfo)",
    )
    parser.add_argument(
        "--wait-approval",
        type=float,
        default=3600.0,
        metavar="S",
        help="how long to wait for a manual accept (202 pending_approval)",
    )
    parser.add_argument(
        "--fault-report-s",
        type=float,
        default=10.0,
        metavar="S",
        help="when the hardware cannot load: how long to try to deliver the node_fault event",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edge_agent.config import ConfigError, load_config_file
    from edge_agent.enroll import BadEnrollmentData, EnrollmentRefused, EnrollmentUnavailable
    from hardware.errors import HardwareError

    if args.config is None and args.data_dir is None:
        print("nigehbaan agent: give --config FILE or --data-dir DIR", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.enroll is not None:
            if args.data_dir is None:
                print("nigehbaan agent: --enroll needs --data-dir DIR", file=sys.stderr)
                return EXIT_BAD_INPUT
            node_id = _enroll(args, args.enroll, retry=False)
            print(f"enrolled as {node_id}; config {args.data_dir / 'agent.toml'}")
            return 0
        config_path: Path = args.config or args.data_dir / "agent.toml"
        if args.data_dir is not None and _needs_enrollment(config_path):
            from edge_agent.enroll import find_bundle

            bundle = find_bundle(args.data_dir)
            if bundle is not None:
                _enroll(args, bundle, retry=True)
        config = load_config_file(config_path)
    except EnrollmentRefused as exc:
        print(f"nigehbaan agent: enrollment refused: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except EnrollmentUnavailable as exc:
        print(f"nigehbaan agent: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (BadEnrollmentData, ConfigError) as exc:
        print(f"nigehbaan agent: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_serve(config, fault_report_s=args.fault_report_s))
    except HardwareError as exc:
        print(f"nigehbaan agent: hardware: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_HARDWARE


def _needs_enrollment(config_path: Path) -> bool:
    """No config yet, or a config for mqtts whose certificate is missing."""
    from edge_agent.config import ConfigError, load_config_file

    if not config_path.exists():
        return True
    try:
        config = load_config_file(config_path)
    except ConfigError:
        return False  # let the normal load report it
    cert = config.mqtt.cert_file
    return config.mqtt.tls and (cert is None or not cert.exists())


def _enroll(args: argparse.Namespace, bundle_path: Path, *, retry: bool) -> str:
    from edge_agent.enroll import BadEnrollmentData, EnrollmentUnavailable, load_bundle, provision
    from edge_agent.identity import hardware_serial

    serial = args.serial or hardware_serial()
    if not serial:
        raise BadEnrollmentData("no hardware serial found on this board; pass --serial")
    bundle = load_bundle(bundle_path)
    delay = 5.0
    while True:
        try:
            result = provision(
                bundle, data_dir=args.data_dir, serial=serial, wait_s=args.wait_approval
            )
            return result.node_id
        except EnrollmentUnavailable as exc:
            if not retry:
                raise
            # At first boot the uplink often comes up after the agent does.
            logger.warning("enrollment server unreachable (%s); retrying in %.0fs", exc, delay)
            time.sleep(delay)
            delay = min(300.0, delay * 2)


async def _serve(config: Any, *, fault_report_s: float = 10.0) -> int:
    from edge_agent.config import AgentConfig
    from edge_agent.node import build_node, report_fault
    from hardware.errors import HardwareError

    assert isinstance(config, AgentConfig)
    try:
        node = build_node(config)
    except HardwareError as exc:
        # Never a silent simulator: stop, and tell the server why where we can.
        reason = " ".join(str(exc).split())
        delivered = await report_fault(
            config,
            component="hardware",
            code="backend_unavailable",
            detail=reason,
            wait_s=fault_report_s,
        )
        logger.info("node_fault %s", "delivered" if delivered else "kept in the outbox")
        print(f"nigehbaan agent: hardware: {reason}", file=sys.stderr)
        return EXIT_HARDWARE

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, node.stop)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            logger.debug("cannot install handler for %s", signum)
    await node.run()
    return 0
