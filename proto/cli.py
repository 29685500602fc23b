"""`nigehbaan proto …`: tools for the wire contract (schema export, checks)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `proto` subcommand."""
    parser = subparsers.add_parser("proto", help="wire contract tools")
    sub = parser.add_subparsers(dest="proto_command", required=True)
    schema = sub.add_parser("schema", help="export a JSON Schema per message kind")
    schema.add_argument("--out", type=Path, required=True, help="directory to write into")
    schema.set_defaults(func=_schema)
    check = sub.add_parser("check", help="validate a payload file against a topic")
    check.add_argument("topic", help="topic the payload was published on")
    check.add_argument("payload", type=Path, help="file holding the payload bytes")
    check.set_defaults(func=_check)


def _schema(args: argparse.Namespace) -> int:
    from proto.catalog import export_schemas

    paths = export_schemas(args.out)
    print(f"wrote {len(paths)} schemas to {args.out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from proto.codec import decode
    from proto.errors import ProtoError

    try:
        message = decode(args.topic, args.payload.read_bytes())
    except ProtoError as exc:
        print(f"rejected ({exc.reason}): {exc}", file=sys.stderr)
        return 1
    print(f"ok: {type(message).__name__}")
    return 0
