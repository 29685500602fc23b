"""Choosing a hardware backend by name: ``sim`` or ``rpi``.

Like gpiozero's ``GPIOZERO_PIN_FACTORY``, the name comes from configuration
and the environment variable ``NIGEHBAAN_HW`` overrides it. A name that was
asked for and cannot load raises `BackendUnavailable`: a pillar configured for
real pins must never quietly turn into a simulator. Only when *no* name was
given does the registry try the real backend first and fall back to ``sim``,
and that fallback warns (``HardwareFallback`` warning and a log line).

Real backends import their libraries lazily, so this package installs and
imports on any machine.
"""

from __future__ import annotations

import logging
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hardware.button import GpioButton, PanicButton, SimButton
from hardware.clock import Clock, SystemClock
from hardware.errors import BackendUnavailable, HardwareError
from hardware.indicator import GpioIndicator, Indicator, SimIndicator

if TYPE_CHECKING:
    from hardware.power import PowerMonitor

__all__ = [
    "ENV_VAR",
    "HardwareBackend",
    "HardwareFallback",
    "RpiBackend",
    "SimBackend",
    "backend_names",
    "load_backend",
    "register_backend",
]

logger = logging.getLogger(__name__)

ENV_VAR = "NIGEHBAAN_HW"


class HardwareFallback(UserWarning):
    """The default backend could not load and the simulated one is used instead."""


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


class RpiBackend(HardwareBackend):
    """Real GPIO on a Raspberry Pi through gpiozero's hardware pin factories."""

    name = "rpi"
    default_power_monitor = "ina219"
    _FACTORIES = (
        ("gpiozero.pins.lgpio", "LGPIOFactory"),
        ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
        ("gpiozero.pins.native", "NativeFactory"),
    )

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        import importlib

        reasons: list[str] = []
        for module_name, class_name in self._FACTORIES:
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


BackendFactory = Callable[..., HardwareBackend]
_REGISTRY: dict[str, BackendFactory] = {"sim": SimBackend, "rpi": RpiBackend}
_DEFAULT_ORDER = ("rpi",)


def register_backend(name: str, factory: BackendFactory) -> None:
    """Add a backend family (e.g. ``jetson``); `factory(clock=...)` builds it."""
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    """Names `load_backend` accepts."""
    return sorted(_REGISTRY)


def load_backend(
    name: str | None = None,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
) -> HardwareBackend:
    """The backend named by ``NIGEHBAAN_HW``, else `name`, else the first that loads.

    Raises `HardwareError` for an unknown name and `BackendUnavailable` when a
    named backend cannot load.
    """
    env = os.environ if environ is None else environ
    override = env.get(ENV_VAR, "").strip()
    if override and name and override != name:
        logger.info("%s=%s overrides configured hardware backend %r", ENV_VAR, override, name)
    chosen = override or name
    if chosen:
        try:
            factory = _REGISTRY[chosen]
        except KeyError:
            raise HardwareError(
                f"unknown hardware backend {chosen!r}; choose one of {backend_names()}"
            ) from None
        return factory(clock=clock)
    for candidate in _DEFAULT_ORDER:
        try:
            return _REGISTRY[candidate](clock=clock)
        except BackendUnavailable as exc:
            message = f"hardware backend {candidate!r} unavailable ({exc}); using 'sim'"
            warnings.warn(message, HardwareFallback, stacklevel=2)
            logger.warning("%s", message)
    return SimBackend(clock=clock)
