"""The ``SMTP`` client with aiosmtplib 5.x's API.

One instance is one connection.  Commands are serialised by a lock; replies are
read by :class:`~smtpwire.client.protocol.SMTPProtocol`.  When the server
advertises PIPELINING, ``sendmail`` sends MAIL, every RCPT and DATA in one write
and reads their replies in order (RFC 2920), keeping aiosmtplib's error
semantics.  Every command line is built by smtpwire.common's formatters, which
refuse control characters and parameter smuggling before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from smtpwire.common.commands import format_command, format_mail_from, format_rcpt_to
from smtpwire.common.errors import ProtocolError
from smtpwire.common.extensions import Extensions, parse_ehlo_reply
from smtpwire.common.replies import SMTPReply

from ._auth import AuthMixin
from ._payload import MessageSource, Payload
from ._transport import ConnectionTarget, build_tls_context, open_connection
from .email import parse_address, prepare_message
from .errors import (
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
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
from .protocol import SMTPProtocol, _QuitAcknowledged
from .response import SMTPResponse
from .typing import Default, DefaultNumType, SMTPTokenGenerator, SocketPathType, _default

__all__ = ["DEFAULT_TIMEOUT", "SMTP", "SMTP_PORT", "SMTP_STARTTLS_PORT", "SMTP_TLS_PORT"]

SMTP_PORT: Final = 25
SMTP_TLS_PORT: Final = 465
SMTP_STARTTLS_PORT: Final = 587
DEFAULT_TIMEOUT: Final = 60.0

_CONFIG_KEYS: Final = (
    "hostname", "port", "username", "password", "oauth_token_generator", "local_hostname",
    "source_address", "use_tls", "start_tls", "validate_certs", "client_cert", "client_key",
    "tls_context", "cert_bundle", "socket_path", "sock",
)  # fmt: skip


class SMTP(AuthMixin):
    """An SMTP client connection (``async with SMTP(hostname=...) as smtp``)."""

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
        if loop is not None:
            warnings.warn(
                "The loop argument is deprecated and ignored: the client uses the running loop",
                DeprecationWarning,
                stacklevel=2,
            )
            if start_tls is None:
                # aiosmtplib 1.x never upgraded by itself; its examples call starttls().
                self._start_tls_on_connect = False
        self.protocol: SMTPProtocol | None = None
        self.transport: asyncio.Transport | None = None
        self._reset_server_state()
        self._connect_lock: asyncio.Lock | None = None
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
        if self.hostname is not None and any(c in self.hostname for c in "\r\n\x00"):
            raise ValueError(f"hostname contains control characters: {self.hostname!r}")
        if self.local_hostname is not None:
            self.local_hostname = _checked_hostname(self.local_hostname)

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

    # -- properties ------------------------------------------------------------------

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

    # -- connecting --------------------------------------------------------------------

    async def connect(self, *, timeout: DefaultNumType = _default, **config: Any) -> SMTPResponse:
        """Open the connection, read the greeting, upgrade to TLS and log in as
        configured; returns the greeting."""
        for key, value in config.items():
            if key not in _CONFIG_KEYS:
                raise TypeError(f"connect() got an unexpected keyword argument {key!r}")
            if value is not None:
                attribute = {
                    "username": "_login_username",
                    "password": "_login_password",
                    "oauth_token_generator": "_oauth_token_generator",
                    "start_tls": "_start_tls_on_connect",
                }.get(key, key)
                setattr(self, attribute, value)
        self._validate_config()
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        if self._connect_lock.locked() or self.is_connected:
            raise SMTPException("SMTP instance is already connected")
        await self._connect_lock.acquire()
        wait = self._timeout(timeout)
        try:
            return await self._connect(wait)
        except BaseException:
            self.close()
            raise

    async def _connect(self, timeout: float | None) -> SMTPResponse:
        loop = asyncio.get_running_loop()
        if self.local_hostname is None:
            self.local_hostname = _checked_hostname(await asyncio.to_thread(socket.getfqdn))
        hostname = self.hostname or "localhost"
        port = None if self.sock or self.socket_path else (self.port or self._default_port())
        context = await self._tls_context() if self.use_tls else None
        target = ConnectionTarget(hostname, port, self.socket_path, self.sock, self.source_address)
        self.transport, self.protocol = await open_connection(loop, target, context, timeout)
        self._command_lock = asyncio.Lock()
        try:
            greeting = await self._read(self.protocol, 1, timeout)
        except SMTPReadTimeoutError as error:
            raise SMTPConnectTimeoutError("Timed out waiting for server ready message") from error
        response = SMTPResponse.from_reply(greeting[0])
        if response.code != 220:
            raise SMTPConnectResponseError(response.code, response.message)
        if self._start_tls_on_connect is not False and not self.use_tls:
            await self._ehlo_or_helo_if_needed()
            if self._start_tls_on_connect or self.supports_extension("starttls"):
                await self.starttls(timeout=timeout)
        await self._maybe_login_on_connect()
        return response

    async def _tls_context(self) -> ssl.SSLContext:
        if self.tls_context is not None:
            return self.tls_context
        return await asyncio.to_thread(
            build_tls_context,
            validate_certs=self.validate_certs,
            cert_bundle=self.cert_bundle,
            client_cert=self.client_cert,
            client_key=self.client_key,
        )

    def close(self) -> None:
        """Close the connection now (no QUIT)."""
        self._drop(abort=False)

    def _abort(self) -> None:
        """Drop the connection without flushing: after a timeout, a cancellation or
        a garbled reply, unsent bytes must not go out and a stalled peer must not
        keep the socket open."""
        self._drop(abort=True)

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
        self._reset_server_state()
        if self._connect_lock is not None and self._connect_lock.locked():
            self._connect_lock.release()

    async def __aenter__(self) -> SMTP:
        if not self.is_connected:
            await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, ConnectionError | TimeoutError | asyncio.CancelledError):
            self._abort()
            return
        try:
            if self.is_connected:
                await self.quit()
        except (SMTPServerDisconnected, SMTPResponseException, SMTPTimeoutError):
            pass
        finally:
            self.close()

    # -- commands ------------------------------------------------------------------------

    def _timeout(self, timeout: DefaultNumType) -> float | None:
        return self.timeout if timeout is Default.token else timeout

    async def _read(
        self, protocol: SMTPProtocol, count: int, timeout: float | None
    ) -> list[SMTPReply]:
        try:
            return await protocol.read_replies(count, timeout)
        except asyncio.TimeoutError as error:
            # A late reply would pair with the next command: the connection is done.
            self._abort()
            raise SMTPReadTimeoutError("Timed out waiting for server response") from error
        except SMTPServerDisconnected:
            if protocol.quit_sent:
                raise
            self.close()
            raise
        except SMTPResponseException:
            self._abort()  # malformed or oversized reply: the stream is out of step
            raise

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
        if protocol is None or not self.is_connected or self._command_lock is None:
            raise SMTPServerDisconnected("Server not connected")
        count = len(lines) if replies is None else replies
        wait = self._timeout(timeout)
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
        if any(reply.code == 421 for reply in replies):
            self.close()  # the server is shutting the connection down
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
        try:
            line = format_command(*args)
        except ProtocolError as error:
            raise ValueError(str(error)) from error
        return await self._command(line, timeout)

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
        name = _checked_hostname(hostname or self.local_hostname or "localhost")
        response = await self._command(format_command("HELO", name), timeout)
        if response.code != 250:
            raise SMTPHeloError(response.code, response.message)
        self.last_helo_response = response
        return response

    async def ehlo(
        self, *, hostname: str | None = None, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        name = _checked_hostname(hostname or self.local_hostname or "localhost")
        replies = await self._exchange([format_command("EHLO", name)], timeout)
        response = SMTPResponse.from_reply(replies[0])
        if response.code != 250:
            raise SMTPHeloError(response.code, response.message)
        self._set_extensions(parse_ehlo_reply(replies[0]), response)
        return response

    def _set_extensions(self, extensions: Extensions, response: SMTPResponse) -> None:
        self._extensions = extensions
        self.esmtp_extensions = {key.lower(): value for key, value in extensions.items()}
        self.server_auth_methods = [mechanism.lower() for mechanism in extensions.auth_mechanisms]
        self.supports_esmtp = True
        self._last_ehlo_response = response

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
        return await self._expect(b"RSET\r\n", (250,), timeout)

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
        mailbox = _bare(address)
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
        utf8 = encoding.lower().replace("-", "") == "utf8" or "SMTPUTF8" in options
        try:
            return format_mail_from(_bare(sender), list(options), utf8=utf8)
        except ProtocolError as error:
            raise ValueError(f"invalid sender {sender!r}: {error}") from error

    def _rcpt_line(self, recipient: str, options: Iterable[str], utf8: bool) -> bytes:
        try:
            return format_rcpt_to(_bare(recipient), list(options), utf8=utf8)
        except ProtocolError as error:
            raise ValueError(f"invalid recipient {recipient!r}: {error}") from error

    async def mail(
        self, sender: str, /, *, options: Iterable[str] | None = None, encoding: str = "ascii",
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        line = self._mail_line(sender, options or (), encoding)
        await self._ehlo_or_helo_if_needed()
        response = await self._command(line, timeout)
        if response.code != 250:
            raise SMTPSenderRefused(response.code, response.message, sender)
        return response

    async def rcpt(
        self, recipient: str, /, *, options: Iterable[str] | None = None,
        encoding: str = "ascii", timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        utf8 = encoding.lower().replace("-", "") == "utf8"
        line = self._rcpt_line(recipient, options or (), utf8)
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
        self.close()
        return response

    async def starttls(
        self,
        *,
        server_hostname: str | None = None,
        validate_certs: bool | None = None,
        client_cert: str | Default | None = _default,
        client_key: str | Default | None = _default,
        cert_bundle: str | Default | None = _default,
        tls_context: ssl.SSLContext | Default | None = _default,
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:
        if validate_certs is not None:
            self.validate_certs = validate_certs
        for name, value in (
            ("client_cert", client_cert), ("client_key", client_key),
            ("cert_bundle", cert_bundle), ("tls_context", tls_context),
        ):  # fmt: skip
            if value is not Default.token:
                setattr(self, name, value)
        self._validate_config()
        if self.get_transport_info("sslcontext") is not None:
            raise SMTPException("Connection already using TLS")
        await self._ehlo_or_helo_if_needed()
        if not self.supports_extension("starttls"):
            raise SMTPException("SMTP STARTTLS extension not supported by server.")
        # Built first: no await may come between discarding the plaintext after
        # the 220 and handing the transport to TLS.
        context = await self._tls_context()
        response = await self._command(b"STARTTLS\r\n", timeout)
        if response.code != 220:
            raise SMTPResponseException(response.code, response.message)
        protocol, transport = self.protocol, self.transport
        if protocol is None or transport is None:
            raise SMTPServerDisconnected("Server not connected")
        # Plaintext received after the 220 may be a man in the middle's pre-staged
        # "replies" (aiosmtplib's GHSA-vxj7-4xrp-5vr4): never read it as TLS replies.
        protocol.discard_buffered()
        try:
            tls_transport = await asyncio.get_running_loop().start_tls(
                transport, protocol, context, server_side=False,
                server_hostname=server_hostname or self.hostname or "localhost",
                ssl_handshake_timeout=self._timeout(timeout),
            )  # fmt: skip
        except (asyncio.TimeoutError, ConnectionAbortedError) as error:
            self.close()
            raise SMTPTimeoutError("Timed out while upgrading transport") from error
        except ConnectionError as error:
            self.close()
            raise SMTPServerDisconnected(f"Connection lost during STARTTLS: {error}") from error
        except BaseException:
            self.close()
            raise
        if tls_transport is None:  # pragma: no cover - the loop is closing
            self.close()
            raise SMTPServerDisconnected("Connection lost during STARTTLS")
        self.transport = protocol.transport = tls_transport
        self._reset_server_state()  # RFC 3207: forget what the server said in plaintext
        return response

    # -- sending ---------------------------------------------------------------------------

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: MessageSource,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: DefaultNumType = _default,
    ) -> tuple[dict[str, SMTPResponse], str]:
        """Send one message; returns the refused recipients and the final reply text."""
        recipient_list = [recipients] if isinstance(recipients, str) else list(recipients)
        options = list(mail_options or ())
        rcpt_opts = list(rcpt_options or ())
        payload = Payload(message)
        utf8 = "SMTPUTF8" in (option.upper() for option in options)
        # Every address is checked before anything (even EHLO) is written, every
        # line built before any is.
        for address in (sender, *recipient_list):
            try:
                _bare(address)
            except ValueError as error:
                raise ValueError(f"invalid address {address!r}: {error}") from error
        await self._ehlo_or_helo_if_needed()
        if utf8 and not self.supports_extension("smtputf8"):
            raise SMTPNotSupported("SMTPUTF8 is not supported by this server")
        if (
            self.supports_extension("size")
            and payload.size is not None
            and not any(option.upper().startswith("SIZE=") for option in options)
        ):
            options.insert(0, f"SIZE={payload.size}")
        transaction = _Transaction(
            sender,
            recipient_list,
            self._mail_line(sender, options, "utf-8" if utf8 else "ascii"),
            [self._rcpt_line(rcpt, rcpt_opts, utf8) for rcpt in recipient_list],
            payload,
        )
        try:
            if self.supports_extension("pipelining"):
                return await self._send_pipelined(transaction, timeout)
            return await self._send_lockstep(transaction, timeout)
        except (SMTPResponseException, SMTPRecipientsRefused):
            if self.is_connected:
                with contextlib.suppress(
                    SMTPResponseException, SMTPServerDisconnected, SMTPTimeoutError
                ):
                    await self.rset(timeout=timeout)
            raise

    async def _send_lockstep(
        self, transaction: _Transaction, timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        response = await self._command(transaction.mail_line, timeout)
        if response.code != 250:
            raise SMTPSenderRefused(response.code, response.message, transaction.sender)
        refused: dict[str, SMTPResponse] = {}
        for recipient, line in zip(transaction.recipients, transaction.rcpt_lines, strict=True):
            reply = await self._command(line, timeout)
            if reply.code not in (250, 251):
                refused[recipient] = reply
        _raise_if_all_refused(refused, transaction.recipients)
        start = await self._command(b"DATA\r\n", timeout)
        if start.code != 354:
            raise SMTPDataError(start.code, start.message)
        return await self._deliver_payload(transaction, refused, timeout)

    async def _deliver_payload(
        self, transaction: _Transaction, refused: dict[str, SMTPResponse], timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        """Send the message after 354; the refused recipients and the final reply text."""
        return refused, (await self._send_payload(transaction.payload, timeout)).message

    async def _send_pipelined(
        self, transaction: _Transaction, timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        lines = [transaction.mail_line, *transaction.rcpt_lines, b"DATA\r\n"]
        replies = [SMTPResponse.from_reply(reply) for reply in await self._exchange(lines, timeout)]
        sender, recipients = transaction.sender, transaction.recipients
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        if (
            data_reply.code == 354
            and self.is_connected
            and (mail_reply.code != 250 or all(r.code not in (250, 251) for r in rcpt_replies))
        ):
            # The server took DATA although the transaction failed (RFC 2920 3.1):
            # end it with an empty message it will refuse.
            await self._command(b".\r\n", timeout)
        if mail_reply.code != 250:
            raise SMTPSenderRefused(mail_reply.code, mail_reply.message, sender)
        refused = {
            recipient: reply
            for recipient, reply in zip(recipients, rcpt_replies, strict=True)
            if reply.code not in (250, 251)
        }
        _raise_if_all_refused(refused, recipients)
        if data_reply.code != 354:
            raise SMTPDataError(data_reply.code, data_reply.message)
        return await self._deliver_payload(transaction, refused, timeout)

    async def send_message(
        self,
        message: Any,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: DefaultNumType = _default,
    ) -> tuple[dict[str, SMTPResponse], str]:
        """Send an :class:`email.message.Message`, taking the envelope from its
        headers unless given (Bcc is never transmitted)."""
        await self._ehlo_or_helo_if_needed()
        envelope_sender, envelope_recipients, extra, data = prepare_message(
            message,
            sender=sender,
            recipients=recipients,
            server_supports_smtputf8=self.supports_extension("smtputf8"),
            server_supports_8bitmime=self.supports_extension("8bitmime"),
        )
        given = list(mail_options or ())
        present = {option.upper() for option in given}
        options = [*given, *(option for option in extra if option.upper() not in present)]
        return await self.sendmail(
            envelope_sender, envelope_recipients, data,
            mail_options=options, rcpt_options=rcpt_options, timeout=timeout,
        )  # fmt: skip

    def sendmail_sync(self, *args: Any, **kwargs: Any) -> tuple[dict[str, SMTPResponse], str]:
        async def run() -> tuple[dict[str, SMTPResponse], str]:
            async with self:
                return await self.sendmail(*args, **kwargs)

        return asyncio.run(run())

    def send_message_sync(self, *args: Any, **kwargs: Any) -> tuple[dict[str, SMTPResponse], str]:
        async def run() -> tuple[dict[str, SMTPResponse], str]:
            async with self:
                return await self.send_message(*args, **kwargs)

        return asyncio.run(run())


@dataclass(frozen=True)
class _Transaction:
    """One message's commands, built and checked before anything is written."""

    sender: str
    recipients: list[str]
    mail_line: bytes
    rcpt_lines: list[bytes]
    payload: Payload


def _raise_if_all_refused(refused: dict[str, SMTPResponse], recipients: list[str]) -> None:
    # No recipient at all counts as all refused (aiosmtplib raises the same).
    if len(refused) == len(recipients):
        raise SMTPRecipientsRefused(
            [SMTPRecipientRefused(r.code, r.message, address) for address, r in refused.items()]
        )


def _bare(address: str) -> str:
    """The mailbox alone: callers pass ``a@b``, ``<a@b>`` or ``Name <a@b>``;
    anything that could smuggle a parameter or a command raises ValueError."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return parse_address(text)


def _checked_hostname(name: str) -> str:
    stripped = name.strip()
    if not stripped or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in stripped):
        raise ValueError(f"invalid local hostname {name!r}")
    return stripped
