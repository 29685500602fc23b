"""One small interface per hardware capability, with real and simulated backends.

Built so far: the panic button (`hardware.button`), the indicator light and
buzzer (`hardware.indicator`), the clock (`hardware.clock`) and the backend
registry (`hardware.backends`: ``sim`` and ``rpi``), and power: the power
monitor (`hardware.power`: ``ina219``, ``sysfs``, ``sim``), solar geometry
(`hardware.solar`), battery chemistries (`hardware.battery`), the simulated
solar site (`hardware.solar_site`) and simulated time (`hardware.sim_clock`;
see docs/power.md). Camera, GNSS, watchdog and tamper switch are not built yet.
"""

from hardware.backends import (
    ENV_VAR,
    HardwareBackend,
    HardwareFallback,
    RpiBackend,
    SimBackend,
    backend_names,
    load_backend,
    register_backend,
)
from hardware.button import Edge, EdgeCallback, GpioButton, PanicButton, SimButton
from hardware.clock import Clock, ManualClock, SystemClock
from hardware.errors import BackendUnavailable, HardwareError
from hardware.indicator import GpioIndicator, Indicator, IndicatorChange, Pattern, SimIndicator

__all__ = [
    "ENV_VAR",
    "BackendUnavailable",
    "Clock",
    "Edge",
    "EdgeCallback",
    "GpioButton",
    "GpioIndicator",
    "HardwareBackend",
    "HardwareError",
    "HardwareFallback",
    "Indicator",
    "IndicatorChange",
    "ManualClock",
    "PanicButton",
    "Pattern",
    "RpiBackend",
    "SimBackend",
    "SimButton",
    "SimIndicator",
    "SystemClock",
    "backend_names",
    "load_backend",
    "register_backend",
]
