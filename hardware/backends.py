"""The node's board: which family of button/light backends it uses, chosen by name.

A board backend (`HardwareBackend`) makes the panic button and the indicator
and names the board's default power monitor. Boards are registered in
`BOARDS` (entry-point group ``nigehbaan.hardware``) by their config model
(``SimBoardConfig``: ``type = "sim"``; ``RpiBoardConfig``: ``type = "rpi"``);
agent.toml selects one with ``[hardware] type = "..."``.

Like gpiozero's ``GPIOZERO_PIN_FACTORY``, the environment variable
``NIGEHBAAN_HW`` overrides the configured name. A backend that was named and
cannot load raises `BackendUnavailable`: a pillar configured for real pins
never quietly turns into a simulator. When *no* backend is named, the
registry tries the real one (``rpi``); if it cannot load, that is an error
too — a pillar whose GPIO library broke after an OS update must stop with a
clear message, not run a simulated panic button. Only in an explicit
development mode (``dev_mode=True``: ``dev_mode = true`` in agent.toml) does
it fall back to ``sim``, and then it warns (`HardwareFallback` warning and a
log line). Naming ``sim`` (config or ``NIGEHBAAN_HW=sim``) is itself explicit.

Real backends import their libraries lazily, so this package installs and
imports on any machine.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from hardware.button import GpioButton, PanicButton, SimButton
from hardware.clock import Clock, SystemClock
from hardware.errors import BackendUnavailable, HardwareError
from hardware.indicator import GpioIndicator, Indicator, SimIndicator
from hardware.registry import BackendConfig, BackendRegistry, factory_model

if TYPE_CHECKING:
    from hardware.power import PowerMonitor

__all__ = [
    "BOARDS",
    "ENV_VAR",
    "BoardConfig",
    "HardwareBackend",
    "HardwareFallback",
    "RpiBackend",
    "RpiBoardConfig",
    "SimBackend",
    "SimBoardConfig",
    "backend_names",
    "load_backend",
    "register_backend",
]

logger = logging.getLogger(__name__)

ENV_VAR = "NIGEHBAAN_HW"
_DEFAULT_ORDER = ("rpi",)


class HardwareFallback(UserWarning):
    """No backend was named, the real one could not load, and dev mode chose ``sim``."""


class HardwareBackend(ABC):
    """Makes the devices of one node from one family of backends."""

    name: str

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()

    @abstractmethod
    def button(self, *, pin: int | str, name: str = "main") -> PanicButton:
        """The panic button wired to `pin`."""

    @abstractmethod
    def indicator(self, *, led_pin: int | str, buzzer_pin: int | str | None = None) -> Indicator:
        """The pillar's light (and buzzer)."""

    default_power_monitor = "sim"

    def power_monitor(
        self, *, kind: str | None = None, options: Mapping[str, Any] | None = None
    ) -> PowerMonitor:
        """The site's power monitor (`hardware.power`): `kind` or this backend's default."""
        from hardware.power import load_power_monitor

        return load_power_monitor(
            kind or self.default_power_monitor, clock=self.clock, options=options
        )


class BoardConfig(BackendConfig[HardwareBackend]):
    """Base of the ``[hardware]`` section's models (one per registered board)."""


class SimBackend(HardwareBackend):
    """Mock pins and recorded outputs; one `MockFactory` per backend (per node)."""

    name = "sim"

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        from gpiozero.pins.mock import MockFactory

        self.pin_factory: Any = MockFactory()

    def button(self, *, pin: int | str, name: str = "main") -> SimButton:
        return SimButton(pin=pin, pin_factory=self.pin_factory, clock=self.clock, name=name)

    def indicator(self, *, led_pin: int | str, buzzer_pin: int | str | None = None) -> SimIndicator:
        return SimIndicator(clock=self.clock)


class SimBoardConfig(BoardConfig):
    """``[hardware] type = "sim"``: gpiozero mock pins; tests and simulators drive them."""

    type: Literal["sim"] = Field(description="simulated board (mock pins, recorded light)")

    def create(self, *, clock: Clock) -> HardwareBackend:
        return SimBackend(clock=clock)


PinFactoryName = Literal["auto", "lgpio", "rpigpio", "native"]


class RpiBackend(HardwareBackend):
    """Real GPIO on a Raspberry Pi through gpiozero's hardware pin factories."""

    name = "rpi"
    default_power_monitor = "ina219"
    _FACTORIES: ClassVar[dict[str, tuple[str, str]]] = {
        "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
        "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
        "native": ("gpiozero.pins.native", "NativeFactory"),
    }

    def __init__(self, *, clock: Clock | None = None, pin_factory: PinFactoryName = "auto") -> None:
        super().__init__(clock=clock)
        names = list(self._FACTORIES) if pin_factory == "auto" else [pin_factory]
        reasons: list[str] = []
        for factory_name in names:
            module_name, class_name = self._FACTORIES[factory_name]
            try:
                module = importlib.import_module(module_name)
                self.pin_factory: Any = getattr(module, class_name)()
            except Exception as exc:  # each factory fails differently off-Pi
                reasons.append(f"{class_name}: {exc}")
                continue
            logger.info("rpi backend using %s", class_name)
            return
        raise BackendUnavailable("no GPIO pin factory can load: " + "; ".join(reasons))

    def button(self, *, pin: int | str, name: str = "main") -> GpioButton:
        return GpioButton(pin=pin, pin_factory=self.pin_factory, clock=self.clock, name=name)

    def indicator(
        self, *, led_pin: int | str, buzzer_pin: int | str | None = None
    ) -> GpioIndicator:
        return GpioIndicator(led_pin=led_pin, buzzer_pin=buzzer_pin, pin_factory=self.pin_factory)


class RpiBoardConfig(BoardConfig):
    """``[hardware] type = "rpi"``: a Raspberry Pi's GPIO through gpiozero."""

    type: Literal["rpi"] = Field(description="Raspberry Pi GPIO (gpiozero pin factories)")
    pin_factory: PinFactoryName = Field(
        default="auto",
        description="gpiozero pin factory; auto tries lgpio, then RPi.GPIO, then native",
    )

    def create(self, *, clock: Clock) -> HardwareBackend:
        return RpiBackend(clock=clock, pin_factory=self.pin_factory)


BOARDS: BackendRegistry[HardwareBackend] = BackendRegistry(
    capability="hardware",
    group="nigehbaan.hardware",
    builtin={"sim": "hardware.backends:SimBoardConfig", "rpi": "hardware.backends:RpiBoardConfig"},
)

BackendFactory = Callable[..., HardwareBackend]


def register_backend(name: str, factory: BackendFactory) -> None:
    """Add a board with no options (e.g. in a test); `factory(clock=...)` builds it.

    A board with options registers its `BoardConfig` model through the
    ``nigehbaan.hardware`` entry-point group (or `BOARDS.register`).
    """
    BOARDS.register(factory_model(BoardConfig, name, factory))


def backend_names() -> list[str]:
    """Names `load_backend` accepts."""
    return BOARDS.names()


def load_backend(
    name: str | None = None,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    config: BackendConfig[HardwareBackend] | Mapping[str, Any] | None = None,
    dev_mode: bool = False,
) -> HardwareBackend:
    """The backend named by ``NIGEHBAAN_HW``, else `config`/`name`, else the real one.

    Raises `HardwareError` for an unknown name and `BackendUnavailable` when
    the backend cannot load — also when none was named and the real backend
    cannot load, unless `dev_mode` allows the simulated one (with a warning).
    """
    env = os.environ if environ is None else environ
    clock = clock or SystemClock()
    override = env.get(ENV_VAR, "").strip()
    chosen: BackendConfig[HardwareBackend] | None = None
    if config is not None:
        chosen = BOARDS.validate(config)
    elif name:
        chosen = BOARDS.default(name)
    if override:
        if chosen is not None and chosen.type != override:
            logger.info(
                "%s=%s overrides configured hardware backend %r", ENV_VAR, override, chosen.type
            )
        if chosen is None or chosen.type != override:
            chosen = BOARDS.default(override)
    if chosen is not None:
        return chosen.create(clock=clock)
    reasons: list[str] = []
    for candidate in _DEFAULT_ORDER:
        try:
            return BOARDS.default(candidate).create(clock=clock)
        except HardwareError as exc:
            reasons.append(f"{candidate!r}: {exc}")
    if not dev_mode:
        raise BackendUnavailable(
            "no hardware backend is named and none can load ("
            + "; ".join(reasons)
            + f"); name one in agent.toml ([hardware] type = one of {backend_names()}), "
            f"or set dev_mode = true or {ENV_VAR}=sim to run on simulated hardware"
        )
    message = f"hardware backend unavailable ({'; '.join(reasons)}); dev mode: using 'sim'"
    warnings.warn(message, HardwareFallback, stacklevel=2)
    logger.warning("%s", message)
    return SimBackend(clock=clock)
