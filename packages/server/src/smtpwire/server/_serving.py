"""The machinery behind :mod:`smtpwire.server.controller`: the serving thread, an
orderly shutdown of a server and its connections, and the queue that
``QueueController.wait_for`` waits on.  Nothing here is public API."""

from __future__ import annotations

import asyncio
import email.message
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .smtp import SMTP

log = logging.getLogger("mail.log")

# Checked in this order; either overrides the ready_timeout argument, so a slow CI
# machine can be given more time without editing the tests (aiosmtpd's variable
# still works for suites that set it).
TIMEOUT_VARIABLES: Final = ("SMTPWIRE_CONTROLLER_TIMEOUT", "AIOSMTPD_CONTROLLER_TIMEOUT")
# How long shutting down waits at each step: a handler that swallows cancellation
# must not make stop() hang forever.
CLOSE_TIMEOUT: Final = 5.0
# Once every connection has been aborted the server is released within a loop
# iteration or two; what can still hold it (on Python 3.12, a client that never
# finished its TLS handshake) would hold it until the handshake timeout.
RELEASE_TIMEOUT: Final = 1.0


def resolve_ready_timeout(argument: float) -> float:
    for name in TIMEOUT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a number of seconds") from None
    return float(argument)


def stacklevel_outside(module: str) -> int:
    """The ``stacklevel`` that points a warning raised in ``module`` at its first
    caller outside it, however many ``__init__`` methods of subclasses lie between."""
    level = 1
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == module:
        frame = frame.f_back
        level += 1
    return level


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Refuser(asyncio.Protocol):
    """Stands in for an SMTP instance that ``factory()`` failed to make, so one bad
    connection is closed and logged instead of breaking the listening server."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class TooBusy(asyncio.Protocol):
    """Answers a connection over ``max_connections`` with 421 and closes it, before
    any SMTP session (or handler code) exists for it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.warning("%r refused: too many connections", transport.get_extra_info("peername"))
        transport.write(b"421 4.7.0 Too many connections, try again later\r\n")  # type: ignore[attr-defined]
        transport.close()


# A TLS listener calls connection_made only after the handshake, which asyncio
# gives this long by default; a session not connected by then never will be.
TLS_LISTENER_GRACE: Final = 60.0


def over_connection_limit(
    sessions: Iterable[SMTP], maximum: int | None, grace: float = TLS_LISTENER_GRACE
) -> bool:
    """Whether ``maximum`` sessions are already live: connected and not yet closed,
    or made less than ``grace`` seconds ago and not yet connected."""
    if maximum is None:
        return False
    now = time.monotonic()
    live = sum(
        not session._closing and (session.transport is not None or now - session.made_at < grace)
        for session in list(sessions)
    )
    return live >= maximum


def admit(sessions: weakref.WeakSet[SMTP], session: SMTP, *, tls_listener: bool) -> None:
    """Count ``session`` among the open ones.  From a plain listener, its
    connection_made is queued right after this factory call: two loop hops later it
    has run, or never will (the client reset the socket at once, and asyncio
    dropped the connection without telling the protocol), and the session is
    forgotten rather than counted until the garbage collector finds it."""
    sessions.add(session)
    if not tls_listener:
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, _forget_if_unconnected, sessions, weakref.ref(session))


def _forget_if_unconnected(sessions: weakref.WeakSet[SMTP], ref: weakref.ref[SMTP]) -> None:
    session = ref()
    if session is not None and session.transport is None and not session._closing:
        sessions.discard(session)


def check_connection_limit(maximum: int | None) -> None:
    if maximum is not None and maximum < 1:
        raise ValueError("max_connections must be at least 1 (or None for no limit)")


async def close_connections(connections: Iterable[SMTP], timeout: float) -> None:
    """Close every live connection and wait for its task: ``Server.close()`` leaves
    accepted connections open, and from Python 3.12 ``wait_closed()`` waits for them."""
    protocols = list(connections)
    tasks = []
    for protocol in protocols:
        task = protocol._handler_coroutine
        if task is not None and not task.done():
            task.cancel()
            tasks.append(task)
    if tasks:
        # Each task closes its own transport on the way out, sending what is queued.
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.warning("%d connection task(s) did not finish after cancellation", len(pending))
    # A close() still flushing to a client that does not read, or waiting for a TLS
    # peer's close_notify, would hold the server open: give it one turn, then cut it
    # off.  (Never close() a second time: that detaches a TLS transport from its
    # connection, after which abort() no longer reaches the socket.)
    await asyncio.sleep(0)
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.abort()


async def wait_closed(server: asyncio.Server, timeout: float) -> None:
    try:
        await asyncio.wait_for(server.wait_closed(), timeout)
    except asyncio.TimeoutError:
        log.warning("the server did not release its connections within %s s", timeout)


async def finish_loop(timeout: float) -> None:
    """Cancel what handlers left running and shut down async generators and the
    default executor, so closing the loop destroys nothing still pending."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(loop.shutdown_default_executor(), timeout)


class ServingThread(threading.Thread):
    """One start-to-stop run of a threaded controller, kept apart from the
    controller so that a run abandoned by a timed-out ``start()`` cannot disturb
    the next one.  The thread owns its loop to the end: it closes it itself."""

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        start_serving: Callable[[], Coroutine[Any, Any, asyncio.Server]],
        shut_down: Callable[[asyncio.Server | None], Coroutine[Any, Any, None]],
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.loop = loop
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._start_serving = start_serving
        self._shut_down = shut_down
        self._stop_requested = threading.Event()
        self._startup: asyncio.Task[asyncio.Server] | None = None
        self._serving = False  # only touched in this thread

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def wind_down(self) -> None:
        """Ask the thread to stop serving, or to give up starting; callable from any thread."""
        self._stop_requested.set()
        with suppress(RuntimeError):  # the loop is closed: the thread is done already
            self.loop.call_soon_threadsafe(self._stop_in_loop)

    def _stop_in_loop(self) -> None:
        # loop.stop() during run_until_complete() would leave the startup half done;
        # cancelling the startup task lets it close what it opened.
        if self._serving:
            self.loop.stop()
        elif self._startup is not None:
            self._startup.cancel()

    def run(self) -> None:
        loop = self.loop
        server = None
        try:
            self._startup = loop.create_task(self._start_serving())
            try:
                server = loop.run_until_complete(self._startup)
            except BaseException as error:
                self.error = error
                return
            self._serving = True
            self.ready.set()
            if not self._stop_requested.is_set():
                loop.run_forever()
            self._serving = False
        finally:
            try:
                loop.run_until_complete(self._shut_down(server))
            except BaseException:
                log.exception("error while shutting the SMTP server down")
            finally:
                loop.close()
                self.ready.set()


class MessageQueue(queue.Queue[email.message.Message]):
    """A queue that can wait for *several* items: ``Queue.get()`` waits for one,
    and polling ``qsize()`` would be a sleep loop."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived = threading.Condition(self.mutex)

    def _put(self, item: email.message.Message) -> None:
        super()._put(item)
        self._arrived.notify_all()

    def take(self, count: int, timeout: float) -> list[email.message.Message]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._qsize() >= count, timeout):
                raise TimeoutError(
                    f"{self._qsize()} of {count} expected message(s) arrived within {timeout} s"
                )
            taken = [self._get() for _ in range(count)]
            self.not_full.notify(count)
            return taken
