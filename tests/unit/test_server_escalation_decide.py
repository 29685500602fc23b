"""The escalation rule on plain values: no database, no clock, just `decide(alert, plan, now)`.

The panic ladder of ARCHITECTURE.md (zone operator now, supervisor at +30 s,
duty officer at +90 s, command-centre head at +5 min, then repeat) walked
step by step, plus the acknowledgement that is not followed up and the alert
with no policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fleet_server.alerting import PolicyPlan, decide, next_due
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
