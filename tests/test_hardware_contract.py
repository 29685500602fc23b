"""Every button and indicator backend keeps the same contract.

Backends that cannot load on this machine (no GPIO chip) are skipped with
the reason. Real-pin backends are driven through gpiozero's MockFactory where
the contract needs to make edges happen.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hardware import (
    BackendUnavailable,
    Edge,
    GpioButton,
    GpioIndicator,
    HardwareError,
    HardwareFallback,
    Indicator,
    ManualClock,
    PanicButton,
    Pattern,
    RpiBackend,
    SimBackend,
    SimButton,
    SimIndicator,
    load_backend,
)

BackendMaker = Callable[[], Any]


def _rpi() -> RpiBackend:
    try:
        return RpiBackend()
    except BackendUnavailable as exc:
        pytest.skip(f"rpi backend cannot load here: {exc}")


class _RealClassesOnMockPins:
    """The rpi backend's classes (GpioButton, GpioIndicator) on mock pins."""

    name = "gpio-on-mock"

    def __init__(self) -> None:
        from gpiozero.pins.mock import MockFactory

        self.pin_factory = MockFactory()

    def button(self, *, pin: int) -> GpioButton:
        return GpioButton(pin=pin, pin_factory=self.pin_factory)

    def indicator(self, *, led_pin: int, buzzer_pin: int | None = None) -> GpioIndicator:
        return GpioIndicator(led_pin=led_pin, buzzer_pin=buzzer_pin, pin_factory=self.pin_factory)


BACKENDS: dict[str, BackendMaker] = {
    "sim": SimBackend,
    "rpi": _rpi,
    "gpio-on-mock": _RealClassesOnMockPins,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Any:
    return BACKENDS[request.param]()


@pytest.fixture
def button(backend: Any) -> Iterator[PanicButton]:
    made = backend.button(pin=17)
    yield made
    made.close()


def _drive(button: PanicButton, pressed: bool) -> None:
    """Make an edge happen: mock pins are driven, real ones cannot be."""
    if isinstance(button, SimButton):
        (button.press if pressed else button.release)()
    elif isinstance(button, GpioButton) and "mock" in type(button.device.pin).__module__:
        (button.device.pin.drive_low if pressed else button.device.pin.drive_high)()
    else:
        pytest.skip("cannot drive a real pin from a test")


def test_button_reports_press_and_release_edges_with_times(button: PanicButton) -> None:
    edges: list[Edge] = []
    button.set_callback(edges.append)
    levels = [button.is_pressed]
    _drive(button, True)
    levels.append(button.is_pressed)
    _drive(button, False)
    levels.append(button.is_pressed)
    assert levels == [False, True, False]
    assert [e.pressed for e in edges] == [True, False]
    assert edges[0].t <= edges[1].t


def test_button_stops_reporting_after_callback_removed(button: PanicButton) -> None:
    edges: list[Edge] = []
    button.set_callback(edges.append)
    button.set_callback(None)
    _drive(button, True)
    assert edges == []


def test_a_failing_edge_handler_does_not_break_the_button(button: PanicButton) -> None:
    def broken(edge: Edge) -> None:
        raise RuntimeError("handler bug")

    button.set_callback(broken)
    _drive(button, True)
    _drive(button, False)
    assert not button.is_pressed


@pytest.fixture
def indicator(backend: Any) -> Iterator[Indicator]:
    made = backend.indicator(led_pin=27, buzzer_pin=22)
    yield made
    made.close()


def test_indicator_starts_idle_and_shows_each_pattern(indicator: Indicator) -> None:
    assert indicator.pattern is Pattern.IDLE
    for pattern in Pattern:
        indicator.show(pattern)
        assert indicator.pattern is pattern


def test_sim_button_is_a_real_gpiozero_device_on_its_own_mock_factory() -> None:
    a, b = SimBackend().button(pin=17), SimBackend().button(pin=17)  # same pin, two nodes
    try:
        assert isinstance(a, GpioButton)
        assert type(a.pin).__module__ == "gpiozero.pins.mock"
        a.press()
        assert a.is_pressed
        assert not b.is_pressed
        assert a.pin.state == 0  # pull-up wiring: pressed pulls the pin low
    finally:
        a.close()
        b.close()


def test_sim_button_hold_on_a_manual_clock_costs_no_real_time() -> None:
    clock = ManualClock(start=50.0)
    button = SimBackend(clock=clock).button(pin=17)
    asyncio.run(button.hold(30.0))
    assert [(e.pressed, e.t) for e in button.edges] == [(True, 50.0), (False, 80.0)]
    button.close()


def test_sim_indicator_records_changes_with_times_and_skips_repeats() -> None:
    clock = ManualClock(start=0.0)
    indicator = SimIndicator(clock=clock)
    clock.advance(1.0)
    indicator.show(Pattern.SENT)
    indicator.show(Pattern.SENT)
    clock.advance(0.5)
    indicator.show(Pattern.DELIVERED)
    assert [(c.t, c.pattern) for c in indicator.history] == [
        (0.0, Pattern.IDLE),
        (1.0, Pattern.SENT),
        (1.5, Pattern.DELIVERED),
    ]


def test_gpio_indicator_lights_the_led_on_mock_pins() -> None:
    from gpiozero.pins.mock import MockFactory

    indicator = GpioIndicator(led_pin=27, pin_factory=MockFactory())
    try:
        assert not indicator.led.is_lit
        indicator.show(Pattern.DELIVERED)
        assert indicator.led.is_lit
        indicator.show(Pattern.IDLE)
        assert not indicator.led.is_lit
    finally:
        indicator.close()


def test_env_overrides_the_configured_backend() -> None:
    backend = load_backend("rpi", environ={"NIGEHBAAN_HW": "sim"})
    assert backend.name == "sim"


def test_a_named_backend_that_cannot_load_is_an_error_not_a_silent_sim() -> None:
    try:
        RpiBackend()
    except BackendUnavailable:
        with pytest.raises(BackendUnavailable):
            load_backend("rpi", environ={})
    else:
        pytest.skip("this machine has real GPIO")


def test_falling_back_to_sim_warns() -> None:
    try:
        RpiBackend()
    except BackendUnavailable:
        pass
    else:
        pytest.skip("this machine has real GPIO")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = load_backend(None, environ={})
    assert backend.name == "sim"
    assert any(issubclass(w.category, HardwareFallback) for w in caught)


def test_unknown_backend_name_is_refused() -> None:
    with pytest.raises(HardwareError, match="unknown hardware backend"):
        load_backend("jetson-nano-9000", environ={})


def test_public_api_is_exported() -> None:
    import hardware

    for name in hardware.__all__:
        assert hasattr(hardware, name), name
