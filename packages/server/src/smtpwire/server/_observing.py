"""The engine's side of the observer seam (:mod:`smtpwire.server.observe`): telling
the observer of command lines and accepted messages, and carrying out what it asks
for before the greeting, a command or a message's reply.

The replies are reported where they are queued (``Connection._queue_reply``), the
calls are placed in the session's flow by the engine (``SessionProtocol._command``
and ``_open_session``, ``SMTP._complete_message`` and ``_reply_to_message``), each
behind one ``observer is None`` check, so a server without an observer pays nothing
more."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from smtpwire.common.errors import ProtocolError
from smtpwire.common.mail_parameters import parse_bdat
from smtpwire.common.server_input import ExactBytes, Inbound
from smtpwire.common.server_session import START_MAIL_INPUT

from ._connection import Connection
from ._content import MessageContent
from .observe import Drop, Intervention, Observer
from .session import Envelope, PeerType

__all__ = ["ObserverMixin", "sanitize"]

log = logging.getLogger("mail.log")


class ObserverMixin:
    """The observer's calls and interventions, for the session engine.

    It comes after :class:`~smtpwire.server._connection.Connection` among the
    engine's bases, so that the engine's methods, not the stubs below, answer for
    what the engine provides."""

    # -- what the session engine provides -----------------------------------------------

    transport: asyncio.Transport | None
    envelope: Envelope
    _inbound: Inbound
    _observer: Observer | None
    _closing: bool
    _current_command: str | None

    def _describe_peer(self) -> PeerType:
        raise NotImplementedError

    def _tell_observer(self, method: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def _queue_reply(self, status: str | bytes) -> bool:
        raise NotImplementedError

    def _encode_reply(self, status: str) -> bytes:
        raise NotImplementedError

    async def push(self, status: str | bytes) -> None:
        raise NotImplementedError

    async def _reply(self, status: str | bytes) -> None:
        raise NotImplementedError

    async def _flush_and_drain(self) -> None:
        raise NotImplementedError

    async def _wait_for_input(self) -> None:
        raise NotImplementedError

    async def _read_message(
        self,
        decoder: Any,
        sink: Callable[[bytes], Awaitable[object]] | None = None,
        *,
        wake_at: int = 0,
    ) -> bool:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    def _set_post_data_state(self) -> None:
        raise NotImplementedError

    async def _refuse_message(self, status: str) -> None:
        raise NotImplementedError

    # -- observing ------------------------------------------------------------------------

    async def _observe_command(self, line: bytes) -> bool:
        """Tell the observer of a command line and carry out its intervention, if
        any; True when the command is then carried out as usual."""
        assert self._observer is not None  # noqa: S101 - the caller checked
        shown = sanitize(line)  # no credentials, as in the log
        self._tell_observer(self._observer.command_received, shown)
        verb = shown.partition(b" ")[0].rstrip(b"\r").upper().decode("ascii", "replace")
        intervention = self._intercept(verb, shown)
        if intervention is None:
            return True
        self._current_command = verb  # for its reply's enhanced status code
        return await self._intervene(intervention, verb, line)

    def _intercept(self, command: str, line: bytes) -> Intervention | None:
        """What the observer wants done before ``command`` (None: go on as usual)."""
        assert self._observer is not None  # noqa: S101 - the caller checked
        found = self._tell_observer(self._observer.intercept, command, line)
        if found is not None and not isinstance(found, Intervention):
            log.error("%r observer's intercept returned %r", self._describe_peer(), found)
            return None
        return found

    async def _wait_or_drop(self, intervention: Intervention, command: str) -> bool:
        """Wait as the intervention says, then drop the connection if it says so;
        False when the connection is gone."""
        if intervention.delay:
            await asyncio.sleep(intervention.delay)  # asked for: a slow server
        drop = intervention.drop
        if drop is Drop.DURING_DATA:
            if command == "DATA":
                await self._reply(START_MAIL_INPUT)
                await self._flush_and_drain()
                if not self._inbound.buffered:
                    await self._wait_for_input()  # the message starts to arrive
            if self.transport is not None:
                self.transport.abort()  # unread input: the client sees a reset
        if drop is not None:
            self._close_transport()
        return not self._closing

    async def _intervene(self, intervention: Intervention, command: str, line: bytes = b"") -> bool:
        """Carry out an intervention before the greeting ("CONNECT") or a command
        line; True when the command is then carried out as usual."""
        if not await self._wait_or_drop(intervention, command):
            return False
        if intervention.reply is None:
            return True
        close = command == "CONNECT"  # the reply replaces the greeting
        if command == "BDAT":
            # The chunk is read and dropped: its octets are never taken for commands.
            try:
                size = parse_bdat(line.partition(b" ")[2].decode("utf-8", "replace")).size
            except ProtocolError:
                close = True  # where the chunk ends is unknown
            else:
                if size and not await self._read_message(ExactBytes(size, keep=False)):
                    return False
        await self._reply(intervention.reply)
        if close:
            self._close_transport()
        return False

    async def _observer_lets_through(self, content: MessageContent) -> bool:
        """The observer's intervention at the end of a message's data ("MESSAGE");
        True when the handler then gets the message as usual."""
        intervention = self._intercept("MESSAGE", b"")
        if intervention is None:
            return True
        if not await self._wait_or_drop(intervention, "MESSAGE"):
            content.abort("connection dropped")
            self._set_post_data_state()
            return False
        if intervention.reply is None:
            return True
        content.abort("refused")
        await content.settled()
        await self._refuse_message(intervention.reply)  # LMTP: for every recipient
        return False

    async def _reply_and_report(self, replies: Sequence[str | bytes], envelope: Envelope) -> None:
        """The replies to a message the handler answered; when one is positive, the
        observer is told after they are queued and before they are written, in one
        step of the loop (a subclass's own ``push`` writes them first)."""
        assert self._observer is not None  # noqa: S101 - the caller checked
        own_push = cast("object", type(self).push) is Connection.push
        for reply in replies:
            if own_push:
                self._queue_reply(reply)
            else:
                await self.push(reply)
        wire = [r if isinstance(r, bytes) else self._encode_reply(r) for r in replies]
        transport = self.transport
        if (
            any(reply[:1] == b"2" for reply in wire)
            and not self._closing
            and transport is not None
            and not transport.is_closing()
        ):
            shown = tuple(reply.decode("utf-8", "replace") for reply in wire)
            self._tell_observer(self._observer.message_accepted, envelope, shown)
        await self._flush_and_drain()


def sanitize(line: bytes) -> bytes:
    """Keep credentials out of logs: an AUTH line shows only its mechanism."""
    if line[:5].upper() == b"AUTH ":
        words = line.split(b" ")
        return b" ".join([*words[:2], b"********"]) if len(words) > 2 else line
    return line
