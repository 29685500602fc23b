"""`nigehbaan ota launch` runs the agent from its app slot and, with systemd's
`Restart=always` (played here by a bounded loop of starts), rolls a version whose agent
cannot start back to the one that could, by itself, within the boot budget.

The app artifacts are built with `nigehbaan ota build --kind app` from source trees whose
`edge_agent/console.py` stands in for the agent: it writes which version ran, from which
file, and what the launcher's boot step handed it, then exits (the bad one) or, the good
one, commits its trial as the agent's health gate does once every component is healthy
(the real gate, with a broker, is tested in tests/unit/test_ota_component.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ota.slots import SlotStore

_AGENT = """
import json, os, sys
from pathlib import Path
VERSION = {version!r}
with Path(os.environ["PROBE_LOG"]).open("a") as log:
    boot = json.loads(os.environ.get("NIGEHBAAN_OTA_BOOT", "{{}}"))
    run = {{"version": VERSION, "file": __file__, "argv": sys.argv[1:], "boot": boot}}
    log.write(json.dumps(run) + "\\n")
BEHAVIOUR = {behaviour!r}
if BEHAVIOUR == "crash":
    sys.exit(3)
if BEHAVIOUR == "hang":
    import time
    time.sleep(120)
if BEHAVIOUR == "healthy":
    from ota.artifacts import ArtifactKind
    from ota.slots import SlotStore
    SlotStore(Path(os.environ["PROBE_SLOTS"]), ArtifactKind.APP).mark_healthy()
"""


def _ota(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "ota", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _build(tmp_path: Path, version: str, behaviour: str) -> Path:
    src = tmp_path / f"src-{version}"
    (src / "edge_agent").mkdir(parents=True)
    (src / "edge_agent" / "__init__.py").write_text("")
    (src / "edge_agent" / "console.py").write_text(
        _AGENT.format(version=version, behaviour=behaviour)
    )
    out = tmp_path / f"agent-{version}.tar"
    done = _ota(
        "build", str(src), "--kind", "app", "--name", "agent", "--version", version,
        "--hardware", "sim", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


class Node:
    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "node"
        self.slots = self.data / "ota" / "slots"
        self.config = tmp_path / "agent.toml"
        self.config.write_text(
            f'node_id = "pillar-9"\nserial = "SN9"\ndata_dir = "{self.data}"\n'
            '[ota]\nenabled = true\nkinds = ["app"]\nhardware = "sim"\nmax_boots = 2\n'
        )
        self.log = tmp_path / "runs.jsonl"
        self.store = SlotStore(self.slots, _app(), max_boots=2)

    def install(self, artifact: Path, *, deadline_s: float = 900.0) -> None:
        """What the OTA component does with a verified artifact: install, switch, restart."""
        first = self.store.active_slot() is None
        self.store.install(artifact)
        if not first:
            self.store.switch(now=_now(), deadline_s=deadline_s, campaign="c-1")
            self.store.mark_clean_shutdown()

    def start(self, *extra: str) -> tuple[int, dict[str, Any] | None]:
        """One start of the unit: the launcher's exit code and what the agent recorded."""
        before = len(self.runs())
        done = _ota(
            "launch", "--config", str(self.config), "--poll-s", "0.1", *extra,
            env={"PROBE_LOG": str(self.log), "PROBE_SLOTS": str(self.slots)}, timeout=150,
        )  # fmt: skip
        runs = self.runs()
        return done.returncode, runs[before] if len(runs) > before else None

    def runs(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def _app() -> Any:
    from ota.artifacts import ArtifactKind

    return ArtifactKind.APP


def _now() -> float:
    import time

    return time.time()


def test_an_agent_that_cannot_start_is_rolled_back_by_the_launcher_within_the_boot_budget(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    node.install(_build(tmp_path, "1.0.0", "exit"))
    node.install(_build(tmp_path, "2.0.0", "crash"))
    ran: list[str] = []
    for _ in range(8):  # systemd's Restart=always, bounded
        code, run = node.start()
        assert run is not None, "the launcher started no agent"
        ran.append(run["version"])
        if run["version"] == "1.0.0":
            break
        assert code == 3  # the agent's own exit code, so systemd sees the failure
    # The deliberate restart into 2.0.0 is not counted; then two unplanned boots are
    # allowed (max_boots = 2) and the third is refused before the agent starts.
    assert ran == ["2.0.0", "2.0.0", "2.0.0", "1.0.0"]
    back = node.runs()[-1]
    assert Path(back["file"]).resolve().parent.parent == (node.slots / "app" / "slots" / "a")
    assert back["argv"] == ["agent", "--config", str(node.config.resolve())]
    told = back["boot"]["kinds"]["app"]
    assert told["rolled_back"] is True
    assert (told["failed_version"], told["campaign"]) == ("2.0.0", "c-1")
    assert told["reason"] == "3 unplanned restarts on trial"
    status = node.store.status()
    assert (status.active_version, status.committed_version, status.trial) == (
        "1.0.0",
        "1.0.0",
        None,
    )
    assert status.last_rollback == {"version": "2.0.0", "reason": "3 unplanned restarts on trial"}
    # The crashed version ran from its own slot, not from the installed package.
    assert all("/slots/b/edge_agent/" in r["file"] for r in node.runs()[:3])


def test_a_good_version_becomes_current_runs_and_stays_after_restarts(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.install(_build(tmp_path, "1.0.0", "exit"))
    node.install(_build(tmp_path, "2.0.0", "healthy"))
    code, run = node.start()
    assert code == 0
    assert run is not None
    assert run["version"] == "2.0.0"
    assert run["boot"]["kinds"]["app"]["on_trial"] is True
    assert node.store.status().committed_version == "2.0.0"
    for _ in range(4):  # committed: unplanned restarts no longer count against it
        code, run = node.start()
        assert run is not None
        assert run["version"] == "2.0.0"
    assert node.store.status().last_rollback is None


def test_an_agent_that_hangs_on_trial_is_stopped_and_rolled_back_at_the_deadline(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    node.install(_build(tmp_path, "1.0.0", "exit"))
    node.install(_build(tmp_path, "2.0.0", "hang"), deadline_s=0.5)
    code, run = node.start("--deadline-grace-s", "0")
    assert run is not None
    assert run["version"] == "2.0.0"
    assert code != 0  # stopped by the launcher, not by the agent's own choice
    last = node.store.status().last_rollback
    assert last is not None
    assert last["version"] == "2.0.0"
    assert "never reported healthy (seen by the launcher)" in last["reason"]
    code, run = node.start()
    assert run is not None
    assert run["version"] == "1.0.0"


def test_without_an_app_slot_the_installed_package_runs(tmp_path: Path) -> None:
    node = Node(tmp_path)
    done = _ota(
        "launch", "--config", str(node.config), "--poll-s", "0.1",
        "--", "ota", "status", "--config", str(node.config), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kinds"]["app"]["version"] is None
    assert "from installed package" in done.stderr
