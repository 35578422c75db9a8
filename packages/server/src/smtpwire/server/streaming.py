"""Receiving a message as it arrives, instead of as one ``bytes`` object.

A handler that defines ``handle_DATA_STREAM`` gets each message's body as an
async iterator while the client is still sending it, so a 1 GiB message can go
to disk (or to another server) with memory bounded by a few chunks::

    class ToDisk:
        async def handle_DATA_STREAM(self, server, session, envelope, body):
            path = spool / f"{uuid.uuid4()}.eml"
            try:
                with path.open("wb") as file:
                    async for chunk in body:
                        file.write(chunk)
            except MessageAborted:
                path.unlink(missing_ok=True)  # refused, reset or disconnected
                raise
            return "250 OK"

The hook is called (instead of ``handle_DATA``) once per message, for ``DATA``
and for a whole ``BDAT`` transaction; what it returns is the reply, as for
``handle_DATA`` (nothing: ``250 OK``).  ``envelope.content`` stays None.  The
chunks are the message as ``handle_DATA`` would see it (dot-unstuffed, the
bare-LF policy applied, no terminator).

The server reads no faster than the hook iterates: when ``high_water`` octets
wait unread, the connection stops reading from the client.  If the message will
not be delivered after all (too large, a bare LF under ``bare_lf="reject"``, a
line too long, the transaction reset, the connection lost), the iteration raises
:class:`MessageAborted`; the hook must then discard what it has, and the server
answers the client itself.  A hook that returns before the end (say, to refuse
the message early) gets its reply sent once the client has finished sending;
the rest of the message is read and dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["BodyStream", "MessageAborted"]

DEFAULT_HIGH_WATER = 256 * 1024


class MessageAborted(Exception):
    """The message being streamed will not be delivered; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BodyStream:
    """One message's body, in order: ``async for chunk in body`` or
    ``await body.read()``.  :attr:`received` counts the octets handed out."""

    def __init__(self, high_water: int = DEFAULT_HIGH_WATER) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._high_water = high_water
        self._ended = False
        self._abort: MessageAborted | None = None
        self._consumer_gone = False
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self.received = 0

    # -- the handler's side -------------------------------------------------------------

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._abort is not None:
                raise self._abort
            if self._ended:
                raise StopAsyncIteration
            self._readable = asyncio.get_running_loop().create_future()
            try:
                await self._readable
            finally:
                self._readable = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self.received += len(chunk)
        if self._buffered < self._high_water:
            _wake(self._writable)
        return chunk

    async def read(self) -> bytes:
        """The rest of the message at once (memory: its whole size)."""
        return b"".join([chunk async for chunk in self])

    # -- the server's side --------------------------------------------------------------

    async def put(self, data: bytes) -> None:
        """Add content; waits while the handler is ``high_water`` octets behind."""
        if self._consumer_gone or self._abort is not None or not data:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        _wake(self._readable)
        while self._buffered >= self._high_water and not self._consumer_gone:
            self._writable = asyncio.get_running_loop().create_future()
            try:
                await self._writable
            finally:
                self._writable = None

    def end(self) -> None:
        """The whole message has been put."""
        self._ended = True
        _wake(self._readable)

    def abort(self, reason: str) -> None:
        """The message will not be delivered: the handler's next read raises."""
        if self._ended:
            return
        self._abort = MessageAborted(reason)
        self._chunks.clear()
        self._buffered = 0
        _wake(self._readable)
        _wake(self._writable)

    def consumer_done(self) -> None:
        """The handler returned: whatever else arrives is dropped."""
        self._consumer_gone = True
        self._chunks.clear()
        self._buffered = 0
        _wake(self._writable)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
