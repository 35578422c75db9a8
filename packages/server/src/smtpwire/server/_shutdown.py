"""Stopping the command line's server gracefully (SIGTERM, SIGINT): the steps
(:func:`shut_down`), the sessions that drain (:class:`CliSMTP`, :class:`Drain`) and
the signal handlers (:class:`Stopping`).

1. Stop accepting: the listening socket is closed at once, so a load balancer or
   a sending MTA's next attempt goes elsewhere.
2. Drain: a session with no transaction in progress gets ``421 4.3.2 Service
   shutting down, closing`` and is closed.  A session with one (MAIL accepted, a
   message being received or delivered, BDAT chunks coming) goes on: the client
   may still send DATA and its message; once the transaction ends and its final
   reply is sent, the session gets that 421 too and is closed, so a command
   that would begin a new transaction never runs.  QUIT is answered 221.  (See
   :class:`CliSMTP`.)
3. After the grace period (``--shutdown-grace``), the sessions left get
   that 421 and are closed, and their handlers' tasks are cancelled.

A second SIGTERM or SIGINT during the drain means "stop now": step 3 at once,
whatever is left of the grace period (:class:`Stopping` says so in one
WARNING line); the process then exits as after any stop, with status 0.

A message is stored whole or refused, never half: a handler cut off at step 3
(or by a second signal) is cancelled at an ``await``, and its client gets 421, a
temporary failure, so the sender keeps the message and sends it again later.  (A
handler that hands its work to a thread cannot be stopped there; what that thread
finishes may then be stored although the client was told 421: a duplicate later,
never a loss.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from .smtp import SMTP

if TYPE_CHECKING:
    from ._cli_serving import Connections

__all__ = [
    "CLOSE_TIMEOUT",
    "ENDED",
    "GRACE_OVER",
    "SHUTTING_DOWN",
    "STOP_NOW",
    "CliSMTP",
    "Drain",
    "Stopping",
    "shut_down",
]

log = logging.getLogger("mail.log")

SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing"

#: How a drain ends (:meth:`Drain.wait`): every session has ended, the
#: grace period is over, or a second signal said to stop now.
ENDED = "ended"
GRACE_OVER = "grace over"
STOP_NOW = "stop now"

#: The bound on each wait after the grace period: for the cut-off sessions'
#: connections to close, and for their tasks to end once cancelled.
CLOSE_TIMEOUT = 5.0


async def shut_down(server: asyncio.AbstractServer, connections: Connections, grace: float) -> None:
    server.close()  # accept no more
    drain = connections.drain
    drain.begin()
    outcome = await drain.wait(grace)
    if outcome != ENDED:
        left = list(drain.live)
        if outcome == GRACE_OVER:  # (a stop now is the signal handler's line)
            log.warning(
                "%d session(s) still busy %g s after the shutdown began: answering 421, closing",
                len(left),
                grace,
            )
        for session in left:
            # The reply first, then the cancel: once the handler's task is cancelled
            # its session may close without a word.
            session._say_and_close(SHUTTING_DOWN)
        tasks = [session._handler_coroutine for session in left]
        running = [task for task in tasks if task is not None and not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=CLOSE_TIMEOUT)
    for transport in connections.transports():
        transport.close()  # what is not a CliSMTP (a 421 for too many connections)
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
    for transport in connections.transports():
        # Looked up, not isinstance(asyncio.WriteTransport): uvloop's transports
        # have the methods without deriving from asyncio's classes.
        abort = getattr(transport, "abort", None)
        if abort is not None and not transport.is_closing():
            abort()
    # On the caller's loop nothing else would end the sessions' tasks: end them here.
    tasks = [session._handler_coroutine for session in list(connections.open)]
    running = [task for task in tasks if task is not None and not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=CLOSE_TIMEOUT)


# -- sessions and draining --------------------------------------------------------------


class Drain:
    """Shutdown's view of the command line's sessions: which are open, and
    whether the server is draining (then a session with no transaction in
    progress is told ``421 4.3.2`` and closed, and one with a transaction ends
    as soon as that transaction does)."""

    def __init__(self) -> None:
        self.active = False
        self.now = False  # a second signal: the drain ends at once
        self.live: set[CliSMTP] = set()
        self._waiter: asyncio.Future[str] | None = None
        # The observer every session gets: the web inbox's transcript recorder
        # (--web), set before serving.  It rides here because every session is
        # given the drain.
        self.observer: Any = None

    def begin(self) -> None:
        self.active = True
        for session in list(self.live):
            session.stop_if_idle()

    def stop_now(self) -> None:
        """End the drain at once, grace period or not (a second signal)."""
        self.now = True
        self._wake(STOP_NOW)

    async def wait(self, timeout: float) -> str:
        """Until every session has ended (``ENDED``), ``timeout`` seconds have
        passed (``GRACE_OVER``) or :meth:`stop_now` is called (``STOP_NOW``)."""
        if self.now:
            return STOP_NOW
        if not self.live:
            return ENDED
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._wake, GRACE_OVER)
        try:
            return await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    def ended(self, session: CliSMTP) -> None:
        self.live.discard(session)
        if not self.live:
            self._wake(ENDED)

    def _wake(self, outcome: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(outcome)


class CliSMTP(SMTP):
    """The command line's session: :class:`SMTP`, drained on shutdown.

    Why a drain rather than closing every connection at once: a message whose
    end has arrived is delivered even if the connection is closed, but its 250
    would then be lost and the client would send it again (a duplicate); and a
    client that was given 250 for MAIL and RCPT is about to send its message.
    So a session with a transaction in progress (MAIL accepted, a message being
    received or delivered, BDAT chunks coming) goes on until that transaction
    ends, and its final reply is sent.  A session without one (idle, or once its
    transaction has ended) gets ``421 4.3.2 Service shutting down, closing`` at
    once, unasked (RFC 5321 section 3.8), and is closed; so does any command that
    would begin a new transaction.  QUIT is still answered 221.
    """

    def __init__(self, handler: Any, *, drain: Drain, **kwargs: Any) -> None:
        if drain.observer is not None:
            kwargs.setdefault("observer", drain.observer)
        super().__init__(handler, **kwargs)
        self._shutdown = drain

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._shutdown.live.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._shutdown.ended(self)

    @property
    def _in_transaction(self) -> bool:
        """MAIL accepted and the transaction not yet ended (its message delivered
        or refused, RSET, a new greeting), or BDAT chunks kept."""
        return self.envelope.mail_from is not None or self._bdat_content is not None

    def stop_if_idle(self) -> None:
        """At the start of the drain: a session busy with a command finishes it
        (see :meth:`_caught_up`), one in a transaction waits for the rest of it;
        any other is told 421 and closed."""
        if not self._busy and not self._in_transaction and not self._closing:
            self._say_and_close(SHUTTING_DOWN)

    # _command below refuses only while draining, when every line goes to it.
    _COMMAND_KEEPS_FAST_PATH = True

    def _answer_without_runner(self) -> bool:
        # While draining, every command goes through _command (below).
        return False if self._shutdown.active else super()._answer_without_runner()

    async def _command(self, line: Any) -> None:
        if self._shutdown.active and not self._in_transaction and not _is_quit(line):
            # A new transaction after the drain began: refused, so that the client
            # sends it (the message) to another server, or again later.
            await self._reply(SHUTTING_DOWN)
            self._close_transport()
            return
        await super()._command(line)

    def _caught_up(self) -> None:
        super()._caught_up()  # the replies are sent first
        if self._shutdown.active and not self._in_transaction and not self._closing:
            self._say_and_close(SHUTTING_DOWN)


def _is_quit(line: Any) -> bool:
    return isinstance(line, bytes) and line.strip().upper() == b"QUIT"


# -- the signals ------------------------------------------------------------------------


class Stopping:
    """SIGINT and SIGTERM while the command line serves.

    The first begins the graceful stop (``shutdown``, see this module's docstring) as a
    task on the running loop, and the loop stops once that is over: it runs on
    from the signal to the end of the drain, so that no signal falls between two
    of its runs (uvloop may not hear one that arrives between two runs).  The
    handlers stay until the loop is done with: a late signal never meets the
    default action (death by SIGTERM, a ``KeyboardInterrupt``).

    Another signal during the drain means "stop now": one WARNING line, and the
    drain ends at once (:meth:`Drain.stop_now`).  So does a signal once the
    shutdown has begun without one (the owner of the loop stopped it, or a
    worker's supervisor has gone).  Any further signal, or one once the drain is
    over, is ignored.

    ``signals``: a ``--workers`` worker takes only SIGTERM, from its supervisor:
    Ctrl-C at a terminal signals the whole process group, and the worker must not
    count the supervisor's SIGTERM that follows as a second signal.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        shutdown: Callable[[], Awaitable[None]] | None = None,
        drain: Drain | None = None,
        signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        self.loop = loop
        self._shutdown = shutdown
        self.drain = drain
        self.signals = tuple(signals)
        self.installed: list[int] = []
        self.signalled = False
        self.task: asyncio.Task[None] | None = None
        #: serve() runs the loop until it is stopped: the shutdown stops it when done.
        self.serving = False

    def install(self) -> None:
        for signum in self.signals:
            try:
                self.loop.add_signal_handler(signum, self._signalled, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - Windows,
                continue  # or not the main thread: Ctrl-C raises KeyboardInterrupt instead
            self.installed.append(signum)

    def remove(self, *, ignore_late: bool = False) -> None:
        """The handlers off again, before the loop is closed: asyncio's close()
        shuts the loop's wakeup pipe before it removes them, and a signal in
        between is reported as an error writing to a closed file descriptor.
        uvloop removes one only while it runs, so the loop runs for it.

        ``ignore_late``: a signal from now on is ignored (the command line, about
        to exit: its supervisor or a second Ctrl-C may still signal it) instead
        of meeting the handler there was before; the signals are blocked during
        the swap, so none falls on the default action in between."""
        installed, self.installed = self.installed, []
        if not installed or self.loop.is_closed():
            return

        async def remove() -> None:
            for signum in installed:
                self.loop.remove_signal_handler(signum)

        blocked = set(installed)
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self.loop.run_until_complete(remove())
            if ignore_late:
                for signum in installed:
                    signal.signal(signum, signal.SIG_IGN)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    def begin(self) -> asyncio.Task[None]:
        """The shutdown, begun now unless it has been already."""
        if self.task is None:
            self.task = self.loop.create_task(self._shut_down())
        return self.task

    async def _shut_down(self) -> None:
        try:
            if self._shutdown is not None:
                await self._shutdown()
        finally:
            if self.serving:
                self.loop.stop()

    def _signalled(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.signalled and self.task is None:
            self.signalled = True
            log.info("%s received, shutting down", name)
            if self.serving:
                self.begin()
            # else: serve() begins it once it serves, or main() once serve() returns.
            return
        drain = self.drain
        if drain is None or drain.now or (self.task is not None and self.task.done()):
            return  # nothing left to cut short
        log.warning(
            "second signal (%s) during the shutdown: stopping now, "
            "answering 421 to the %d session(s) left",
            name,
            len(drain.live),
        )
        drain.stop_now()
