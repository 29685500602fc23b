"""The `nigehbaan server` options turned into `Settings`, shared by its subcommands.

`nigehbaan server` (`fleet_server.cli`) and `nigehbaan server db …`
(`fleet_server.db_cli`) act on the same database with the same options, so
both read them here instead of one CLI module importing the other. Imports
nothing heavy at module level: the dispatcher imports registrars on every run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["settings_from_args", "settings_or_none"]


def settings_from_args(args: argparse.Namespace) -> Any:
    """Settings from the `server` options over the NIGEHBAAN_* environment."""
    from fleet_server.settings import Settings

    overrides: dict[str, Any] = {
        "db_url": args.db_url,
        "broker_url": args.broker_url,
        "managed_broker": args.managed_broker,
        "managed_broker_port": args.managed_broker_port,
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "env": args.env,
        "init_pki": args.init_pki,
        "mqtts_port": args.mqtts_port,
        "mqtts_bind": args.mqtts_bind,
        "broker_hostnames": args.broker_hostnames,
        "public_hostname": args.public_hostname,
        "node_cert_days": args.node_cert_days,
        "enrollment_manual_accept": args.enrollment_manual_accept,
        "dev_plain_listener": args.dev_plain_listener,
        "revocation_action": args.revocation_action,
        "api_https": args.api_https,
    }
    settings = Settings.from_env(**overrides)
    if args.no_mqtt:
        settings.broker_url = None
    return settings


def settings_or_none(args: argparse.Namespace, *, prog: str) -> Any:
    """`settings_from_args`, or None after saying on stderr what is wrong with them."""
    from fleet_server.settings import SettingsError

    try:
        return settings_from_args(args)
    except (SettingsError, ValueError) as exc:
        print(f"{prog}: bad settings: {exc}", file=sys.stderr)
        return None
