"""Errors raised by the hardware layer.

The tree::

    HardwareError                 root: anything the hardware layer refuses
    │                             (also: an unknown backend name, a bad backend option)
    ├── BackendUnavailable        a backend cannot load on this machine
    ├── PowerReadError            a power reading failed (hardware.power)
    └── CameraReadError           a frame could not be read (hardware.camera)

A missing library or GPIO chip is a `BackendUnavailable`, so callers (and the
contract tests) can tell "this machine has no such hardware" from a bug.
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "HardwareError"]


class HardwareError(RuntimeError):
    """Root of every error the hardware layer raises."""


class BackendUnavailable(HardwareError):
    """A backend was asked for but cannot load here (library or device missing)."""
