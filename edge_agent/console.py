"""The `nigehbaan` command: one entry point, one subcommand per job.

Each package registers its own subcommand through the ``nigehbaan.commands``
entry-point group (see pyproject.toml). Registrars import nothing heavy, so a
node without the server extra can still run ``nigehbaan agent``; a registrar
whose package cannot load on this machine is reported, not fatal. The
dispatcher lives in edge_agent because the agent is the one program every
installation has.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
ORDER = ["server", "agent", "sim", "tech", "ota", "bench", "demo", "proto"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="nigehbaan", description="Safe-city panic buttons and cameras: edge and fleet"
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("NIGEHBAAN_LOG", "INFO"), help="logging level"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    found = {ep.name: ep for ep in entry_points(group="nigehbaan.commands")}
    for name in sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n)):
        try:
            register: Any = found[name].load()
        except ImportError as exc:
            sub = subparsers.add_parser(name, help=f"(unavailable here: {exc})")
            sub.set_defaults(func=_unavailable(name, exc))
            continue
        register(subparsers)
    return parser


def _unavailable(name: str, exc: Exception) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"nigehbaan {name}: not available on this installation: {exc}", file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, configure logging, run the chosen subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
