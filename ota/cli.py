"""`nigehbaan ota …`: build, sign and inspect update artifacts.

Not built yet: the OTA issue adds signed artifacts, campaigns and A/B slots.
Until then the subcommand exists so the command line is stable, and says so.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `ota` subcommand."""
    parser = subparsers.add_parser("ota", help="update artifacts (not built yet)")
    parser.set_defaults(func=_not_built)


def _not_built(args: argparse.Namespace) -> int:
    print(
        "nigehbaan ota: not built yet — signed artifacts and campaigns are planned "
        "(see ARCHITECTURE.md, OTA)",
        file=sys.stderr,
    )
    return 2
