"""`nigehbaan tech …`: the field technician's tools (flash, register, commission).

Not built yet: the provisioning issue (#4) adds the fleet CA, enrollment and
the commissioning checklist. The subcommand exists so the command line is
stable, and says plainly that it is not there yet.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `tech` subcommand."""
    parser = subparsers.add_parser("tech", help="technician tools (not built yet)")
    parser.set_defaults(func=_not_built)


def _not_built(args: argparse.Namespace) -> int:
    print(
        "nigehbaan tech: not built yet — flash/register/commission arrive with the "
        "provisioning issue (#4)",
        file=sys.stderr,
    )
    return 2
