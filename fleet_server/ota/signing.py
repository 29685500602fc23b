"""The server's handle on the signed TUF repository (`ota.repository`), when one is set up.

The repository lives in the OTA directory (`ota_path`: `metadata/` and
`targets/<kind>/`, beside the artifact store's own `targets/<sha256>`), made
once at the key ceremony (`nigehbaan ota` / `Repository.create`, offline root
and targets keys) with the online keys (timestamp, snapshot, release,
director) in `ota_keys_dir`. The server then:

- adds every uploaded bundle to its kind's role (`add`: the bundle's own
  manifest must say what the upload form says), with a bsdiff4 delta from
  each of the `DELTA_BASES` newest earlier versions of the same artifact (a
  fleet lags: nodes that rolled back a bad canary still run the version
  before it), and publishes;
- before offering a node an update, assigns the artifact to the node's
  group (the Uptane director: `groups/<group>/<kind>`, so a node can only
  take what was signed for its own group) and publishes once per batch;
- re-signs online roles before they expire (`refresh`).

Without a repository (no `metadata/root.json`) uploads are stored and
campaigns run, but nothing is signed, and a node's check finds nothing: the
server logs it once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from fleet_server.ota.errors import ArtifactRefused, StorageError
from fleet_server.settings import Settings
from ota.artifacts import ArtifactKind, ArtifactManifest, parse_version, read_bundle
from ota.errors import OtaError
from ota.groups import own_group
from ota.keys import OnlineKeys
from ota.repository import Repository

__all__ = ["DELTA_BASES", "SignedRepository", "node_group", "repository_for"]

logger = logging.getLogger(__name__)

# Deltas are made from this many of the newest earlier versions of an artifact.
DELTA_BASES = 3

_lock = threading.Lock()
_open: dict[tuple[Path, Path], SignedRepository] = {}
_warned: set[Path] = set()


def node_group(node_id: str) -> str:
    """A node's own group (`ota.groups.own_group`, as `edge_agent.ota` derives it)."""
    return own_group(node_id)


class SignedRepository:
    """An open `ota.repository.Repository` and what the server does with it."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def add(self, blob: bytes, *, kind: str, name: str, version: str,
            hardware: Sequence[str]) -> ArtifactManifest:  # fmt: skip
        """List an uploaded bundle in its kind's role and publish; refused if it lies."""
        try:
            manifest, _ = read_bundle(blob)
        except OtaError as exc:
            raise ArtifactRefused("not_a_bundle", f"not an artifact bundle: {exc}") from None
        claimed = (kind, name, version, sorted(hardware))
        inside = (manifest.kind.value, manifest.name, manifest.version, sorted(manifest.hardware))
        if claimed != inside:
            raise ArtifactRefused(
                "manifest_mismatch",
                f"the bundle's manifest says {inside[0]} {inside[1]} {inside[2]} for "
                f"{inside[3]}; the upload says {claimed[0]} {claimed[1]} {claimed[2]} for "
                f"{claimed[3]}",
            )
        try:
            bases = self._earlier(manifest)
            self.repo.add_artifact(blob, manifest)
            for previous in bases:
                self._delta(previous, manifest)
            self.repo.publish()
        except OtaError as exc:
            raise StorageError("signing_failed", f"could not sign the artifact: {exc}") from exc
        return manifest

    def _earlier(self, new: ArtifactManifest) -> list[ArtifactManifest]:
        """The `DELTA_BASES` newest listed versions of `new`'s artifact older than it."""
        mine = parse_version(new.version)
        found = [
            ArtifactManifest.from_custom(t.unrecognized_fields["custom"])
            for t in self.repo.artifacts(new.kind)
            if t.unrecognized_fields.get("custom", {}).get("name") == new.name
            and "delta_from" not in t.unrecognized_fields.get("custom", {})
        ]
        older = [m for m in found if parse_version(m.version) < mine]
        return sorted(older, key=lambda m: parse_version(m.version), reverse=True)[:DELTA_BASES]

    def _delta(self, old: ArtifactManifest, new: ArtifactManifest) -> None:
        """A bsdiff4 delta from an earlier version; a node falls back without one."""
        try:
            delta = self.repo.add_delta(old, new)
        except OtaError as exc:
            logger.warning("no delta %s %s → %s: %s", new.name, old.version, new.version, exc)
            return
        logger.info("delta %s %s → %s: %d bytes (full %d)", new.name, old.version,
                    new.version, delta.length, new.size)  # fmt: skip

    def assign(self, *, groups: Sequence[str], kind: str, target_path: str,
               campaign_id: str, downgrade: bool) -> None:  # fmt: skip
        """Sign `target_path` as what each group should run for `kind`, then publish once."""
        found = [t for t in self.repo.artifacts(ArtifactKind(kind)) if t.path == target_path]
        if not found:
            raise StorageError("target_unsigned", f"{target_path} is not in the signed repository")
        manifest = ArtifactManifest.from_custom(found[0].unrecognized_fields.get("custom", {}))
        try:
            for group in groups:
                self.repo.assign(group, manifest, campaign_id=campaign_id, downgrade=downgrade)
            self.repo.publish()
        except OtaError as exc:
            raise StorageError("signing_failed", f"could not assign {target_path}: {exc}") from exc

    def withdraw(self, *, groups: Sequence[str], kind: str, campaign_id: str) -> int:
        """Remove `kind`'s assignment from each group still assigned by `campaign_id`.

        An aborted campaign's; a group a newer campaign has assigned since is left alone.
        Publishes when anything changed; returns how many groups were withdrawn.
        """
        artifact_kind = ArtifactKind(kind)
        try:
            mine = [
                g
                for g in groups
                if (entry := self.repo.assignment(g, artifact_kind)) is not None
                and entry.unrecognized_fields.get("custom", {}).get("campaign") == campaign_id
            ]
            for group in mine:
                self.repo.withdraw(group, artifact_kind)
            if mine:
                self.repo.publish()
        except OtaError as exc:
            raise StorageError("signing_failed", f"could not withdraw {kind}: {exc}") from exc
        return len(mine)

    def refresh(self) -> dict[str, int]:
        """Re-sign online roles close to expiry (a node never sees stale metadata)."""
        return self.repo.refresh_expiring()


def repository_for(settings: Settings) -> SignedRepository | None:
    """The server's repository, opened once per directory; None when none was set up."""
    directory = settings.ota_path.resolve()
    keys = (settings.ota_keys_dir or directory / "keys").resolve()
    with _lock:
        known = _open.get((directory, keys))
        if known is not None:
            return known
        if not (directory / "metadata" / "root.json").exists():
            if directory not in _warned:
                _warned.add(directory)
                logger.warning("no signed OTA repository in %s: artifacts are stored but not "
                               "signed, and nodes find no update (docs/ota-server.md)",
                               directory)  # fmt: skip
            return None
        passphrase = settings.ota_keys_passphrase
        try:
            online = OnlineKeys.load(keys, passphrase=passphrase.encode() if passphrase else None)
            opened = SignedRepository(Repository.open(directory, online=online))
        except OtaError as exc:
            raise StorageError("repository_unavailable", f"cannot open {directory}: {exc}") from exc
        _open[(directory, keys)] = opened
        logger.info("signed OTA repository open in %s (online keys in %s)", directory, keys)
        return opened
