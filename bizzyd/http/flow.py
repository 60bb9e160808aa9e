"""Back-pressure for one connection (after uvicorn's flow_control.py).

Reading is paused while the peer does not read what we write (the transport's
write buffer is above its high-water mark) and while responses are pending, so a
client cannot make the server buffer requests or responses without bound.  Code
that writes a long body (a stream, a file) awaits `drain()` after a write when the
transport has asked us to pause writing.
"""

from __future__ import annotations

import asyncio
from typing import Any


class FlowControl:
    """Pause/resume state of one transport, in both directions."""

    __slots__ = ("_transport", "read_paused", "write_paused", "_writable")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        # created on the first drain() that has to wait: most connections never do
        self._writable: asyncio.Event | None = None

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        """The transport's write buffer went above its high-water mark."""
        self.write_paused = True
        if self._writable is not None:
            self._writable.clear()

    def resume_writing(self) -> None:
        """The write buffer drained below the low-water mark."""
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()

    async def drain(self) -> None:
        """Wait until the transport accepts writes again (or the connection is lost)."""
        if not self.write_paused:
            return
        if self._writable is None:
            self._writable = asyncio.Event()
        await self._writable.wait()

    def connection_lost(self) -> None:
        """Wake the writers: their next look at the transport finds it closed."""
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()
