"""`nigehbaan server`: run the fleet server, or make a user and exit.

Run it as its own process (end-to-end tests `kill -9` it and start it again
on the same database). When the HTTP socket is listening it prints one line,
`nigehbaan server ready http://HOST:PORT` (flushed), which scripts and tests
wait for; `/healthz` answers from then on.

Making users without a prompt::

    OP_PW=secret nigehbaan server --data-dir DIR --create-user alice \
        --role operator --password-env OP_PW
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `server` subcommand."""
    parser = subparsers.add_parser(
        "server",
        help="run the fleet server (REST API, console, MQTT ingest, alerts)",
        description="Run the fleet server. Options override NIGEHBAAN_* environment variables.",
    )
    parser.add_argument("--db", dest="db_url", help="database URL (default sqlite in data dir)")
    broker = parser.add_mutually_exclusive_group()
    broker.add_argument("--broker-url", help="MQTT broker, e.g. mqtt://127.0.0.1:1883")
    broker.add_argument(
        "--managed-broker",
        action="store_true",
        default=None,
        help="start our own Mosquitto under DATA_DIR/broker",
    )
    broker.add_argument("--no-mqtt", action="store_true", help="API only: no ingest, no commands")
    parser.add_argument("--managed-broker-port", type=int, help="port for --managed-broker")
    parser.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8080)")
    parser.add_argument("--data-dir", type=Path, help="state directory")
    parser.add_argument("--env", choices=["dev", "test", "prod"], help="deployment kind")
    users = parser.add_argument_group("users (create and exit)")
    users.add_argument("--create-user", metavar="NAME", help="create a user and exit")
    users.add_argument(
        "--create-admin", metavar="NAME", help="same as --create-user NAME --role admin"
    )
    users.add_argument(
        "--role", choices=["admin", "operator", "technician", "auditor"], default="operator"
    )
    users.add_argument(
        "--password-env", metavar="VAR", help="read the new user's password from this env var"
    )
    parser.set_defaults(func=_run)


def _settings(args: argparse.Namespace) -> Any:
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
    }
    settings = Settings.from_env(**overrides)
    if args.no_mqtt:
        settings.broker_url = None
    return settings


def _run(args: argparse.Namespace) -> int:
    from fleet_server.settings import SettingsError

    try:
        settings = _settings(args)
    except (SettingsError, ValueError) as exc:
        print(f"nigehbaan server: bad settings: {exc}", file=sys.stderr)
        return 2
    name = args.create_admin or args.create_user
    if name:
        role = "admin" if args.create_admin else args.role
        return _create_user(settings, name=name, role=role, password_env=args.password_env)
    return _serve(settings)


def _create_user(settings: Any, *, name: str, role: str, password_env: str | None) -> int:
    from pydantic import ValidationError
    from sqlmodel import Session

    from fleet_server.auth import UserExists, create_user
    from fleet_server.db import create_schema, make_engine
    from fleet_server.models import Role, UserCreate

    if password_env:
        password = os.environ.get(password_env)
        if not password:
            print(f"nigehbaan server: ${password_env} is empty or unset", file=sys.stderr)
            return 2
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
    else:
        print("nigehbaan server: give --password-env VAR (no terminal to ask)", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    create_schema(engine)
    try:
        user_in = UserCreate(username=name, role=Role(role), password=password)
        with Session(engine) as session:
            create_user(session=session, user_in=user_in)
    except ValidationError as exc:
        print(f"nigehbaan server: {exc}", file=sys.stderr)
        return 2
    except UserExists as exc:
        print(f"nigehbaan server: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"created {role} {name}")
    return 0


def _serve(settings: Any) -> int:
    import uvicorn

    from fleet_server.app import create_app
    from fleet_server.log_redaction import install as redact_tokens_in_logs

    redact_tokens_in_logs()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                host, port = settings.host, settings.port
                for server in getattr(self, "servers", []):
                    for sock in server.sockets:
                        host, port = sock.getsockname()[:2]
                        break
                print(f"nigehbaan server ready http://{host}:{port}", flush=True)

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None,  # keep the dispatcher's logging setup
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
