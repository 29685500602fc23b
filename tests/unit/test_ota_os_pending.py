"""The OS through RAUC: the image is streamed to RAUC, never read into memory, and an agent
restart between RAUC's install and the reboot keeps the trial (the new OS is pending),
while a boot that came back on the old OS is a rollback.

A stand-in `rauc` script keeps its slots in a JSON file and answers as RAUC does; the
kernel's boot id is a file the test changes to "reboot". The call mapping only: a real
RAUC image is not part of the test suite.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tracemalloc
from pathlib import Path

import pytest

from ota.artifacts import ArtifactKind, build_artifact
from ota.errors import ArtifactError, SlotError
from ota.system import OsSlots, RaucUpdater

_RAUC = """
import hashlib, json, sys
from pathlib import Path
state_path = Path(sys.argv[1])
state = json.loads(state_path.read_text())
args = sys.argv[2:]
state["calls"].append(args)
if args[0] == "install":
    digest = hashlib.sha256()
    with open(args[1], "rb") as handle:
        head = handle.read(64)
        digest.update(head)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    other = "B" if state["booted"] == "A" else "A"
    state["slots"][other] = head.split(b":")[1].decode()
    state["primary"] = other
    state["received"] = digest.hexdigest()
elif args[:2] == ["status", "--detailed"]:
    booted = state["booted"]
    print(json.dumps({"booted": booted, "slots": [
        {f"rootfs.{i}": {"bootname": name, "boot_status": "good",
                         "slot_status": {"bundle": {"version": state["slots"][name]}}}}
        for i, name in enumerate(("A", "B"))]}))
elif args[:2] == ["status", "mark-bad"]:
    state["primary"] = "B" if state["booted"] == "A" else "A"
state_path.write_text(json.dumps(state))
"""


class StandInRauc(RaucUpdater):
    """The `rauc` command line as a script; the boot id from a file the test rewrites."""

    def __init__(self, tmp_path: Path) -> None:
        script = tmp_path / "rauc.py"
        script.write_text(_RAUC)
        self.state_path = tmp_path / "rauc.json"
        self.state_path.write_text(
            json.dumps(
                {
                    "booted": "A",
                    "primary": "A",
                    "slots": {"A": "2026.10.0", "B": None},
                    "calls": [],
                }
            )
        )
        self.boot_id_path = tmp_path / "boot_id"
        self.boot_id_path.write_text("boot-1")
        super().__init__(command=(sys.executable, str(script), str(self.state_path)))

    def boot_id(self) -> str | None:
        return self.boot_id_path.read_text()

    def state(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.state_path.read_text())
        return data

    def reboot(self, *, fall_back: bool = False) -> None:
        """The board restarts; the bootloader boots RAUC's primary slot, or falls back."""
        state = json.loads(self.state_path.read_text())
        if not fall_back:
            state["booted"] = state["primary"]
        self.state_path.write_text(json.dumps(state))
        self.boot_id_path.write_text(self.boot_id_path.read_text() + "+1")


def _os_artifact(tmp_path: Path, version: str, *, size: int = 4096) -> tuple[Path, bytes]:
    src = tmp_path / f"os-{version}"
    src.mkdir()
    payload = f"RAUC:{version}:".encode() + b"\x5a" * size
    (src / "rootfs.raucb").write_bytes(payload)
    (src / "NOTES.txt").write_text("release notes travel with the image\n")
    blob, _ = build_artifact(
        src, kind=ArtifactKind.OS, name="nigehbaan-os", version=version, hardware=["rpi"]
    )
    path = tmp_path / f"nigehbaan-os-{version}.tar"
    path.write_bytes(blob)
    return path, payload


def test_a_large_image_is_streamed_to_rauc_not_read_into_memory(tmp_path: Path) -> None:
    rauc = StandInRauc(tmp_path)
    slots = OsSlots(tmp_path / "slots", rauc)
    artifact, payload = _os_artifact(tmp_path, "2026.11.1", size=48 * 1024 * 1024)
    expected = hashlib.sha256(payload).hexdigest()
    del payload
    tracemalloc.start()
    try:
        manifest = slots.install(artifact)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"install held {peak} bytes at once"
    assert rauc.state()["received"] == expected  # RAUC got the whole bundle, unaltered
    assert manifest.version == "2026.11.1"
    assert manifest.sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert not (tmp_path / "slots" / "os" / "incoming.raucb").exists()


def test_a_tampered_image_never_reaches_rauc(tmp_path: Path) -> None:
    rauc = StandInRauc(tmp_path)
    slots = OsSlots(tmp_path / "slots", rauc)
    artifact, _ = _os_artifact(tmp_path, "2026.11.1")
    blob = bytearray(artifact.read_bytes())
    blob[blob.index(b"RAUC:2026.11.1:") + 100] ^= 0xFF  # inside the image itself
    artifact.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        slots.install(artifact)
    assert not any(call[0] == "install" for call in rauc.state()["calls"])  # type: ignore[attr-defined]
    app = tmp_path / "app"
    app.mkdir()
    (app / "agent.py").write_text("x = 1\n")
    blob2, _ = build_artifact(app, kind=ArtifactKind.APP, name="agent", version="1.0.0",
                              hardware=["rpi"])  # fmt: skip
    (tmp_path / "app.tar").write_bytes(blob2)
    with pytest.raises(SlotError, match="not an OS image"):
        slots.install(tmp_path / "app.tar")


def test_an_agent_restart_before_the_reboot_keeps_the_new_os_on_trial(tmp_path: Path) -> None:
    rauc = StandInRauc(tmp_path)
    slots = OsSlots(tmp_path / "slots", rauc)
    slots.install(_os_artifact(tmp_path, "2026.11.1")[0])
    slots.switch(now=1000.0, deadline_s=600.0, campaign="os-7")

    # The agent restarts (crash, or the reboot command failed) with the old OS running.
    again = OsSlots(tmp_path / "slots", rauc)
    verdict = again.on_boot(now=1200.0)
    assert (verdict.on_trial, verdict.rolled_back) == (True, False)
    assert verdict.reason == "installed; waiting for the reboot"
    assert again.reboot_pending()
    # Nothing is judged before the new OS runs: not past the deadline, not healthy.
    assert again.check_deadline(now=5000.0, health_detail="x").rolled_back is False
    assert again.mark_healthy() is None
    assert again.on_trial() is not None

    rauc.reboot()  # the board reboots into RAUC's new primary slot
    booted = OsSlots(tmp_path / "slots", rauc)
    verdict = booted.on_boot(now=6000.0)
    assert (verdict.on_trial, verdict.version) == (True, "2026.11.1")
    assert not booted.reboot_pending()
    trial = booted.on_trial()
    assert trial is not None
    assert trial["deadline"] >= 6600.0  # the health window runs from the new OS's boot
    assert booted.mark_healthy() == "2026.11.1"
    assert ["status", "mark-good", "booted"] in rauc.state()["calls"]  # type: ignore[operator]


def test_a_boot_that_fell_back_to_the_old_os_is_a_rollback(tmp_path: Path) -> None:
    rauc = StandInRauc(tmp_path)
    slots = OsSlots(tmp_path / "slots", rauc)
    slots.install(_os_artifact(tmp_path, "2026.11.1")[0])
    slots.switch(now=1000.0, deadline_s=600.0, campaign="os-7")
    rauc.reboot(fall_back=True)  # the new OS did not come up; the bootloader chose A
    verdict = OsSlots(tmp_path / "slots", rauc).on_boot(now=1100.0)
    assert (verdict.on_trial, verdict.rolled_back, verdict.version) == (False, True, "2026.10.0")
    assert "did not boot 2026.11.1" in verdict.reason
    assert slots.status().last_rollback == {"version": "2026.11.1", "reason": "not booted"}


def test_a_reboot_that_did_not_happen_is_not_judged_healthy_nor_rolled_back(
    tmp_path: Path,
) -> None:
    from tests.support.polling import until
    from tests.unit.test_ota_component import _advance_until, _phases, _run, _running
    from tests.unit.test_ota_os_kind import _os_node

    node, component, rauc, clock, _ = _os_node(tmp_path, sick=False)
    asked: list[str] = []
    component._reboot_hook = lambda: asked.append(rauc.booted)  # the reboot command fails

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            start = clock.monotonic()
            # Well past the 600 s deadline, the old OS still running.
            await _advance_until(
                clock, lambda: clock.monotonic() > start + 900, "past the deadline", step=30.0
            )
            phases = [phase for phase, _ in _phases(transport)]
            assert "healthy" not in phases  # the new OS never ran: nothing to commit
            assert "rolled_back" not in phases  # nor to roll back: it still boots next time
        store = component.store("os")
        assert store.on_trial() is not None
        assert store.reboot_pending()
        assert asked == ["A"]  # asked once, not at every health-gate pass
        assert rauc.marks == []

    _run(body)
