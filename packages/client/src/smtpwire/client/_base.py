"""The command layer under :class:`~smtpwire.client.smtp.SMTP`: configuration,
the command/reply exchange (timeouts, cancellation, 421), and every single
command; connecting, STARTTLS and whole-message sending are in ``smtp.py``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from smtpwire.common.commands import format_command
from smtpwire.common.errors import ProtocolError
from smtpwire.common.extensions import Extensions, parse_ehlo_reply
from smtpwire.common.replies import SMTPReply

from ._auth import AuthMixin
from ._envelope import bare_mailbox, envelope_line
from ._payload import MessageSource, Payload
from .errors import (
    SMTPDataError,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .esmtp import extension_maps
from .protocol import SMTPProtocol, _QuitAcknowledged
from .response import SMTPResponse
from .typing import Default, DefaultNumType, SMTPTokenGenerator, SocketPathType, _default

__all__ = ["DEFAULT_TIMEOUT", "SMTP_PORT", "SMTP_STARTTLS_PORT", "SMTP_TLS_PORT", "ClientBase"]

SMTP_PORT: Final = 25
SMTP_TLS_PORT: Final = 465
SMTP_STARTTLS_PORT: Final = 587
DEFAULT_TIMEOUT: Final = 60.0
# How long quit() waits for the server to end the connection once it said 221.
QUIT_CLOSE_GRACE: Final = 1.0


class ClientBase(AuthMixin):
    def __init__(
        self,
        *,
        hostname: str | None = None,
        port: int | None = None,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        oauth_token_generator: SMTPTokenGenerator | None = None,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        use_tls: bool = False,
        start_tls: bool | None = None,
        validate_certs: bool = True,
        client_cert: str | None = None,
        client_key: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        cert_bundle: str | None = None,
        socket_path: SocketPathType | None = None,
        sock: socket.socket | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        chunking: bool = False,
    ) -> None:
        self.hostname = hostname
        self.port = port
        self._login_username = username
        self._login_password = password
        self._oauth_token_generator = oauth_token_generator
        self.local_hostname = local_hostname
        self.source_address = source_address
        self.timeout = timeout
        self.use_tls = use_tls
        self._start_tls_on_connect = start_tls
        self.validate_certs = validate_certs
        self.client_cert = client_cert
        self.client_key = client_key
        self.tls_context = tls_context
        self.cert_bundle = cert_bundle
        self.socket_path = socket_path
        self.sock = sock
        self.loop = loop
        # Send with BDAT (RFC 3030) when the server offers CHUNKING: no
        # dot-stuffing, and with PIPELINING a single round trip per message.
        self.chunking = chunking
        if loop is not None:
            warnings.warn(
                "The loop argument is deprecated and ignored: the client uses the running loop",
                DeprecationWarning,
                stacklevel=2,
            )
            if start_tls is None:
                # aiosmtplib 1.x never upgraded by itself; its examples call starttls().
                self._start_tls_on_connect = False
        self._protocol: SMTPProtocol | None = None
        self.transport: asyncio.Transport | None = None
        # Why the connection is gone, when the client closed because it was lost:
        # the next command reports it (the server's 421 text, if it said one).
        self._lost_message: str | None = None
        self._reset_server_state()
        self._connect_lock: asyncio.Lock | None = None
        self._connect_under_way = False  # see _connecting
        # One whole transaction at a time: tasks sharing the client take turns.
        self._sendmail_lock: asyncio.Lock | None = None
        # Each task's open ``async with client:`` blocks, with the connection each
        # entered with (see SMTP.__aenter__).
        self._blocks: dict[asyncio.Task[Any] | None, list[SMTPProtocol | None]] = {}
        self._command_lock: asyncio.Lock | None = None
        self._validate_config()

    # -- configuration ---------------------------------------------------------------

    def _validate_config(self) -> None:
        if self._login_password is not None and self._oauth_token_generator is not None:
            raise ValueError("password and oauth_token_generator are mutually exclusive")
        if self._start_tls_on_connect and self.use_tls:
            raise ValueError("The start_tls and use_tls options are not compatible.")
        if self.tls_context is not None and self.client_cert is not None:
            raise ValueError(
                "Either a TLS context or a certificate/key must be provided, not both."
            )
        if self.sock is not None and self.socket_path is not None:
            raise ValueError("The socket and socket_path options are not compatible.")
        if (self.sock is not None or self.socket_path is not None) and self.port is not None:
            raise ValueError("The socket/socket_path and port options are not compatible.")
        if (
            (self.sock is not None or self.socket_path is not None)
            and self.use_tls
            and self.hostname is None
        ):
            # TLS over a given socket needs a name to check the certificate against.
            raise ValueError("If using a socket with TLS, hostname is required")
        if self.hostname is not None and any(c in self.hostname for c in "\r\n\x00"):
            raise ValueError(f"hostname contains control characters: {self.hostname!r}")
        if self.local_hostname is not None:
            self.local_hostname = checked_hostname(self.local_hostname)

    def _default_port(self) -> int:
        if self.use_tls:
            return SMTP_TLS_PORT
        if self._start_tls_on_connect:
            return SMTP_STARTTLS_PORT
        return SMTP_PORT

    def _reset_server_state(self) -> None:
        self._last_ehlo_response: SMTPResponse | None = None
        self.last_helo_response: SMTPResponse | None = None
        self._extensions = Extensions()
        self.esmtp_extensions: dict[str, str] = {}
        self.supports_esmtp = False
        self.server_auth_methods: list[str] = []
        # A transaction the caller opened with mail() and has not ended yet: sendmail()
        # then goes command by command, so the server's refusal of a nested MAIL
        # stops it before any RCPT or message data reaches the open transaction.
        self._transaction_open = False

    # -- properties ------------------------------------------------------------------

    @property
    def protocol(self) -> SMTPProtocol | None:
        return self._protocol

    @protocol.setter
    def protocol(self, protocol: SMTPProtocol | None) -> None:
        # Whoever sets it (connect(), a test), the client hears of its loss.
        if self._protocol is not None and self._protocol is not protocol:
            self._protocol.on_lost = None
        self._protocol = protocol
        if protocol is not None:
            protocol.on_lost = self._connection_lost

    @property
    def _connecting(self) -> bool:
        """A connect() holds the connect lock and is under way."""
        return self._connect_under_way

    @_connecting.setter
    def _connecting(self, under_way: bool) -> None:
        self._connect_under_way = under_way
        protocol = self._protocol
        if not under_way and protocol is not None and protocol.lost:
            # The connection was lost while connect() ran (it left the close to
            # connect()): a connect() that ends on it, even successfully, closes.
            self._connection_lost(protocol)

    @property
    def is_connected(self) -> bool:
        return self.protocol is not None and self.protocol.is_connected

    @property
    def last_ehlo_response(self) -> SMTPResponse | None:
        return self._last_ehlo_response

    @property
    def is_ehlo_or_helo_needed(self) -> bool:
        return self._last_ehlo_response is None and self.last_helo_response is None

    def supports_extension(self, extension: str, /) -> bool:
        return extension.lower() in self.esmtp_extensions

    def get_transport_info(self, key: str) -> Any:
        if self.transport is None or not self.is_connected:
            raise SMTPServerDisconnected("Server not connected")
        return self.transport.get_extra_info(key)

    def close(self) -> None:
        """Close the connection now (no QUIT)."""
        self._drop(abort=False)

    def _abort(self) -> None:
        """Drop the connection without flushing: after a timeout, a cancellation or
        a garbled reply, unsent bytes must not go out and a stalled peer must not
        keep the socket open."""
        self._drop(abort=True)

    def _connection_lost(self, protocol: SMTPProtocol) -> None:
        """``protocol``'s connection is gone (the server hung up, the network
        failed): the client closes, as aiosmtplib's does, which releases the
        connect lock, so a connect() waiting for it goes ahead.

        Not yet while a connect() is under way (it closes when it ends, see
        _connecting) or a command holds the command lock: that command may still
        read replies that arrived before the loss, and its state (EHLO's
        extensions) must not land on a client already reset; it closes when it
        fails, and _settle_if_lost() comes back here once it is done."""
        if protocol is not self._protocol or self._connecting:
            return  # an old connection, or connect() will see to it
        if self._command_lock is not None and self._command_lock.locked():
            return
        self.close()
        self._lost_message = str(protocol.not_connected())

    def _settle_if_lost(self, protocol: SMTPProtocol) -> None:
        """After a command used ``protocol``: if its connection is gone, close once
        the command's caller has done with its replies (the next loop turn)."""
        if protocol.lost:
            asyncio.get_running_loop().call_soon(self._connection_lost, protocol)

    def _drop(self, *, abort: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        elif self.transport is not None and abort:
            self.transport.abort()
        self.transport = None
        self.protocol = None
        self._lost_message = None
        self._reset_server_state()
        # A connect() under way releases the lock itself when it fails: a close()
        # from elsewhere (or a lost connection) meanwhile must not hand the lock to
        # a second connect.
        if self._connect_lock is not None and self._connect_lock.locked() and not self._connecting:
            self._connect_lock.release()

    # -- commands ------------------------------------------------------------------------

    def _timeout(self, timeout: DefaultNumType) -> float | None:
        return self.timeout if timeout is Default.token else timeout

    async def _read(
        self, protocol: SMTPProtocol, count: int, timeout: float | None
    ) -> list[SMTPReply]:
        try:
            replies = await protocol.read_replies(count, timeout)
        except asyncio.TimeoutError as error:
            # A late reply would pair with the next command: the connection is done.
            self._abort()
            raise SMTPReadTimeoutError("Timed out waiting for server response") from error
        except SMTPServerDisconnected:
            # Not a connection another connect() has opened since.
            if not protocol.quit_sent and protocol is self._protocol:
                self.close()
            raise
        except SMTPResponseException:
            self._abort()  # malformed or oversized reply: the stream is out of step
            raise
        # Replies that arrived before the connection was lost are still read; the
        # close the loss calls for follows (SMTPPool's pipelined reads come here).
        self._settle_if_lost(protocol)
        return replies

    async def _exchange(
        self,
        lines: Sequence[bytes],
        timeout: DefaultNumType,
        *,
        replies: int | None = None,
        stream: Payload | None = None,
    ) -> list[SMTPReply]:
        """Write ``lines`` in one go (then ``stream``'s chunks, each after the
        previous one drained) and read the replies in order: one per line unless
        ``replies`` says otherwise (LMTP answers a message once per recipient)."""
        protocol = self.protocol
        if protocol is None or self._command_lock is None:
            raise SMTPServerDisconnected(self._lost_message or "Server not connected")
        if not self.is_connected:
            raise protocol.not_connected()
        count = len(lines) if replies is None else replies
        wait = self._timeout(timeout)
        if stream is not None and stream.encoded is not None:
            # An in-memory message goes out in the same write as any commands.
            lines, stream = [*lines, stream.encoded], None
        try:
            async with self._command_lock:
                try:
                    protocol.expect(count)
                    if lines:
                        protocol.write(b"".join(lines))
                    if stream is not None:
                        await self._write_stream(protocol, stream, wait)
                    replies_read = await self._read(protocol, count, wait)
                except asyncio.CancelledError:
                    # The replies still on their way would answer the next commands.
                    self._abort()
                    raise
        finally:
            # Lost while this command held the lock, whichever way it ended.
            self._settle_if_lost(protocol)
        return self._after_replies(replies_read)

    async def _write_stream(
        self, protocol: SMTPProtocol, stream: Payload, timeout: float | None
    ) -> None:
        try:
            async for chunk in stream.chunks():
                protocol.write(chunk)
                if protocol.writing_paused:
                    await asyncio.wait_for(protocol.drain(), timeout)
        except asyncio.TimeoutError as error:
            self._abort()
            raise SMTPTimeoutError("Timed out sending the message") from error
        except BaseException:
            # Half a message is on the wire: the connection cannot be used again.
            self._abort()
            raise

    def _after_replies(self, replies: list[SMTPReply]) -> list[SMTPReply]:
        for reply in replies:  # a loop, not any(): this runs for every reply read
            if reply.code == 421:
                self.close()  # the server is shutting the connection down
                break
        return replies

    async def _command(self, line: bytes, timeout: DefaultNumType) -> SMTPResponse:
        return SMTPResponse.from_reply((await self._exchange([line], timeout))[0])

    async def execute_command(
        self, *args: bytes, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        """Send one raw command (arguments joined with spaces) and return its reply;
        the code is not checked.  Control characters raise ValueError."""
        if not args:
            raise ValueError("no command given")
        # aiosmtplib joins its arguments with spaces, so a whole line in the first
        # argument (b"MAIL FROM:<a@b>") is allowed: its verb is checked apart.
        verb, _, rest = args[0].partition(b" ")
        try:
            line = format_command(verb, *((rest,) if rest else ()), *args[1:])
        except ProtocolError as error:
            raise ValueError(str(error)) from error
        response = await self._command(line, timeout)
        verb = verb.upper()
        if verb == b"MAIL" and response.code == 250:
            self._transaction_open = True
        elif verb in (b"RSET", b"HELO", b"EHLO") and response.code == 250:
            self._transaction_open = False
        return response

    async def _ehlo_or_helo_if_needed(self) -> None:
        if not self.is_ehlo_or_helo_needed:
            return
        try:
            await self.ehlo()
        except SMTPHeloError:
            if not self.is_connected:
                raise
            await self.helo()

    async def helo(
        self, *, hostname: str | None = None, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        name = helo_name(hostname, self.local_hostname)
        response = await self._command(format_command("HELO", name), timeout)
        if response.code != 250:
            raise SMTPHeloError(response.code, response.message)
        self.last_helo_response = response
        self._transaction_open = False
        return response

    async def ehlo(
        self, *, hostname: str | None = None, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        name = helo_name(hostname, self.local_hostname)
        replies = await self._exchange([format_command("EHLO", name)], timeout)
        response = SMTPResponse.from_reply(replies[0])
        if response.code != 250:
            raise SMTPHeloError(response.code, response.message)
        # smtpwire.common's strict reading decides what the server supports, not
        # the aiosmtplib-exact public parse_esmtp_extensions (see esmtp.py).
        self._set_extensions(parse_ehlo_reply(replies[0]), response)
        return response

    def _set_extensions(self, extensions: Extensions, response: SMTPResponse) -> None:
        self._extensions = extensions
        self.esmtp_extensions, self.server_auth_methods = extension_maps(extensions)
        self.supports_esmtp = True
        self._last_ehlo_response = response
        self._transaction_open = False  # EHLO resets the session (RFC 5321 4.1.4)

    async def help(self, *, timeout: DefaultNumType = _default) -> str:
        await self._ehlo_or_helo_if_needed()
        response = await self._command(b"HELP\r\n", timeout)
        if response.code not in (211, 214, 250):
            raise SMTPResponseException(response.code, response.message)
        return response.message

    async def _expect(
        self, line: bytes, codes: Iterable[int], timeout: DefaultNumType
    ) -> SMTPResponse:
        await self._ehlo_or_helo_if_needed()
        response = await self._command(line, timeout)
        if response.code not in codes:
            raise SMTPResponseException(response.code, response.message)
        return response

    async def rset(self, *, timeout: DefaultNumType = _default) -> SMTPResponse:
        response = await self._expect(b"RSET\r\n", (250,), timeout)
        self._transaction_open = False
        return response

    async def noop(self, *, timeout: DefaultNumType = _default) -> SMTPResponse:
        return await self._expect(b"NOOP\r\n", (250,), timeout)

    async def vrfy(
        self, address: str, /, *, options: Iterable[str] | None = None,
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        line = await self._path_command("VRFY", address, options)
        return await self._expect(line, (250, 251, 252), timeout)

    async def expn(
        self, address: str, /, *, options: Iterable[str] | None = None,
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        line = await self._path_command("EXPN", address, options)
        return await self._expect(line, (250,), timeout)

    async def _path_command(self, verb: str, address: str, options: Iterable[str] | None) -> bytes:
        """VRFY/EXPN: a non-ASCII address needs the SMTPUTF8 option, and the
        option needs the extension (checked before anything is sent)."""
        given = list(options or ())
        mailbox = bare_mailbox(address)
        if "SMTPUTF8" in (option.upper() for option in given):
            await self._ehlo_or_helo_if_needed()
            if not self.supports_extension("smtputf8"):
                raise SMTPNotSupported("SMTPUTF8 is not supported by this server")
        else:
            mailbox.encode("ascii")  # UnicodeEncodeError, as aiosmtplib raises
        try:
            return format_command(verb, mailbox, *given)
        except ProtocolError as error:
            raise ValueError(f"invalid address {address!r}: {error}") from error

    def _mail_line(self, sender: str, options: Iterable[str], encoding: str) -> bytes:
        return envelope_line("MAIL", sender, options, encoding)

    def _rcpt_line(self, recipient: str, options: Iterable[str], encoding: str) -> bytes:
        return envelope_line("RCPT", recipient, options, encoding)

    async def mail(
        self, sender: str, /, *, options: Iterable[str] | None = None, encoding: str = "ascii",
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        line = self._mail_line(sender, options or (), encoding)
        await self._ehlo_or_helo_if_needed()
        response = await self._command(line, timeout)
        if response.code != 250:
            raise SMTPSenderRefused(response.code, response.message, sender)
        self._transaction_open = True
        return response

    async def rcpt(
        self, recipient: str, /, *, options: Iterable[str] | None = None,
        encoding: str = "ascii", timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        line = self._rcpt_line(recipient, options or (), encoding)
        await self._ehlo_or_helo_if_needed()
        response = await self._command(line, timeout)
        if response.code not in (250, 251):
            raise SMTPRecipientRefused(response.code, response.message, recipient)
        return response

    async def data(
        self, message: MessageSource, /, *, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        payload = Payload(message)
        await self._ehlo_or_helo_if_needed()
        start = await self._command(b"DATA\r\n", timeout)
        if start.code != 354:
            raise SMTPDataError(start.code, start.message)
        self._transaction_open = False  # whatever the final reply, the transaction ends
        return await self._send_payload(payload, timeout)

    async def _send_payload(self, payload: Payload, timeout: DefaultNumType) -> SMTPResponse:
        replies = await self._exchange([], timeout, replies=1, stream=payload)
        response = SMTPResponse.from_reply(replies[0])
        if response.code != 250:
            raise SMTPDataError(response.code, response.message)
        return response

    async def quit(self, *, timeout: DefaultNumType = _default) -> SMTPResponse:
        protocol = self.protocol
        if protocol is not None:
            protocol.quit_sent = True
        try:
            response = await self._command(b"QUIT\r\n", timeout)
        except _QuitAcknowledged:
            response = SMTPResponse(221, "")
        finally:
            if protocol is not None:
                protocol.quit_sent = False
        if response.code != 221:
            raise SMTPResponseException(response.code, response.message)
        # Not a connection another task has opened since this one was lost.
        if protocol is not None and protocol is self._protocol:
            transport = self.transport
            self.close()
            if transport is not None:
                await closed_after_quit(protocol, transport)
        return response


async def closed_after_quit(protocol: SMTPProtocol, transport: asyncio.Transport) -> None:
    """After QUIT: let the close finish (over TLS it waits for the server's
    close_notify), so that no socket outlives the client, e.g. an ``asyncio.run()``
    that closes its loop right after sending; a server that does not answer the
    close within QUIT_CLOSE_GRACE is cut off."""
    try:
        if await protocol.wait_lost(QUIT_CLOSE_GRACE):
            return
    except asyncio.CancelledError:
        transport.abort()
        # abort() closes the socket a loop turn or two later (Python 3.12+): let it.
        await asyncio.shield(protocol.wait_lost(QUIT_CLOSE_GRACE))
        raise
    transport.abort()
    await protocol.wait_lost(QUIT_CLOSE_GRACE)


@dataclass(frozen=True)
class Transaction:
    """One message's commands, built and checked before anything is written."""

    sender: str
    recipients: list[str]
    mail_line: bytes
    rcpt_lines: list[bytes]
    payload: Payload


def raise_if_all_refused(refused: dict[str, SMTPResponse], recipients: list[str]) -> None:
    # No recipient at all counts as all refused (aiosmtplib raises the same); an
    # address listed twice is one recipient, refused once for both.
    if refused.keys() >= set(recipients):
        raise SMTPRecipientsRefused(
            [SMTPRecipientRefused(r.code, r.message, address) for address, r in refused.items()]
        )


def checked_hostname(name: str) -> str:
    """The HELO/EHLO name, stripped; empty (only None means "the default") or with
    whitespace or a control character inside (which would add an argument or a
    command) is a ValueError."""
    stripped = name.strip()
    if not stripped:
        raise ValueError("The local_hostname param must not be empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in stripped):
        raise ValueError(f"invalid local hostname {name!r}")
    return stripped


def helo_name(hostname: str | None, local_hostname: str | None) -> str:
    """The name HELO/EHLO/LHLO send: ``hostname`` when given (even empty, which is
    refused), else the client's local name."""
    return checked_hostname(local_hostname or "localhost" if hostname is None else hostname)
