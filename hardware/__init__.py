"""One small interface per hardware capability, with real and simulated backends.

Built so far: the board (`hardware.backends`: the panic button of
`hardware.button` and the light and buzzer of `hardware.indicator`; ``sim``
and ``rpi``), the camera (`hardware.camera`: ``picamera2``, ``opencv``,
``sim``), the clock that every wait goes through (`hardware.clock`), and
power: the power monitor (`hardware.power`: ``ina219``, ``sysfs``, ``sim``),
solar geometry (`hardware.solar`), battery chemistries (`hardware.battery`),
the simulated solar site (`hardware.solar_site`) and simulated time
(`hardware.sim_clock`; see docs/power.md). Each capability's backends are an
open registry (`hardware.registry`) filled from entry points. GNSS, watchdog
and tamper switch are not built yet.
"""

from hardware.backends import (
    BOARDS,
    ENV_VAR,
    BoardConfig,
    HardwareBackend,
    HardwareFallback,
    RpiBackend,
    RpiBoardConfig,
    SimBackend,
    SimBoardConfig,
    backend_names,
    load_backend,
    register_backend,
)
from hardware.button import Edge, EdgeCallback, GpioButton, PanicButton, SimButton
from hardware.camera import (
    CAMERAS,
    CameraConfig,
    CameraSource,
    Frame,
    OpenCvCamera,
    Picamera2Camera,
    SimCamera,
    load_camera,
)
from hardware.clock import Clock, ManualClock, SystemClock, Timer
from hardware.errors import BackendUnavailable, HardwareError
from hardware.indicator import GpioIndicator, Indicator, IndicatorChange, Pattern, SimIndicator
from hardware.registry import BackendConfig, BackendRegistry

__all__ = [
    "BOARDS",
    "CAMERAS",
    "ENV_VAR",
    "BackendConfig",
    "BackendRegistry",
    "BackendUnavailable",
    "BoardConfig",
    "CameraConfig",
    "CameraSource",
    "Clock",
    "Edge",
    "EdgeCallback",
    "Frame",
    "GpioButton",
    "GpioIndicator",
    "HardwareBackend",
    "HardwareError",
    "HardwareFallback",
    "Indicator",
    "IndicatorChange",
    "ManualClock",
    "OpenCvCamera",
    "PanicButton",
    "Pattern",
    "Picamera2Camera",
    "RpiBackend",
    "RpiBoardConfig",
    "SimBackend",
    "SimBoardConfig",
    "SimButton",
    "SimCamera",
    "SimIndicator",
    "SystemClock",
    "Timer",
    "backend_names",
    "load_backend",
    "load_camera",
    "register_backend",
]
