"""The launcher: run the agent from its app slot, under the health gate, for systemd.

`nigehbaan ota launch` is what the node's systemd unit runs (`ota/systemd/`, with
`Restart=always`). At each start it runs the slots' boot step itself — `SlotStore.on_boot`
for app, model and configuration: repair a switch a kill interrupted, count a start that
followed no deliberate stop, and switch a trial back once it is out of its boot budget —
and only then starts the agent, from the code in `<data_dir>/ota/slots/app/current`
(resolved to `slots/a` or `slots/b` once, so a later switch never changes the code under
a running process). An app slot is a source tree of the agent's packages (`edge_agent/`,
`ota/`, `proto/`, `hardware/` …, the layout `nigehbaan ota build --kind app` packs
from a directory) put first on the child's `sys.path` (and on `PYTHONPATH` for anything
it spawns); third-party libraries come from the installed environment. With no complete
app slot the installed package runs. The launcher itself always runs from the installed
package: the gate is never replaced by the code it judges.

So a new version whose agent cannot even start is still judged: every exit of the agent
ends the launcher, systemd starts it again, the next start counts an unplanned boot, and
past `[ota] max_boots` the slot switches back before the agent is started. The launcher
also watches the running agent: on trial past the deadline (plus a grace, so the agent's
own gate normally gets there first) it rolls back and stops the agent; when the app slot
was switched back with no trial left (the agent's gate, or `ota rollback`) it stops the
agent so the old code runs. A stop asked of the launcher (SIGTERM, SIGINT: `systemctl
stop`, a shutdown) is passed to the agent and, once it has exited, recorded as a clean
shutdown: a deliberate restart is not a failed boot.

What the boot step decided is handed to the agent in `NIGEHBAAN_OTA_BOOT` (JSON), so
its OTA component reports a rollback (`rolled_back`, reason `boot`) instead of counting
the same boot twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ota.artifacts import ArtifactKind
from ota.slots import SLOT_MARK, SlotStore

__all__ = [
    "BOOT_ENV",
    "DEFAULT_MODULE",
    "LaunchPlan",
    "boot_slots",
    "launch",
    "plan_launch",
    "read_boot_verdicts",
    "supervise",
]

logger = logging.getLogger(__name__)

BOOT_ENV = "NIGEHBAAN_OTA_BOOT"
DEFAULT_MODULE = "edge_agent.console"
SLOT_KINDS = ("app", "model", "config")
EXIT_NO_START = 127

# Run in the child: the slot goes first on sys.path (before the `-c` entry for the
# working directory), then the agent's module runs as __main__ with our arguments.
_BOOTSTRAP = (
    "import runpy, sys; slot = sys.argv[1]; module = sys.argv[2]; "
    "sys.path.insert(0, slot) if slot else None; "
    "sys.argv = [module, *sys.argv[3:]]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


@dataclass(frozen=True)
class LaunchPlan:
    """What one start runs: the command, its environment, the slot and what booting decided."""

    command: list[str]
    env: dict[str, str]
    slot: Path | None
    version: str | None
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)


def boot_slots(
    slots_dir: Path, *, kinds: Sequence[str], max_boots: int, now: float
) -> dict[str, dict[str, Any]]:
    """Run `on_boot` for each slot kind that has slots; what each decided, as plain data."""
    verdicts: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        if kind not in SLOT_KINDS or not (slots_dir / kind).is_dir():
            continue
        store = SlotStore(slots_dir, ArtifactKind(kind), max_boots=max_boots)
        trial = store.on_trial() or {}
        verdict = store.on_boot(now=now)
        verdicts[kind] = {
            "on_trial": verdict.on_trial,
            "rolled_back": verdict.rolled_back,
            "reason": verdict.reason,
            "version": verdict.version,
            # The version that failed and its campaign: what the server must mark.
            "failed_version": trial.get("version") if verdict.rolled_back else None,
            "campaign": trial.get("campaign") or None,
        }
        if verdict.rolled_back:
            logger.warning("ota launch: %s rolled back: %s", kind, verdict.reason)
    return verdicts


def _app_slot(slots_dir: Path) -> tuple[Path | None, str | None]:
    current = slots_dir / "app" / "current"
    if not (current / SLOT_MARK).is_file():
        return None, None
    slot = current.resolve()
    try:
        version = json.loads((slot / SLOT_MARK).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        version = None
    return slot, version


def plan_launch(
    *,
    slots_dir: Path,
    kinds: Sequence[str],
    max_boots: int,
    agent_args: Sequence[str],
    module: str = DEFAULT_MODULE,
    now: float | None = None,
    python: str = sys.executable,
    base_env: dict[str, str] | None = None,
) -> LaunchPlan:
    """Boot the slots, then say how to start the agent: from the app slot, else installed."""
    verdicts = boot_slots(
        slots_dir, kinds=kinds, max_boots=max_boots, now=time.time() if now is None else now
    )
    slot, version = _app_slot(slots_dir) if "app" in kinds else (None, None)
    env = dict(os.environ if base_env is None else base_env)
    if slot is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(slot), env.get("PYTHONPATH", "")) if p)
    env[BOOT_ENV] = json.dumps({"slots": str(slots_dir.resolve()), "kinds": verdicts})
    command = [python, "-c", _BOOTSTRAP, str(slot or ""), module, *agent_args]
    return LaunchPlan(command=command, env=env, slot=slot, version=version, verdicts=verdicts)


def read_boot_verdicts(slots_dir: Path) -> dict[str, dict[str, Any]]:
    """In the agent: what the launcher's boot step decided for these slots ({} without one)."""
    raw = os.environ.get(BOOT_ENV)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        if Path(data["slots"]) != slots_dir.resolve():
            return {}  # another node's slots (several simulated nodes in one process)
        kinds: dict[str, dict[str, Any]] = data["kinds"]
    except (ValueError, KeyError, TypeError):
        return {}
    return kinds


def supervise(
    plan: LaunchPlan,
    *,
    slots_dir: Path,
    poll_s: float = 5.0,
    deadline_grace_s: float = 60.0,
    stop_timeout_s: float = 30.0,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run the agent until it exits (its exit code) or must be stopped; see the module."""
    try:
        child = subprocess.Popen(plan.command, env=plan.env)
    except OSError as exc:
        # Counted as a failed boot at the next start: systemd starts the launcher again.
        logger.error("ota launch: cannot start the agent: %s", exc)
        return EXIT_NO_START
    app = SlotStore(slots_dir, ArtifactKind.APP) if (slots_dir / "app").is_dir() else None
    stop_asked: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_asked.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code: int | None = child.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                code = None
            if stop_asked:  # before the exit code: the agent may have stopped as asked
                return _stop(child, slots_dir, stop_timeout_s, deliberate=True)
            if code is not None:
                return _exit_code(code)
            if app is None:
                continue
            why = _must_stop(app, plan.slot, clock(), deadline_grace_s)
            if why:
                logger.warning("ota launch: stopping the agent: %s", why)
                return _stop(child, slots_dir, stop_timeout_s, deliberate=False)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _must_stop(app: SlotStore, running: Path | None, now: float, grace_s: float) -> str | None:
    trial = app.on_trial()
    if trial is not None and now > trial["deadline"] + grace_s:
        verdict = app.check_deadline(
            now=now, health_detail="the agent never reported healthy (seen by the launcher)"
        )
        return verdict.reason or "trial over"
    slot, _ = _app_slot(app.base.parent)
    if trial is None and slot is not None and slot != running:
        return f"the app slot was switched back to {slot.name}; running the old version"
    return None


def _stop(
    child: subprocess.Popen[bytes], slots_dir: Path, timeout: float, *, deliberate: bool
) -> int:
    if child.poll() is None:
        child.terminate()
    try:
        code = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait()
        deliberate = False  # it did not stop when asked: not a clean shutdown
    if not deliberate:
        return _exit_code(code)
    for kind in SLOT_KINDS:
        if (slots_dir / kind).is_dir():
            store = SlotStore(slots_dir, ArtifactKind(kind))
            if store.on_trial():
                store.mark_clean_shutdown()
    return 0


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def launch(
    *,
    slots_dir: Path,
    kinds: Sequence[str],
    max_boots: int,
    agent_args: Sequence[str],
    module: str = DEFAULT_MODULE,
    poll_s: float = 5.0,
    deadline_grace_s: float = 60.0,
    stop_timeout_s: float = 30.0,
) -> int:
    """One start: boot the slots, run the agent from the app slot, return its exit code."""
    plan = plan_launch(
        slots_dir=slots_dir,
        kinds=kinds,
        max_boots=max_boots,
        agent_args=agent_args,
        module=module,
    )
    where = f"app slot {plan.slot.name} ({plan.version})" if plan.slot else "installed package"
    logger.info("ota launch: starting %s from %s", module, where)
    return supervise(
        plan,
        slots_dir=slots_dir,
        poll_s=poll_s,
        deadline_grace_s=deadline_grace_s,
        stop_timeout_s=stop_timeout_s,
    )
