"""`nigehbaan server`: run the fleet server, or make a user and exit.

Run it as its own process (end-to-end tests `kill -9` it and start it again
on the same database). When the HTTP socket is listening it prints one line,
`nigehbaan server ready http://HOST:PORT` (flushed), which scripts and tests
wait for; `/healthz` answers from then on.

The certificate authority (docs/provisioning.md) has its own subcommands,
`nigehbaan server ca init` and `nigehbaan server ca issue-intermediate`
(`fleet_server.ca_cli`); without a subcommand `server` runs the server.

Making users without a prompt::

    OP_PW=secret nigehbaan server --data-dir DIR --create-user alice \
        --role operator --password-env OP_PW
"""

from __future__ import annotations

import argparse
import gc
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from fleet_server.settings_cli import settings_or_none


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
    pki = parser.add_argument_group("provisioning and identity (docs/provisioning.md)")
    pki.add_argument(
        "--init-pki",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make a development root + issuing CA in DATA_DIR/pki if missing (dev only; "
        "default: on in dev)",
    )
    pki.add_argument("--mqtts-port", type=int, help="managed broker TLS port (8883; 0 = free)")
    pki.add_argument("--mqtts-bind", help="TLS listener address (127.0.0.1; 0.0.0.0 for nodes)")
    pki.add_argument(
        "--broker-hostname",
        action="append",
        dest="broker_hostnames",
        help="extra name/IP for the broker and API certificates (repeatable)",
    )
    pki.add_argument("--public-hostname", help="host nodes are told to use (default: request's)")
    pki.add_argument("--node-cert-days", type=int, help="node certificate lifetime (30)")
    pki.add_argument(
        "--enrollment-manual-accept",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="queue unknown nodes for an admin instead of refusing them",
    )
    pki.add_argument(
        "--dev-plain-listener",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="managed broker also listens plain on loopback (default: only in dev)",
    )
    pki.add_argument(
        "--revocation-action",
        choices=["restart", "reload"],
        help="what a revocation does to the managed broker (default restart)",
    )
    pki.add_argument(
        "--https",
        dest="api_https",
        action="store_true",
        default=None,
        help="serve the API over HTTPS with DATA_DIR/pki/api.pem",
    )
    parser.set_defaults(func=_run)
    from fleet_server.audit_cli import register_audit
    from fleet_server.ca_cli import register_ca
    from fleet_server.db_cli import register_db
    from fleet_server.watchlists.cli import register_watchlist_templates

    commands = parser.add_subparsers(
        dest="server_command", metavar="{ca,db,audit}", help="optional: CA, database, audit tools"
    )
    register_ca(commands)
    register_db(commands)
    register_audit(commands)
    register_watchlist_templates(commands)  # docs/watchlists.md


def _run(args: argparse.Namespace) -> int:
    settings = settings_or_none(args, prog="nigehbaan server")
    if settings is None:
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
    from fleet_server.db import make_engine
    from fleet_server.models import Role, UserCreate
    from fleet_server.schema import SchemaError, migrate

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
    try:
        migrate(engine)
        user_in = UserCreate(username=name, role=Role(role), password=password)
        with Session(engine) as session:
            create_user(session=session, user_in=user_in, actor=_cli_actor())
    except ValidationError as exc:
        print(f"nigehbaan server: {exc}", file=sys.stderr)
        return 2
    except (UserExists, SchemaError) as exc:
        print(f"nigehbaan server: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"created {role} {name}")
    return 0


def _cli_actor() -> str:
    """Who the audit log names for a user made from the command line: the OS account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _https_files(settings: Any) -> tuple[str, str] | None:
    """(cert, key) for HTTPS, or None for plain HTTP.

    `--https` without explicit files uses the API certificate the server
    issues itself (DATA_DIR/pki/api.pem), making the PKI first if needed.
    """
    if not settings.api_https:
        return None
    if settings.api_certfile and settings.api_keyfile:
        return str(settings.api_certfile), str(settings.api_keyfile)
    from fleet_server.app import prepare_pki

    paths = prepare_pki(settings)
    if paths is None:
        raise SystemExit("nigehbaan server: --https needs a PKI (`ca issue-intermediate`)")
    cert, key = paths.service("api")
    return str(cert), str(key)


def _schema_refusal(settings: Any) -> int | None:
    """Migrate before serving; a database we refuse or cannot reach is one clear line.

    Returns the exit code to stop with (2 refused, 1 unreachable), or None to go on.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from fleet_server.db import make_engine
    from fleet_server.schema import SchemaError, migrate

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
    except SchemaError as exc:
        print(f"nigehbaan server: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        print(f"nigehbaan server: cannot use the database {where}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return None


def _serve(settings: Any) -> int:
    import uvicorn

    from fleet_server.app import create_app
    from fleet_server.log_redaction import install as redact_tokens_in_logs

    redact_tokens_in_logs()
    refused = _schema_refusal(settings)
    if refused is not None:
        return refused

    ssl_files = _https_files(settings)
    # Over HTTPS, nodes may present their client certificate (the OTA repository reads it).
    client_certs: dict[str, Any] = {}
    if ssl_files:
        from fleet_server.ota.mtls import uvicorn_client_cert_options
        from fleet_server.pki import PkiPaths

        chain = PkiPaths(settings.pki_path).chain
        if chain.exists():
            client_certs = uvicorn_client_cert_options(chain)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                # What start-up loaded (FastAPI, SQLAlchemy, pydantic schemas)
                # lives as long as the process; frozen, it is no longer walked
                # by every full collection, which otherwise pauses all threads
                # (ingest included) for tens of ms at random moments.
                gc.collect()
                gc.freeze()
                host, port = settings.host, settings.port
                for server in getattr(self, "servers", []):
                    for sock in server.sockets:
                        host, port = sock.getsockname()[:2]
                        break
                scheme = "https" if ssl_files else "http"
                print(f"nigehbaan server ready {scheme}://{host}:{port}", flush=True)

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None,  # keep the dispatcher's logging setup
        timeout_graceful_shutdown=5,
        ssl_certfile=ssl_files[0] if ssl_files else None,
        ssl_keyfile=ssl_files[1] if ssl_files else None,
        **client_certs,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
