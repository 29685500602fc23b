"""The node's trust core: python-tuf's `Updater` decides; this module turns its verdicts
into offers and typed refusals an admin can act on.

`UpdateClient.check(kind)` refreshes the TUF metadata (root rotation, timestamp, snapshot,
the delegations down to this node's group) and returns an `Offer` — the artifact this
node's group should run, confirmed by two roles (the group's director entry and the
release role of its kind, which must agree on length and hash) — or None when nothing is
assigned. `UpdateClient.download(offer)` fetches it (a delta first when one leads from
the installed version), lets python-tuf check length and hash, and returns a verified
file; nothing is applied here. Transport is `ota.transport`; the A/B install is
`ota.slots`.

Every refusal is a `TrustError` (bad data, with a `TrustReason`) or a `TransportError`
(try again later). An expired-metadata refusal carries the clock evidence (node time,
server time seen on the mTLS connection, the skew); when the node's clock is the problem
the reason is `clock`, and `check(trust_server_clock=True)` re-checks against the
server's time — the documented recovery path (docs/ota.md, "A wrong clock").
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.updater import Updater

from ota.artifacts import ArtifactKind, apply_delta, parse_version
from ota.errors import ArtifactError, OtaError, TransportError, TrustError, TrustReason
from ota.repository import group_target_path
from ota.transport import ProgressCallback, ResumingFetcher, Transport

__all__ = ["Downloaded", "Limits", "Offer", "UpdateClient", "check_version"]

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Limits:
    """Upper bounds on every download (python-tuf enforces them while bytes arrive)."""

    root_max: int = 512 * 1024
    timestamp_max: int = 16 * 1024
    snapshot_max: int = 2 * 1024 * 1024
    targets_max: int = 5 * 1024 * 1024
    artifact_max: int = 2 * 1024 * 1024 * 1024
    clock_tolerance: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class Offer:
    """An artifact this node's group is assigned, confirmed by the director and release roles."""

    kind: ArtifactKind
    name: str
    version: str
    target: str
    length: int
    sha256: str
    campaign: str
    downgrade: bool
    hardware: tuple[str, ...]
    deltas: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Downloaded:
    """A verified artifact on disk, and how it came (delta or full, bytes moved)."""

    path: Path
    offer: Offer
    via_delta: bool
    bytes_transferred: int
    delta_error: str | None = None


def check_version(offer: Offer, *, installed: str | None) -> None:
    """Anti-rollback: refuse a version older than the installed one unless downgrade is signed."""
    if installed is None:
        return
    if parse_version(offer.version) < parse_version(installed) and not offer.downgrade:
        raise TrustError(
            f"{offer.kind.value} {offer.version} is older than the installed {installed} "
            "and the campaign's metadata does not allow a downgrade",
            reason=TrustReason.VERSION,
            evidence={"installed": installed, "offered": offer.version},
        )


_ROLE_IN_MESSAGE = re.compile(r"(?:New |Final )?([\w-]+?)(?:\.json)? is expired")
_SIGNED_BY = re.compile(r"([\w-]+) was signed by (\d+)/(\d+) keys")


class UpdateClient:
    """One node's view of the OTA repository: check, then download; never applies anything."""

    def __init__(
        self,
        *,
        cache_dir: Path,
        metadata_url: str,
        targets_url: str,
        transport: Transport,
        group: str,
        hardware: str,
        trusted_root: bytes | None = None,
        limits: Limits | None = None,
        clock: Callable[[], datetime] = _utcnow,
        bandwidth_bps: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.metadata_url = metadata_url.rstrip("/") + "/"
        self.targets_url = targets_url.rstrip("/") + "/"
        self.group = group
        self.hardware = hardware
        self.limits = limits or Limits()
        self._clock = clock
        self._trusted_root = trusted_root
        self.fetcher = ResumingFetcher(
            transport,
            partial_dir=cache_dir / "partial",
            targets_url=self.targets_url,
            bandwidth_bps=bandwidth_bps,
            progress=progress,
        )
        self._updater: Updater | None = None
        self._reference_time: datetime | None = None

    @property
    def metadata_dir(self) -> Path:
        """python-tuf's trusted metadata (root rotations, last timestamp/snapshot)."""
        return self.cache_dir / "metadata"

    # -- check ---------------------------------------------------------------------------

    def check(
        self,
        kind: ArtifactKind,
        *,
        expect_group: str | None = None,
        trust_server_clock: bool = False,
        refresh: bool = True,
    ) -> Offer | None:
        """Refresh metadata and return what this node's group should run for `kind`.

        `expect_group` is the group a command claims to address; a node never looks up
        another group's entry, so a mismatch is a mix-and-match refusal.
        `trust_server_clock` judges expiry by the server's clock (the recovery path).
        `refresh=False` reuses the metadata this client refreshed last (several kinds in
        one check cost one round of metadata requests on LTE).
        """
        if expect_group is not None and expect_group != self.group:
            raise TrustError(
                f"the campaign addresses group {expect_group!r}; this node is in {self.group!r}",
                reason=TrustReason.MIX_AND_MATCH,
                evidence={"expected": expect_group, "group": self.group},
            )
        if not refresh and self._updater is not None:
            updater = self._updater
        else:
            reference = self._server_time() if trust_server_clock else self._clock()
            updater = self._refresh(reference)
        entry = self._targetinfo(updater, group_target_path(self.group, kind))
        if entry is None:
            return None
        custom: dict[str, Any] = dict(entry.custom or {})
        target = str(custom.get("target", ""))
        if not target.startswith(f"{kind.value}/"):
            raise TrustError(
                f"the group entry names {target!r}, not a {kind.value} artifact",
                reason=TrustReason.MIX_AND_MATCH,
                role=f"group-{self.group}",
            )
        artifact = self._targetinfo(updater, target)
        if artifact is None or artifact.length != entry.length or (artifact.hashes != entry.hashes):
            raise TrustError(
                f"group {self.group}'s entry for {target} does not match what the {kind.value} "
                "role signs (length or hash)",
                reason=TrustReason.MIX_AND_MATCH,
                role=f"group-{self.group}",
                evidence={"target": target},
            )
        hardware = tuple(str(h) for h in custom.get("hardware", ()))
        if "any" not in hardware and self.hardware not in hardware:
            raise TrustError(
                f"{target} is for {', '.join(hardware) or 'no hardware'}, this node is "
                f"{self.hardware}",
                reason=TrustReason.HARDWARE,
                evidence={"hardware": self.hardware, "artifact_hardware": list(hardware)},
            )
        if artifact.length > self.limits.artifact_max:
            raise TrustError(
                f"{target} is {artifact.length} bytes, over this node's limit "
                f"{self.limits.artifact_max}",
                reason=TrustReason.LENGTH,
            )
        return Offer(
            kind=kind,
            name=str(custom.get("name", "")),
            version=str(custom.get("version", "")),
            target=target,
            length=artifact.length,
            sha256=artifact.hashes["sha256"],
            campaign=str(custom.get("campaign", "")),
            downgrade=bool(custom.get("downgrade")),
            hardware=hardware,
            deltas={str(k): str(v) for k, v in dict(custom.get("deltas", {})).items()},
        )

    def _server_time(self) -> datetime:
        """The fleet server's clock, from the Date header of a bounded timestamp fetch."""
        url = f"{self.metadata_url}timestamp.json"
        try:
            download = self.fetcher.transport.open(url)
            received = 0
            for chunk in download.chunks:
                received += len(chunk)
                if received > self.limits.timestamp_max:
                    break
        except TransportError:
            raise
        if download.server_date is None:
            raise TransportError("the server sent no Date header; cannot borrow its clock")
        logger.warning(
            "ota: judging expiry by the server's clock %s (node clock %s)",
            download.server_date.isoformat(),
            self._clock().isoformat(),
        )
        return download.server_date

    def _refresh(self, reference: datetime) -> Updater:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        have_root = (self.metadata_dir / "root.json").exists()
        if not have_root and self._trusted_root is None:
            raise TrustError(
                "no trusted root: provision the node with the repository's root",
                reason=TrustReason.SIGNATURE,
            )
        config = UpdaterConfig(
            root_max_length=self.limits.root_max,
            timestamp_max_length=self.limits.timestamp_max,
            snapshot_max_length=self.limits.snapshot_max,
            targets_max_length=self.limits.targets_max,
        )
        try:
            updater = Updater(
                metadata_dir=str(self.metadata_dir),
                metadata_base_url=self.metadata_url,
                target_dir=str(self.cache_dir / "targets"),
                target_base_url=self.targets_url,
                fetcher=self.fetcher,
                config=config,
                bootstrap=None if have_root else self._trusted_root,
            )
            # python-tuf reads the wall clock once per Updater; the node's clock (or the
            # server's, on the recovery path) is the one expiry is judged by.
            updater._trusted_set.reference_time = reference
            self._reference_time = reference
            updater.refresh()
        except Exception as exc:  # classified: every python-tuf error becomes ours
            raise self._classify(exc, phase="metadata") from exc
        self._updater = updater
        return updater

    def _targetinfo(self, updater: Updater, path: str) -> TargetFile | None:
        try:
            return updater.get_targetinfo(path)
        except Exception as exc:
            raise self._classify(exc, phase="metadata") from exc

    # -- download ------------------------------------------------------------------------

    def download(
        self,
        offer: Offer,
        *,
        installed: Path | None = None,
        installed_version: str | None = None,
    ) -> Downloaded:
        """Fetch the offered artifact, verified; a delta first when one fits the installed one.

        A delta that fails to download, verify or apply falls back to the full artifact;
        the reason is kept in `delta_error` for the report.
        """
        updater = self._updater
        if updater is None:
            raise OtaError("download() before check()")
        out_dir = self.cache_dir / "downloads"
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / f"{offer.sha256}.{offer.target.rpartition('/')[2]}"
        before = self.fetcher.bytes_transferred
        delta_error: str | None = None
        delta_path = offer.deltas.get(installed_version or "")
        if delta_path and installed is not None and installed.exists():
            try:
                result = self._via_delta(updater, offer, delta_path, installed, final)
                return Downloaded(result, offer, True, self.fetcher.bytes_transferred - before)
            except (TrustError, TransportError, ArtifactError) as exc:
                delta_error = f"{exc.reason}: {exc.message}"
                logger.warning(
                    "ota: delta %s failed (%s); fetching the full artifact", delta_path, delta_error
                )
        info = self._targetinfo(updater, offer.target)
        if info is None or info.hashes.get("sha256") != offer.sha256:
            raise TrustError(
                f"{offer.target} is no longer the offered artifact",
                reason=TrustReason.MIX_AND_MATCH,
            )
        self._fetch_target(updater, info, final)
        return Downloaded(final, offer, False, self.fetcher.bytes_transferred - before, delta_error)

    def _via_delta(
        self, updater: Updater, offer: Offer, delta_path: str, installed: Path, final: Path
    ) -> Path:
        info = self._targetinfo(updater, delta_path)
        if info is None:
            raise TrustError(f"delta {delta_path} is not signed", reason=TrustReason.NOT_FOUND)
        custom = dict(info.custom or {})
        base = installed.read_bytes()
        if custom.get("base_sha256") != hashlib.sha256(base).hexdigest():
            raise ArtifactError("the installed artifact is not the delta's base")
        delta_file = self.cache_dir / "downloads" / f"{info.hashes['sha256']}.bsdiff"
        self._fetch_target(updater, info, delta_file)
        try:
            result = apply_delta(base, delta_file.read_bytes(), expected_sha256=offer.sha256)
        finally:
            delta_file.unlink(missing_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        tmp.write_bytes(result)
        os.replace(tmp, final)
        return final

    def _fetch_target(self, updater: Updater, info: TargetFile, final: Path) -> None:
        tmp = final.with_name(f".{final.name}.tmp")
        url = self._target_url(info)
        try:
            updater.download_target(info, filepath=str(tmp))
        except tuf_exceptions.RepositoryError as exc:
            # The bytes are bad: do not resume from them.
            self.fetcher.discard_partial(url)
            tmp.unlink(missing_ok=True)
            raise self._classify(exc, phase="target") from exc
        except tuf_exceptions.DownloadLengthMismatchError as exc:
            self.fetcher.discard_partial(url)
            tmp.unlink(missing_ok=True)
            raise self._classify(exc, phase="target") from exc
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise self._classify(exc, phase="target") from exc
        self.fetcher.discard_partial(url)
        os.replace(tmp, final)

    def _target_url(self, info: TargetFile) -> str:
        directory, sep, name = info.path.rpartition("/")
        return f"{self.targets_url}{directory}{sep}{info.hashes['sha256']}.{name}"

    # -- classification ------------------------------------------------------------------

    def _classify(self, exc: Exception, *, phase: str) -> OtaError:
        """python-tuf's exception → our typed error with a reason an admin can act on."""
        text = str(exc)
        if isinstance(exc, OtaError):
            return exc
        if isinstance(exc, tuf_exceptions.DownloadLengthMismatchError):
            return TrustError(
                f"more bytes than declared ({phase}): {text}", reason=TrustReason.LENGTH
            )
        if isinstance(exc, tuf_exceptions.DownloadHTTPError):
            return TransportError(text, status=exc.status_code)
        if isinstance(exc, tuf_exceptions.DownloadError):
            return TransportError(text or repr(exc.__cause__))
        if isinstance(exc, tuf_exceptions.UnsignedMetadataError):
            match = _SIGNED_BY.search(text)
            role = match.group(1) if match else None
            if match and int(match.group(2)) > 0:
                return TrustError(
                    f"{text}: fewer signatures than the threshold",
                    reason=TrustReason.THRESHOLD,
                    role=role,
                )
            return TrustError(
                f"{text}: no valid signature", reason=TrustReason.SIGNATURE, role=role
            )
        if isinstance(exc, tuf_exceptions.ExpiredMetadataError):
            return self._expired(text)
        if isinstance(exc, tuf_exceptions.BadVersionNumberError):
            # "Expected snapshot version 4, got 3" / "Expected app v2, got v1.": a file that
            # is not the one timestamp or snapshot names. "Expected app.json version 1, got
            # 2." is a new snapshot listing an older role: a rollback, like a lower version.
            words = text.split(" ")
            subject = words[1] if len(words) > 1 else ""
            mismatch = text.startswith("Expected") and not subject.endswith(".json")
            if mismatch and subject != "root":
                return TrustError(
                    f"metadata does not match the snapshot: {text}",
                    reason=TrustReason.MIX_AND_MATCH,
                )
            return TrustError(
                f"older metadata than already trusted: {text}", reason=TrustReason.ROLLBACK
            )
        if isinstance(exc, tuf_exceptions.LengthOrHashMismatchError):
            if phase == "metadata":
                return TrustError(
                    f"metadata does not match the snapshot: {text}",
                    reason=TrustReason.MIX_AND_MATCH,
                )
            reason = TrustReason.LENGTH if "length" in text else TrustReason.HASH
            return TrustError(f"the downloaded artifact is wrong: {text}", reason=reason)
        if isinstance(exc, tuf_exceptions.RepositoryError):
            return TrustError(f"metadata refused: {text}", reason=TrustReason.FORMAT)
        if isinstance(exc, OSError):
            return OtaError(f"local storage: {exc}", reason="storage")
        return TrustError(
            f"metadata refused: {text or type(exc).__name__}", reason=TrustReason.FORMAT
        )

    def _expired(self, text: str) -> TrustError:
        match = _ROLE_IN_MESSAGE.search(text)
        role = match.group(1) if match else None
        node_time = self._reference_time or self._clock()
        server_time = self.fetcher.server_date
        evidence: dict[str, Any] = {
            "node_time": node_time.isoformat(),
            "server_time": server_time.isoformat() if server_time else None,
        }
        if server_time is not None:
            skew = (node_time - server_time).total_seconds()
            evidence["skew_seconds"] = round(skew)
            if abs(skew) > self.limits.clock_tolerance.total_seconds():
                return TrustError(
                    f"{role} looks expired because the node's clock ({node_time.isoformat()}) "
                    f"is {round(skew)} s off the server's ({server_time.isoformat()}): fix "
                    "NTP, or `nigehbaan ota check --trust-clock-from-server`",
                    reason=TrustReason.CLOCK,
                    role=role,
                    evidence=evidence,
                )
        if role == "timestamp":
            return TrustError(
                "the newest timestamp is expired: the repository is not re-signing it, or "
                "someone replays an old one (freeze)",
                reason=TrustReason.FREEZE,
                role=role,
                evidence=evidence,
            )
        return TrustError(
            f"{role} metadata is expired ({text})",
            reason=TrustReason.EXPIRED,
            role=role,
            evidence=evidence,
        )
