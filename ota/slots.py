"""A/B slots: install into the inactive slot, switch atomically, keep it only if healthy.

One `SlotStore` per artifact kind (app, model, config) under a directory::

    <root>/<kind>/slots/a/            one complete version (files + .slot.json, written last)
    <root>/<kind>/slots/b/
    <root>/<kind>/current -> slots/a  the symlink the agent runs from, swapped by os.replace
    <root>/<kind>/state.json          committed version, the trial in progress, last rollback

Nothing here ever writes into the slot `current` points at. A switch writes the trial
into state.json first, then swaps the symlink (one rename: atomic on POSIX), so a kill -9
at any instant leaves `current` on a complete slot: `recover()` (run by `on_boot`)
finishes or abandons what was interrupted. The new version is on trial until the node
reports healthy (`mark_healthy`); boots that were not deliberate restarts are counted,
and a trial past its deadline or its boot budget switches back by itself and records why.
Anti-rollback: `install` refuses a version older than the committed one unless the
signed metadata allowed a downgrade.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ota.artifacts import ArtifactKind, ArtifactManifest, parse_version, read_bundle
from ota.errors import SlotError, TrustError, TrustReason

__all__ = ["BootVerdict", "SlotStatus", "SlotStore"]

logger = logging.getLogger(__name__)

SLOT_MARK = ".slot.json"
ARTIFACT_COPY = ".artifact.tar"
SLOTS = ("a", "b")

CrashHook = Callable[[str], None]


def _other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SlotStatus:
    """What `nigehbaan ota status` shows for one kind."""

    kind: ArtifactKind
    active_slot: str | None
    active_version: str | None
    committed_version: str | None
    trial: dict[str, Any] | None
    last_rollback: dict[str, Any] | None


@dataclass(frozen=True)
class BootVerdict:
    """What `on_boot` decided: still on trial, rolled back (and why), or nothing to do."""

    on_trial: bool
    rolled_back: bool = False
    reason: str = ""
    version: str | None = None


class SlotStore:
    """The A/B slots of one artifact kind."""

    def __init__(
        self,
        root: Path,
        kind: ArtifactKind,
        *,
        max_boots: int = 3,
        crash_hook: CrashHook | None = None,
    ) -> None:
        self.kind = kind
        self.base = root / kind.value
        self.max_boots = max_boots
        self._crash = crash_hook or (lambda point: None)
        (self.base / "slots").mkdir(parents=True, exist_ok=True)

    # -- paths and state ---------------------------------------------------------------

    @property
    def current(self) -> Path:
        """The symlink the agent runs from."""
        return self.base / "current"

    def slot_dir(self, slot: str) -> Path:
        """Where slot `a` or `b` lives."""
        return self.base / "slots" / slot

    def active_slot(self) -> str | None:
        """The slot `current` points at, or None before the first install."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        name = Path(target).name
        return name if name in SLOTS else None

    def slot_manifest(self, slot: str) -> dict[str, Any] | None:
        """The `.slot.json` of a complete slot, None when the slot is empty or half-written."""
        mark = self.slot_dir(slot) / SLOT_MARK
        try:
            data: dict[str, Any] = json.loads(mark.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data

    def _state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.base / "state.json").read_text("utf-8"))
        except (OSError, ValueError):
            data = {}
        data.setdefault("committed", None)
        data.setdefault("trial", None)
        data.setdefault("clean_shutdown", False)
        data.setdefault("last_rollback", None)
        return data

    def _save(self, state: dict[str, Any]) -> None:
        _write_json(self.base / "state.json", state)

    def status(self) -> SlotStatus:
        """The active slot and version, the committed version, a trial, the last rollback."""
        state = self._state()
        active = self.active_slot()
        mark = self.slot_manifest(active) if active else None
        committed = state["committed"]["version"] if state["committed"] else None
        return SlotStatus(
            self.kind,
            active,
            mark["version"] if mark else None,
            committed,
            state["trial"],
            state["last_rollback"],
        )

    def installed_version(self) -> str | None:
        """The version running now (the committed one, or the one on trial)."""
        return self.status().active_version

    def installed_artifact(self) -> Path | None:
        """The active slot's copy of its artifact (a delta's base)."""
        active = self.active_slot()
        path = self.slot_dir(active) / ARTIFACT_COPY if active else None
        return path if path is not None and path.exists() else None

    # -- install and switch ---------------------------------------------------------------

    def install(self, artifact: Path, *, allow_downgrade: bool = False) -> ArtifactManifest:
        """Write a verified artifact into the inactive slot; the running slot is not touched.

        A full disk or any failure leaves the inactive slot empty and raises SlotError.
        """
        blob = artifact.read_bytes()
        manifest, files = read_bundle(blob)
        if manifest.kind != self.kind:
            raise SlotError(f"a {manifest.kind.value} artifact cannot go into {self.kind.value}")
        state = self._state()
        if state["trial"]:
            raise SlotError(f"{self.kind.value} {state['trial']['version']} is still on trial")
        running = self.installed_version()
        if (
            running
            and parse_version(manifest.version) < parse_version(running)
            and (not allow_downgrade)
        ):
            raise TrustError(
                f"{self.kind.value} {manifest.version} is older than the installed {running}",
                reason=TrustReason.VERSION,
                evidence={"installed": running, "offered": manifest.version},
            )
        active = self.active_slot()
        target = _other(active) if active else "a"
        incoming = self.base / "slots" / f"{target}.incoming"
        final = self.slot_dir(target)
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        try:
            incoming.mkdir(parents=True)
            for index, (rel, data) in enumerate(sorted(files.items())):
                path = incoming / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                if index == 0:
                    self._crash("extracting")
            (incoming / ARTIFACT_COPY).write_bytes(blob)
            mark = {
                "kind": manifest.kind.value,
                "name": manifest.name,
                "version": manifest.version,
                "sha256": manifest.sha256,
            }
            _write_json(incoming / SLOT_MARK, mark)
            os.replace(incoming, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            shutil.rmtree(incoming, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            raise SlotError(f"cannot write slot {target}: {exc}", reason="storage") from exc
        self._crash("installed")
        if active is None:
            # First install: nothing to fall back to, so it is committed straight away.
            self._point_current(target)
            state["committed"] = {"slot": target, "version": manifest.version}
            self._save(state)
        logger.info("ota %s %s installed in slot %s", self.kind.value, manifest.version, target)
        return manifest

    def switch(self, *, now: float, deadline_s: float, campaign: str = "") -> str:
        """Make the installed inactive slot current, on trial until healthy or the deadline."""
        active = self.active_slot()
        if active is None:
            raise SlotError("nothing installed yet")
        target = _other(active)
        mark = self.slot_manifest(target)
        if mark is None:
            raise SlotError(f"slot {target} holds no complete version")
        state = self._state()
        state["trial"] = {
            "slot": target,
            "previous": active,
            "version": mark["version"],
            "started": now,
            "deadline": now + deadline_s,
            "boots": 0,
            "campaign": campaign,
        }
        state["clean_shutdown"] = False
        self._save(state)
        self._crash("trial_written")
        self._point_current(target)
        self._crash("switched")
        logger.info(
            "ota %s switched to %s (slot %s), on trial until %.0f",
            self.kind.value,
            mark["version"],
            target,
            now + deadline_s,
        )
        return str(mark["version"])

    def _point_current(self, slot: str) -> None:
        tmp = self.base / "current.new"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("slots") / slot, tmp)
        self._crash("symlink_made")
        os.replace(tmp, self.current)
        _fsync_dir(self.base)

    # -- the health gate ----------------------------------------------------------------

    def recover(self) -> str | None:
        """Repair what a kill during install or switch left; return what was repaired."""
        (self.base / "current.new").unlink(missing_ok=True)
        for slot in SLOTS:
            shutil.rmtree(self.base / "slots" / f"{slot}.incoming", ignore_errors=True)
        state = self._state()
        active = self.active_slot()
        if active is not None and self.slot_manifest(active) is None:
            other = _other(active)
            if self.slot_manifest(other) is not None:
                self._point_current(other)
                state["trial"] = None
                self._save(state)
                return f"slot {active} was incomplete; back on slot {other}"
        trial = state["trial"]
        if trial and active != trial["slot"]:
            # Killed after writing the trial but before the symlink moved: nothing switched.
            state["trial"] = None
            state["last_rollback"] = {"version": trial["version"], "reason": "switch interrupted"}
            self._save(state)
            return "switch interrupted before the symlink moved; still on the old slot"
        return None

    def on_boot(self, *, now: float) -> BootVerdict:
        """Run at agent start: repair, count the boot, roll back a trial out of budget."""
        repaired = self.recover()
        state = self._state()
        trial = state["trial"]
        if not trial:
            if repaired:
                return BootVerdict(False, rolled_back=True, reason=repaired)
            return BootVerdict(False)
        if not state["clean_shutdown"]:
            trial["boots"] += 1
        else:
            # A deliberate restart into the new version (the agent stopped to run it):
            # its health window runs from this boot, however long the restart took.
            window = trial["deadline"] - trial["started"]
            trial["deadline"] = max(trial["deadline"], now + window)
        state["clean_shutdown"] = False
        self._save(state)
        if trial["boots"] > self.max_boots:
            return self._roll_back(f"{trial['boots']} unplanned restarts on trial")
        if now > trial["deadline"]:
            return self._roll_back("not healthy before the deadline")
        return BootVerdict(True, version=trial["version"])

    def mark_clean_shutdown(self) -> None:
        """A deliberate restart (the agent stopping on request) is not a failed boot."""
        state = self._state()
        state["clean_shutdown"] = True
        self._save(state)

    def on_trial(self) -> dict[str, Any] | None:
        """The trial in progress, if any."""
        trial: dict[str, Any] | None = self._state()["trial"]
        return trial

    def mark_healthy(self) -> str | None:
        """The new version reported healthy: commit it. Returns the committed version."""
        state = self._state()
        trial = state["trial"]
        if not trial:
            return None
        state["committed"] = {"slot": trial["slot"], "version": trial["version"]}
        state["trial"] = None
        self._save(state)
        logger.info("ota %s %s healthy: committed", self.kind.value, trial["version"])
        return str(trial["version"])

    def check_deadline(self, *, now: float, health_detail: str) -> BootVerdict:
        """Called while on trial and not yet healthy: roll back once past the deadline."""
        trial = self._state()["trial"]
        if trial and now > trial["deadline"]:
            return self._roll_back(f"not healthy before the deadline: {health_detail}")
        return BootVerdict(bool(trial), version=trial["version"] if trial else None)

    def rollback(self, *, reason: str) -> BootVerdict:
        """Go back to the other slot now (a failed trial, or a technician's `ota rollback`)."""
        if self._state()["trial"]:
            return self._roll_back(reason)
        active = self.active_slot()
        if active is None or self.slot_manifest(_other(active)) is None:
            raise SlotError(f"no other {self.kind.value} version to roll back to")
        state = self._state()
        leaving = self.slot_manifest(active) or {}
        mark = self.slot_manifest(_other(active))
        assert mark is not None
        self._point_current(_other(active))
        state["committed"] = {"slot": _other(active), "version": mark["version"]}
        state["last_rollback"] = {"version": leaving.get("version"), "reason": reason}
        self._save(state)
        return BootVerdict(False, rolled_back=True, reason=reason, version=mark["version"])

    def _roll_back(self, reason: str) -> BootVerdict:
        state = self._state()
        trial = state["trial"]
        assert trial is not None
        previous = trial["previous"]
        if self.slot_manifest(previous) is None:
            raise SlotError(f"slot {previous} is gone; cannot roll back")
        self._point_current(previous)
        state["trial"] = None
        state["last_rollback"] = {"version": trial["version"], "reason": reason}
        self._save(state)
        logger.warning("ota %s rolled back from %s: %s", self.kind.value, trial["version"], reason)
        mark = self.slot_manifest(previous)
        return BootVerdict(
            False, rolled_back=True, reason=reason, version=mark["version"] if mark else None
        )
