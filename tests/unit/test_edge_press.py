"""The press interpreter: what a citizen's press (or a bouncing contact) means."""

from __future__ import annotations

from edge_agent.press import Panic, PressInterpreter, PressTooShort, StuckCleared, StuckRaised


def _interp(**kw: int | float) -> PressInterpreter:
    opts: dict[str, float] = {"debounce_ms": 30, "hold_to_confirm_ms": 0, "stuck_after_s": 30.0}
    opts.update(kw)
    return PressInterpreter(
        debounce_ms=int(opts["debounce_ms"]),
        hold_to_confirm_ms=int(opts["hold_to_confirm_ms"]),
        stuck_after_s=float(opts["stuck_after_s"]),
        start=0.0,
    )


def test_a_clean_press_counts_once_debounced_and_is_dated_at_its_edge() -> None:
    p = _interp()
    assert p.edge(pressed=True, at=1.0) == []
    assert p.next_deadline() == 1.03
    assert p.poll(1.02) == []
    assert p.poll(1.03) == [Panic(at=1.0, held_ms=0)]
    assert p.edge(pressed=False, at=1.2) == []
    assert p.poll(1.3) == []
    assert p.next_deadline() is None


def test_contact_bounce_gives_exactly_one_panic() -> None:
    p = _interp()
    out = []
    for i, level in enumerate([True, False, True, False, True]):
        out += p.edge(pressed=level, at=1.0 + i * 0.002)
    out += p.poll(1.5)
    out += p.edge(pressed=False, at=2.0)
    for i, level in enumerate([True, False]):  # release bounce
        out += p.edge(pressed=level, at=2.001 + i * 0.001)
    out += p.poll(3.0)
    assert [d for d in out if isinstance(d, Panic)] == [Panic(at=1.008, held_ms=0)]
    assert not p.pressed


def test_a_glitch_shorter_than_debounce_is_not_a_press() -> None:
    p = _interp()
    out = p.edge(pressed=True, at=1.0) + p.edge(pressed=False, at=1.005) + p.poll(2.0)
    assert out == []
    assert p.glitches == 1


def test_zero_debounce_counts_on_the_edge() -> None:
    p = _interp(debounce_ms=0)
    assert p.edge(pressed=True, at=5.0) == [Panic(at=5.0, held_ms=0)]


def test_hold_to_confirm_needs_the_full_hold() -> None:
    p = _interp(hold_to_confirm_ms=1000)
    assert p.edge(pressed=True, at=0.0) == []
    assert p.poll(0.5) == []
    assert p.next_deadline() == 1.0
    assert p.poll(1.0) == [Panic(at=1.0, held_ms=1000)]
    assert p.edge(pressed=False, at=1.5) == []
    assert p.poll(2.0) == []


def test_a_short_press_under_hold_to_confirm_is_reported_not_sent() -> None:
    p = _interp(hold_to_confirm_ms=1000)
    out = p.edge(pressed=True, at=0.0) + p.poll(0.2) + p.edge(pressed=False, at=0.4) + p.poll(1.0)
    assert out == [PressTooShort(at=0.4, held_ms=400)]


def test_a_late_poll_still_confirms_a_press_that_was_held_long_enough() -> None:
    p = _interp(hold_to_confirm_ms=500, debounce_ms=0)
    p.edge(pressed=True, at=0.0)
    # Nobody polled at 0.5; the release edge at 0.8 must still yield the panic.
    assert p.edge(pressed=False, at=0.8) == [Panic(at=0.5, held_ms=500)]


def test_a_stuck_button_raises_one_tamper_not_a_flood() -> None:
    p = _interp(stuck_after_s=30.0)
    out = p.edge(pressed=True, at=0.0) + p.poll(0.1)
    assert out == [Panic(at=0.0, held_ms=0)]
    raised: list[object] = []
    t = 0.1
    while t < 120.0:  # the agent's timer keeps polling; nothing may repeat
        raised += p.poll(t)
        t += 0.25
    assert raised == [StuckRaised(at=30.0, held_s=raised[0].held_s)]  # type: ignore[attr-defined]
    assert p.stuck
    assert p.next_deadline() is None  # nothing more to wait for while stuck
    cleared = p.edge(pressed=False, at=120.0) + p.poll(121.0)
    assert len(cleared) == 1
    assert isinstance(cleared[0], StuckCleared)
    assert not p.stuck


def test_presses_work_again_after_a_stuck_button_is_released() -> None:
    p = _interp(stuck_after_s=2.0, debounce_ms=0)
    p.edge(pressed=True, at=0.0)
    p.poll(3.0)
    p.edge(pressed=False, at=4.0)
    assert p.edge(pressed=True, at=5.0) == [Panic(at=5.0, held_ms=0)]


def test_rules_change_at_run_time() -> None:
    p = _interp()
    p.configure(debounce_ms=0, hold_to_confirm_ms=200, stuck_after_s=10.0)
    assert p.edge(pressed=True, at=0.0) == []
    assert p.poll(0.2) == [Panic(at=0.2, held_ms=200)]
