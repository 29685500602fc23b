"""The escalation rule on plain values: no database, no clock, just `decide(alert, plan, now)`.

The panic ladder of ARCHITECTURE.md (zone operator now, supervisor at +30 s,
duty officer at +90 s, command-centre head at +5 min, then repeat) walked
step by step, plus the acknowledgement that is not followed up and the alert
with no policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fleet_server.alerting import PolicyPlan, decide, next_due, replan
from fleet_server.models import EscalationLevel

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=timezone.utc)


@dataclass
class Standing:
    """Where an alert stands, as `decide` reads it."""

    state: str
    escalation_level: int | None
    received_at: datetime = T0


def panic_plan(
    *, repeat_every_s: float | None = 300.0, ack_timeout_s: float | None = None
) -> PolicyPlan:
    rungs = ((0, "zone_operator"), (30, "supervisor"), (90, "duty_officer"), (300, "command_head"))
    return PolicyPlan(
        id=1,
        name="panic",
        levels=tuple(
            EscalationLevel(policy_id=1, level=i, after_s=after, recipient=who)
            for i, (after, who) in enumerate(rungs)
        ),
        repeat_every_s=repeat_every_s,
        ack_timeout_s=ack_timeout_s,
    )


def test_an_unanswered_press_climbs_the_ladder_on_the_policy_times() -> None:
    plan = panic_plan()
    assert next_due(level=0, received_at=T0, plan=plan, now=T0) == T0 + timedelta(seconds=30)

    step = decide(Standing("new", 0), plan, T0 + timedelta(seconds=30), default_ack_timeout_s=120)
    assert (step.level, step.recipient, step.reason) == (1, "supervisor", "timeout")
    assert step.next_due == T0 + timedelta(seconds=90)

    step = decide(Standing("new", 2), plan, T0 + timedelta(seconds=90), default_ack_timeout_s=120)
    assert (step.level, step.recipient, step.reason) == (3, "command_head", "timeout")
    assert step.next_due == T0 + timedelta(seconds=90 + 300)  # then the repeat interval


def test_a_late_tick_never_schedules_the_next_level_in_the_past() -> None:
    late = T0 + timedelta(seconds=200)  # a server that was down through two levels
    step = decide(Standing("new", 0), panic_plan(), late, default_ack_timeout_s=120)
    assert step.level == 1
    assert step.next_due == late  # level 2 (due at +90 s) follows at the next tick


def test_the_top_of_the_ladder_repeats_or_stops() -> None:
    now = T0 + timedelta(seconds=600)
    step = decide(Standing("new", 3), panic_plan(), now, default_ack_timeout_s=120)
    assert (step.level, step.reason, step.next_due) == (3, "repeat", now + timedelta(seconds=300))
    once = decide(Standing("new", 3), panic_plan(repeat_every_s=None), now, default_ack_timeout_s=1)
    assert (once.level, once.reason, once.next_due) == (3, "repeat", None)


def test_an_acknowledgement_not_followed_up_re_escalates_and_waits_the_ack_timeout() -> None:
    now = T0 + timedelta(seconds=150)
    step = decide(Standing("acknowledged", 0), panic_plan(), now, default_ack_timeout_s=120)
    assert (step.level, step.reason) == (1, "ack_not_followed_up")
    assert step.next_due == now + timedelta(seconds=120)
    own = decide(
        Standing("acknowledged", 0), panic_plan(ack_timeout_s=45), now, default_ack_timeout_s=120
    )
    assert own.next_due == now + timedelta(seconds=45)  # the policy's own timeout wins


def test_an_alert_without_a_policy_goes_to_the_catch_all_and_stops() -> None:
    step = decide(Standing("new", None), None, T0, default_ack_timeout_s=120)
    assert (step.level, step.recipient, step.reason, step.next_due) == (
        None,
        None,
        "no_policy",
        None,
    )


@dataclass
class Planned(Standing):
    """Where an alert stands plus when it is next due, as `replan` reads it."""

    next_escalation_at: datetime | None = None


def short_plan(*, repeat_every_s: float | None = 60.0) -> PolicyPlan:
    return PolicyPlan(
        id=2,
        name="panic",
        levels=(EscalationLevel(policy_id=2, level=0, after_s=0, recipient="zone_operator"),),
        repeat_every_s=repeat_every_s,
        ack_timeout_s=None,
    )


def test_a_shorter_ladder_clamps_an_alert_to_its_top_and_makes_it_due_at_once() -> None:
    now = T0 + timedelta(seconds=400)
    step = replan(Planned("new", 3), short_plan(), now, default_ack_timeout_s=120)
    assert (step.level, step.recipient, step.clamped, step.next_due) == (
        0,
        "zone_operator",
        True,
        now,
    )


def test_a_ladder_put_back_keeps_the_level_and_schedules_the_next_one() -> None:
    now = T0 + timedelta(seconds=400)
    step = replan(Planned("new", 0, next_escalation_at=None), panic_plan(), now,
                  default_ack_timeout_s=120)  # fmt: skip
    assert (step.level, step.clamped) == (0, False)
    assert step.next_due == now  # level 1 was due at +30 s: at the next tick
    early = replan(Planned("new", 1), panic_plan(), T0 + timedelta(seconds=40),
                   default_ack_timeout_s=120)  # fmt: skip
    assert early.next_due == T0 + timedelta(seconds=90)


def test_an_open_alert_with_no_level_yet_is_due_for_level_zero() -> None:
    step = replan(Planned("new", None), panic_plan(), T0 + timedelta(seconds=5),
                  default_ack_timeout_s=120)  # fmt: skip
    assert (step.level, step.next_due) == (None, T0 + timedelta(seconds=5))


def test_an_acknowledged_alert_keeps_its_follow_up_deadline_or_the_sooner_new_one() -> None:
    now = T0 + timedelta(seconds=100)
    soon = now + timedelta(seconds=20)
    kept = replan(Planned("acknowledged", 2, next_escalation_at=soon), short_plan(), now,
                  default_ack_timeout_s=120)  # fmt: skip
    assert (kept.level, kept.clamped, kept.next_due) == (0, True, soon)
    stranded = replan(Planned("acknowledged", 0), short_plan(), now, default_ack_timeout_s=120)
    assert stranded.next_due == now + timedelta(seconds=120)


def test_a_repeating_ladder_never_leaves_an_open_alert_without_a_next_step() -> None:
    now = T0 + timedelta(seconds=900)
    for level in (None, 0, 1, 2, 3, 7):
        for state in ("new", "acknowledged"):
            step = replan(Planned(state, level), panic_plan(), now, default_ack_timeout_s=120)
            assert step.next_due is not None, (state, level)
