"""The byte-moving half of the server protocol: input buffering, batched replies,
flow control in both directions, the idle timer and an orderly close.

:class:`Connection` knows nothing of SMTP commands.  The subclass implements
:meth:`Connection._serve`, a coroutine run as one task per connection, which
reads with :meth:`_next_line` / :meth:`_read_message` and answers with
:meth:`push`.  Replies are queued and written together when the session is about
to wait for input, so the replies to pipelined commands leave in one write
(RFC 2920 section 3.2) and a lock-step client still gets each reply at once.

While the session task is idle waiting for a command, the read callback answers
what arrives itself (:meth:`Connection._answer_inline`): the subclass's
:meth:`_command` coroutine is run there until it is done or waits for more input,
so a command costs no task wake-up.  Code that is not the server's own (a
handler's hook) awaits :data:`NEEDS_TASK` first, and the command is handed over
to the session task, which goes on with it; handlers always run in a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from smtpwire.common.buffers import receive_buffer
from smtpwire.common.data import DataDecoder
from smtpwire.common.lines import LineTooLong

from ._inbound import ExactBytes, Inbound
from .proxy_protocol import HeaderCollector

__all__ = ["NEEDS_TASK", "Connection"]

log = logging.getLogger("mail.log")

# Pause reading when this many octets of complete command lines are unprocessed
# (a client pipelining far ahead of the handlers); resume below the low mark.
_INPUT_HIGH_WATER = 256 * 1024
_INPUT_LOW_WATER = 64 * 1024
# Write queued replies out before this much piles up even without a wait.
_OUTBOX_FLUSH_AT = 64 * 1024
# How often the data rate of a message being received is checked (seconds).
_RATE_WINDOW = 10.0


class _NeedsTask:
    """Awaited by session code about to run code that is not the server's own
    (a handler's hook): when the read callback is running the command, it hands
    the command over to the session task there, so that such code always runs in
    a task (``asyncio.current_task()``, ``asyncio.timeout()``, contextvars)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield self  # seen only by Connection._answer_inline


NEEDS_TASK = _NeedsTask()


class _Resume:
    """The session task's side of a hand-over: it goes on with a command that the
    read callback started, from where it stopped (or raises what it raised)."""

    __slots__ = ("_command", "_error", "_waiting_on")

    def __init__(
        self,
        command: Coroutine[Any, Any, None] | None,
        waiting_on: Any = None,
        error: Exception | None = None,
    ) -> None:
        self._command = command
        self._waiting_on = waiting_on
        self._error = error

    def __await__(self) -> Generator[Any, Any, None]:
        if self._error is not None:
            raise self._error
        command, waiting_on = self._command, self._waiting_on
        assert command is not None  # noqa: S101 - one of the two is set
        while True:
            try:
                if waiting_on is NEEDS_TASK:
                    waiting_on = command.send(None)
                    continue
                try:
                    sent = yield waiting_on
                except GeneratorExit:
                    command.close()
                    raise
                except BaseException as error:  # cancellation, passed on
                    waiting_on = command.throw(error)
                else:
                    waiting_on = command.send(sent)
            except StopIteration:
                return


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
        # Commands answered in the read callback (see _answer_inline): the session
        # task's wait for a command line, the command the callback is running or
        # that waits there for more input, and what the task must take over.
        self._command_waiter: asyncio.Future[None] | None = None
        self._inline: Coroutine[Any, Any, None] | None = None
        self._running_inline = False
        self._handover: _Resume | None = None
        self._wants_command = False  # the next wait for input is the session loop's

    # -- what the subclass provides -------------------------------------------

    async def _serve(self) -> None:
        raise NotImplementedError

    def _encode_reply(self, status: str) -> bytes:
        raise NotImplementedError

    def _describe_peer(self) -> Any:
        raise NotImplementedError

    def _command(self, line: bytes | LineTooLong) -> Coroutine[Any, Any, None]:
        """The coroutine that answers one command line."""
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
        if self._queue_reply(status):
            await self._flush_and_drain()

    def _queue_reply(self, status: str | bytes) -> bool:
        """Queue one reply; True when enough is queued to be written out now."""
        reply = self._encode_reply(status) if isinstance(status, str) else status
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r << %r", self._describe_peer(), reply)
        self._outbox.append(reply + b"\r\n")
        self._outbox_size += len(reply) + 2
        return self._outbox_size >= _OUTBOX_FLUSH_AT

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
        if self._inline is not None and not self._running_inline:
            # Woken by something other than input (end of input, a close, a
            # timer): the session task goes on with the command from here.
            command, self._inline = self._inline, None
            self._hand_over(_Resume(command, waiter))

    def _hand_over(self, resume: _Resume) -> None:
        self._handover = resume
        waiter = self._command_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _input_arrived(self) -> None:
        """Input the reader may want: a command in the read callback, if the
        session task is idle waiting for one, or else wake the task."""
        waiter = self._command_waiter
        if self._inline is not None or (
            waiter is not None
            and waiter is self._input_waiter
            and not waiter.done()
            and not self._writing_paused
        ):
            self._answer_inline()
        else:
            self._wake_reader()

    def _answer_inline(self) -> None:
        """Answer the command lines that have arrived here, in the read callback,
        while the session task stays asleep: the reply goes out in this callback
        and no task step, future or extra trip round the event loop is spent
        (smtp-source's lock-step MAIL, RCPT, DATA and message cost four of each).

        A command runs here until it is done or waits for more input (DATA or
        BDAT reading the message; the next call goes on with it).  When it must
        run a handler's code (it awaits :data:`NEEDS_TASK`), waits for anything
        else, or fails, it is handed over, as it stands, to the session task,
        which goes on with it and then with the next lines.
        """
        if self._running_inline:
            return
        inbound = self._inbound
        if self._inline is None:
            self._input_waiter = None  # the task's: it sleeps on
        else:
            waiter = self._input_waiter  # the one the command waits on
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._running_inline = True
        try:
            while self._handover is None:
                command = self._inline
                if command is None:
                    if self._closing:
                        break
                    line = inbound.next_line()
                    if line is None:
                        break
                    command = self._command(line)
                try:
                    waiting_on = command.send(None)
                except StopIteration:
                    self._inline = None
                    continue
                except Exception as error:  # the task replies, as for its own commands
                    self._inline = None
                    self._handover = _Resume(None, error=error)
                    break
                if waiting_on is not None and waiting_on is self._input_waiter:
                    self._inline = command  # reading a message: more input wakes it
                    return
                self._inline = None
                self._handover = _Resume(command, waiting_on)
        finally:
            self._running_inline = False
        self._flush()
        waiter = self._command_waiter
        if waiter is None or waiter.done():
            return
        if self._handover is not None or self._closing or inbound.closed or self._writing_paused:
            # The task takes it from here (and waits for a client that does not
            # read its replies before it reads more commands).
            waiter.set_result(None)
            return
        self._input_waiter = waiter  # the task waits for a command again
        self._waiting_for_input = True  # (idle since this input: data_received)
        if self._reading_paused:
            self._resume_reading_if_drained()

    def _resume_reading_if_drained(self) -> None:
        inbound = self._inbound
        if self._reading_paused and inbound.buffered + inbound.pending < _INPUT_LOW_WATER:
            self._reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    async def _wait_for_input(self) -> None:
        for_command, self._wants_command = self._wants_command, False
        if self._inbound.closed:
            await self._flush_and_drain()
            return
        # The waiter exists before the drain, so input arriving while replies
        # drain wakes it instead of being missed.
        waiter = self.loop.create_future()
        self._input_waiter = waiter
        try:
            if self._writing_paused:
                await self._flush_and_drain()
            else:
                self._flush()
            self._resume_reading_if_drained()
            self._waiting_for_input = True
            self._idle_since = max(self._idle_since, self.loop.time())
            if for_command:
                # From here on the read callback may answer commands itself.
                self._command_waiter = waiter
            await waiter
        finally:
            if self._command_waiter is waiter:
                self._command_waiter = None
            # A command handed over by the read callback may wait already.
            if self._input_waiter is waiter or self._input_waiter is None:
                self._waiting_for_input = False
                self._input_waiter = None

    async def _next_line(self, *, command: bool = False) -> bytes | LineTooLong | None:
        """The next line, :data:`LINE_TOO_LONG`, or None at end of input.  For the
        session loop (``command``), also None when a command started in the read
        callback is to be taken over; only then may the callback answer commands."""
        inbound = self._inbound
        while not self._closing and self._handover is None:
            line = inbound.next_line()
            if line is not None:
                return line
            if inbound.closed:
                return None
            self._wants_command = command
            await self._wait_for_input()
        return None

    def _take_handover(self) -> _Resume | None:
        handover, self._handover = self._handover, None
        return handover

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
            command, self._inline = self._inline, None
            if command is not None:  # the task was cancelled meanwhile
                command.close()
            self._close_transport()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("idle timeout handling failed", exc_info=task.exception())
