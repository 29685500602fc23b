"""The one way tests wait: poll a check until it gives something truthy, bounded in time.

Tests never sleep for a fixed time and then assert: they poll, and a check
that never comes true fails naming what was awaited. `wait_for` is for plain
threads, `until` for coroutines (with ``blocking=True`` the check runs in a
worker thread, for checks that do HTTP or database work).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until", "wait_for"]

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T], what: str = "", *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """The first truthy value of `probe`; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


async def until(
    check: Callable[[], T],
    what: str = "",
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    blocking: bool = False,
) -> T:
    """`wait_for` for coroutines: the event loop keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check) if blocking else check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)
