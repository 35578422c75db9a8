"""The client's byte mover: writes commands, hands complete replies to whoever
waits for them, in order.

Replies are parsed incrementally by smtpwire.common's :class:`ReplyParser` with
its caps (8 KiB per line, 32 KiB per reply).  The protocol counts how many
replies the client expects; a reply nobody asked for (a server talking out of
turn, or a man in the middle pre-staging text) is dropped instead of being
paired with the next command.  Several replies can be awaited at once, which is
what pipelining needs.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Final

from smtpwire.common.buffers import receive_buffer
from smtpwire.common.errors import ReplyError, ReplyTooLongError
from smtpwire.common.limits import REPLY_CAP, REPLY_LINE_CAP
from smtpwire.common.replies import ReplyParser, SMTPReply

from .errors import SMTPResponseException, SMTPServerDisconnected

__all__ = ["MAX_LINE_LENGTH", "MAX_RESPONSE_LENGTH", "SMTPProtocol"]

MAX_LINE_LENGTH: Final = REPLY_LINE_CAP
MAX_RESPONSE_LENGTH: Final = REPLY_CAP


class SMTPProtocol(asyncio.BufferedProtocol, asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._receive_view = receive_buffer(loop)
        self.transport: asyncio.Transport | None = None
        self._parser = ReplyParser(
            max_line_length=MAX_LINE_LENGTH, max_reply_length=MAX_RESPONSE_LENGTH
        )
        self._replies: collections.deque[SMTPReply] = collections.deque()
        self._expected = 1  # the greeting
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 1  # replies the waiting reader needs before it is woken
        self._error: Exception | None = None
        self._closing_reply = False  # the connection ended with the server's 421
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self.quit_sent = False
        self.closed = False
        self._lost = False
        # Told when the connection is gone, after every waiter has been failed: the
        # client closes then, as aiosmtplib's does (freeing its connect lock).
        self.on_lost: Callable[[SMTPProtocol], None] | None = None
        self._lost_waiter: asyncio.Future[None] | None = None
        self._timed_out = False
        # One timer serves many reads: a read moves the deadline; the timer, when it
        # fires, times out a read still pending or re-arms at the later deadline.
        self._deadline: float | None = None
        # A Handle, not always a TimerHandle: uvloop's call_at runs a deadline less
        # than a millisecond away with call_soon, whose handle has no when().  So
        # the time the timer was set for is kept beside it.
        self._timer: asyncio.Handle | None = None
        self._timer_when = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # asyncio reads into one buffer per loop (no fresh 256 KiB per read).
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._receive_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._receive_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        try:
            replies = self._parser.feed(data)
        except ReplyTooLongError:
            self._fail(SMTPResponseException(-1, "Response too long"))
            return
        except ReplyError as error:
            self._fail(SMTPResponseException(-1, f"Malformed SMTP response line: {error}"))
            return
        for reply in replies:
            if self._expected > 0:
                self._expected -= 1
                self._replies.append(reply)
            elif reply.code == 421:
                # The server announces it is closing (RFC 5321 section 3.8): stop
                # using the connection now, not at the next command.
                self.closed = True
                self._closing_reply = self._error is None
                self._fail(SMTPServerDisconnected(f"Server closing: {reply.code} {reply.message}"))
                if self.transport is not None:
                    self.transport.close()
            # else: unsolicited; pairing it with the next command would shift every reply.
        if len(self._replies) >= self._wanted:
            # Only once all the replies the reader waits for are in: a server that
            # writes a pipelined batch's replies one by one wakes the reader once.
            self._wake()

    def eof_received(self) -> bool:
        # aiosmtplib's words for a server that closed its side (callers match them).
        self._fail(self._disconnected(message="Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost = True
        self.transport = None
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        self._disarm()
        self._fail(self._disconnected(exc))
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._disconnected(exc))
            waiter.exception()  # retrieved: nobody may be awaiting it any more
        if self.on_lost is not None:
            self.on_lost(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- for the client ------------------------------------------------------------------

    async def wait_lost(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the connection to be gone (a TLS
        close waits for the server's close_notify); whether it is."""
        if not self._lost:
            if self._lost_waiter is None:
                self._lost_waiter = self._loop.create_future()
            await asyncio.wait([self._lost_waiter], timeout=timeout)
        return self._lost

    @property
    def lost(self) -> bool:
        """Whether the connection is gone (``connection_lost`` has run)."""
        return self._lost

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self.closed

    def not_connected(self) -> SMTPServerDisconnected:
        """Why no command can be sent: the server's 421 when it said one."""
        if isinstance(self._error, SMTPServerDisconnected) and self._closing_reply:
            return SMTPServerDisconnected(str(self._error))
        return SMTPServerDisconnected("Server not connected")

    def write(self, data: bytes) -> None:
        if not self.is_connected:
            raise self.not_connected()
        assert self.transport is not None  # noqa: S101 - checked just above
        self.transport.write(data)

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    async def drain(self) -> None:
        """Wait while the transport's write buffer is full (streaming a large message)."""
        if self._writing_paused and self.is_connected:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            await waiter

    def expect(self, count: int) -> None:
        """Announce ``count`` more replies (call before writing their commands)."""
        self._expected += count

    async def read_replies(self, count: int, timeout: float | None = None) -> list[SMTPReply]:
        """The next ``count`` replies, in order; raises when the connection fails,
        and :class:`asyncio.TimeoutError` when they take longer than ``timeout``
        (a timer on the loop, shared by successive reads: no task per read, unlike
        ``asyncio.wait_for``, and no new timer per reply)."""
        replies: list[SMTPReply] = []
        armed = False
        self._timed_out = False
        try:
            while len(replies) < count:
                while self._replies and len(replies) < count:
                    replies.append(self._replies.popleft())
                if len(replies) == count:
                    break
                if self._error is not None:
                    raise self._error
                if not armed and timeout is not None:
                    self._arm(timeout)
                    armed = True
                waiter = self._loop.create_future()
                self._waiter = waiter
                self._wanted = count - len(replies)
                try:
                    await waiter
                finally:
                    self._waiter = None
                    self._wanted = 1
                if self._timed_out:
                    # Checked after every wake-up: the timer may fire in the same
                    # loop iteration as a reply that already woke the reader.
                    raise asyncio.TimeoutError
        finally:
            self._deadline = None
        return replies

    def _arm(self, timeout: float) -> None:
        deadline = self._loop.time() + timeout
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timer_when > deadline:
            if timer is not None:
                timer.cancel()
            self._set_timer(deadline)

    def _set_timer(self, deadline: float) -> None:
        self._timer = self._loop.call_at(deadline, self._deadline_reached)
        self._timer_when = deadline

    def _deadline_reached(self) -> None:
        fired, self._timer = self._timer, None
        deadline = self._deadline
        if deadline is None or fired is None:
            return  # no read pending: the timer lapses
        if deadline <= self._timer_when:
            self._time_out()
        else:
            self._set_timer(deadline)

    def _time_out(self) -> None:
        self._timed_out = True
        self._wake()

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    async def read_reply(self) -> SMTPReply:
        return (await self.read_replies(1))[0]

    def discard_buffered(self) -> None:
        """Forget replies and partial input: after STARTTLS's 220, anything already
        received is plaintext a man in the middle could have injected."""
        self._replies.clear()
        self._parser.reset()
        self._expected = 0

    # -- internals ------------------------------------------------------------------------

    def _disconnected(
        self, exc: Exception | None = None, *, message: str = "Connection lost"
    ) -> Exception:
        if self.quit_sent:
            return _QuitAcknowledged("Connection closed after QUIT")
        return SMTPServerDisconnected(message if exc is None else f"{message}: {exc}")

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _QuitAcknowledged(SMTPServerDisconnected):
    """The server closed after QUIT without a reply; that is as good as 221."""
