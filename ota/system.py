"""The operating system as an update: an `OsUpdater` interface and its RAUC implementation.

Where a node's image is built with RAUC, the OS is updated by RAUC's own A/B slots: the
node hands it a RAUC bundle that `ota.trust` already verified (the TUF target's hash and
length), RAUC checks its own signature and writes the inactive rootfs slot, and after the
reboot the agent marks the slot good once the health gate passes — or bad, and RAUC's
bootloader integration boots the other slot. `RaucUpdater` drives the `rauc` command line,
which talks to the RAUC service over its D-Bus API (`de.pengutronix.rauc.Installer`); the
command is configurable so tests use a stand-in script. balenaOS is not implemented.
"""

from __future__ import annotations

import json
import logging
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ota.errors import SlotError

__all__ = ["OsSlotStatus", "OsUpdater", "RaucUpdater"]

logger = logging.getLogger(__name__)


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
