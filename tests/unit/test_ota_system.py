"""The OS updater drives RAUC's command line: install, status, mark good or bad.

A stand-in `rauc` script records its arguments and answers as RAUC does, so this checks
the call mapping only; a real RAUC image is not part of the test suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ota.errors import SlotError
from ota.system import RaucUpdater

_FAKE = """
import json, sys
from pathlib import Path
log = Path(sys.argv[1])
args = sys.argv[2:]
with log.open("a") as handle:
    handle.write(json.dumps(args) + "\\n")
if args[:1] == ["install"] and args[1].endswith("bad.raucb"):
    print("signature verification failed", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["status", "--detailed"]:
    print(json.dumps({"booted": "B", "slots": [
        {"rootfs.0": {"bootname": "A", "boot_status": "good"}},
        {"rootfs.1": {"bootname": "B", "boot_status": "bad",
                      "slot_status": {"bundle": {"version": "2026.11.2"}}}}]}))
"""


@pytest.fixture
def rauc(tmp_path: Path) -> tuple[RaucUpdater, Path]:
    script = tmp_path / "rauc.py"
    script.write_text(_FAKE)
    log = tmp_path / "calls.log"
    return RaucUpdater(command=(sys.executable, str(script), str(log))), log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_an_os_bundle_is_installed_and_the_booted_slot_marked(
    rauc: tuple[RaucUpdater, Path], tmp_path: Path
) -> None:
    updater, log = rauc
    updater.install(tmp_path / "os-2026.11.2.raucb")
    status = updater.status()
    assert (status.booted, status.booted_version, status.good) == ("B", "2026.11.2", False)
    updater.mark_good()
    updater.mark_bad()
    assert _calls(log) == [
        ["install", str(tmp_path / "os-2026.11.2.raucb")],
        ["status", "--detailed", "--output-format=json"],
        ["status", "mark-good", "booted"],
        ["status", "mark-bad", "booted"],
    ]


def test_a_bundle_rauc_refuses_is_a_slot_error_with_its_words(
    rauc: tuple[RaucUpdater, Path], tmp_path: Path
) -> None:
    updater, _ = rauc
    with pytest.raises(SlotError, match="signature verification failed") as caught:
        updater.install(tmp_path / "bad.raucb")
    assert caught.value.reason == "os_update"
