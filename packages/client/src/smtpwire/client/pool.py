"""``SMTPPool``: many tasks sending through a bounded set of reused connections.

aiosmtplib leaves this to the application (its issue #45); opening a connection
per message costs a TCP (and often TLS) handshake, a greeting and an EHLO.  The
pool keeps at most ``max_connections`` open, checks a connection idle for more
than ``check_after`` seconds with RSET before reusing it (so a connection the
server dropped while idle is replaced, not failed on), retires a connection after
``max_messages_per_connection`` messages or ``idle_timeout`` seconds idle, and
closes everything on ``close()`` / ``async with`` exit.

Sends wait in one queue; a worker task per open connection takes them in order
and, when the server offers PIPELINING, pipelines each message's end with the
next one's MAIL, RCPTs and DATA (``_pool_pipeline``), one round trip per message.
A stream, BINARYMIME or SMTPUTF8 send runs in its caller's task on a connection
of its own, as a plain ``SMTP.sendmail`` (it can be long: cancelling it must stop
it).  A send is never retried once its MAIL command may have been written, so a
message cannot be delivered twice; only the reuse check can fail over to a new
connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from ._payload import MessageSource
from ._pool_pipeline import Job, JobQueue, Result, serve
from .errors import (
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .response import SMTPResponse
from .smtp import SMTP

__all__ = ["SMTPPool"]

_Result = TypeVar("_Result")
_BROKEN = (SMTPServerDisconnected, SMTPTimeoutError, ConnectionError, OSError)
_REFUSALS = (SMTPResponseException, SMTPRecipientsRefused, SMTPNotSupported, ValueError)
_IN_MEMORY = (str, bytes, bytearray, memoryview)
_ALONE_OPTIONS = frozenset({"BODY=BINARYMIME", "SMTPUTF8"})


@dataclass
class _Idle:
    client: SMTP
    since: float
    sent: int


class SMTPPool:
    """``SMTPPool(hostname=..., port=..., max_connections=10, ...)``; the other
    keyword arguments are :class:`~smtpwire.client.smtp.SMTP`'s.

    ``client_factory`` makes each connection's client from those keywords: by
    default :class:`~smtpwire.client.smtp.SMTP`; e.g.
    :class:`~smtpwire.client.lmtp.LMTP` for an LMTP server (its messages are not
    pipelined one behind another: each has one reply per recipient), or a
    subclass of either."""

    def __init__(
        self,
        *,
        max_connections: int = 10,
        max_messages_per_connection: int = 100,
        idle_timeout: float = 60.0,
        check_after: float = 1.0,
        client_factory: Callable[..., SMTP] = SMTP,
        **smtp_options: Any,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be at least 1")
        self.max_connections = max_connections
        self.max_messages_per_connection = max_messages_per_connection
        self.idle_timeout = idle_timeout
        self.check_after = check_after
        self._smtp_options = smtp_options
        self._client_factory = client_factory
        client_factory(**smtp_options)  # refuse a bad configuration now, not at the first send
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[_Idle] = []
        self._queue = JobQueue()
        self._workers: set[asyncio.Task[None]] = set()
        # Counted apart from the set: a finished task leaves the set a loop turn
        # later, and a send queued meanwhile must still get a worker.
        self._working = 0
        self._waiting_alone = 0  # sends waiting for a connection of their own
        self._closed = False

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def __aenter__(self) -> SMTPPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: MessageSource,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
    ) -> tuple[dict[str, SMTPResponse], str]:
        options = None if mail_options is None else list(mail_options)
        if not _queueable(message, options):
            return await self._send_alone(
                SMTP.sendmail, sender, recipients, message,
                mail_options=options, rcpt_options=rcpt_options,
            )  # fmt: skip
        rcpt = None if rcpt_options is None else list(rcpt_options)
        return await self._enqueue(Job(sender, recipients, message, options, rcpt, False))

    async def send_message(
        self,
        message: Any,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
    ) -> tuple[dict[str, SMTPResponse], str]:
        options = None if mail_options is None else list(mail_options)
        if not _queueable(b"", options):
            return await self._send_alone(
                SMTP.send_message, message, sender=sender, recipients=recipients,
                mail_options=options, rcpt_options=rcpt_options,
            )  # fmt: skip
        rcpt = None if rcpt_options is None else list(rcpt_options)
        return await self._enqueue(Job(sender, recipients, message, options, rcpt, True))

    async def close(self) -> None:
        """QUIT every idle connection, and wait for the sends already accepted to
        end (each connection in use says QUIT after its last one)."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(entry.client) for entry in idle))
        if self._workers:
            await asyncio.wait(list(self._workers))

    # -- the queue: pipelined sends ----------------------------------------------------

    async def _enqueue(self, job: Job) -> Result:
        if self._closed:
            raise SMTPException("The pool is closed")
        self._queue.append(job)
        self._start_worker()
        # A caller cancelled here cancels the future: a worker skips it if it is
        # still queued; once taken, its message may be on the wire and goes on.
        return await job.future

    def _start_worker(self) -> None:
        if self._queue and self._working < self.max_connections:
            self._working += 1
            worker = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        """Connections one after another, taking queued sends until the queue is
        empty, or until a send waits for a connection of its own (a stream): then
        this worker ends, so that a busy queue cannot starve it; that send starts
        a worker again when it is done."""
        try:
            async with self._slot():
                while not self._waiting_alone and (job := self._queue.take()) is not None:
                    try:
                        client, sent = await self._checkout()
                    except Exception as error:
                        job.fail(error)  # each send tries a connection of its own, as before
                        continue
                    except BaseException:
                        job.future.cancel()
                        raise
                    sent = await serve(
                        client, job, self._queue, sent, self.max_messages_per_connection,
                        yielding=lambda: self._waiting_alone > 0,
                    )  # fmt: skip
                    await self._checkin(client, sent)
        finally:
            # No await since the queue was found empty: a send queued from now on
            # starts a worker of its own.
            self._working -= 1

    def _slot(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        return self._slots

    # -- a connection of its own: sends that cannot be queued ---------------------------

    async def _send_alone(
        self, method: Callable[..., Awaitable[_Result]], *args: Any, **kwargs: Any
    ) -> _Result:
        """Run one send in its caller's task on a connection of its own, as a plain
        client would: cancelling the caller stops it."""
        if self._closed:
            raise SMTPException("The pool is closed")
        slots = self._slot()
        self._waiting_alone += 1  # busy workers hand their slot over
        try:
            await slots.acquire()
        finally:
            self._waiting_alone -= 1
        try:
            client, sent = await self._checkout()
            try:
                result = await method(client, *args, **kwargs)
            except _REFUSALS:
                # This message was refused; the connection is still in step (sendmail
                # sent RSET) if it is still connected.
                await self._checkin(client, sent)
                raise
            except BaseException:
                # Broken or cancelled halfway: the connection may be out of step.
                client.close()
                raise
            await self._checkin(client, sent + 1)
            return result
        finally:
            slots.release()
            self._start_worker()  # for sends a worker left queued when this one waited

    # -- connections ----------------------------------------------------------------------

    async def _checkout(self) -> tuple[SMTP, int]:
        now = time.monotonic()
        while self._idle:
            entry = self._idle.pop()
            idle_for = now - entry.since
            if idle_for > self.idle_timeout or not entry.client.is_connected:
                await _quit(entry.client)
                continue
            if idle_for < self.check_after:
                # Just used and still open (a close by the server would have been
                # seen): a check would only add a round trip per message.
                return entry.client, entry.sent
            try:
                await entry.client.rset()
            except (*_BROKEN, SMTPResponseException):
                entry.client.close()
                continue
            return entry.client, entry.sent
        client = self._client_factory(**self._smtp_options)
        await client.connect()
        return client, 0

    async def _checkin(self, client: SMTP, sent: int) -> None:
        if self._closed or not client.is_connected or sent >= self.max_messages_per_connection:
            # Retired while its slot is still held, so the server never sees more
            # than max_connections connections at once.
            await _quit(client)
            return
        self._idle.append(_Idle(client, time.monotonic(), sent))


async def _quit(client: SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit()
    except (*_BROKEN, SMTPResponseException):
        pass
    finally:
        client.close()


def _queueable(message: object, mail_options: list[str] | None) -> bool:
    """Whether a send can wait in the queue, to be pipelined with others: an
    in-memory message without the options whose checks only sendmail makes (its
    server-dependent limits, PIPELINING and CHUNKING, are checked once a connection
    has taken it)."""
    if not isinstance(message, _IN_MEMORY):
        return False
    return not mail_options or not {o.upper() for o in mail_options} & _ALONE_OPTIONS
