"""A loopback TCP relay that can cut a node's network and restore it.

Simulated nodes connect to the broker through it; `cut()` drops every open
connection at once and refuses new ones (as a dead LTE link would look to
the node), `restore()` lets connections through again. Used by end-to-end
tests and, later, district network cuts in scenarios. It listens on
127.0.0.1 only and relays only to the target it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fleet_server.broker import free_port

logger = logging.getLogger(__name__)


class NetCut:
    """A TCP relay from 127.0.0.1:`port` to `target_host`:`target_port`."""

    def __init__(self, *, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = port or free_port()
        self.is_cut = False
        self.connections_refused = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start listening on loopback."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.connections_refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.is_cut:
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def cut(self) -> None:
        """Drop every relayed connection now and refuse new ones."""
        self.is_cut = True
        for writer in list(self._writers):
            transport = writer.transport
            if transport is not None:
                transport.abort()
        self._writers.clear()
        logger.info("network cut on relay :%s", self.port)

    def restore(self) -> None:
        """Let connections through again."""
        self.is_cut = False
        logger.info("network restored on relay :%s", self.port)

    async def stop(self) -> None:
        """Close everything."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
