"""The byte-moving half of the server protocol: input buffering, batched replies,
flow control in both directions, the idle timer and an orderly close.

:class:`Connection` knows nothing of SMTP commands.  The session's own code runs
in an :class:`asyncio.Task` that exists while there is work (the *runner*,
:attr:`Connection._handler_coroutine`): the first one greets the client, and
each later one is started by the read callback when a command line arrives while
none is running.  A runner answers every complete line there is, then ends; when
a command needs more input (a message after ``DATA``, an AUTH response) it waits
for it inside the same task.  On Python 3.12 and later a runner starts eagerly
(:func:`asyncio.eager_task_factory`): a command that needs no wait is answered
inside the read callback, yet in a real task, so hooks and overrides always see
``asyncio.current_task()``, ``asyncio.timeout()`` and the session's contextvars,
which are carried from one runner to the next.

Replies the server generates are queued and written together when the runner
waits for input or ends, so the replies to pipelined commands leave in one write
(RFC 2920 section 3.2) and a lock-step client still gets each reply at once;
:meth:`Connection.push`, the public method, writes (and drains) before it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from smtpwire.common.buffers import receive_buffer
from smtpwire.common.data import DataDecoder
from smtpwire.common.lines import LineTooLong
from smtpwire.common.server_input import ExactBytes, Inbound

from .observe import Observer
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

_Coroutine = Coroutine[Any, Any, None]
_eager_task_factory = getattr(asyncio, "eager_task_factory", None)  # Python 3.12+


class MessageInCallback(Protocol):
    """A message the read callback receives with no runner (see
    :meth:`Connection._read_message_in_callback`)."""

    def take(self, chunks: list[bytes]) -> None:
        """Keep decoded content (called from the read callback)."""

    def finish(self) -> _Coroutine:
        """What the runner does once the message has ended, or input has."""


class Connection(asyncio.BufferedProtocol, asyncio.Protocol):
    """One client connection's I/O; subclassed by :class:`~smtpwire.server.smtp.SMTP`."""

    # Thousands of idle connections are one object each: slots, not a dict of 60
    # entries (SMTP itself keeps a __dict__ for attributes a subclass or a test adds).
    __slots__ = (
        "_before_tls", "_close_called", "_closing", "_context", "_drain_waiter",
        "_draining", "_guards", "_handler_coroutine", "_idle_since", "_inbound",
        "_input_waiter", "_message_in_callback", "_message_octets", "_min_data_rate",
        "_observer", "_outbox",
        "_outbox_size", "_reading_paused", "_receive_view", "_received_any",
        "_session_limit", "_starting", "_taken_line", "_timeout_duration",
        "_timeout_handle", "_writing_paused", "loop", "transport",
    )  # fmt: skip

    transport: asyncio.Transport | None
    loop: asyncio.AbstractEventLoop
    _handler_coroutine: asyncio.Task[None] | None

    def _init_connection(
        self,
        inbound: Inbound,
        *,
        timeout: float,
        session_limit: float | None = None,
        min_data_rate: float | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.transport = None
        self._observer = observer  # see smtpwire.server.observe
        self._session_limit = session_limit
        self._min_data_rate = min_data_rate
        self._message_octets = 0  # received while reading the current message
        self._guards: list[asyncio.TimerHandle] = []
        self._handler_coroutine = None  # the runner: the task running session code now
        self._starting = False  # a runner's eager first step is running
        self._context: contextvars.Context | None = None  # carried from runner to runner
        self._inbound = inbound  # the session's input framing (sans-I/O)
        # A line the read callback took but left for the next runner to answer.
        self._taken_line: bytes | LineTooLong | None = None
        # A message being received with no runner; the next runner finishes it.
        self._message_in_callback: MessageInCallback | None = None
        self._outbox: list[bytes] = []
        self._outbox_size = 0
        self._input_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._timeout_duration = timeout
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._draining = False  # the runner waits for the client to read its replies
        self._closing = False
        self._close_called = False
        self._received_any = False  # for the early-talker check
        # Implicit TLS: what arrives before the handshake takes the transport over.
        self._before_tls: list[bytes] | None = None

    # -- what the subclass provides -------------------------------------------

    async def _open_session(self) -> bool:
        """Before the first command (handshake, greeting); False ends the session."""
        raise NotImplementedError

    async def _command(self, line: bytes | LineTooLong) -> None:
        """Answer one command line."""
        raise NotImplementedError

    async def _command_failed(self, error: Exception) -> None:
        """Reply to a command that raised ``error``."""
        raise NotImplementedError

    def _encode_reply(self, status: str) -> bytes:
        raise NotImplementedError

    def _describe_peer(self) -> Any:
        raise NotImplementedError

    def _answer_without_runner(self) -> bool:
        """Answer, in the read callback, the commands at the head of the input that
        run none but the server's own code; True when none is left for a runner.
        A line taken but not answered goes to :attr:`_taken_line`."""
        return False

    async def _on_idle_timeout(self) -> None:
        """Called (in a task of its own) when the client has been idle too long."""
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

    # -- the runner ---------------------------------------------------------------

    @property
    def _runner_at_work(self) -> bool:
        """Whether a runner is at work (or waiting inside a command)."""
        if self._starting:
            return True
        task = self._handler_coroutine
        return task is not None and not task.done()

    @property
    def _busy(self) -> bool:
        """Whether a command is under way: a runner at work, or a message being
        received in the read callback."""
        return self._message_in_callback is not None or self._runner_at_work

    def _spawn(self, coroutine: _Coroutine, *, eager: bool = False) -> asyncio.Task[None]:
        """Start ``coroutine`` as the runner, in the session's context."""
        loop, context = self.loop, self._context
        assert context is not None  # noqa: S101 - set when the connection is made
        if eager and _eager_task_factory is not None and loop.is_running():
            # Its first step runs now; until it returns, this counts as busy (a close
            # in that step can call eof_received, which must not start another).
            self._starting = True
            try:
                task: asyncio.Task[None] = _eager_task_factory(loop, coroutine, context=context)
            finally:
                self._starting = False
        elif sys.version_info >= (3, 11):
            task = loop.create_task(coroutine, context=context)
        else:  # pragma: no cover - Python 3.10: the task runs in a copy of it
            task = context.run(loop.create_task, coroutine)
        self._handler_coroutine = task
        return task

    def _in_session_context(self, coroutine: _Coroutine) -> asyncio.Task[None]:
        """A task beside the runner (a timer's action) that sees the session's contextvars."""
        assert self._context is not None  # noqa: S101 - set when the connection is made
        return self._context.copy().run(self.loop.create_task, coroutine)

    async def _begin(self) -> None:
        try:
            if await self._open_session():
                await self._answer_commands()
            else:
                self._close_transport()
        finally:
            self._context = contextvars.copy_context()

    async def _resume(self, failure: Exception | None = None) -> None:
        try:
            if failure is not None:  # of a command answered in the read callback
                await self._command_failed(failure)
            await self._answer_commands()
        finally:
            self._context = contextvars.copy_context()

    async def _answer_commands(self) -> None:
        """Answer every complete command line received, then end (the next line
        starts another runner); at the end of input, end the session."""
        message, self._message_in_callback = self._message_in_callback, None
        if message is not None and not await self._guarded(message.finish()):
            return
        inbound = self._inbound
        while not self._closing:
            if self._writing_paused:
                # The client is not reading its replies: read no more commands.
                await self._flush_and_drain()
                continue
            line = self._taken_line
            if line is None:
                line = inbound.next_line()
            else:
                self._taken_line = None
            if line is None:
                if inbound.closed:
                    break
                self._caught_up()
                return
            if not await self._guarded(self._command(line)):
                return
        self._close_transport()

    async def _guarded(self, command: _Coroutine) -> bool:
        """Run a command; False when the session ends because the client is gone."""
        try:
            await command
        except asyncio.CancelledError:
            log.info("%r session cancelled", self._describe_peer())
            self._close_transport()
            raise
        except ConnectionResetError:
            # Raised by a hook or a command: the client is gone, nothing to answer.
            log.info("%r connection lost during a command", self._describe_peer())
            self._close_transport()
            return False
        except Exception as error:  # any other failure becomes a reply
            await self._command_failed(error)
        return True

    def _caught_up(self) -> None:
        """Every line received is answered: send the replies, wait for the client."""
        self._flush()
        self._idle_since = max(self._idle_since, self.loop.time())
        self._resume_reading_if_drained()

    # -- asyncio.Protocol -------------------------------------------------------

    def _start_connection(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        try:
            # The loop that reads: the one ``self.loop`` names could be another.
            reading_loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand, aiosmtpd-style, with ``loop=``
            reading_loop = self.loop
        self._receive_view = receive_buffer(reading_loop)
        self._context = contextvars.copy_context()
        self._idle_since = self.loop.time()
        if self._timeout_duration:
            self._timeout_handle = self.loop.call_later(self._timeout_duration, self._check_idle)
        if self._session_limit:
            self._guards.append(self.loop.call_later(self._session_limit, self._session_expired))
        self._spawn(self._begin())

    # asyncio reads into one buffer per loop (no fresh 256 KiB per read); what
    # arrived is copied out and handled as by a plain Protocol.
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._receive_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._receive_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self._before_tls is not None:
            self._before_tls.append(data)  # the TLS handshake's, kept whole
            self._wake_reader()  # a session waiting to see what comes first
            return
        self._received_any = True
        inbound = self._inbound
        if not inbound.reading_message:
            # Command lines (the usual case).
            inbound.feed(data)
            newline = b"\n" in data
            if newline:
                self._idle_since = self.loop.time()
            if newline or inbound.buffered > inbound.max_line_length:
                self._input_arrived()
            if inbound.buffered > _INPUT_HIGH_WATER:
                self._pause_reading()
            return
        # Any octet of a message is progress (a binary BDAT chunk may hold no LF);
        # a message sent too slowly is min_data_rate's business.
        self._message_octets += len(data)
        still_reading = inbound.feed(data)
        self._idle_since = self.loop.time()
        if still_reading:
            # The decoder consumes it all; the reader is woken at the end, or when
            # enough content is pending, and reading pauses if it falls behind.
            message = self._message_in_callback
            if message is not None:
                if inbound.worth_taking:
                    message.take(inbound.take_content())
                return
            if inbound.worth_taking:
                if inbound.pending >= 2 * inbound.wake_at:
                    self._pause_reading()
                self._input_arrived()
            return
        # The message ended in this data: its last octets need not hold an LF (a
        # BDAT chunk, a PROXY v2 header); what follows it are command lines.
        self._input_arrived()
        if inbound.buffered > _INPUT_HIGH_WATER:
            self._pause_reading()

    def _input_arrived(self) -> None:
        """Input (or its end) the session may want: wake the runner waiting for
        it, or start one if none is at work; a busy runner takes it when done."""
        waiter = self._input_waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._runner_at_work or self._context is None:
            return  # the runner takes it when done
        elif self._message_in_callback is not None:
            inbound = self._inbound
            if not inbound.reading_message or inbound.closed:
                self._spawn(self._resume(), eager=True)  # to finish the message
        elif not self._answer_without_runner():
            self._spawn(self._resume(), eager=True)

    def _read_message_in_callback(
        self, decoder: DataDecoder, message: MessageInCallback, *, wake_at: int
    ) -> None:
        """Receive a message in the read callback, with no task: ``message`` takes
        its content ``wake_at`` octets at a time, and a runner starts only at its
        end (or at the end of input) to run ``message.finish()``.  Only for a
        message whose reception involves no code but the server's own."""
        self._message_octets = 0
        self._message_in_callback = message
        self._inbound.begin_message(decoder, wake_at)
        self._input_arrived()  # the message may be complete already

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._inbound.closed = True
        # Commands received before the end are still answered; keep the write
        # side open for their replies (a TLS transport ignores the answer).
        self._input_arrived()
        return self.transport is not None and not _is_tls(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inbound.closed = True
        self._closing = True
        transport, self.transport = self.transport, None
        if (
            transport is not None
            and not self._close_called
            and not transport.is_closing()
            and _is_tls(transport)
        ):
            # Python 3.10's TLS transport warns (ResourceWarning) when collected
            # without close(), even after the peer closed the connection.
            self._close_called = True
            transport.close()
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None
        for guard in self._guards:
            guard.cancel()
        self._guards.clear()
        self._wake_reader()
        if self._message_in_callback is not None:
            self._input_arrived()  # a runner ends the message cut short
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
        """Send one reply (CRLF is added): written, after any replies queued before
        it, and drained (while the client is not reading) before this returns."""
        self._queue_reply(status)
        await self._flush_and_drain()

    async def _reply(self, status: str | bytes) -> None:
        """The server's own reply: queued, so that the replies to pipelined commands
        leave together.  A subclass that overrides :meth:`push` sees it there."""
        if type(self).push is not Connection.push:
            await self.push(status)
        elif self._queue_reply(status):
            await self._flush_and_drain()

    def _queue_reply(self, status: str | bytes) -> bool:
        """Queue one reply; True when enough is queued to be written out now."""
        reply = self._encode_reply(status) if isinstance(status, str) else status
        if self._observer is not None and self.transport is not None and not self._close_called:
            self._tell_observer(self._observer.reply_sent, reply)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r << %r", self._describe_peer(), reply)
        self._outbox.append(reply + b"\r\n")
        self._outbox_size += len(reply) + 2
        return self._outbox_size >= _OUTBOX_FLUSH_AT

    def _tell_observer(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a method of the observer; what it raises is logged, and None returned."""
        try:
            return method(self, *args)
        except Exception:
            log.exception("%r observer's %s failed", self._describe_peer(), method.__name__)
            return None

    def _flush(self) -> None:
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_size = 0
        transport = self.transport
        if transport is not None and not self._close_called:
            transport.write(data)

    async def _flush_and_drain(self) -> None:
        self._flush()
        if self._writing_paused and self.transport is not None:
            waiter = self.loop.create_future()
            self._drain_waiter = waiter
            # Blocked on a client that does not read its replies: that counts as
            # waiting for the client, so the idle timer runs.
            self._draining = True
            try:
                await waiter
            finally:
                self._draining = False

    # -- input --------------------------------------------------------------------

    def _wake_reader(self) -> None:
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume_reading_if_drained(self) -> None:
        inbound = self._inbound
        if self._reading_paused and inbound.buffered + inbound.pending < _INPUT_LOW_WATER:
            self._reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    async def _wait_for_input(self) -> None:
        """Wait (in the runner) until more input arrives or input ends."""
        if self._inbound.closed:
            await self._flush_and_drain()
            return
        # The waiter exists before the drain, so input arriving while replies
        # drain wakes it instead of being missed.
        waiter = self.loop.create_future()
        self._input_waiter = waiter
        try:
            await self._flush_and_drain()
            self._resume_reading_if_drained()
            self._idle_since = max(self._idle_since, self.loop.time())
            await waiter
        finally:
            self._input_waiter = None

    async def _next_line(self) -> bytes | LineTooLong | None:
        """The next line (inside a command: an AUTH response), or None at the end."""
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
        """A last reply from outside the runner, after any already queued."""
        self._queue_reply(status)
        self._close_transport()

    def _discard_input(self) -> None:
        self._taken_line = None
        self._inbound.discard()

    # -- idle timer and closing -------------------------------------------------------

    @property
    def _waiting_for_client(self) -> bool:
        """Whether the session waits on the client (for input, or to read replies)."""
        return self._input_waiter is not None or self._draining or not self._runner_at_work

    def _check_idle(self) -> None:
        self._timeout_handle = None
        if self._closing:
            return
        now = self.loop.time()
        deadline = self._idle_since + self._timeout_duration
        waiting = self._waiting_for_client
        if waiting and now >= deadline:
            log.info("%r connection timeout", self._describe_peer())
            task = self._in_session_context(self._on_idle_timeout())
            task.add_done_callback(_log_failure)
            return
        # Busy in a hook, or input came recently: look again when it could expire.
        delay = max(deadline - now, 0.05) if waiting else self._timeout_duration
        self._timeout_handle = self.loop.call_later(delay, self._check_idle)

    def _close_transport(self) -> None:
        """Send what is queued, then close (once); later replies are dropped."""
        self._flush()
        self._closing = True
        self._inbound.closed = True
        self._wake_reader()
        if self.transport is not None and not self._close_called:
            self._close_called = True
            self.transport.close()


def _is_tls(transport: asyncio.BaseTransport) -> bool:
    return transport.get_extra_info("sslcontext") is not None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("idle timeout handling failed", exc_info=task.exception())
