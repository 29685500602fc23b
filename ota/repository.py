"""The OTA repository (server / CI side): TUF metadata and targets as a tree of static files.

Built on python-tuf 7's Metadata API; nothing here is a home-made signature scheme.
The roles::

    root        offline keys, threshold (e.g. 2 of 3); names every top-level key
    timestamp   online key; re-signed often (expires in a day), points at the snapshot
    snapshot    online key; versions and hashes of every targets role (no mix-and-match)
    targets     offline key; delegates, once, to:
      app / model / config   online "release" key; the artifacts themselves, paths `<kind>/*`
      director               online "director" key; paths `groups/*/*`; delegates to:
        group-<g>            director key; paths `groups/<g>/*`: what group <g> should run

A node of group `g` looks up `groups/<g>/<kind>`. That entry (in `group-<g>`) carries the
artifact's length and hashes plus custom metadata (kind path, version, campaign, downgrade,
deltas); the node then finds the same artifact under `<kind>/…` (signed by the release
key) and refuses unless both agree. That is the Uptane split between the image
repository and the director: a node cannot be fed another group's valid-but-wrong
artifact, because only `group-<g>` may sign paths under `groups/<g>/`, and snapshot pins
every role's version and hash.

Output, served as static files (any byte range)::

    <directory>/metadata/1.root.json, 2.root.json …, timestamp.json,
                         <N>.snapshot.json, <N>.targets.json, <N>.<role>.json …
    <directory>/targets/<kind>/<sha256>.<name>-<version>.tar   (and .bsdiff deltas)

How the server uses it (fleet_server/ota, one process owns a directory)::

    from ota.keys import OnlineKeys
    from ota.repository import Repository
    from ota.artifacts import ArtifactKind, build_artifact

    repo = Repository.open(Path("/var/lib/nigehbaan/ota"), online=OnlineKeys.load(keys_dir))
    blob, manifest = build_artifact(src, kind=ArtifactKind.APP, name="agent",
                                    version="1.4.0", hardware=["rpi4", "sim"])
    repo.add_artifact(blob, manifest)             # or repo.add_artifact_file(path)
    repo.add_delta(old_manifest, manifest)         # optional, bsdiff4 from an older build
    repo.assign("district-7", manifest, campaign_id="c-42")   # what group district-7 runs
    repo.publish()                                 # signs what changed, snapshot, timestamp
    repo.refresh_expiring()                        # a timer job: re-sign before expiry
    repo.metadata_dir, repo.targets_dir            # serve these two with Range support
    repo.target_file(manifest.target_path)         # the on-disk file behind a target path

A new repository is made at the key ceremony: `Repository.create(directory,
root_signers=[…], root_threshold=2, targets_signer=…, online=OnlineKeys.generate())`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Key,
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from ota.artifacts import ArtifactKind, ArtifactManifest, make_delta, parse_version, read_bundle
from ota.errors import RepositoryError
from ota.keys import OnlineKeys

__all__ = ["Expiry", "Repository", "group_role", "group_target_path"]

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Signed)

KIND_ROLES = tuple(kind.value for kind in ArtifactKind)
# Kind roles added after the first repositories were made: absent from those until a
# key ceremony re-signs the top-level targets role to delegate them.
OPTIONAL_KIND_ROLES = frozenset({ArtifactKind.OS.value})
DIRECTOR = "director"
_GROUP = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def group_role(group: str) -> str:
    """The delegated role name of a node group: `group-<g>`."""
    if not _GROUP.match(group):
        raise RepositoryError(f"group {group!r}: lower-case letters, digits and '-' only")
    return f"group-{group}"


def group_target_path(group: str, kind: ArtifactKind) -> str:
    """The target path a node of `group` looks up for `kind`: `groups/<g>/<kind>`."""
    group_role(group)
    return f"groups/{group}/{kind.value}"


@dataclass(frozen=True)
class Expiry:
    """How long each role's signature is good for; limits are configuration, not constants."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=365)
    kind: timedelta = timedelta(days=90)
    director: timedelta = timedelta(days=30)
    group: timedelta = timedelta(days=30)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def for_role(self, role: str) -> timedelta:
        """The lifetime of `role`."""
        if role in KIND_ROLES:
            return self.kind
        if role.startswith("group-"):
            return self.group
        value = getattr(self, role, None)
        if not isinstance(value, timedelta):
            raise RepositoryError(f"no expiry for role {role!r}")
        return value


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Repository:
    """A TUF repository in a directory: add artifacts, assign them to groups, publish.

    Not thread-safe across processes: one server process owns a directory. Within the
    process a lock serializes changes.
    """

    def __init__(
        self,
        directory: Path,
        *,
        online: OnlineKeys,
        expiry: Expiry | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.directory = directory
        self.online = online
        self.expiry = expiry or Expiry()
        self._clock = clock
        self._lock = threading.RLock()
        self._roles: dict[str, Metadata[Any]] = {}
        self._dirty: set[str] = set()
        self._serializer = JSONSerializer(compact=False)
        # The bytes last written per role: snapshot hashes them, so with one role per node
        # a publish must not re-serialize thousands of unchanged roles.
        self._written: dict[str, bytes] = {}

    # -- paths -------------------------------------------------------------------------

    @property
    def metadata_dir(self) -> Path:
        """Serve this as `<base>/metadata/`."""
        return self.directory / "metadata"

    @property
    def targets_dir(self) -> Path:
        """Serve this as `<base>/targets/` (with HTTP Range)."""
        return self.directory / "targets"

    def target_file(self, target_path: str) -> Path:
        """The file on disk behind a target path signed in a kind role."""
        info = self._find_target(target_path)
        digest = info.hashes["sha256"]
        directory, _, name = target_path.rpartition("/")
        return self.targets_dir / directory / f"{digest}.{name}"

    # -- creation and loading ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        root_signers: Sequence[Signer],
        root_threshold: int,
        targets_signer: Signer,
        online: OnlineKeys,
        expiry: Expiry | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> Repository:
        """Make a new repository (the key ceremony): root v1, targets v1, empty roles."""
        if root_threshold < 1 or root_threshold > len(root_signers):
            raise RepositoryError(
                f"root threshold {root_threshold} needs at least that many root keys "
                f"(got {len(root_signers)})"
            )
        if (directory / "metadata" / "root.json").exists():
            raise RepositoryError(f"{directory} already holds a repository")
        repo = cls(directory, online=online, expiry=expiry, clock=clock)
        now = clock()
        root = Root(expires=now + repo.expiry.root, consistent_snapshot=True)
        for signer in root_signers:
            root.add_key(signer.public_key, Root.type)
        root.roles[Root.type].threshold = root_threshold
        root.add_key(online.timestamp.public_key, Timestamp.type)
        root.add_key(online.snapshot.public_key, Snapshot.type)
        root.add_key(targets_signer.public_key, Targets.type)
        root_md = Metadata(root)
        for signer in root_signers:
            root_md.sign(signer, append=True)
        repo._roles[Root.type] = root_md
        repo._write_role(Root.type)

        release = online.release.public_key
        director = online.director.public_key
        roles = {
            kind: DelegatedRole(kind, [release.keyid], 1, True, paths=[f"{kind}/*"])
            for kind in KIND_ROLES
        }
        roles[DIRECTOR] = DelegatedRole(DIRECTOR, [director.keyid], 1, True, paths=["groups/*/*"])
        targets = Targets(
            expires=now + repo.expiry.targets,
            delegations=Delegations(
                keys={release.keyid: release, director.keyid: director}, roles=roles
            ),
        )
        repo._roles[Targets.type] = Metadata(targets)
        repo._sign(Targets.type, [targets_signer])
        for kind in KIND_ROLES:
            repo._roles[kind] = Metadata(Targets(expires=now + repo.expiry.kind))
            repo._dirty.add(kind)
        repo._roles[DIRECTOR] = Metadata(
            Targets(
                expires=now + repo.expiry.director,
                delegations=Delegations(keys={director.keyid: director}, roles={}),
            )
        )
        repo._dirty.add(DIRECTOR)
        repo._roles[Snapshot.type] = Metadata(Snapshot(expires=now + repo.expiry.snapshot))
        repo._roles[Timestamp.type] = Metadata(Timestamp(expires=now + repo.expiry.timestamp))
        repo._write_role(Targets.type)
        repo.publish(_first=True)
        logger.info(
            "ota repository created in %s (root %s of %s)",
            directory,
            root_threshold,
            len(root_signers),
        )
        return repo

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        online: OnlineKeys,
        expiry: Expiry | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> Repository:
        """Load the latest signed state of an existing repository."""
        repo = cls(directory, online=online, expiry=expiry, clock=clock)
        if not (repo.metadata_dir / "root.json").exists():
            raise RepositoryError(f"{directory} holds no OTA repository (no metadata/root.json)")
        for role in (Root.type, Timestamp.type, Snapshot.type, Targets.type, *KIND_ROLES, DIRECTOR):
            if role in OPTIONAL_KIND_ROLES and not (repo.metadata_dir / f"{role}.json").exists():
                # A repository made before this kind existed: its offline targets role does
                # not delegate it; the next key ceremony adds it.
                logger.warning("ota repository %s has no %r role (made before it)", directory, role)
                continue
            repo._load_role(role)
        director = repo._signed(DIRECTOR, Targets)
        if director.delegations is not None and director.delegations.roles:
            for name in director.delegations.roles:
                repo._load_role(name)
        return repo

    def _load_role(self, role: str) -> None:
        # Keep the exact bytes on disk: snapshot must hash what nodes download.
        data = (self.metadata_dir / f"{role}.json").read_bytes()
        self._roles[role] = Metadata.from_bytes(data)
        self._written[role] = data

    # -- artifacts -------------------------------------------------------------------------

    def add_artifact(self, blob: bytes, manifest: ArtifactManifest | None = None) -> TargetFile:
        """Store an artifact under `targets/<kind>/` and list it in its kind role.

        The manifest is read from the bundle itself (and must agree with one passed in).
        Call `publish()` afterwards.
        """
        inner, _ = read_bundle(blob)
        if manifest is not None and (
            manifest.sha256 != inner.sha256
            or manifest.version != inner.version
            or manifest.kind != inner.kind
        ):
            raise RepositoryError("the manifest given does not describe this bundle")
        return self._add_target(inner.target_path, blob, inner.custom())

    def add_artifact_file(self, path: Path) -> TargetFile:
        """`add_artifact` for a bundle on disk (an upload or a CI build)."""
        return self.add_artifact(path.read_bytes())

    def add_delta(self, old: ArtifactManifest, new: ArtifactManifest) -> TargetFile:
        """Make and list a bsdiff4 delta from `old` to `new` (both already added)."""
        if old.kind != new.kind or old.name != new.name:
            raise RepositoryError("a delta joins two versions of the same artifact")
        old_blob = self.target_file(old.target_path).read_bytes()
        new_blob = self.target_file(new.target_path).read_bytes()
        delta = make_delta(old_blob, new_blob)
        path = f"{new.kind.value}/{new.name}-{old.version}-to-{new.version}.bsdiff"
        custom = {
            "delta_from": old.version,
            "delta_to": new.version,
            "base_sha256": old.sha256,
            "result_sha256": new.sha256,
            "result_size": new.size,
        }
        logger.info("delta %s: %s bytes (full artifact %s)", path, len(delta), new.size)
        return self._add_target(path, delta, custom)

    def _add_target(self, target_path: str, blob: bytes, custom: dict[str, Any]) -> TargetFile:
        kind = target_path.split("/", 1)[0]
        if kind not in KIND_ROLES:
            raise RepositoryError(f"target {target_path!r} is not under a kind role")
        with self._lock:
            info = TargetFile.from_data(target_path, blob, ["sha256"])
            info.unrecognized_fields["custom"] = custom
            digest = info.hashes["sha256"]
            directory, _, name = target_path.rpartition("/")
            _write_atomic(self.targets_dir / directory / f"{digest}.{name}", blob)
            self._signed(kind, Targets).targets[target_path] = info
            self._dirty.add(kind)
            return info

    def artifacts(self, kind: ArtifactKind | None = None) -> list[TargetFile]:
        """Every artifact and delta listed (optionally of one kind)."""
        kinds = [kind.value] if kind else [k for k in KIND_ROLES if k in self._roles]
        return [t for k in kinds for t in self._signed(k, Targets).targets.values()]

    def _find_target(self, target_path: str) -> TargetFile:
        kind = target_path.split("/", 1)[0]
        if kind not in KIND_ROLES:
            raise RepositoryError(f"target {target_path!r} is not under a kind role")
        info = self._signed(kind, Targets).targets.get(target_path)
        if info is None:
            raise RepositoryError(f"no artifact {target_path!r} in the repository")
        return info

    # -- groups (the director) ----------------------------------------------------------------

    def groups(self) -> list[str]:
        """The node groups the director knows."""
        delegations = self._signed(DIRECTOR, Targets).delegations
        names = delegations.roles if delegations and delegations.roles else {}
        return sorted(name.removeprefix("group-") for name in names)

    def assign(
        self,
        group: str,
        manifest: ArtifactManifest,
        *,
        campaign_id: str,
        downgrade: bool = False,
    ) -> TargetFile:
        """Say that nodes of `group` should run `manifest` (replaces the kind's assignment).

        Deltas already listed that lead to this version are named in the entry so the node
        can try one first. `downgrade=True` lets a node install a version older than its own.
        """
        role = group_role(group)
        with self._lock:
            artifact = self._find_target(manifest.target_path)
            self._ensure_group(group)
            deltas = {
                str(t.unrecognized_fields["custom"]["delta_from"]): t.path
                for t in self._signed(manifest.kind.value, Targets).targets.values()
                if t.unrecognized_fields.get("custom", {}).get("delta_to") == manifest.version
                and t.path.startswith(f"{manifest.kind.value}/{manifest.name}-")
            }
            entry = TargetFile(
                length=artifact.length,
                hashes=dict(artifact.hashes),
                path=group_target_path(group, manifest.kind),
                unrecognized_fields={
                    "custom": {
                        **artifact.unrecognized_fields.get("custom", {}),
                        "target": manifest.target_path,
                        "campaign": campaign_id,
                        "downgrade": downgrade,
                        "deltas": deltas,
                    }
                },
            )
            self._signed(role, Targets).targets[entry.path] = entry
            self._dirty.add(role)
            return entry

    def withdraw(self, group: str, kind: ArtifactKind) -> None:
        """Remove the group's assignment for `kind` (nodes keep what they run)."""
        role = group_role(group)
        with self._lock:
            if role in self._roles:
                self._signed(role, Targets).targets.pop(group_target_path(group, kind), None)
                self._dirty.add(role)

    def assignment(self, group: str, kind: ArtifactKind) -> TargetFile | None:
        """The signed (or about to be) assignment of `kind` for `group`."""
        role = group_role(group)
        if role not in self._roles:
            return None
        return self._signed(role, Targets).targets.get(group_target_path(group, kind))

    def _ensure_group(self, group: str) -> None:
        role = group_role(group)
        if role in self._roles:
            return
        director = self._signed(DIRECTOR, Targets)
        assert director.delegations is not None
        assert director.delegations.roles is not None
        keyid = self.online.director.public_key.keyid
        director.delegations.roles[role] = DelegatedRole(
            role, [keyid], 1, True, paths=[f"groups/{group}/*"]
        )
        self._roles[role] = Metadata(Targets(expires=self._clock() + self.expiry.group))
        self._dirty.update({role, DIRECTOR})

    # -- signing and publishing -----------------------------------------------------------------

    def publish(self, *, _first: bool = False) -> dict[str, int]:
        """Sign every changed role, then a new snapshot and timestamp; write them atomically.

        Returns the versions written. Timestamp is written last, so a node reading
        concurrently never sees a timestamp pointing at a snapshot not yet on disk.
        """
        with self._lock:
            written: dict[str, int] = {}
            changed = sorted(self._dirty, key=lambda r: (not r.startswith("group-"), r))
            for role in changed:
                written[role] = self._bump_and_sign(role, first=_first)
            if changed or _first:
                written[Snapshot.type] = self._sign_snapshot(first=_first)
                written[Timestamp.type] = self._sign_timestamp(first=_first)
            self._dirty.clear()
            if written:
                logger.info("ota repository published %s", written)
            return written

    def refresh_expiring(self, *, within: timedelta | None = None) -> dict[str, int]:
        """Re-sign online roles that expire within `within` (default: half their lifetime).

        A timer job on the server calls this; a node never sees stale metadata from a
        healthy server. Offline roles (root, targets) are only reported in the log.
        """
        now = self._clock()
        with self._lock:
            for role, md in self._roles.items():
                lifetime = self.expiry.for_role(role)
                limit = within if within is not None else lifetime / 2
                if md.signed.expires - now < limit:
                    if role in (Root.type, Targets.type):
                        logger.warning(
                            "ota %s expires %s: sign a new one with the offline "
                            "keys (docs/ota.md, key ceremony)",
                            role,
                            md.signed.expires.isoformat(),
                        )
                    elif role not in (Snapshot.type, Timestamp.type):
                        self._dirty.add(role)
            snapshot_due = self._roles[Snapshot.type].signed.expires - now < (
                within if within is not None else self.expiry.snapshot / 2
            )
            timestamp_due = self._roles[Timestamp.type].signed.expires - now < (
                within if within is not None else self.expiry.timestamp / 2
            )
            if self._dirty or snapshot_due:
                return self.publish()
            if timestamp_due:
                return {Timestamp.type: self._sign_timestamp(first=False)}
            return {}

    def _bump_and_sign(self, role: str, *, first: bool) -> int:
        md = self._roles[role]
        if not (first and role in (*KIND_ROLES, DIRECTOR)):
            md.signed.version += 1
        md.signed.expires = self._clock() + self.expiry.for_role(role)
        if role in KIND_ROLES:
            signers: list[Signer] = [self.online.release]
        elif role == DIRECTOR or role.startswith("group-"):
            signers = [self.online.director]
        else:
            raise RepositoryError(f"role {role!r} is signed offline (Repository.ceremony_*)")
        self._sign(role, signers)
        self._write_role(role)
        return int(md.signed.version)

    def _sign_snapshot(self, *, first: bool) -> int:
        snapshot = self._signed(Snapshot.type, Snapshot)
        for role, md in self._roles.items():
            if role in (Root.type, Timestamp.type, Snapshot.type):
                continue
            data = self._written.get(role) or self._bytes(role)
            snapshot.meta[f"{role}.json"] = MetaFile(
                version=md.signed.version,
                length=len(data),
                hashes={"sha256": hashlib.sha256(data).hexdigest()},
            )
        if not first:
            snapshot.version += 1
        snapshot.expires = self._clock() + self.expiry.snapshot
        self._sign(Snapshot.type, [self.online.snapshot])
        self._write_role(Snapshot.type)
        return int(snapshot.version)

    def _sign_timestamp(self, *, first: bool) -> int:
        timestamp = self._signed(Timestamp.type, Timestamp)
        data = self._written.get(Snapshot.type) or self._bytes(Snapshot.type)
        timestamp.snapshot_meta = MetaFile(
            version=self._roles[Snapshot.type].signed.version,
            length=len(data),
            hashes={"sha256": hashlib.sha256(data).hexdigest()},
        )
        if not first:
            timestamp.version += 1
        timestamp.expires = self._clock() + self.expiry.timestamp
        self._sign(Timestamp.type, [self.online.timestamp])
        self._write_role(Timestamp.type)
        return int(timestamp.version)

    # -- the key ceremony (offline keys) --------------------------------------------------------

    def ceremony_root(
        self,
        *,
        signers: Iterable[Signer],
        add: Sequence[tuple[str, Key]] = (),
        revoke: Sequence[tuple[str, str]] = (),
        root_threshold: int | None = None,
    ) -> int:
        """Sign a new root version: add keys `(role, key)`, revoke `(role, keyid)`.

        `signers` must hold a threshold of the *old* root keys and, when root keys change,
        a threshold of the *new* ones too (the TUF rule a node checks). Rotation that keeps
        old and new valid through the change is two ceremonies: add the new key (both
        trusted), publish and let the fleet catch up, then revoke the old one.
        """
        signer_list = list(signers)
        with self._lock:
            root = self._signed(Root.type, Root)
            for role, key in add:
                root.add_key(key, role)
            for role, keyid in revoke:
                root.revoke_key(keyid, role)
            if root_threshold is not None:
                root.roles[Root.type].threshold = root_threshold
            root.version += 1
            root.expires = self._clock() + self.expiry.root
            md = self._roles[Root.type]
            md.signatures.clear()
            for signer in signer_list:
                md.sign(signer, append=True)
            self._write_role(Root.type)
            # A node re-fetches everything after a root change; new snapshot and timestamp
            # are signed (by whichever online keys the new root names) so it finds fresh ones.
            self._dirty.add(DIRECTOR)
            self.publish()
            return int(root.version)

    def ceremony_delegation_keys(
        self,
        *,
        targets_signer: Signer,
        role: str,
        add: Sequence[Key] = (),
        revoke: Sequence[str] = (),
    ) -> int:
        """Change the keys of a role the top-level targets delegates (a kind, or director).

        Signed with the offline targets key. As with root, add first, publish, revoke later.
        """
        with self._lock:
            targets = self._signed(Targets.type, Targets)
            for key in add:
                targets.add_key(key, role)
            for keyid in revoke:
                targets.revoke_key(keyid, role)
            targets.version += 1
            targets.expires = self._clock() + self.expiry.targets
            self._sign(Targets.type, [targets_signer])
            self._write_role(Targets.type)
            self.publish()
            return int(targets.version)

    def replace_online_keys(self, online: OnlineKeys) -> None:
        """Use new online keys from now on (after the ceremony added them)."""
        with self._lock:
            self.online = online
            director = self._signed(DIRECTOR, Targets)
            if director.delegations and director.delegations.roles:
                new = online.director.public_key
                director.delegations.keys = {new.keyid: new}
                for name, role in director.delegations.roles.items():
                    role.keyids = [new.keyid]
                    self._dirty.add(name)
            self._dirty.update({DIRECTOR, *KIND_ROLES})

    # -- helpers -------------------------------------------------------------------------

    def _signed(self, role: str, kind: type[T]) -> T:
        try:
            signed = self._roles[role].signed
        except KeyError as exc:
            if role in OPTIONAL_KIND_ROLES:
                raise RepositoryError(
                    f"this repository was made before the {role!r} artifact kind: its "
                    f"offline targets role must delegate {role!r} at the next key ceremony"
                ) from exc
            raise RepositoryError(f"no role {role!r} in the repository") from exc
        if not isinstance(signed, kind):
            raise RepositoryError(f"role {role!r} is not {kind.type}")
        return signed

    def _sign(self, role: str, signers: Sequence[Signer]) -> None:
        md = self._roles[role]
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def _bytes(self, role: str) -> bytes:
        return bytes(self._roles[role].to_bytes(self._serializer))

    def _write_role(self, role: str) -> None:
        data = self._bytes(role)
        self._written[role] = data
        version = self._roles[role].signed.version
        if role != Timestamp.type:
            _write_atomic(self.metadata_dir / f"{version}.{role}.json", data)
        _write_atomic(self.metadata_dir / f"{role}.json", data)

    def role_version(self, role: str) -> int:
        """The current version of a role (tests and the console show it)."""
        return int(self._roles[role].signed.version)

    def newest(self, kind: ArtifactKind, name: str) -> ArtifactManifest | None:
        """The highest version of artifact `name` of `kind` listed."""
        found = [
            ArtifactManifest.from_custom(t.unrecognized_fields["custom"])
            for t in self._signed(kind.value, Targets).targets.values()
            if t.unrecognized_fields.get("custom", {}).get("name") == name
        ]
        return max(found, key=lambda m: parse_version(m.version), default=None)
