"""Running a real node in a unit test: a `ManualClock` and a `MemoryTransport`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edge_agent.memory import MemoryTransport
from edge_agent.node import Node
from hardware import ManualClock


@asynccontextmanager
async def running(node: Node, clock: ManualClock) -> AsyncIterator[MemoryTransport]:
    """Run `node` for the block; its memory transport is what it published."""
    task = asyncio.ensure_future(node.run())
    await clock.elapse(0)
    transport = node.uplink.transport
    assert isinstance(transport, MemoryTransport)
    try:
        yield transport
    finally:
        node.stop()
        await asyncio.wait_for(task, 10)
