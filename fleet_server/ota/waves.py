"""The rule for a campaign's waves, as a pure function on plain values.

`decide_wave(campaign, nodes, now)` looks at a campaign and its nodes' states
and returns what to do now: start the next wave (and which nodes join it),
offer the update to nodes, abort, or call the campaign done. It reads no
database and sends nothing; `fleet_server.ota.job.OtaWaveJob` loads the
values, applies the actions and publishes the offers.

The rules (issue 13):

- waves are cumulative sizes of the targeted nodes (a percentage or a
  count); the first wave (the canary) starts at once, and the last takes
  every node left, including nodes that joined the target after the start;
  a node that joins while an earlier wave runs waits for the next wave;
- a wave is judged once `min_sample` of its nodes have finished (healthy,
  failed or rolled back; all of them in a smaller wave): when more than
  `failure_threshold` of its finished nodes failed or rolled back the
  campaign aborts, and no further wave starts;
- the next wave starts when every node of the current one has finished, or,
  with `wave_max_s`, when the wave is that old and its sample is good (so a
  few nodes deferring for days do not hold the fleet back);
- nodes that share an OTA group (`NodeProgress.group`) join a wave together:
  the signed assignment is per group;
- a node is offered the update only while its site's maintenance window is
  open (`MaintenanceWindow`, in the site's time zone), and offered again
  after `offer_resend_s` without an answer;
- a paused, aborted or completed campaign does nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "FAILED_STATES",
    "FINISHED_STATES",
    "Abort",
    "Action",
    "Complete",
    "MaintenanceWindow",
    "NodeProgress",
    "Offer",
    "StartWave",
    "WavePlan",
    "decide_wave",
    "wave_targets",
]

FINISHED_STATES = frozenset({"healthy", "failed", "rolled_back"})
FAILED_STATES = frozenset({"failed", "rolled_back"})
# Nodes that have not answered an offer yet (re-offered after `offer_resend_s`).
UNANSWERED_STATES = frozenset({"pending", "offered"})


@dataclass(frozen=True)
class MaintenanceWindow:
    """A daily window in a site's local time; `end` before `start` spans midnight."""

    tz: str
    start: time
    end: time

    def is_open(self, now: datetime) -> bool:
        """Whether `now` (aware, any zone) falls inside the window at the site."""
        try:
            local = now.astimezone(ZoneInfo(self.tz)).time()
        except (ZoneInfoNotFoundError, ValueError):
            return True  # a zone the server does not know must not block updates for ever
        if self.start == self.end:
            return True  # a window of the whole day
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class WavePlan:
    """A campaign as the rule sees it."""

    state: str
    # Cumulative size of each wave: ("percent", 5.0) or ("count", 20).
    waves: Sequence[tuple[str, float]]
    wave_index: int  # -1 before the first wave
    wave_started_at: datetime | None
    min_sample: int
    failure_threshold: float
    offer_resend_s: float
    wave_max_s: float | None = None


@dataclass(frozen=True)
class NodeProgress:
    """One targeted node: its wave (None: not in one yet), state and last offer.

    `group` is the node's OTA group when it shares one with other nodes (None: its own):
    the signed assignment is per group, so a group's nodes always join a wave together.
    """

    node_id: str
    wave: int | None
    state: str
    offered_at: datetime | None = None
    window: MaintenanceWindow | None = None
    group: str | None = None


@dataclass(frozen=True)
class StartWave:
    """Start wave `index`; `node_ids` join it (and are offered by the same decision)."""

    index: int
    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class Offer:
    """Send the update offer to a node (again, when `resend`)."""

    node_id: str
    resend: bool = False


@dataclass(frozen=True)
class Abort:
    """Stop the campaign: the wave failed its threshold."""

    reason: str


@dataclass(frozen=True)
class Complete:
    """Every node finished the last wave."""


Action = StartWave | Offer | Abort | Complete


@dataclass
class _Wave:
    nodes: list[NodeProgress] = field(default_factory=list)

    @property
    def finished(self) -> list[NodeProgress]:
        return [n for n in self.nodes if n.state in FINISHED_STATES]

    @property
    def failed(self) -> list[NodeProgress]:
        return [n for n in self.nodes if n.state in FAILED_STATES]


def wave_targets(waves: Sequence[tuple[str, float]], total: int) -> list[int]:
    """How many nodes have been offered once each wave has started (the last: all).

    Never fewer than the wave before, at least one node per wave while any
    remain, and never more than `total`.
    """
    sizes: list[int] = []
    for i, (unit, size) in enumerate(waves):
        if i == len(waves) - 1:
            want = total
        elif unit == "percent":
            want = math.ceil(total * size / 100.0)
        else:
            want = int(size)
        floor = sizes[-1] if sizes else 0
        want = max(want, min(floor + 1, total))
        sizes.append(min(want, total))
    return sizes


def _judge(wave: _Wave, plan: WavePlan) -> tuple[bool, str | None]:
    """(sample reached, abort reason or None) for the running wave."""
    finished = wave.finished
    needed = min(plan.min_sample, len(wave.nodes))
    if not wave.nodes or len(finished) < needed:
        return False, None
    share = len(wave.failed) / len(finished)
    if share > plan.failure_threshold:
        return True, (
            f"{len(wave.failed)} of {len(finished)} finished nodes failed or rolled back "
            f"({share:.0%} > threshold {plan.failure_threshold:.0%})"
        )
    return True, None


def _offers(nodes: Sequence[NodeProgress], plan: WavePlan, now: datetime) -> list[Action]:
    actions: list[Action] = []
    resend = timedelta(seconds=plan.offer_resend_s)
    for node in nodes:
        if node.state not in UNANSWERED_STATES:
            continue
        if node.window is not None and not node.window.is_open(now):
            continue
        if node.offered_at is None:
            actions.append(Offer(node.node_id))
        elif now - node.offered_at >= resend:
            actions.append(Offer(node.node_id, resend=True))
    return actions


def decide_wave(plan: WavePlan, nodes: Sequence[NodeProgress], now: datetime) -> list[Action]:
    """What to do for one campaign at `now` (see the module docstring)."""
    if plan.state != "running" or not plan.waves:
        return []
    waiting = sorted(n.node_id for n in nodes if n.wave is None)
    last = len(plan.waves) - 1
    if plan.wave_index < 0:
        return _start(0, plan, nodes, waiting, now)
    current = _Wave([n for n in nodes if n.wave == plan.wave_index])
    sampled, abort = _judge(current, plan)
    if abort is not None:
        return [Abort(f"wave {plan.wave_index + 1}: {abort}")]
    if plan.wave_index == last and waiting:
        # Nodes that joined the target while the last wave runs join it now.
        return _join(plan.wave_index, plan, nodes, set(waiting), now)
    done = bool(current.nodes) and len(current.finished) == len(current.nodes)
    aged = (
        plan.wave_max_s is not None
        and plan.wave_started_at is not None
        and now - plan.wave_started_at >= timedelta(seconds=plan.wave_max_s)
        and sampled
    )
    if done or aged or not current.nodes:
        if plan.wave_index < last:
            return _start(plan.wave_index + 1, plan, nodes, waiting, now)
        if all(n.state in FINISHED_STATES for n in nodes):
            return [Complete()]
    return _offers(current.nodes, plan, now)


def _start(
    index: int,
    plan: WavePlan,
    nodes: Sequence[NodeProgress],
    waiting: list[str],
    now: datetime,
) -> list[Action]:
    sizes = wave_targets(plan.waves, len(nodes))
    placed = len(nodes) - len(waiting)
    take = max(0, sizes[index] - placed)
    joining = set(waiting[:take])
    # A shared group is assigned as a whole: every waiting node of a group that has a
    # node joining joins too (the wave grows past its size rather than leak the update
    # to nodes of a later wave at their next check).
    groups = {n.group for n in nodes if n.node_id in joining and n.group is not None}
    joining |= {n.node_id for n in nodes if n.wave is None and n.group in groups}
    return _join(index, plan, nodes, joining, now)


def _join(
    index: int, plan: WavePlan, nodes: Sequence[NodeProgress], joining: set[str], now: datetime
) -> list[Action]:
    members = [
        NodeProgress(n.node_id, index, n.state, n.offered_at, n.window, n.group)
        for n in nodes
        if n.node_id in joining
    ]
    return [StartWave(index, tuple(sorted(joining))), *_offers(members, plan, now)]
