"""The operating system as an update: an `OsUpdater` interface and its RAUC implementation.

Where a node's image is built with RAUC, the OS is updated by RAUC's own A/B slots: the
node hands it a RAUC bundle that `ota.trust` already verified (the TUF target's hash and
length), RAUC checks its own signature and writes the inactive rootfs slot, and after the
reboot the agent marks the slot good once the health gate passes — or bad, and RAUC's
bootloader integration boots the other slot. `RaucUpdater` drives the `rauc` command line,
which talks to the RAUC service over its D-Bus API (`de.pengutronix.rauc.Installer`); the
command is configurable so tests use a stand-in script. balenaOS is not implemented.

An OS image is large: it is never read into memory. `OsSlots.install` streams the
artifact tar once, checking every member against the manifest while copying the one
RAUC bundle out in 1 MiB chunks, and hands RAUC that file's path. Between RAUC's install
and the reboot the new OS is *pending*: an agent restart then (a crash, a failed reboot
command) must not take the old OS still running for a bootloader fallback, or the new OS
would boot later with no trial. The kernel's boot id, recorded at the switch, tells the
two apart: same boot id, no reboot yet (still pending, the trial kept); a new boot id
and the old OS running, the bootloader fell back (rolled back).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tarfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ota.errors import ArtifactError, SlotError

__all__ = ["OsSlotStatus", "OsSlots", "OsUpdater", "RaucUpdater"]

logger = logging.getLogger(__name__)

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_CHUNK = 1024 * 1024
_MAX_MANIFEST = 4 * 1024 * 1024


@dataclass(frozen=True)
class OsSlotStatus:
    """The booted OS slot, and whether the bootloader considers it good."""

    booted: str
    booted_version: str | None
    good: bool | None


class OsUpdater(ABC):
    """Installs an OS image into the inactive slot and marks the booted slot good or bad."""

    @abstractmethod
    def install(self, bundle: Path) -> None:
        """Write a verified bundle to the inactive slot (the switch happens at reboot)."""

    @abstractmethod
    def status(self) -> OsSlotStatus:
        """What is booted now."""

    @abstractmethod
    def mark_good(self) -> None:
        """The booted slot passed the health gate: keep booting it."""

    @abstractmethod
    def mark_bad(self) -> None:
        """The booted slot failed the health gate: boot the other one next."""

    def boot_id(self) -> str | None:
        """What changes at every boot (Linux's boot id); None where it cannot be read."""
        try:
            return BOOT_ID.read_text(encoding="ascii").strip() or None
        except OSError:
            return None


class RaucUpdater(OsUpdater):
    """RAUC through its `rauc` command line (which uses RAUC's D-Bus service)."""

    def __init__(self, *, command: tuple[str, ...] = ("rauc",), timeout_s: float = 1800.0):
        self.command = command
        self.timeout_s = timeout_s

    def _run(self, *args: str, timeout: float | None = None) -> str:
        try:
            done = subprocess.run(
                [*self.command, *args],
                capture_output=True,
                text=True,
                timeout=timeout or 60.0,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlotError(f"rauc {args[0]}: {exc}", reason="os_update") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-500:]
            raise SlotError(f"rauc {args[0]} failed: {detail}", reason="os_update")
        return done.stdout

    def install(self, bundle: Path) -> None:
        logger.info("ota: rauc install %s", bundle)
        self._run("install", str(bundle), timeout=self.timeout_s)

    def status(self) -> OsSlotStatus:
        data = json.loads(self._run("status", "--detailed", "--output-format=json"))
        booted = str(data.get("booted", ""))
        version: str | None = None
        good: bool | None = None
        for entry in data.get("slots", []):
            for name, slot in dict(entry).items():
                if slot.get("bootname") == booted or name == booted:
                    info = slot.get("slot_status", {}).get("bundle", {})
                    version = info.get("version")
                    state = slot.get("boot_status")
                    good = None if state is None else state == "good"
        return OsSlotStatus(booted=booted, booted_version=version, good=good)

    def mark_good(self) -> None:
        self._run("status", "mark-good", "booted")

    def mark_bad(self) -> None:
        self._run("status", "mark-bad", "booted")


class OsSlots:
    """The OS as the OTA component sees a kind's slots, over an `OsUpdater` (RAUC).

    The same methods the component calls on `ota.slots.SlotStore`, so the OS goes through
    the same check → defer → download → verify → install → trial → health gate path:
    `install` hands the bundle's payload (the one `*.raucb` file) to the updater, which
    writes the inactive OS slot; `switch` records the trial (`<root>/os/state.json`);
    the switch itself is the reboot (`reboot_required`). After it, `on_boot` finds the new
    version booted (on trial) or not (the bootloader fell back: rolled back); the health
    gate then marks the booted slot good, or bad past the deadline so the next boot is
    the old OS. No delta: an OS image is moved whole.
    """

    def __init__(self, root: Path, updater: OsUpdater) -> None:
        self.updater = updater
        self.base = root / "os"
        self.base.mkdir(parents=True, exist_ok=True)
        self.reboot_required = False

    @property
    def _path(self) -> Path:
        return self.base / "state.json"

    def _state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        data.setdefault("trial", None)
        data.setdefault("last_rollback", None)
        return data

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self._path.with_name(".state.json.tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self._path)

    # -- what the component reads -----------------------------------------------------------

    def installed_version(self) -> str | None:
        return self.updater.status().booted_version

    def installed_artifact(self) -> Path | None:
        return None

    def active_slot(self) -> str | None:
        return self.updater.status().booted or "booted"

    def on_trial(self) -> dict[str, Any] | None:
        trial: dict[str, Any] | None = self._state()["trial"]
        return trial

    def status(self) -> Any:
        from types import SimpleNamespace

        state = self._state()
        return SimpleNamespace(trial=state["trial"], last_rollback=state["last_rollback"])

    # -- install, switch, trial --------------------------------------------------------------

    def install(self, artifact: Path, *, allow_downgrade: bool = False) -> Any:
        staged = self.base / "incoming.raucb"
        try:
            manifest = _stage_payload(artifact, staged)
            self.updater.install(staged)
        except OSError as exc:
            raise SlotError(f"cannot stage the OS image: {exc}", reason="storage") from exc
        finally:
            staged.unlink(missing_ok=True)
        state = self._state()
        state["installed"] = manifest.version
        self._save(state)
        return manifest

    def switch(self, *, now: float, deadline_s: float, campaign: str = "") -> str:
        state = self._state()
        version = str(state.get("installed") or "")
        state["trial"] = {"version": version, "started": now, "deadline": now + deadline_s,
                          "campaign": campaign, "rebooted": False,
                          "boot_id": self.updater.boot_id()}  # fmt: skip
        self._save(state)
        self.reboot_required = True
        return version

    def mark_clean_shutdown(self) -> None:
        """Nothing to record: the OS switch is the reboot itself."""

    def on_boot(self, *, now: float) -> Any:
        from ota.slots import BootVerdict

        state = self._state()
        trial = state["trial"]
        if not trial:
            return BootVerdict(False)
        booted = self.updater.status().booted_version
        if booted != trial["version"] and self._not_rebooted(trial):
            # RAUC installed it, the reboot has not happened (the agent restarted first):
            # the trial waits for the reboot, and its health window starts there.
            return BootVerdict(
                True, version=trial["version"], reason="installed; waiting for the reboot"
            )
        if booted != trial["version"]:
            state["trial"] = None
            state["last_rollback"] = {"version": trial["version"], "reason": "not booted"}
            self._save(state)
            return BootVerdict(
                False, rolled_back=True, version=booted,
                reason=f"the bootloader did not boot {trial['version']} (runs {booted})",
            )  # fmt: skip
        if not trial.get("rebooted"):
            # The health window runs from the first boot of the new OS.
            trial["rebooted"] = True
            trial["deadline"] = max(trial["deadline"], now + trial["deadline"] - trial["started"])
            self._save(state)
        return BootVerdict(True, version=trial["version"])

    def _not_rebooted(self, trial: dict[str, Any]) -> bool:
        then = trial.get("boot_id")
        return then is not None and then == self.updater.boot_id()

    def reboot_pending(self) -> bool:
        """Installed and switched, but this boot is still the old OS's: nothing to judge yet."""
        trial = self._state()["trial"]
        if not trial or trial.get("rebooted"):
            return False
        return self.updater.status().booted_version != trial["version"] and self._not_rebooted(
            trial
        )

    def mark_healthy(self) -> str | None:
        state = self._state()
        trial = state["trial"]
        if not trial or self.updater.status().booted_version != trial["version"]:
            return None  # not yet rebooted into it: nothing to commit
        self.updater.mark_good()
        state["trial"] = None
        self._save(state)
        return str(trial["version"])

    def check_deadline(self, *, now: float, health_detail: str) -> Any:
        from ota.slots import BootVerdict

        state = self._state()
        trial = state["trial"]
        if not trial or now <= trial["deadline"] or self.reboot_pending():
            return BootVerdict(bool(trial), version=trial["version"] if trial else None)
        reason = f"not healthy before the deadline: {health_detail}"
        if self.updater.status().booted_version == trial["version"]:
            self.updater.mark_bad()  # the next boot is the old OS
            self.reboot_required = True
        state["trial"] = None
        state["last_rollback"] = {"version": trial["version"], "reason": reason}
        self._save(state)
        return BootVerdict(False, rolled_back=True, reason=reason, version=trial["version"])


class _HashingReader:
    """A file read once, front to back, hashing what passes (tarfile's stream mode)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._handle.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _stage_payload(artifact: Path, staged: Path) -> Any:
    """Copy an OS artifact's one `*.raucb` to `staged` in chunks, checking the whole bundle.

    The same rules as `ota.artifacts.read_bundle` (manifest first, plain files inside the
    bundle only, every file's sha256 and size as listed, nothing missing or extra), in one
    pass over the file and never more than a chunk in memory.
    """
    from ota.artifacts import MANIFEST_NAME, ArtifactKind, ArtifactManifest

    with open(artifact, "rb") as handle:
        reader = _HashingReader(handle)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                manifest = None
                seen: set[str] = set()
                for member in tar:
                    if not member.isfile():
                        raise ArtifactError(f"bundle member {member.name!r} is not a plain file")
                    if member.name.startswith("/") or ".." in Path(member.name).parts:
                        raise ArtifactError(f"bundle member {member.name!r} leaves its slot")
                    source = tar.extractfile(member)
                    assert source is not None
                    if manifest is None:
                        if member.name != MANIFEST_NAME or member.size > _MAX_MANIFEST:
                            raise ArtifactError(f"the bundle's first member is not {MANIFEST_NAME}")
                        manifest = ArtifactManifest.from_custom(json.loads(source.read()))
                        if manifest.kind is not ArtifactKind.OS:
                            raise SlotError(f"a {manifest.kind.value} artifact is not an OS image")
                        payloads = [n for n in manifest.files if n.endswith(".raucb")]
                        if len(payloads) != 1:
                            raise SlotError(
                                f"an OS artifact holds one *.raucb bundle, not {payloads}"
                            )
                        continue
                    listed = manifest.files.get(member.name)
                    if listed is None or member.name in seen:
                        raise ArtifactError("the bundle's files differ from its manifest")
                    seen.add(member.name)
                    digest = _copy(source, staged if member.name == payloads[0] else None)
                    if digest != listed.get("sha256") or member.size != listed.get("size"):
                        raise ArtifactError(
                            f"bundle file {member.name!r} does not match its manifest hash"
                        )
                while reader.read(_CHUNK):
                    pass
        except (tarfile.TarError, ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"bundle is not a readable artifact: {exc}") from exc
    if manifest is None or seen != set(manifest.files):
        raise ArtifactError("the bundle's files differ from its manifest")
    from dataclasses import replace

    return replace(manifest, sha256=reader.sha256.hexdigest(), size=reader.size)


def _copy(source: Any, target: Path | None) -> str:
    """Stream a member to `target` (or nowhere), returning its sha256."""
    digest = hashlib.sha256()
    out = open(target, "wb") if target is not None else None  # noqa: SIM115
    try:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return digest.hexdigest()
