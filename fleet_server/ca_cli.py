"""`nigehbaan server ca init|issue-intermediate`: the offline root and the online issuing CA.

The root CA is made once, on an offline machine, onto removable media; its
key is encrypted with a passphrase read from an environment variable (never
a command-line argument, which other users can see in the process list).
`issue-intermediate` is run with the root media attached, and installs the
issuing CA into the server's data directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register_ca"]


def register_ca(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ca init` and `ca issue-intermediate` under `nigehbaan server`."""
    ca = commands.add_parser("ca", help="fleet certificate authority (docs/provisioning.md)")
    ca_commands = ca.add_subparsers(
        dest="ca_command", required=True, metavar="{init,issue-intermediate}"
    )

    init = ca_commands.add_parser("init", help="make the offline root CA (10 years)")
    init.add_argument("--root-dir", type=Path, required=True, help="e.g. a mounted USB stick")
    init.add_argument(
        "--passphrase-env", metavar="VAR", required=True, help="env var holding the key passphrase"
    )
    init.set_defaults(func=_init)

    issue = ca_commands.add_parser(
        "issue-intermediate", help="sign the online issuing CA (5 years) into DATA_DIR/pki"
    )
    issue.add_argument("--root-dir", type=Path, required=True)
    issue.add_argument("--passphrase-env", metavar="VAR", required=True)
    # Its own dest: a subparser's default would overwrite `server --data-dir`.
    issue.add_argument("--data-dir", dest="ca_data_dir", type=Path, help="server data directory")
    issue.set_defaults(func=_issue_intermediate)


def _passphrase(var: str) -> bytes | None:
    value = os.environ.get(var, "")
    if not value:
        print(f"nigehbaan server ca: ${var} is empty or unset", file=sys.stderr)
        return None
    return value.encode()


def _init(args: argparse.Namespace) -> int:
    from fleet_server.models import utcnow
    from fleet_server.pki.ca import PkiError
    from fleet_server.pki.store import init_root

    passphrase = _passphrase(args.passphrase_env)
    if passphrase is None:
        return 2
    try:
        path = init_root(args.root_dir, passphrase=passphrase, now=utcnow())
    except (PkiError, OSError) as exc:
        print(f"nigehbaan server ca init: {exc}", file=sys.stderr)
        return 1
    print(f"root CA written: {path} (key {args.root_dir / 'root-ca.key'}, encrypted)")
    return 0


def _issue_intermediate(args: argparse.Namespace) -> int:
    from fleet_server.models import utcnow
    from fleet_server.pki.ca import PkiError
    from fleet_server.pki.store import PkiPaths, issue_intermediate
    from fleet_server.settings import Settings, SettingsError

    passphrase = _passphrase(args.passphrase_env)
    if passphrase is None:
        return 2
    try:
        settings = Settings.from_env(data_dir=args.ca_data_dir or args.data_dir, env=args.env)
    except (SettingsError, ValueError) as exc:
        print(f"nigehbaan server ca: bad settings: {exc}", file=sys.stderr)
        return 2
    paths = PkiPaths(settings.pki_path)
    try:
        path = issue_intermediate(args.root_dir, passphrase=passphrase, paths=paths, now=utcnow())
    except (PkiError, OSError) as exc:
        print(f"nigehbaan server ca issue-intermediate: {exc}", file=sys.stderr)
        return 1
    print(f"issuing CA written: {path}; chain {paths.chain}")
    return 0
