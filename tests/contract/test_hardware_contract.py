"""Every button and indicator backend keeps the same contract.

Backends that cannot load on this machine (no GPIO chip) are skipped with
the reason. Real-pin backends are driven through gpiozero's MockFactory where
the contract needs to make edges happen.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pytest
from pydantic import Field

from hardware import (
    BOARDS,
    BackendUnavailable,
    BoardConfig,
    Clock,
    Edge,
    GpioButton,
    GpioIndicator,
    HardwareBackend,
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


def _rpi_loads() -> bool:
    try:
        RpiBackend().pin_factory.close()
    except BackendUnavailable:
        return False
    return True


def test_with_no_backend_named_a_board_without_gpio_is_an_error_not_a_silent_sim() -> None:
    if _rpi_loads():
        pytest.skip("this machine has real GPIO")
    with pytest.raises(BackendUnavailable, match="no hardware backend is named") as caught:
        load_backend(None, environ={})
    assert "dev_mode" in str(caught.value)  # the message says how to run simulated on purpose


def test_falling_back_to_sim_only_in_dev_mode_and_it_warns() -> None:
    if _rpi_loads():
        pytest.skip("this machine has real GPIO")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = load_backend(None, environ={}, dev_mode=True)
    assert backend.name == "sim"
    assert any(issubclass(w.category, HardwareFallback) for w in caught)


def test_naming_sim_in_the_environment_is_explicit_and_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = load_backend(None, environ={"NIGEHBAAN_HW": "sim"})
    assert backend.name == "sim"


def test_unknown_backend_name_is_refused() -> None:
    with pytest.raises(HardwareError, match="unknown hardware backend"):
        load_backend("jetson-nano-9000", environ={})


def test_a_board_registered_by_another_package_can_be_named_in_agent_toml(
    tmp_path: Path,
) -> None:
    """The registry is open: a ``jetson`` board registered at run time is a valid `type`."""
    from edge_agent.config import config_from_dict

    class JetsonBackend(SimBackend):
        name = "jetson"

    class JetsonBoardConfig(BoardConfig):
        type: Literal["jetson"] = Field(description="a Jetson carrier board")
        gpio_chip: str = Field(default="tegra234-gpio", description="the GPIO chip")

        def create(self, *, clock: Clock) -> HardwareBackend:
            return JetsonBackend(clock=clock)

    BOARDS.register(JetsonBoardConfig)
    try:
        config = config_from_dict(
            {
                "node_id": "khi-1",
                "serial": "s",
                "data_dir": str(tmp_path),
                "hardware": {"type": "jetson", "gpio_chip": "x"},
            }
        )
        assert isinstance(config.hardware, JetsonBoardConfig)
        assert config.model_dump()["hardware"] == {"type": "jetson", "gpio_chip": "x"}
        assert load_backend(config=config.hardware, environ={}).name == "jetson"
        with pytest.raises(ValueError, match="gpio_chips"):
            config_from_dict(
                {
                    "node_id": "khi-1",
                    "serial": "s",
                    "data_dir": str(tmp_path),
                    "hardware": {"type": "jetson", "gpio_chips": "x"},
                }
            )
    finally:
        BOARDS._models.pop("jetson")


def test_builtin_backends_are_also_entry_points() -> None:
    """pyproject.toml lists every built-in backend, so installed metadata names them all."""
    from importlib.metadata import entry_points

    from hardware.camera import CAMERAS
    from hardware.power import MONITORS

    for registry in (BOARDS, MONITORS, CAMERAS):
        found = {ep.name for ep in entry_points(group=registry.group)}
        if not found:
            pytest.skip("installed metadata predates the entry points (reinstall the package)")
        assert set(registry._builtin) <= found, registry.group


def _public_definitions(module: ModuleType) -> set[str]:
    """Classes and functions the module defines at top level without a leading underscore."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and not node.name.startswith("_")
    }


def _top_level_names(module: ModuleType) -> set[str]:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):  # a deliberate re-export names its source
            names.update(a.asname or a.name for a in node.names)
    return names


HARDWARE_MODULES = sorted(
    f"hardware.{p.stem}"
    for p in Path(__file__).resolve().parents[2].joinpath("hardware").glob("*.py")
    if p.stem != "__init__"
)


@pytest.mark.parametrize("module_name", HARDWARE_MODULES)
def test_each_hardware_module_exports_exactly_what_it_defines(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicates in __all__"
    assert exported <= _top_level_names(module), "exported but not defined or imported here"
    assert _public_definitions(module) <= exported, "public but not exported"


def test_the_hardware_package_exports_exactly_its_public_names() -> None:
    import hardware

    public = {
        name
        for name, value in vars(hardware).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert set(hardware.__all__) == public
    assert len(hardware.__all__) == len(public)
    for name in hardware.__all__:
        value = getattr(hardware, name)
        home = str(getattr(value, "__module__", ""))
        if (inspect.isclass(value) or inspect.isfunction(value)) and home.startswith("hardware."):
            assert name in importlib.import_module(home).__all__, f"{name} not public in {home}"
