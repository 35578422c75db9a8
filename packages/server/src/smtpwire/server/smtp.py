"""The SMTP server protocol, with aiosmtpd's public API and reply texts.

One :class:`SMTP` instance serves one connection.  Handlers are duck-typed as in
aiosmtpd: every ``handle_VERB`` attribute of the handler is a hook that, when
present, owns the state change for that command and returns the reply line.
Subclasses add commands with ``async def smtp_VERB(self, arg)`` and document
them for HELP with :func:`syntax`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from smtpwire.common.data import DataDecoder
from smtpwire.common.server_commands import (
    BARE_NEWLINE_IN_DATA,
    CommandSyntax,
    argument_refusal,
    help_reply,
    message_refusal,
    read_vrfy,
)
from smtpwire.common.server_input import ExactBytes
from smtpwire.common.server_rules import (
    ALLOWED_BEFORE_STARTTLS,
    BOGUS_LIMIT,
    CALL_LIMIT_DEFAULT,
    STRICT_ASCII,
    decode_text,
)
from smtpwire.common.server_session import START_MAIL_INPUT

from ._auth import VALID_AUTHMECH, auth_mechanism, login_always_fail
from ._content import Accumulated, MessageContent, Streamed
from ._log_lines import log_handshake_failure, log_transaction, transaction_facts
from ._observing import sanitize
from ._protocol import (
    DATA_SIZE_DEFAULT,
    SessionProtocol,
    TLSSetupException,
    __ident__,
    ssl_facts,
)
from ._syntax import syntax
from ._tls import start_tls
from .session import (
    MISSING,
    AuthCallbackType,
    AuthenticatorType,
    AuthResult,
    Envelope,
    LoginPassword,
    PeerType,
    Session,
)

__all__ = [
    "ALLOWED_BEFORE_STARTTLS",
    "BOGUS_LIMIT",
    "CALL_LIMIT_DEFAULT",
    "DATA_SIZE_DEFAULT",
    "MISSING",
    "SMTP",
    "VALID_AUTHMECH",
    "AuthCallbackType",
    "AuthResult",
    "AuthenticatorType",
    "Envelope",
    "LoginPassword",
    "PeerType",
    "Session",
    "TLSSetupException",
    "__ident__",
    "auth_mechanism",
    "login_always_fail",
    "sanitize",
    "syntax",
]

__version__ = "0.1.0"

log = logging.getLogger("mail.log")


class SMTP(SessionProtocol):
    """One SMTP session over one connection (an :class:`asyncio.Protocol`)."""

    # When the transaction's MAIL was read, for its log line; set only while
    # mail.log's INFO is on (the instance's __dict__ is made only then).
    _mail_at: float | None = None

    # -- greeting commands ----------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if (refusal := argument_refusal("HELO", hostname)) is not None:
            await self._reply(refusal)
            return
        self._set_rset_state()
        self.session.extended_smtp = False
        status = await self._call_handler_hook("HELO", hostname)
        if status is MISSING:
            self.session.host_name = hostname
            status = f"250 {self.hostname}"
        await self._reply(status)

    def _ehlo_lines(self) -> list[str]:
        """The planned EHLO reply, in aiosmtpd's keyword order."""
        return self._state_machine.ehlo_lines(
            self._ehlo_auth_line(), self.extensions.ehlo_keywords()
        )

    async def _greet_extended(self, hostname: str | None, verb: str) -> None:
        if (refusal := argument_refusal(verb, hostname)) is not None:
            await self._reply(refusal)
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        lines = self._ehlo_lines()
        if hasattr(self, "ehlo_hook"):
            _deprecated("handle_EHLO", "ehlo_hook")
            await self.ehlo_hook()
        if self._hooks.ehlo_version is None:
            self.session.host_name = hostname
            lines.append("250 HELP")
        elif self._hooks.ehlo_version == "old":
            for line in lines:
                await self._reply(line)
            lines = [await self._call_handler_hook("EHLO", hostname)]
        else:
            lines.append("250 HELP")
            lines = list(await self._call_handler_hook("EHLO", hostname, lines))
        for line in lines:
            await self._reply(line)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._greet_extended(hostname, "EHLO")

    # -- simple commands ---------------------------------------------------------------------

    @syntax("NOOP [ignored]")
    async def smtp_NOOP(self, arg: str | None) -> None:
        status = await self._call_handler_hook("NOOP", arg)
        await self._reply("250 OK" if status is MISSING else status)

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str | None) -> None:
        if (refusal := argument_refusal("QUIT", arg)) is not None:
            await self._reply(refusal)
            return
        status = await self._call_handler_hook("QUIT")
        await self._reply("221 Bye" if status is MISSING else status)
        self._close_transport()

    @syntax("RSET")
    async def smtp_RSET(self, arg: str | None) -> None:
        if (refusal := argument_refusal("RSET", arg)) is not None:
            await self._reply(refusal)
            return
        self._set_rset_state()
        if hasattr(self, "rset_hook"):
            _deprecated("handle_RSET", "rset_hook")
            await self.rset_hook()
        status = await self._call_handler_hook("RSET")
        await self._reply("250 OK" if status is MISSING else status)

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str | None) -> None:
        if await self.check_auth_needed("HELP"):
            return
        methods: Mapping[str, Any] = self._smtp_methods  # @syntax sets untyped attributes
        documented = {
            verb: CommandSyntax(method.__smtp_syntax__, method.__smtp_syntax_extended__)
            for verb, method in methods.items()
            if self._syntax_available(method)
        }
        await self._reply(help_reply(arg, documented, extended=self.session.extended_smtp))

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str | None) -> None:
        if await self.check_auth_needed("VRFY"):
            return
        request = read_vrfy(arg, utf8=self.enable_SMTPUTF8)
        if isinstance(request, str):
            await self._reply(request)
            return
        status = await self._call_handler_hook("VRFY", request.address)
        await self._reply(
            "252 Cannot VRFY user, but will accept message and attempt delivery"
            if status is MISSING
            else status
        )

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self._reply("502 EXPN not implemented")

    # -- STARTTLS (AUTH is _auth.AuthMixin's) ------------------------------------------------

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if (refusal := self._state_machine.starttls(arg)) is not None:
            await self._reply(refusal)
            return
        assert self.tls_context is not None  # noqa: S101 - available says so
        await self._reply("220 Ready to start TLS")
        await self._start_tls(self.tls_context)

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        # Whatever the client sent after STARTTLS arrived in plaintext and must
        # never be executed (CVE-2011-0411, aiosmtpd's CVE-2024-34083).  No await
        # comes between this and start_tls taking the transport over, and from
        # then on every byte received is decrypted: nothing is discarded later,
        # or the client's first command over TLS could be lost.
        await self._flush_and_drain()
        self._discard_input()
        try:
            tls_transport = await self._handshake(context)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            raise TLSSetupException("TLS handshake failed") from error
        if tls_transport is None:
            return
        peer = self._describe_peer()
        self._set_rset_state()
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = ssl_facts(tls_transport)
        hook = self._hooks.names.get("STARTTLS")
        if hook is not None:
            handshake_okay = getattr(self.event_handler, hook)(self, self.session, self.envelope)
            self._state_machine.tls_established(accepted=bool(handshake_okay))

    async def _implicit_handshake(self) -> bool:
        assert self._implicit_tls is not None  # noqa: S101 - the caller checked
        # On uvloop and Python 3.10 the paused transport may have read the
        # ClientHello already: it is the handshake's first input.
        early, self._before_tls = b"".join(self._before_tls or ()), None
        try:
            tls_transport = await self._handshake(self._implicit_tls, early)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            return False
        if tls_transport is None:
            return False
        self.session.ssl = ssl_facts(tls_transport)
        return True

    async def _handshake(
        self, context: ssl.SSLContext, early: bytes = b""
    ) -> asyncio.Transport | None:
        """Upgrade the connection to TLS; None if the client went away meanwhile.
        A failed handshake ends the connection (its error is raised): the socket
        is closed, but this protocol is not told.

        The server's own TLS layer (:mod:`smtpwire.server._tls`), not
        ``loop.start_tls``: asyncio's drops every reply written after the client's
        close_notify, and a client may send its last commands, close_notify and
        a half-close in one flight before reading the replies (Exim does)."""
        transport = self.transport
        if transport is None:
            return None
        try:
            tls_transport = await start_tls(
                self.loop, transport, self, context, server_side=True, initial_data=early
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            log_handshake_failure(self._describe_peer(), error)
            self.connection_lost(error)
            if isinstance(error, ConnectionError):
                return None  # a reset or an EOF: nothing to report
            raise
        self.transport = tls_transport
        self._state_machine.tls_established()
        return tls_transport

    # -- the mail transaction -----------------------------------------------------------------

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._may_refuse_transaction() and (
            await self.check_helo_needed() or await self.check_auth_needed("MAIL")
        ):
            return
        machine = self._state_machine
        request = machine.mail(arg)
        if isinstance(request, str):
            await self._reply(request)
            return
        machine.note_mail_parameters(request)
        status = (
            await self._call_handler_hook("MAIL", request.address, request.options)
            if "MAIL" in self._hooks.names
            else MISSING
        )
        if status is MISSING:
            status = machine.accept_mail(request)
        log.info("%r sender: %s", self.session.peer, request.address)
        if log.isEnabledFor(logging.INFO):
            self._mail_at = time.monotonic()
        await self._reply(status)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if self._may_refuse_transaction() and (
            await self.check_helo_needed() or await self.check_auth_needed("RCPT")
        ):
            return
        machine = self._state_machine
        request = machine.rcpt(arg)
        if isinstance(request, str):
            await self._reply(request)
            return
        status = (
            await self._call_handler_hook("RCPT", request.address, request.options)
            if "RCPT" in self._hooks.names
            else MISSING
        )
        if status is MISSING:
            status = machine.accept_rcpt(request)
        machine.note_rcpt_dsn(request, status)
        log.info("%r recip: %s", self.session.peer, request.address)
        await self._reply(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if self._may_refuse_transaction() and (
            await self.check_helo_needed() or await self.check_auth_needed("DATA")
        ):
            return
        if (refusal := self._state_machine.data(arg)) is not None:
            await self._reply(refusal)
            return
        await self._reply(START_MAIL_INPUT)
        await self._receive_data()

    @syntax("BDAT <size> [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        """CHUNKING (RFC 3030): the chunk's octets follow the command line exactly.
        They are always read, even when the chunk is refused, so that no byte of a
        message is ever taken for a command."""
        machine = self._state_machine
        step = machine.bdat(arg)
        if isinstance(step, str):
            # Without a size the chunk's end is unknown: its bytes must never be read
            # as commands, so the connection ends here.
            await self._reply(step)
            self._close_transport()
            return
        bdat, refusal, endings = step.command, step.refusal, step.endings
        if step.first:
            self._bdat_content = self._open_content()
        content = self._bdat_content

        async def take(data: bytes) -> None:
            if content is not None and endings is not None:
                await content.write(endings.feed(data))

        complete = True
        if bdat.size:
            complete = await self._read_message(
                ExactBytes(bdat.size, keep=refusal is None),
                take,
                wake_at=content.wake_at if content is not None else 0,
            )
        if not complete:
            log.info("%r connection lost during BDAT", self._describe_peer())
            self._set_post_data_state()
            return
        if refusal is not None:
            if bdat.last and self.envelope.rcpt_tos:
                await self._refuse_message(refusal)  # the end of the message's data
                return
            if self.envelope.rcpt_tos:
                self._set_post_data_state()  # the transaction failed (RFC 3030 section 4.2)
            await self._reply(refusal)
            return
        assert content is not None  # noqa: S101 - set above
        assert endings is not None  # noqa: S101
        machine.bdat_taken(bdat.size)
        if endings.refused:
            content.abort("bare <CR> or <LF> in the message")
        if not bdat.last:
            await self._reply(f"250 OK {bdat.size} octets received")
            return
        await content.write(endings.flush())
        if endings.refused:
            await content.settled()
            await self._refuse_message(BARE_NEWLINE_IN_DATA)
            return
        self._bdat_content = None  # the message is complete: no longer to be aborted
        await self._complete_message(content)

    def _open_content(self) -> MessageContent:
        """Where the next message goes: to ``handle_DATA_STREAM`` as it arrives if
        the handler has that hook, otherwise kept whole for ``handle_DATA``."""
        if "DATA_STREAM" in self._hooks.names:
            return Streamed(functools.partial(self._call_handler_hook, "DATA_STREAM"))
        return Accumulated()

    async def _receive_data(self) -> None:
        """Read a DATA message through its terminator, then deliver or refuse it."""
        decoder = self._state_machine.data_decoder()
        content = self._open_content()
        complete = await self._read_message(decoder, content.write, wake_at=content.wake_at)
        await self._data_received(decoder, content, complete=complete)

    def _receive_data_in_callback(self) -> None:
        # For handle_DATA (or no hook): the message is kept whole in any case, and
        # its reception runs no application code, so no task waits for its octets.
        decoder = self._state_machine.data_decoder()
        content = Accumulated()
        message = _DataInCallback(self, decoder, content)
        self._read_message_in_callback(decoder, message, wake_at=content.wake_at)

    async def _data_received(
        self, decoder: DataDecoder, content: MessageContent, *, complete: bool
    ) -> None:
        """Deliver or refuse a DATA message that ended (or was cut short: not
        ``complete``)."""
        if not complete:
            log.info("%r connection lost during DATA", self._describe_peer())
            content.abort("connection lost")
            self._set_post_data_state()
            return
        if decoder.violation is not None:
            content.abort(f"refused: {decoder.violation.name}")
            await content.settled()
            await self._refuse_message(message_refusal(decoder.violation))
            return
        await self._complete_message(content)

    async def _complete_message(self, content: MessageContent) -> None:
        verdict: Callable[[], Awaitable[Any]] = self._call_data_hook
        if isinstance(content, Streamed):
            verdict = content.finish
        elif (refusal := self._store_content(content.value())) is not None:
            await self._refuse_message(refusal)
            return
        if self._observer is None or await self._observer_lets_through(content):
            await self._deliver(verdict)

    def _store_content(self, original_content: bytes) -> str | None:
        """Put a received message on the envelope, decoded if the server decodes;
        the error reply if it cannot be."""
        content: bytes | str | None = original_content
        if self._decode_data:
            content = decode_text(original_content, utf8=self.enable_SMTPUTF8)
            if content is None:
                return STRICT_ASCII
        self.envelope.content = content
        self.envelope.original_content = original_content
        return None

    async def _deliver(self, handler_verdict: Callable[[], Awaitable[Any]]) -> None:
        """Hand the received message to the handler and reply.  The end of data ends
        the transaction, even when the handler fails (RFC 5321 section 4.1.1.4)."""
        envelope: Envelope | None = self.envelope  # the observer's, if accepted
        recipients = len(self.envelope.rcpt_tos)
        facts = self._transaction_facts()
        try:
            status = await handler_verdict()
        except (ConnectionResetError, asyncio.CancelledError):
            self._set_post_data_state()
            raise  # the client is gone: nothing to answer
        except Exception as error:
            # Its reply is the message's reply: an LMTP client expects one per recipient.
            self._set_post_data_state()
            status = await self._describe_exception(error)
            envelope = None
        else:
            self._set_post_data_state()
        status = MISSING if status is None else status
        await self._reply_to_message(status, recipients, envelope)
        if facts is not None:
            log_transaction(facts, "250" if status is MISSING else status)

    async def _refuse_message(self, status: str) -> None:
        """End the transaction with a refusal of the message just received."""
        recipients = len(self.envelope.rcpt_tos)
        facts = self._transaction_facts()
        self._set_post_data_state()
        await self._reply_to_message(status, recipients)
        if facts is not None:
            log_transaction(facts, status)

    def _transaction_facts(self) -> dict[str, Any] | None:
        """The transaction line's facts, while the envelope still holds them;
        None when mail.log's INFO is off (then nothing is gathered)."""
        if not log.isEnabledFor(logging.INFO):
            return None
        return transaction_facts(self.session, self.envelope, self._mail_at)

    async def _reply_to_message(
        self, status: Any, recipients: int, envelope: Envelope | None = None
    ) -> None:
        """The reply to the end of a message's data (LMTP: one per recipient);
        ``envelope`` is the message's when the handler gave ``status``."""
        replies = self._message_replies(status, recipients)
        if envelope is not None and self._observer is not None:
            await self._reply_and_report(replies, envelope)
            return
        for reply in replies:
            await self._reply(reply)

    def _message_replies(self, status: Any, recipients: int) -> list[Any]:
        return ["250 OK" if status is MISSING else status]

    async def _call_data_hook(self) -> Any:
        if "DATA" in self._hooks.names:
            return await self._call_handler_hook("DATA")
        process_message = getattr(self.event_handler, "process_message", None)
        if process_message is None:
            return MISSING
        _deprecated("handle_DATA", "process_message")
        result = process_message(
            self.session.peer,
            self.envelope.mail_from,
            self.envelope.rcpt_tos,
            self.envelope.content,
        )
        if inspect.isawaitable(result):
            result = await result
        return MISSING if result is None else result


SMTP._RUNNERLESS_COMMANDS = MappingProxyType(
    {
        "NOOP": SMTP.smtp_NOOP,
        "MAIL": SMTP.smtp_MAIL,
        "RCPT": SMTP.smtp_RCPT,
        "DATA": SMTP.smtp_DATA,
    }
)


class _DataInCallback:
    """A DATA message received by the read callback (see
    :meth:`SMTP._receive_data_in_callback`); the runner started at its end
    delivers it, in a task like every hook."""

    __slots__ = ("_content", "_decoder", "_server")

    def __init__(self, server: SMTP, decoder: DataDecoder, content: Accumulated) -> None:
        self._server = server
        self._decoder = decoder
        self._content = content

    def take(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._content.append(chunk)

    async def finish(self) -> None:
        inbound = self._server._inbound
        self.take(inbound.take_content())
        complete = not inbound.reading_message
        if not complete:
            inbound.abandon_message()
        await self._server._data_received(self._decoder, self._content, complete=complete)


def _deprecated(hook: str, old: str) -> None:
    """aiosmtpd's warning for an old-style hook, pointed at the caller of the
    method that found it."""
    warnings.warn(f"Use handler.{hook}() instead of .{old}()", DeprecationWarning, stacklevel=3)
