"""`nigehbaan tech flash`: the first-boot bundle lands on a boot directory or inside a disk image.

Images are real (sparse, so cheap): made with truncate + sfdisk (MBR, a
260 MiB FAT32 boot partition at 4 MiB like a Raspberry Pi OS image, and a
Linux root partition), formatted with mkfs.vfat at the partition's offset,
and read back with mtools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_server.tech.flash import FlashError, fat_partition, read_partitions
from proto.bundle import Bundle
from tests.support.pki import FleetCA

TOOLS = ("sfdisk", "mkfs.vfat", "mcopy", "mtype")
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists() for t in TOOLS),
    reason="needs fdisk, dosfstools and mtools (scripts/ensure-system-packages.sh)",
)


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def make_pi_image(path: Path) -> int:
    """A sparse 300 MiB image: FAT32 boot at 4 MiB, Linux root after it. Returns the offset."""
    subprocess.run(["truncate", "-s", "300M", str(path)], check=True)
    layout = "label: dos\nstart=8192, size=532480, type=c, bootable\nstart=540672, type=83\n"
    subprocess.run([tool("sfdisk"), "-q", str(path)], input=layout, text=True, check=True)
    offset = 8192 * 512
    subprocess.run(
        [tool("mkfs.vfat"), "-F", "32", "-n", "BOOT", "--offset", "8192", str(path), "266240"],
        check=True,
        capture_output=True,
    )
    return offset


def flash(target: Path, ca_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "tech", "flash", str(target),
         "--server-url", "https://fleet.lahore.example:8443", "--ca-chain", str(ca_file),
         "--token-env", "NB_TOKEN", "--site", "lahore-gulberg-site-0007",
         "--district", "lahore-gulberg", "--lat", "31.52", "--lon", "74.35", *extra],
        capture_output=True, text=True, check=False, env={**os.environ, "NB_TOKEN": "nbet_abc"},
    )  # fmt: skip


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    return FleetCA().write_ca(tmp_path / "ca-chain.pem")


def test_a_bundle_is_written_onto_a_mounted_boot_directory(tmp_path: Path, ca_file: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    done = flash(boot, ca_file, "--node-id", "lhr-gulberg-0007")
    assert done.returncode == 0, done.stderr
    bundle = Bundle.model_validate_json((boot / "nigehbaan-bundle.json").read_text())
    assert bundle.token == "nbet_abc"
    assert bundle.node_id == "lhr-gulberg-0007"
    assert bundle.ca_chain_pem == ca_file.read_text()
    assert bundle.location is not None
    assert (bundle.location.lat, bundle.location.lon) == (31.52, 74.35)
    assert not [p for p in boot.iterdir() if p.name.startswith(".")]  # no temporary left


@needs_tools
def test_a_bundle_is_written_into_the_fat_partition_of_a_disk_image(
    tmp_path: Path, ca_file: Path
) -> None:
    image = tmp_path / "pillar.img"
    offset = make_pi_image(image)
    assert fat_partition(image) == offset
    done = flash(image, ca_file)
    assert done.returncode == 0, done.stderr
    assert f"@@{offset}" in done.stdout
    text = subprocess.run(
        [tool("mtype"), "-i", f"{image}@@{offset}", "::/nigehbaan-bundle.json"],
        capture_output=True, text=True, check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout  # fmt: skip
    bundle = Bundle.model_validate_json(text)
    assert (bundle.site_id, bundle.token) == ("lahore-gulberg-site-0007", "nbet_abc")
    # Flashing again (a new token) replaces the file.
    again = subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "tech", "flash", str(image),
         "--server-url", "https://fleet.lahore.example:8443", "--ca-chain", str(ca_file)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    listing = subprocess.run(
        [tool("mcopy"), "-i", f"{image}@@{offset}", "::/nigehbaan-bundle.json", "-"],
        capture_output=True, text=True, check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout  # fmt: skip
    assert "token" not in json.loads(listing)  # preauthorized: no token written


@needs_tools
def test_a_superfloppy_image_without_partitions_is_written_at_offset_zero(
    tmp_path: Path, ca_file: Path
) -> None:
    image = tmp_path / "floppy.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run([tool("mkfs.vfat"), str(image)], check=True, capture_output=True)
    assert fat_partition(image) == 0
    assert flash(image, ca_file).returncode == 0


def test_an_image_without_a_fat_partition_is_refused_with_the_reason(
    tmp_path: Path, ca_file: Path
) -> None:
    image = tmp_path / "root-only.img"
    sector = bytearray(512)
    sector[446 + 4] = 0x83  # one Linux partition
    sector[446 + 8 : 446 + 16] = (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    sector[510:512] = b"\x55\xaa"
    image.write_bytes(bytes(sector) + bytes(4096))
    assert [p.type_id for p in read_partitions(bytes(sector))] == [0x83]
    with pytest.raises(FlashError, match="no FAT partition"):
        fat_partition(image)
    done = flash(image, ca_file)
    assert done.returncode == 2
    assert "no FAT partition" in done.stderr
    with pytest.raises(FlashError, match="0x55AA"):
        read_partitions(bytes(512))
