"""The byte-moving half of the server protocol: input buffering, batched replies,
flow control in both directions, the idle timer and an orderly close.

:class:`Connection` knows nothing of SMTP commands.  The subclass implements
:meth:`Connection._serve`, a coroutine run as one task per connection, which
reads with :meth:`_next_line` / :meth:`_read_message` and answers with
:meth:`push`.  Replies are queued and written together when the session is about
to wait for input, so the replies to pipelined commands leave in one write
(RFC 2920 section 3.2) and a lock-step client still gets each reply at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from smtpwire.common.buffers import receive_buffer
from smtpwire.common.data import DataDecoder
from smtpwire.common.lines import LineTooLong

from ._inbound import ExactBytes, Inbound
from .proxy_protocol import HeaderCollector

__all__ = ["Connection"]

log = logging.getLogger("mail.log")

# Pause reading when this many octets of complete command lines are unprocessed
# (a client pipelining far ahead of the handlers); resume below the low mark.
_INPUT_HIGH_WATER = 256 * 1024
_INPUT_LOW_WATER = 64 * 1024
# Write queued replies out before this much piles up even without a wait.
_OUTBOX_FLUSH_AT = 64 * 1024
# How often the data rate of a message being received is checked (seconds).
_RATE_WINDOW = 10.0


class Connection(asyncio.BufferedProtocol, asyncio.Protocol):
    """One client connection's I/O; subclassed by :class:`~smtpwire.server.smtp.SMTP`."""

    transport: asyncio.Transport | None
    loop: asyncio.AbstractEventLoop
    _handler_coroutine: asyncio.Task[None] | None

    def _init_connection(
        self,
        *,
        max_line_length: int,
        timeout: float,
        session_limit: float | None = None,
        min_data_rate: float | None = None,
    ) -> None:
        self.transport = None
        self._session_limit = session_limit
        self._min_data_rate = min_data_rate
        self._message_octets = 0  # received while reading the current message
        self._guards: list[asyncio.TimerHandle] = []
        self._handler_coroutine = None
        self._inbound = Inbound(max_line_length)
        self._outbox: list[bytes] = []
        self._outbox_size = 0
        self._input_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._timeout_duration = timeout
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._waiting_for_input = False
        self._closing = False
        self._over_tls = False
        self._received_any = False  # for the early-talker check

    # -- what the subclass provides -------------------------------------------

    async def _serve(self) -> None:
        raise NotImplementedError

    def _encode_reply(self, status: str) -> bytes:
        raise NotImplementedError

    def _describe_peer(self) -> Any:
        raise NotImplementedError

    async def _on_idle_timeout(self) -> None:
        """Called (beside the session task) when the client has been idle too long."""
        self._close_transport()

    def _abort_if_not_reading(self) -> bool:
        """Drop a client that stopped reading its replies: a polite close would
        wait for ever on a buffer that never drains."""
        if not self._writing_paused or self.transport is None:
            return False
        self._closing = True
        self._inbound.closed = True
        self.transport.abort()
        return True

    # -- asyncio.Protocol -------------------------------------------------------

    def _start_connection(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        # The loop that reads: the one ``self.loop`` names could be another.
        self._receive_view = receive_buffer(asyncio.get_running_loop())
        self._over_tls = transport.get_extra_info("sslcontext") is not None
        self._idle_since = self.loop.time()
        if self._timeout_duration:
            self._timeout_handle = self.loop.call_later(self._timeout_duration, self._check_idle)
        if self._session_limit:
            self._guards.append(self.loop.call_later(self._session_limit, self._session_expired))
        self._handler_coroutine = self.loop.create_task(self._run())

    # asyncio reads into one buffer per loop (no fresh 256 KiB per read); what
    # arrived is copied out and handled as by a plain Protocol.
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._receive_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._receive_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        inbound = self._inbound
        was_reading = inbound.reading_message
        if was_reading:
            self._message_octets += len(data)
        inbound.feed(data)
        if b"\n" in data or was_reading:
            # Any octet of a message is progress (a binary BDAT chunk may hold no
            # LF); a message sent too slowly is min_data_rate's business.
            self._idle_since = self.loop.time()
        if inbound.reading_message:
            # The decoder consumes it all; the task is woken at the end, or when
            # enough content is pending, and reading pauses if it falls behind.
            if inbound.worth_taking:
                if inbound.pending >= 2 * inbound.wake_at:
                    self._pause_reading()
                self._wake_reader()
            return
        if was_reading:
            # The message ended in this data: its last octets need not hold an LF
            # (a BDAT chunk, a PROXY v2 header).
            self._wake_reader()
        if inbound.buffered > _INPUT_HIGH_WATER:
            self._pause_reading()
        if b"\n" in data or inbound.buffered > inbound.max_line_length:
            self._wake_reader()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._inbound.closed = True
        self._wake_reader()
        # Keep the write side open so replies to the last commands still go out;
        # TLS transports cannot half-close, and say so with a warning if asked.
        return self.transport is not None and not self._over_tls

    def connection_lost(self, exc: Exception | None) -> None:
        self._inbound.closed = True
        self._closing = True
        transport, self.transport = self.transport, None
        if self._over_tls and transport is not None and not transport.is_closing():
            # Python 3.10's TLS transport warns (ResourceWarning) when collected
            # without close(), even after the peer closed the connection.
            transport.close()
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None
        for guard in self._guards:
            guard.cancel()
        self._guards.clear()
        self._wake_reader()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._idle_since = self.loop.time()  # the client is reading: not idle
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- replies ------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Queue one reply (CRLF is added); it is written before the next read."""
        reply = self._encode_reply(status) if isinstance(status, str) else status
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r << %r", self._describe_peer(), reply)
        self._outbox.append(reply + b"\r\n")
        self._outbox_size += len(reply) + 2
        if self._outbox_size >= _OUTBOX_FLUSH_AT:
            await self._flush_and_drain()

    def _flush(self) -> None:
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_size = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def _flush_and_drain(self) -> None:
        self._flush()
        if self._writing_paused and self.transport is not None:
            waiter = self.loop.create_future()
            self._drain_waiter = waiter
            # Blocked on a client that does not read its replies: that counts as
            # waiting for the client, so the idle timer runs.
            waiting = self._waiting_for_input
            self._waiting_for_input = True
            try:
                await waiter
            finally:
                self._waiting_for_input = waiting

    # -- input --------------------------------------------------------------------

    def _wake_reader(self) -> None:
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_for_input(self) -> None:
        if self._inbound.closed:
            await self._flush_and_drain()
            return
        # The waiter exists before the drain, so input arriving while replies
        # drain wakes it instead of being missed.
        waiter = self.loop.create_future()
        self._input_waiter = waiter
        try:
            await self._flush_and_drain()
            inbound = self._inbound
            if self._reading_paused and inbound.buffered + inbound.pending < _INPUT_LOW_WATER:
                self._reading_paused = False
                if self.transport is not None:
                    self.transport.resume_reading()
            self._waiting_for_input = True
            self._idle_since = max(self._idle_since, self.loop.time())
            await waiter
        finally:
            self._waiting_for_input = False
            self._input_waiter = None

    async def _next_line(self) -> bytes | LineTooLong | None:
        """The next command line, :data:`LINE_TOO_LONG`, or None at end of input."""
        inbound = self._inbound
        while not self._closing:
            line = inbound.next_line()
            if line is not None:
                return line
            if inbound.closed:
                return None
            await self._wait_for_input()
        return None

    async def _read_message(
        self,
        decoder: DataDecoder | ExactBytes | HeaderCollector,
        sink: Callable[[bytes], Awaitable[object]] | None = None,
        *,
        wake_at: int = 0,
    ) -> bool:
        """Read a message (after ``354``, a BDAT line, or a PROXY header) through
        its end, handing its content to ``sink`` piece by piece as it is decoded
        (``wake_at`` octets at a time, or all at the end); False if input ended
        first.  A refused message stops reaching the sink: see the decoder's
        ``violation``."""
        inbound = self._inbound
        self._message_octets = 0
        inbound.begin_message(decoder, wake_at)
        rate_check = None
        if self._min_data_rate and inbound.reading_message:
            started = self.loop.time()
            rate_check = self.loop.call_later(
                _RATE_WINDOW, self._check_data_rate, started, self._min_data_rate
            )
        try:
            while True:
                for chunk in inbound.take_content():
                    if sink is not None:
                        await sink(chunk)
                if not inbound.reading_message:
                    return True
                if inbound.closed or self._closing:
                    inbound.abandon_message()
                    return False
                if inbound.worth_taking:
                    # Content came while the sink was busy: its wake-up found nobody
                    # waiting, and reading may be paused until it is taken.
                    continue
                await self._wait_for_input()
        finally:
            if rate_check is not None:
                rate_check.cancel()

    # -- slow and endless clients --------------------------------------------------------

    def _check_data_rate(self, started: float, minimum: float) -> None:
        """During a message, every ``_RATE_WINDOW`` seconds: a client sending slower
        than ``minimum`` octets per second on average (a slowloris) is cut off."""
        if self._closing or not self._inbound.reading_message:
            return
        rate = self._message_octets / max(self.loop.time() - started, 1e-9)
        if rate < minimum:
            log.warning("%r data rate %.0f B/s below %.0f", self._describe_peer(), rate, minimum)
            self._say_and_close("421 4.4.2 Error: data arriving too slowly, closing")
            return
        self._guards.append(
            self.loop.call_later(_RATE_WINDOW, self._check_data_rate, started, minimum)
        )

    def _session_expired(self) -> None:
        if not self._closing:
            log.warning("%r session time limit reached", self._describe_peer())
            self._say_and_close("421 4.4.2 Error: session time limit exceeded, closing")

    def _say_and_close(self, status: str) -> None:
        """A last reply from outside the session task, after any already queued."""
        self._outbox.append(self._encode_reply(status) + b"\r\n")
        self._close_transport()

    def _discard_input(self) -> None:
        self._inbound.discard()

    # -- idle timer and closing -------------------------------------------------------

    def _check_idle(self) -> None:
        self._timeout_handle = None
        if self._closing:
            return
        now = self.loop.time()
        deadline = self._idle_since + self._timeout_duration
        if self._waiting_for_input and now >= deadline:
            log.info("%r connection timeout", self._describe_peer())
            task = self.loop.create_task(self._on_idle_timeout())
            task.add_done_callback(_log_failure)
            return
        # Busy in a hook, or input came recently: look again when it could expire.
        delay = max(deadline - now, 0.05) if self._waiting_for_input else self._timeout_duration
        self._timeout_handle = self.loop.call_later(delay, self._check_idle)

    def _close_transport(self) -> None:
        """Send what is queued, then close; later replies are dropped."""
        self._flush()
        self._closing = True
        self._inbound.closed = True
        self._wake_reader()
        # A second close() of an asyncio TLS transport detaches it from its TLS layer.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _run(self) -> None:
        try:
            await self._serve()
        finally:
            self._close_transport()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("idle timeout handling failed", exc_info=task.exception())
