"""Writing a first-boot bundle onto a node's boot partition: a directory or a disk image.

A directory is a mounted boot partition (or any folder a card reader
exposes): the bundle is written to a temporary name and renamed. A disk image
(or a raw card device) is not mounted: the MBR partition table is read here
in Python to find the FAT boot partition's byte offset, and mtools writes the
file into that filesystem (``mcopy -i IMAGE@@OFFSET``) — no root, no loop
devices. A "superfloppy" image (a FAT filesystem with no partition table) is
written at offset 0. GPT images are refused with a clear message for now.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fleet_server.errors import FleetServerError
from proto.bundle import BUNDLE_NAME, Bundle

__all__ = ["FlashError", "Partition", "fat_partition", "flash_bundle", "read_partitions"]

SECTOR = 512
# MBR partition types that hold FAT filesystems (a Raspberry Pi boot partition is 0x0c).
FAT_TYPES = frozenset({0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E, 0xEF})
GPT_PROTECTIVE = 0xEE


class FlashError(FleetServerError):
    """The target cannot take a bundle (no FAT partition, no mtools, not writable…)."""


@dataclass(frozen=True)
class Partition:
    """One primary MBR partition entry."""

    index: int  # 1..4
    type_id: int
    start_lba: int
    sectors: int
    bootable: bool

    @property
    def offset(self) -> int:
        return self.start_lba * SECTOR

    @property
    def is_fat(self) -> bool:
        return self.type_id in FAT_TYPES


def _looks_like_fat_boot_sector(sector: bytes) -> bool:
    return sector[54:59] in (b"FAT12", b"FAT16") or sector[82:87] == b"FAT32"


def read_partitions(sector0: bytes) -> list[Partition]:
    """The non-empty primary partitions of an MBR (pure: takes the first 512 bytes)."""
    if len(sector0) < SECTOR or sector0[510:512] != b"\x55\xaa":
        raise FlashError("no MBR partition table (missing 0x55AA signature)")
    partitions = []
    for i in range(4):
        entry = sector0[446 + 16 * i : 446 + 16 * (i + 1)]
        status, type_id = entry[0], entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if type_id == 0 or count == 0:
            continue
        partitions.append(Partition(i + 1, type_id, start, count, bootable=status == 0x80))
    return partitions


def fat_partition(image: Path) -> int:
    """Byte offset of the FAT boot partition inside `image` (0 for a superfloppy)."""
    try:
        with image.open("rb") as handle:
            sector0 = handle.read(SECTOR)
    except OSError as exc:
        raise FlashError(f"cannot read {image}: {exc}") from exc
    if len(sector0) == SECTOR and _looks_like_fat_boot_sector(sector0):
        return 0
    partitions = read_partitions(sector0)
    if any(p.type_id == GPT_PROTECTIVE for p in partitions):
        raise FlashError(f"{image} has a GPT partition table; only MBR images are supported yet")
    fats = [p for p in partitions if p.is_fat]
    if not fats:
        kinds = ", ".join(f"#{p.index} type 0x{p.type_id:02x}" for p in partitions) or "none"
        raise FlashError(f"{image} has no FAT partition (partitions: {kinds})")
    # The boot partition: the bootable FAT one if marked, else the first.
    chosen = next((p for p in fats if p.bootable), fats[0])
    return chosen.offset


def flash_bundle(target: Path, bundle: Bundle) -> str:
    """Write `bundle` onto `target` (directory or image); returns where it went."""
    data = bundle.model_dump_json(indent=2, exclude_none=True).encode("utf-8") + b"\n"
    if target.is_dir():
        path = target / BUNDLE_NAME
        fd, tmp = tempfile.mkstemp(prefix=".nigehbaan-bundle.", dir=target)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise FlashError(f"cannot write {path}: {exc}") from exc
        with contextlib.suppress(OSError):  # FAT ignores modes; a plain folder does not
            path.chmod(0o600)
        return str(path)
    if not target.exists():
        raise FlashError(f"{target} does not exist (give a mounted boot directory or an image)")
    offset = fat_partition(target)
    mcopy = shutil.which("mcopy")
    if mcopy is None:
        raise FlashError("mcopy not found: install mtools (apt-get install mtools)")
    with tempfile.TemporaryDirectory() as tmpdir:
        local = Path(tmpdir) / BUNDLE_NAME
        local.write_bytes(data)
        done = subprocess.run(
            [mcopy, "-o", "-i", f"{target}@@{offset}", str(local), f"::/{BUNDLE_NAME}"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )
    if done.returncode != 0:
        raise FlashError(
            f"mcopy could not write into {target} at offset {offset}: "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return f"{target}@@{offset}:/{BUNDLE_NAME}"
