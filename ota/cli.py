"""`nigehbaan ota …`: the technician's and the node's side of signed updates.

On a node (reads the node's agent.toml for its data directory, group, repository and
mTLS files; `ota` does not import the agent, so the few keys are read here)::

    nigehbaan ota status  [--config agent.toml] [--json]
    nigehbaan ota check   [--config …] [--kind app] [--trust-clock-from-server] [--from DIR]
    nigehbaan ota install PATH [--config …] [--allow-downgrade]
    nigehbaan ota rollback [--config …] [--kind app]
    nigehbaan ota launch  [--config …] [-- AGENT ARGS]   what the systemd unit runs

`install PATH` takes either a copy of the repository (a directory with `metadata/` and
`targets/`, e.g. on a USB stick), verified by python-tuf exactly as over HTTPS, or a bare
artifact `.tar` whose sha256 the node's last verified metadata signs. Nothing unsigned is
ever installed. At the key ceremony and in CI::

    nigehbaan ota keygen --out DIR [--count 3]       offline root keys (passphrase-encrypted)
    nigehbaan ota init REPO --root-keys DIR --threshold 2 --online-keys DIR
    nigehbaan ota build SRC --kind app --name agent --version 1.4.0 --hardware rpi4 --out F

Exit codes: 0 done (or nothing to do), 2 usage/config, 3 refused (bad data: the reason is
printed), 4 transport (try again), 5 slots.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE, EXIT_REFUSED, EXIT_TRANSPORT, EXIT_SLOTS = 2, 3, 4, 5
KINDS = ("app", "model", "config")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `ota` subcommand and its actions."""
    parser = subparsers.add_parser("ota", help="signed updates: status, check, install, rollback")
    actions = parser.add_subparsers(dest="ota_action", required=True)

    def node_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument(
            "--config",
            type=Path,
            default=Path("/etc/nigehbaan/agent.toml"),
            help="the node's agent.toml",
        )
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    status = node_parser("status", "versions in each slot, a trial, the last rollback")
    status.set_defaults(func=_status)
    check = node_parser("check", "ask the repository what this node should run")
    check.add_argument("--kind", choices=KINDS, action="append", help="only this kind")
    check.add_argument(
        "--trust-clock-from-server",
        action="store_true",
        help="judge expiry by the server's clock (a node clock that is wrong)",
    )
    check.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        help="a repository copy (metadata/ and targets/, e.g. a USB stick) instead of the URL",
    )
    check.set_defaults(func=_check)
    install = node_parser("install", "install from a repository copy or a signed .tar")
    install.add_argument("path", type=Path, help="repository directory or artifact .tar")
    install.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="only honoured when the signed metadata allows it too",
    )
    install.set_defaults(func=_install)
    rollback = node_parser("rollback", "go back to the other slot")
    rollback.add_argument("--kind", choices=KINDS, default="app")
    rollback.set_defaults(func=_rollback)
    launch = node_parser("launch", "run the agent from its app slot under the health gate")
    launch.add_argument(
        "--module",
        default="edge_agent.console",
        help="the agent's entry module, run as __main__ from the slot",
    )
    launch.add_argument(
        "--poll-s", type=float, default=5.0, help="how often the running agent is watched"
    )
    launch.add_argument(
        "--deadline-grace-s",
        type=float,
        default=60.0,
        help="past a trial's deadline by this much, the launcher rolls back itself",
    )
    launch.add_argument(
        "--stop-timeout-s",
        type=float,
        default=30.0,
        help="after SIGTERM, how long the agent has to stop before SIGKILL",
    )
    launch.add_argument(
        "agent_args",
        nargs=argparse.REMAINDER,
        help="after --: the agent's arguments (default: agent --config CONFIG)",
    )
    launch.set_defaults(func=_launch)

    keygen = actions.add_parser("keygen", help="key ceremony: offline root keys")
    keygen.add_argument("--out", type=Path, required=True)
    keygen.add_argument("--count", type=int, default=3)
    keygen.add_argument(
        "--passphrase-env",
        default=None,
        help="read passphrases from $VAR_1, $VAR_2 … (tests); else prompt",
    )
    keygen.set_defaults(func=_keygen)
    init = actions.add_parser("init", help="key ceremony: create a repository")
    init.add_argument("repo", type=Path)
    init.add_argument("--root-keys", type=Path, required=True)
    init.add_argument("--threshold", type=int, default=2)
    init.add_argument(
        "--online-keys",
        type=Path,
        required=True,
        help="written here: the server's timestamp/snapshot/release/director keys",
    )
    init.add_argument("--passphrase-env", default=None)
    init.set_defaults(func=_init)
    build = actions.add_parser("build", help="pack a directory into an artifact")
    build.add_argument("source", type=Path)
    build.add_argument("--kind", choices=(*KINDS, "os"), required=True)
    build.add_argument("--name", required=True)
    build.add_argument("--version", required=True)
    build.add_argument("--hardware", action="append", required=True)
    build.add_argument("--out", type=Path, required=True)
    build.set_defaults(func=_build)


# -- the node's settings, read from agent.toml without importing the agent ------------------


class _NodeSettings:
    def __init__(self, path: Path) -> None:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # Python 3.10 on JetPack 6
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(_fail(f"cannot read {path}: {exc}", EXIT_USAGE)) from exc
        ota: dict[str, Any] = dict(data.get("ota", {}))
        mqtt: dict[str, Any] = dict(data.get("mqtt", {}))
        hardware: dict[str, Any] = dict(data.get("hardware") or {})
        self.data_dir = Path(str(data.get("data_dir", "."))) / "ota"
        node_id = str(data.get("node_id", "node"))
        self.group = str(ota.get("group") or re.sub(r"[^a-z0-9-]", "-", node_id.lower())[:63])
        self.hardware = str(ota.get("hardware") or hardware.get("type") or "sim")
        self.repository_url = str(ota.get("repository_url", "https://127.0.0.1:8443/ota"))
        self.trusted_root = Path(str(ota.get("trusted_root") or self.data_dir / "root.json"))
        self.kinds = [str(k) for k in ota.get("kinds", KINDS)]
        self.max_boots = int(ota.get("max_boots", 3))
        self.dev_mode = bool(data.get("dev_mode", False))
        self.tls = tuple(
            Path(str(mqtt[k])) if mqtt.get(k) else None
            for k in ("ca_file", "cert_file", "key_file")
        )

    def client(self, *, transport: Any = None, base_url: str | None = None) -> Any:
        from ota.transport import HttpsTransport
        from ota.trust import UpdateClient

        base = (base_url or self.repository_url).rstrip("/")
        if transport is None and base.startswith("http://"):
            # Signed and hashed, but neither private nor authenticating the node.
            if not self.dev_mode:
                raise SystemExit(_fail("repository_url over http:// needs dev_mode", EXIT_USAGE))
            transport = HttpsTransport(ca_file=None)
        if transport is None:
            ca, cert, key = self.tls
            if ca is None:
                raise SystemExit(_fail("[mqtt] ca_file is needed for HTTPS", EXIT_USAGE))
            transport = HttpsTransport(ca_file=ca, cert_file=cert, key_file=key)
        root = self.trusted_root.read_bytes() if self.trusted_root.exists() else None
        return UpdateClient(
            cache_dir=self.data_dir / "cache",
            metadata_url=f"{base}/metadata/",
            targets_url=f"{base}/targets/",
            transport=transport,
            group=self.group,
            hardware=self.hardware,
            trusted_root=root,
        )

    def store(self, kind: str) -> Any:
        from ota.artifacts import ArtifactKind
        from ota.slots import SlotStore

        return SlotStore(self.data_dir / "slots", ArtifactKind(kind), max_boots=self.max_boots)


def _fail(message: str, code: int) -> int:
    print(f"nigehbaan ota: {message}", file=sys.stderr)
    return code


def _refusal(exc: Any) -> int:
    from ota.errors import TransportError, TrustError

    evidence = getattr(exc, "evidence", None)
    print(f"refused ({exc.reason}): {exc.message}", file=sys.stderr)
    if evidence:
        print(f"evidence: {json.dumps(evidence, sort_keys=True, default=str)}", file=sys.stderr)
    if isinstance(exc, TransportError):
        return EXIT_TRANSPORT
    return EXIT_REFUSED if isinstance(exc, TrustError) else EXIT_SLOTS


# -- node actions -------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    node = _NodeSettings(args.config)
    rows = {}
    for kind in node.kinds:
        status = node.store(kind).status()
        rows[kind] = {
            "slot": status.active_slot,
            "version": status.active_version,
            "committed": status.committed_version,
            "trial": status.trial,
            "last_rollback": status.last_rollback,
        }
    if args.json:
        print(
            json.dumps(
                {"group": node.group, "hardware": node.hardware, "kinds": rows},
                indent=1,
                sort_keys=True,
            )
        )
        return 0
    print(f"group {node.group}, hardware {node.hardware}")
    for kind, row in rows.items():
        line = f"{kind:7} slot {row['slot'] or '-'}  running {row['version'] or '-'}"
        if row["trial"]:
            line += f"  ON TRIAL (previous slot {row['trial']['previous']})"
        if row["last_rollback"]:
            back = row["last_rollback"]
            line += f"  last rollback: {back['version']} ({back['reason']})"
        print(line)
    return 0


def _check(args: argparse.Namespace) -> int:
    from ota.artifacts import ArtifactKind
    from ota.errors import OtaError

    node = _NodeSettings(args.config)
    if args.source is not None:
        from ota.transport import DirectoryTransport

        transport = DirectoryTransport(args.source)
        client = node.client(transport=transport, base_url=transport.base_url)
    else:
        client = node.client()
    found: dict[str, Any] = {}
    for kind in args.kind or node.kinds:
        try:
            offer = client.check(
                ArtifactKind(kind), trust_server_clock=args.trust_clock_from_server
            )
        except OtaError as exc:
            return _refusal(exc)
        running = node.store(kind).installed_version()
        found[kind] = (
            None
            if offer is None
            else {
                "version": offer.version,
                "campaign": offer.campaign,
                "running": running,
                "downgrade": offer.downgrade,
                "length": offer.length,
            }
        )
    if args.json:
        print(json.dumps(found, indent=1, sort_keys=True))
    else:
        for kind, offer in found.items():
            print(
                f"{kind:7} "
                + (
                    "nothing assigned"
                    if offer is None
                    else f"{offer['version']} (campaign {offer['campaign']}, "
                    f"running {offer['running'] or '-'})"
                )
            )
    return 0


def _install(args: argparse.Namespace) -> int:
    from ota.errors import OtaError

    node = _NodeSettings(args.config)
    try:
        if args.path.is_dir():
            done = _install_from_copy(node, args.path, allow_downgrade=args.allow_downgrade)
        else:
            done = _install_signed_tar(node, args.path, allow_downgrade=args.allow_downgrade)
    except OtaError as exc:
        return _refusal(exc)
    for kind, version in done.items():
        trial = node.store(kind).on_trial()
        if trial:
            print(
                f"{kind} {version} installed and switched, on trial: restart the agent; it "
                "must report healthy before the deadline or it switches back by itself"
            )
        else:
            print(f"{kind} {version} installed (the first version in its slots)")
    if not done:
        print("nothing to install: this node already runs what its group is assigned")
    return 0


def _install_from_copy(node: _NodeSettings, path: Path, *, allow_downgrade: bool) -> dict[str, str]:
    from ota.artifacts import ArtifactKind
    from ota.transport import DirectoryTransport
    from ota.trust import check_version

    transport = DirectoryTransport(path)
    client = node.client(transport=transport, base_url=transport.base_url)
    done: dict[str, str] = {}
    for kind in node.kinds:
        offer = client.check(ArtifactKind(kind))
        store = node.store(kind)
        if offer is None or offer.version == store.installed_version():
            continue
        check_version(offer, installed=store.installed_version())
        got = client.download(
            offer, installed=store.installed_artifact(), installed_version=store.installed_version()
        )
        first = store.active_slot() is None  # a first install is committed at once
        store.install(got.path, allow_downgrade=offer.downgrade and allow_downgrade)
        if not first:
            store.switch(now=_now(), deadline_s=900.0, campaign=offer.campaign)
            store.mark_clean_shutdown()  # the restart the technician makes is deliberate
        done[kind] = offer.version
    return done


def _install_signed_tar(
    node: _NodeSettings, path: Path, *, allow_downgrade: bool
) -> dict[str, str]:
    import hashlib

    from ota.artifacts import read_bundle
    from ota.errors import TrustError, TrustReason

    blob = path.read_bytes()
    manifest, _ = read_bundle(blob)
    digest = hashlib.sha256(blob).hexdigest()
    role_file = node.data_dir / "cache" / "metadata" / f"{manifest.kind.value}.json"
    signed = False
    if role_file.exists():
        # python-tuf wrote this file only after verifying it; it names what the release
        # role signed the last time this node was online.
        targets = json.loads(role_file.read_text(encoding="utf-8"))["signed"]["targets"]
        signed = any(t.get("hashes", {}).get("sha256") == digest for t in targets.values())
    if not signed:
        raise TrustError(
            f"{path.name} is not signed in the metadata this node last verified; bring a copy "
            "of the repository (metadata/ and targets/) instead",
            reason=TrustReason.SIGNATURE,
        )
    store = node.store(manifest.kind.value)
    first = store.active_slot() is None
    store.install(path, allow_downgrade=allow_downgrade)
    if not first:
        store.switch(now=_now(), deadline_s=900.0, campaign="local")
        store.mark_clean_shutdown()  # the restart the technician makes is deliberate
    return {manifest.kind.value: manifest.version}


def _rollback(args: argparse.Namespace) -> int:
    from ota.errors import OtaError

    node = _NodeSettings(args.config)
    try:
        verdict = node.store(args.kind).rollback(reason="technician")
    except OtaError as exc:
        return _refusal(exc)
    print(f"{args.kind} back on {verdict.version}: restart the agent")
    return 0


def _launch(args: argparse.Namespace) -> int:
    import logging

    from ota.launcher import launch

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    node = _NodeSettings(args.config)
    agent_args = list(args.agent_args)
    if agent_args[:1] == ["--"]:
        agent_args = agent_args[1:]
    return launch(
        slots_dir=node.data_dir / "slots",
        kinds=node.kinds,
        max_boots=node.max_boots,
        agent_args=agent_args or ["agent", "--config", str(args.config.resolve())],
        module=args.module,
        poll_s=args.poll_s,
        deadline_grace_s=args.deadline_grace_s,
        stop_timeout_s=args.stop_timeout_s,
    )


def _now() -> float:
    import time

    return time.time()


# -- key ceremony and CI ----------------------------------------------------------------------


def _passphrase(env: str | None, index: int, purpose: str) -> bytes:
    if env:
        value = os.environ.get(f"{env}_{index}")
        if not value:
            raise SystemExit(_fail(f"${env}_{index} is not set", EXIT_USAGE))
        return value.encode()
    first = getpass.getpass(f"passphrase for {purpose}: ")
    if first != getpass.getpass("again: ") or not first:
        raise SystemExit(_fail("passphrases differ or are empty", EXIT_USAGE))
    return first.encode()


def _keygen(args: argparse.Namespace) -> int:
    from ota.keys import generate_signer, save_signer

    args.out.mkdir(parents=True, exist_ok=True)
    for index in range(1, args.count + 1):
        signer = generate_signer()
        path = args.out / f"root-{index}.pem"
        save_signer(path, signer, passphrase=_passphrase(args.passphrase_env, index, path.name))
        print(f"{path}  keyid {signer.public_key.keyid}")
    signer = generate_signer()
    path = args.out / "targets.pem"
    save_signer(
        path, signer, passphrase=_passphrase(args.passphrase_env, args.count + 1, path.name)
    )
    print(f"{path}  keyid {signer.public_key.keyid}")
    return 0


def _init(args: argparse.Namespace) -> int:
    from ota.errors import OtaError
    from ota.keys import OnlineKeys, load_signer
    from ota.repository import Repository

    paths = sorted(args.root_keys.glob("root-*.pem"))
    try:
        roots = [
            load_signer(p, passphrase=_passphrase(args.passphrase_env, i, p.name))
            for i, p in enumerate(paths, start=1)
        ]
        targets = load_signer(
            args.root_keys / "targets.pem",
            passphrase=_passphrase(args.passphrase_env, len(paths) + 1, "targets.pem"),
        )
        online = OnlineKeys.generate()
        online.save(args.online_keys)
        repo = Repository.create(
            args.repo,
            root_signers=roots,
            root_threshold=args.threshold,
            targets_signer=targets,
            online=online,
        )
    except OtaError as exc:
        return _fail(str(exc), EXIT_USAGE)
    print(
        f"repository in {repo.directory}: root {args.threshold} of {len(roots)}; "
        f"provision nodes with {repo.metadata_dir / '1.root.json'}"
    )
    return 0


def _build(args: argparse.Namespace) -> int:
    from ota.artifacts import ArtifactKind, build_artifact
    from ota.errors import OtaError

    try:
        blob, manifest = build_artifact(
            args.source,
            kind=ArtifactKind(args.kind),
            name=args.name,
            version=args.version,
            hardware=args.hardware,
        )
    except OtaError as exc:
        return _fail(str(exc), EXIT_USAGE)
    args.out.write_bytes(blob)
    print(json.dumps(manifest.custom(), indent=1, sort_keys=True))
    return 0
