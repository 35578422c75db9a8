"""``SMTPPool``: many tasks sending through a bounded set of reused connections.

aiosmtplib leaves this to the application (its issue #45); opening a connection
per message costs a TCP (and often TLS) handshake, a greeting and an EHLO.  The
pool keeps at most ``max_connections`` open, hands each send a connection of its
own, checks a connection idle for more than ``check_after`` seconds with RSET
before reusing it (so a connection the server dropped while idle is replaced,
not failed on), retires a connection after
``max_messages_per_connection`` messages or ``idle_timeout`` seconds idle, and
closes everything on ``close()`` / ``async with`` exit.

A send is never retried once its MAIL command may have been written, so a
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


@dataclass
class _Idle:
    client: SMTP
    since: float
    sent: int


class SMTPPool:
    """``SMTPPool(hostname=..., port=..., max_connections=10, ...)``; the other
    keyword arguments are :class:`~smtpwire.client.smtp.SMTP`'s."""

    def __init__(
        self,
        *,
        max_connections: int = 10,
        max_messages_per_connection: int = 100,
        idle_timeout: float = 60.0,
        check_after: float = 1.0,
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
        SMTP(**smtp_options)  # refuse a bad configuration now, not at the first send
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[_Idle] = []
        self._sent: dict[int, int] = {}
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
        return await self._send(
            SMTP.sendmail, sender, recipients, message,
            mail_options=mail_options, rcpt_options=rcpt_options,
        )  # fmt: skip

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
        return await self._send(
            SMTP.send_message, message, sender=sender, recipients=recipients,
            mail_options=mail_options, rcpt_options=rcpt_options,
        )  # fmt: skip

    async def close(self) -> None:
        """QUIT every idle connection; connections in use close when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(entry.client) for entry in idle))

    async def _send(
        self, method: Callable[..., Awaitable[_Result]], *args: Any, **kwargs: Any
    ) -> _Result:
        """Run one send on a connection of its own (plain code, not a context
        manager: this is the pool's per-message path)."""
        if self._closed:
            raise SMTPException("The pool is closed")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        async with self._slots:
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
        client = SMTP(**self._smtp_options)
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
