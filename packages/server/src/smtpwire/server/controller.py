"""Run an SMTP server without writing the event-loop plumbing, with aiosmtpd's API.

The threaded controllers exist for the common case of a test suite or a
synchronous program that needs a live server: :meth:`~BaseThreadedController.start`
returns only once the server accepts connections, and raises the real error
(port in use, a handler the SMTP class refuses) instead of a timeout.
:meth:`~BaseThreadedController.stop` closes every connection before it waits for
the server, so it cannot hang on Python 3.12+ where ``Server.wait_closed()``
waits for the clients (aiosmtpd issue #394).  No self-connection is made to
check readiness (aiosmtpd issue #492): ``factory()`` is called once in the
server's loop instead, which is what that connection was for.

The unthreaded controllers leave the event loop to the caller.  QueueController
is lazr.smtptest's idiom: every received message lands in a queue.Queue (where a
controller listens, and the queue's reading side, are in ``_controller_*``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import threading
import time
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, cast

from ._controller_listen import IP6_IS, SocketFile, bound_port, get_localhost, listen_tcp
from ._controller_queue import QueueReader
from ._serving import (
    CLOSE_TIMEOUT,
    RELEASE_TIMEOUT,
    Refuser,
    ServingThread,
    TooBusy,
    admit,
    check_connection_limit,
    close_connections,
    finish_loop,
    over_connection_limit,
    resolve_ready_timeout,
    running_loop,
    stacklevel_outside,
    wait_closed,
)
from .auth_limits import AuthFailureLimiter
from .smtp import SMTP

__all__ = [
    "DEFAULT_READY_TIMEOUT",
    "IP6_IS",
    "BaseController",
    "BaseThreadedController",
    "BaseUnthreadedController",
    "Controller",
    "InetMixin",
    "QueueController",
    "UnixSocketController",
    "UnixSocketMixin",
    "UnixSocketUnthreadedController",
    "UnthreadedController",
    "get_localhost",
]

log = logging.getLogger("mail.log")

DEFAULT_READY_TIMEOUT: Final = 5.0

# aiosmtpd's texts, word for word: migrated suites match on them.
SERVER_KWARGS_DEPRECATED: Final = (
    "server_kwargs will be removed in version 2.0. Just specify the keyword arguments "
    "to forward to SMTP as kwargs to this __init__ method."
)
NOT_LISTENING: Final = (
    "SMTP server failed to start within allotted time. This might happen if the "
    "system is too busy. Try increasing the `ready_timeout` parameter."
)
NOT_RESPONDING: Final = (
    "SMTP server started, but not responding within allotted time. This might happen "
    "if the system is too busy. Try increasing the `ready_timeout` parameter."
)


class BaseController(ABC):
    """What every controller shares: the SMTP keyword arguments, ``factory()``, and
    the bookkeeping of live connections that lets shutdown close them."""

    server: asyncio.Server | None
    smtpd: SMTP | None

    def __init__(
        self,
        handler: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        max_connections: int | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        check_connection_limit(max_connections)
        self.max_connections = max_connections
        self.handler = handler
        # A loop the controller makes is its own to close (and to remake for the
        # next start); it is made on first use, so an unused controller leaks none.
        self._loop = loop
        self._owns_loop = loop is None
        self.ssl_context = ssl_context
        self.server = None
        self.smtpd = None
        self.SMTP_kwargs: dict[str, Any] = {}
        if server_kwargs is not None:
            warnings.warn(
                SERVER_KWARGS_DEPRECATED,
                DeprecationWarning,
                stacklevel=stacklevel_outside(__name__),
            )
            self.SMTP_kwargs.update(server_kwargs)
        self.SMTP_kwargs.update(SMTP_parameters)
        if server_hostname:
            self.SMTP_kwargs["hostname"] = server_hostname
        # Unlike the SMTP class (which keeps aiosmtpd's historical False), the
        # controllers have always enabled SMTPUTF8; migrated suites rely on it.
        self.SMTP_kwargs.setdefault("enable_SMTPUTF8", True)
        if self.SMTP_kwargs.get("modern"):  # password guessing across sessions: one limiter
            self.SMTP_kwargs.setdefault("auth_failure_limiter", AuthFailureLimiter())
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    @loop.setter
    def loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._owns_loop = False

    def factory(self) -> SMTP:
        """Make the protocol instance for one connection; override it to serve
        ``LMTP`` or an SMTP subclass with extra commands."""
        return SMTP(self.handler, **self.SMTP_kwargs)

    @property
    def _tls_in_session(self) -> bool:
        """Implicit TLS done by each session (its own TLS layer, before the greeting)
        rather than by the listener, so that a failed handshake still ends its
        session (and frees its place under ``max_connections``), and so that behind
        a proxy the PROXY header may come before the handshake (HAProxy passing TLS
        through) as well as inside TLS (aiosmtpd's order)."""
        return self.ssl_context is not None

    @property
    def _listener_ssl(self) -> ssl.SSLContext | None:
        return None if self._tls_in_session else self.ssl_context

    def _factory_invoker(self) -> asyncio.BaseProtocol:
        if over_connection_limit(self._connections, self.max_connections):
            # A client expecting TLS could not read a plaintext 421: just close.
            return Refuser() if self._tls_in_session else TooBusy()
        try:
            smtpd = cast("SMTP | None", self.factory())
        except Exception:
            log.exception("factory() failed; closing the new connection")
            return Refuser()
        if smtpd is None:
            log.error("factory() returned None; closing the new connection")
            return Refuser()
        if self._tls_in_session:
            smtpd._implicit_tls = self.ssl_context
        self.smtpd = smtpd
        admit(self._connections, smtpd, tls_listener=self._listener_ssl is not None)
        return smtpd

    @abstractmethod
    async def _create_server(self) -> asyncio.Server:
        """Start listening, with :meth:`_factory_invoker` as the protocol factory."""

    def _after_close(self) -> None:  # noqa: B027 - an optional hook
        """Release what the listener left behind once it is closed (a socket file)."""

    async def _open(self, listening: threading.Event | None = None) -> tuple[SMTP, asyncio.Server]:
        """Listen, then make one SMTP instance in the loop that will serve.

        That first instance surfaces a handler or keyword argument the SMTP class
        refuses as the start-up error rather than as a connection closed on the
        first client.  ``listening`` is set once the listener is up (or failed),
        which is how ``start()`` tells aiosmtpd's two time-outs apart.
        """
        try:
            server = await self._create_server()
        finally:
            if listening is not None:
                listening.set()
        try:
            smtpd = cast("SMTP | None", self.factory())
            if smtpd is None:
                raise RuntimeError("factory() returned None")
        except BaseException:
            await self._close_server(server, ())
            raise
        return smtpd, server

    async def _close_server(
        self, server: asyncio.Server | None, connections: Iterable[SMTP]
    ) -> None:
        if server is not None:
            server.close()
        await close_connections(connections, CLOSE_TIMEOUT)
        if server is not None:
            # Python 3.13+ can also reach connections still in their TLS handshake,
            # which have no SMTP instance attached yet.
            abort_clients = getattr(server, "abort_clients", None)
            if abort_clients is not None:
                abort_clients()
            await wait_closed(server, RELEASE_TIMEOUT)
            self._after_close()

    def cancel_tasks(self, stop_loop: bool = True) -> None:
        """Stop the loop (unless told not to) and cancel every task in it: the
        clean-up aiosmtpd documents for an unthreaded controller's loop."""
        loop = self.loop
        if stop_loop:
            loop.stop()
        current = asyncio.current_task(loop) if loop.is_running() else None
        for task in asyncio.all_tasks(loop):
            if task is not current:
                task.cancel()


class BaseThreadedController(BaseController):
    """Serves from a daemon thread running its own event loop, so that synchronous
    code (a test, a script) can start a server, talk to it and stop it."""

    def __init__(
        self,
        handler: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop, **kwargs)
        self.ready_timeout = resolve_ready_timeout(ready_timeout)
        self._thread: ServingThread | None = None
        self._thread_exception: BaseException | None = None
        self._start_failed = False

    def _loop_for_start(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None and self._loop.is_closed():
            if not self._owns_loop:
                raise RuntimeError(
                    "the event loop given to this controller is closed (stop() closes it); "
                    "pass loop=None to have the controller make a new loop for each start()"
                )
            self._loop = None
        return self.loop

    def start(self) -> None:
        """Serve from a new thread; return once the server accepts connections.

        On failure the thread and its loop are cleaned up before the error is
        raised, so ``start()`` may simply be called again.
        """
        if self._thread is not None:
            raise RuntimeError("SMTP daemon already running")
        self._thread_exception = None
        self._start_failed = False
        self.server = None
        connections: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._connections = connections

        listening = threading.Event()

        async def start_serving() -> asyncio.Server:
            smtpd, server = await self._open(listening)
            if not thread.stop_requested:  # a start() that timed out has let go
                self.smtpd, self.server = smtpd, server
            return server

        async def shut_down(server: asyncio.Server | None) -> None:
            await self._close_server(server, connections)
            await finish_loop(CLOSE_TIMEOUT)

        thread = ServingThread(
            f"smtpwire-controller-{id(self):x}", self._loop_for_start(), start_serving, shut_down
        )
        thread.start()
        deadline = time.monotonic() + self.ready_timeout
        # One budget for two stages, each with aiosmtpd's own text: the listener,
        # then the first factory() call.  A thread that already failed is not
        # timed out: its error is the one to raise.
        for stage_done, message in ((listening, NOT_LISTENING), (thread.ready, NOT_RESPONDING)):
            remaining = max(0.0, deadline - time.monotonic())
            if not stage_done.wait(remaining) and thread.error is None:
                self._abandon(thread)
                raise TimeoutError(message)
        if thread.error is not None:
            thread.join(CLOSE_TIMEOUT)
            self._thread_exception = thread.error
            self._start_failed = True
            self.server = None
            self.smtpd = None
            raise thread.error
        self._thread = thread

    def _abandon(self, thread: ServingThread) -> None:
        # The thread may be stuck in a blocking call: it winds down whenever it gets
        # control back.  Give it as long again; never reuse its loop.
        thread.wind_down()
        thread.join(self.ready_timeout)
        if thread.is_alive():
            log.warning("SMTP server thread still busy after start() timed out; it stops later")
        if self._owns_loop:
            self._loop = None
        self._start_failed = True
        self.server = None
        self.smtpd = None

    def stop(self, no_assert: bool = False) -> None:
        """Close the listener and every connection, then stop and close the loop and
        join the thread.

        After a failed :meth:`start` this does nothing (that start already cleaned
        up), so aiosmtpd's ``try: start() ... finally: stop()`` pattern still works.
        """
        thread = self._thread
        if thread is None:
            if self._start_failed or no_assert:
                self._start_failed = False
                return
            raise AssertionError("SMTP daemon not running")
        thread.wind_down()
        # Each shutdown step is bounded by CLOSE_TIMEOUT; only a handler blocking the
        # loop in synchronous code can hold the thread longer.
        thread.join(4 * CLOSE_TIMEOUT)
        if thread.is_alive():
            raise TimeoutError(
                "the SMTP server thread did not stop; a handler may be blocking its event loop"
            )
        self._thread = None
        self.server = None
        self.smtpd = None


class BaseUnthreadedController(BaseController):
    """Serves from the caller's event loop, for programs that already run one (and
    want no second thread): :meth:`begin` listens, :meth:`end` or :meth:`finalize`
    closes, and :attr:`ended` tells another thread when that is done."""

    def __init__(
        self,
        handler: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop, **kwargs)
        self.ended = threading.Event()
        # end() called inside the loop schedules finalize(); the loop keeps only a
        # weak reference to the task.
        self._finalizing: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """Listen on the controller's loop; it does not run the loop afterwards.

        The loop runs until the server listens, so call this before running the
        loop, or from another thread while it runs -- not from a coroutine in it.
        """
        loop = self.loop
        self.ended.clear()
        self._connections = weakref.WeakSet()
        if not loop.is_running():
            self.smtpd, self.server = loop.run_until_complete(self._open())
            return
        if running_loop() is loop:
            raise RuntimeError(
                "begin() waits for the server to listen, so it cannot be called from a "
                "coroutine or callback running in the controller's own event loop"
            )
        future = asyncio.run_coroutine_threadsafe(self._open(), loop)
        try:
            self.smtpd, self.server = future.result(DEFAULT_READY_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(NOT_LISTENING) from None

    async def finalize(self) -> None:
        """Close the listener and every connection, then set :attr:`ended`: the
        awaitable form of :meth:`end`, for code already running in the loop."""
        server, self.server = self.server, None
        await self._close_server(server, self._connections)
        self.ended.set()

    def end(self) -> None:
        """Run :meth:`finalize` from synchronous code: to completion if the loop is
        stopped, else scheduled in the loop (wait on :attr:`ended` to know it is done)."""
        loop = self.loop
        if not loop.is_running():
            loop.run_until_complete(self.finalize())
        elif running_loop() is loop:
            self._finalizing = loop.create_task(self.finalize())
        else:
            asyncio.run_coroutine_threadsafe(self.finalize(), loop)


class InetMixin(BaseController):
    """Listens on a TCP address.  ``hostname=None`` is the loopback address (IPv6 if
    available), ``""`` every interface; ``port=0`` takes a free port, which
    :attr:`port` then reports."""

    def __init__(
        self,
        handler: Any,
        hostname: str | None = None,
        port: int = 8025,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop, **kwargs)
        self.hostname = get_localhost() if hostname is None else hostname
        self.port = port
        self._requested_port = port

    async def _create_server(self) -> asyncio.Server:
        server = await listen_tcp(
            self._factory_invoker, self.hostname, self._requested_port, self._listener_ssl
        )
        self.port = bound_port(server.sockets[0])
        return server


class UnixSocketMixin(BaseController):
    """Listens on a Unix domain socket (for a local MTA or a test harness that
    should not touch the network)."""

    def __init__(
        self,
        handler: Any,
        unix_socket: str | Path,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop, **kwargs)
        self.unix_socket = str(unix_socket)
        self._socket_file = SocketFile(self.unix_socket)

    async def _create_server(self) -> asyncio.Server:
        return await self._socket_file.listen(self._factory_invoker, self._listener_ssl)

    def _after_close(self) -> None:
        self._socket_file.remove()


class Controller(InetMixin, BaseThreadedController):
    """A TCP SMTP server in a background thread."""

    def __init__(
        self,
        handler: Any,
        hostname: str | None = None,
        port: int = 8025,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        super().__init__(
            handler,
            hostname,
            port,
            loop,
            ready_timeout=ready_timeout,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            server_kwargs=server_kwargs,
            **SMTP_parameters,
        )


class UnthreadedController(InetMixin, BaseUnthreadedController):
    """A TCP SMTP server in the caller's event loop."""

    def __init__(
        self,
        handler: Any,
        hostname: str | None = None,
        port: int = 8025,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        super().__init__(
            handler,
            hostname,
            port,
            loop,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            server_kwargs=server_kwargs,
            **SMTP_parameters,
        )


class UnixSocketController(UnixSocketMixin, BaseThreadedController):
    """A Unix-socket SMTP server in a background thread."""

    def __init__(
        self,
        handler: Any,
        unix_socket: str | Path,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        super().__init__(
            handler,
            unix_socket,
            loop,
            ready_timeout=ready_timeout,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            server_kwargs=server_kwargs,
            **SMTP_parameters,
        )


class UnixSocketUnthreadedController(UnixSocketMixin, BaseUnthreadedController):
    """A Unix-socket SMTP server in the caller's event loop."""

    def __init__(
        self,
        handler: Any,
        unix_socket: str | Path,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        super().__init__(
            handler,
            unix_socket,
            loop,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            server_kwargs=server_kwargs,
            **SMTP_parameters,
        )


# -- lazr.smtptest's QueueController -------------------------------------------------


class QueueController(QueueReader, Controller):
    """A server for tests that assert on the mail an application sends: each message
    is queued as an :class:`email.message.Message`; iterate to drain the queue, or
    ``wait_for()`` mail still in flight.

    ``QueueController(host, port)`` as in lazr.smtptest; here the port defaults to
    0 (a free port, read back from :attr:`port`).
    """

    def __init__(
        self,
        hostname: str | None = None,
        port: int = 0,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        super().__init__(
            self._queue_handler(),
            hostname,
            port,
            loop,
            ready_timeout=ready_timeout,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            **SMTP_parameters,
        )
