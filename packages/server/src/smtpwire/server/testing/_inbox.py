"""What the test server received: each message with its envelope, its bytes, its
parsed form, its session's transcript and its TLS and AUTH facts; and an inbox a test
waits on, from a plain function or a coroutine, without polling.

Messages are added from the server's thread, after the server's 250 reply to them
has been written, and read from the test's thread or event loop.
"""

from __future__ import annotations

import email
import email.policy
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from ._wakeup import Waiter, waiter_for_running_framework

__all__ = ["Inbox", "InboxTimeout", "ReceivedMessage"]

Predicate = Callable[["ReceivedMessage"], bool]


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes  # as received, dot-unstuffed
    mail_options: tuple[str, ...] = ()
    rcpt_options: tuple[str, ...] = ()
    peer: Any = None
    helo: str | None = None  # the name the client gave in HELO/EHLO/LHLO
    tls: bool = False
    tls_version: str | None = None  # "TLSv1.3", …
    authenticated: bool = False
    auth_login: str | None = None  # the user name AUTH was given, never the password
    transcript: tuple[str, ...] = ()  # "C: MAIL FROM:<a@b>", "S: 250 OK", … up to the 250
    received_at: float = field(default_factory=time.time)

    @functools.cached_property
    def message(self) -> EmailMessage:
        """The message parsed with the ``email.policy.default`` policy."""
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)  # noqa: S101 - the default policy makes one
        return parsed

    @property
    def subject(self) -> str | None:
        value = self.message["Subject"]
        return None if value is None else str(value)

    @property
    def text(self) -> str:
        """The plain-text body (the preferred text part of a multipart message),
        decoded, with its line ends as ``\\n``."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content()).replace("\r\n", "\n")

    def __repr__(self) -> str:
        return (
            f"<ReceivedMessage from {self.mail_from!r} to {list(self.rcpt_tos)!r} "
            f"subject={self.subject!r} {len(self.raw)} octets>"
        )


class InboxTimeout(AssertionError):
    """``wait_for`` ran out of time; the message says what did arrive."""


class Inbox:
    """Thread-safe, in arrival order.  ``wait_for`` blocks the calling thread;
    ``wait_for_async`` suspends the calling coroutine (asyncio, uvloop or trio, directly
    or through anyio)."""

    def __init__(self) -> None:
        self._messages: list[ReceivedMessage] = []
        self._changed = threading.Condition()
        self._async_waiters: set[Waiter] = set()

    # -- reading ------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._changed:
            return list(self._messages)

    def __len__(self) -> int:
        with self._changed:
            return len(self._messages)

    def __iter__(self) -> Iterator[ReceivedMessage]:
        return iter(self.messages)

    def __getitem__(self, index: int) -> ReceivedMessage:
        return self.messages[index]

    @property
    def last(self) -> ReceivedMessage:
        messages = self.messages
        if not messages:
            raise LookupError("the inbox is empty")
        return messages[-1]

    def find(
        self,
        *,
        to: str | None = None,
        sender: str | None = None,
        predicate: Predicate | None = None,
    ) -> list[ReceivedMessage]:
        """The messages so far that match every filter given."""
        check = _matcher(to, sender, predicate)
        return [message for message in self.messages if check(message)]

    def clear(self) -> None:
        with self._changed:
            self._messages.clear()

    # -- waiting ------------------------------------------------------------------

    def wait_for(
        self,
        count: int = 1,
        *,
        timeout: float = 5.0,
        to: str | None = None,
        sender: str | None = None,
        predicate: Predicate | None = None,
    ) -> list[ReceivedMessage]:
        """Block until ``count`` messages match (sent to ``to``, from ``sender``, and
        for which ``predicate`` is true); return them.  Raises :class:`InboxTimeout`."""
        check = _matcher(to, sender, predicate)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [message for message in self._messages if check(message)]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    break
                self._changed.wait(remaining)
            arrived = list(self._messages)
        if len(found) < count:
            raise InboxTimeout(_describe_shortfall(count, len(found), timeout, arrived))
        return found

    async def wait_for_async(
        self,
        count: int = 1,
        *,
        timeout: float = 5.0,
        to: str | None = None,
        sender: str | None = None,
        predicate: Predicate | None = None,
    ) -> list[ReceivedMessage]:
        """:meth:`wait_for` for coroutines: the event loop keeps running meanwhile.
        Runs under asyncio (uvloop too) or trio, directly or through anyio."""
        check = _matcher(to, sender, predicate)
        deadline = time.monotonic() + timeout
        while True:
            waiter = waiter_for_running_framework()
            with self._changed:
                found = [message for message in self._messages if check(message)]
                arrived = list(self._messages)
                if len(found) < count:
                    self._async_waiters.add(waiter)
            if len(found) >= count:
                return found
            try:
                woken = await waiter.wait(deadline - time.monotonic())
            finally:
                with self._changed:
                    self._async_waiters.discard(waiter)
            if not woken and time.monotonic() >= deadline:
                raise InboxTimeout(_describe_shortfall(count, len(found), timeout, arrived))

    # -- the server's side -------------------------------------------------------

    def add(self, message: ReceivedMessage) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()
            waiters = list(self._async_waiters)
        for waiter in waiters:
            waiter.wake()


def _matcher(to: str | None, sender: str | None, predicate: Predicate | None) -> Predicate:
    wanted_to = None if to is None else to.lower()
    wanted_sender = None if sender is None else sender.lower()

    def check(message: ReceivedMessage) -> bool:
        if wanted_to is not None and wanted_to not in (r.lower() for r in message.rcpt_tos):
            return False
        if wanted_sender is not None and message.mail_from.lower() != wanted_sender:
            return False
        return predicate is None or bool(predicate(message))

    return check


def _describe_shortfall(
    count: int, found: int, timeout: float, arrived: list[ReceivedMessage]
) -> str:
    listing = "".join(f"\n  {message!r}" for message in arrived) or " none"
    return (
        f"expected {count} matching message(s) within {timeout} s, {found} matched; "
        f"the inbox holds {len(arrived)}:{listing}"
    )
