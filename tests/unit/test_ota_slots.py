"""A/B slots: a new version runs on trial, a sick one goes back by itself, a kill -9 at any
point of the switch leaves a working slot, and an older version needs a signed downgrade."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ota.artifacts import ArtifactKind, build_artifact
from ota.errors import SlotError, TrustError, TrustReason
from ota.slots import SlotStore

REPO = Path(__file__).resolve().parents[2]


def _artifact(tmp_path: Path, version: str) -> Path:
    src = tmp_path / f"src-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "agent.py").write_text(f"VERSION = {version!r}\n")
    (src / "lib").mkdir(exist_ok=True)
    for index in range(5):
        (src / "lib" / f"m{index}.py").write_text(f"# {version} {index}\n" * 100)
    blob, _ = build_artifact(
        src, kind=ArtifactKind.APP, name="agent", version=version, hardware=["sim"]
    )
    path = tmp_path / f"agent-{version}.tar"
    path.write_bytes(blob)
    return path


def _running(store: SlotStore) -> str:
    """What the agent would run: the VERSION line of current/agent.py."""
    return (store.current / "agent.py").read_text().split("'")[1]


@pytest.fixture
def store(tmp_path: Path) -> SlotStore:
    slots = SlotStore(tmp_path / "slots", ArtifactKind.APP, max_boots=2)
    slots.install(_artifact(tmp_path, "1.0.0"))
    return slots


def test_the_first_install_is_committed_and_the_next_goes_to_the_other_slot(
    store: SlotStore,
    tmp_path: Path,
) -> None:
    assert store.status().committed_version == "1.0.0"
    assert store.active_slot() == "a"
    store.install(_artifact(tmp_path, "1.1.0"))
    assert _running(store) == "1.0.0"  # installing never touches the running slot
    store.switch(now=100.0, deadline_s=600)
    assert _running(store) == "1.1.0"
    assert store.status().trial is not None
    assert store.mark_healthy() == "1.1.0"
    assert store.status().committed_version == "1.1.0"


def test_a_version_that_never_reports_healthy_switches_back_by_itself_and_says_why(
    store: SlotStore,
    tmp_path: Path,
) -> None:
    store.install(_artifact(tmp_path, "1.1.0"))
    store.switch(now=100.0, deadline_s=600)
    assert store.check_deadline(now=500.0, health_detail="uplink: not connected").on_trial
    verdict = store.check_deadline(now=701.0, health_detail="uplink: not connected")
    assert verdict.rolled_back
    assert "uplink: not connected" in verdict.reason
    assert _running(store) == "1.0.0"
    assert store.status().last_rollback == {"version": "1.1.0", "reason": verdict.reason}


def test_crash_loops_roll_back_but_deliberate_restarts_do_not_count(
    store: SlotStore,
    tmp_path: Path,
) -> None:
    store.install(_artifact(tmp_path, "1.1.0"))
    store.switch(now=0.0, deadline_s=10_000)
    for _ in range(5):  # a technician restarts the agent five times on purpose
        store.mark_clean_shutdown()
        assert store.on_boot(now=10.0).on_trial
    assert store.on_boot(now=20.0).on_trial  # one crash
    assert store.on_boot(now=30.0).on_trial  # two crashes: still within max_boots=2
    verdict = store.on_boot(now=40.0)  # the third unplanned boot
    assert verdict.rolled_back
    assert "unplanned restarts" in verdict.reason
    assert _running(store) == "1.0.0"


def test_a_trial_past_its_deadline_at_boot_rolls_back(store: SlotStore, tmp_path: Path) -> None:
    store.install(_artifact(tmp_path, "1.1.0"))
    store.switch(now=0.0, deadline_s=60)
    verdict = store.on_boot(now=61.0)
    assert verdict.rolled_back
    assert _running(store) == "1.0.0"


def test_after_a_deliberate_restart_the_health_window_runs_from_that_boot(
    store: SlotStore, tmp_path: Path
) -> None:
    store.install(_artifact(tmp_path, "1.1.0"))
    store.switch(now=0.0, deadline_s=60)
    store.mark_clean_shutdown()  # the agent stops to run the new slot ...
    assert store.on_boot(now=90.0).on_trial  # ... and a loaded machine took 90 s to restart
    assert store.check_deadline(now=149.0, health_detail="uplink: not connected").on_trial
    verdict = store.check_deadline(now=151.0, health_detail="uplink: not connected")
    assert verdict.rolled_back
    assert _running(store) == "1.0.0"


def test_an_older_version_is_refused_unless_a_downgrade_is_allowed(
    store: SlotStore,
    tmp_path: Path,
) -> None:
    with pytest.raises(TrustError) as caught:
        store.install(_artifact(tmp_path, "0.9.0"))
    assert caught.value.trust_reason is TrustReason.VERSION
    assert store.slot_manifest("b") is None
    store.install(_artifact(tmp_path, "0.9.0"), allow_downgrade=True)
    store.switch(now=0.0, deadline_s=60)
    assert _running(store) == "0.9.0"


def test_a_technician_rollback_goes_to_the_other_complete_slot(
    store: SlotStore,
    tmp_path: Path,
) -> None:
    with pytest.raises(SlotError):
        store.rollback(reason="technician")
    store.install(_artifact(tmp_path, "1.1.0"))
    store.switch(now=0.0, deadline_s=60)
    store.mark_healthy()
    verdict = store.rollback(reason="technician")
    assert verdict.rolled_back
    assert _running(store) == "1.0.0"
    assert store.status().committed_version == "1.0.0"


def test_a_full_disk_while_installing_leaves_the_running_slot_untouched(
    store: SlotStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    artifact = _artifact(tmp_path, "1.1.0")
    real_write = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if "incoming" in str(self):
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(SlotError) as caught:
        store.install(artifact)
    assert caught.value.reason == "storage"
    monkeypatch.undo()
    assert _running(store) == "1.0.0"
    assert not (store.base / "slots" / "b.incoming").exists()
    assert store.status().trial is None


_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from ota.artifacts import ArtifactKind
    from ota.slots import SlotStore

    point = sys.argv[1]
    def crash(at):
        if at == point:
            os.kill(os.getpid(), signal.SIGKILL)
    store = SlotStore(Path(sys.argv[2]), ArtifactKind.APP, crash_hook=crash)
    store.install(Path(sys.argv[3]))
    store.switch(now=0.0, deadline_s=60)
    print("finished")
""")


@pytest.mark.parametrize(
    "point", ["extracting", "installed", "trial_written", "symlink_made", "switched"]
)
def test_a_kill_9_at_any_point_of_the_switch_leaves_a_working_slot(
    store: SlotStore,
    tmp_path: Path,
    point: str,
) -> None:
    artifact = _artifact(tmp_path, "1.1.0")
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(repo=str(REPO)))
    done = subprocess.run(
        [sys.executable, str(script), point, str(tmp_path / "slots"), str(artifact)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    after = SlotStore(tmp_path / "slots", ArtifactKind.APP, max_boots=2)
    verdict = after.on_boot(now=1.0)
    running = _running(after)
    assert running in {"1.0.0", "1.1.0"}
    active = after.active_slot()
    assert active is not None
    mark = after.slot_manifest(active)
    assert mark is not None
    assert mark["version"] == running
    # Whatever runs is either committed or on trial, never neither.
    state = json.loads((after.base / "state.json").read_text())
    on_trial = state["trial"] is not None
    assert verdict.on_trial == on_trial
    if running == "1.1.0":
        assert on_trial
    else:
        assert state["committed"]["version"] == "1.0.0"
        assert not on_trial
    assert not (after.base / "current.new").exists()
    assert not any(p.name.endswith(".incoming") for p in (after.base / "slots").iterdir())
    assert os.path.islink(after.current)
