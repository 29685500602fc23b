"""`nigehbaan evidence verify BUNDLE --ca ca.pem`: check an export bundle offline.

Runs on any machine with the package installed and only the fleet CA
certificate: it imports `fleet_server.evidence.verify` (cryptography,
pydantic, proto), never the database or the web stack. Exit 0: the bundle
holds; 1: it does not (each failing file named, one line each); 2: it could
not be checked (unreadable bundle or CA file)::

    nigehbaan evidence verify evidence-alert-01J….zip --ca fleet-root.pem
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `evidence …` to the `nigehbaan` command."""
    parser = subparsers.add_parser(
        "evidence", help="evidence export bundles: verify one offline (docs/evidence.md)"
    )
    actions = parser.add_subparsers(dest="evidence_action", required=True, metavar="{verify}")
    verify = actions.add_parser(
        "verify", help="check a bundle's files, node signatures, chains and audit records"
    )
    verify.add_argument("bundle", type=Path, help="the export bundle (.zip)")
    verify.add_argument(
        "--ca", type=Path, required=True, help="fleet CA certificate(s), PEM (the root is enough)"
    )
    verify.add_argument("--json", action="store_true", help="one JSON object on stdout")
    verify.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from fleet_server.evidence.verify import BundleError, load_ca, verify_bundle

    try:
        trusted = load_ca(Path(args.ca).read_bytes())
        verdict = verify_bundle(Path(args.bundle), trusted=trusted)
    except (OSError, BundleError) as exc:
        print(f"nigehbaan evidence verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "ok": verdict.ok,
                    "subject": verdict.subject,
                    "files": verdict.files,
                    "audit_records": verdict.audit_records,
                    "problems": [{"file": f, "why": w} for f, w in verdict.problems],
                }
            )
        )
    else:
        for name, why in verdict.problems:
            print(f"FAIL {name}: {why}")
        state = "holds" if verdict.ok else "does NOT hold"
        print(
            f"bundle {args.bundle.name} ({verdict.subject}): {verdict.files} file(s), "
            f"{verdict.audit_records} audit record(s): {state}"
        )
    return 0 if verdict.ok else 1
