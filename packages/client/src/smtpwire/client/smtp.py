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
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Final

from smtpwire.common.replies import SMTPReply

from ._base import (
    DEFAULT_TIMEOUT,
    SMTP_PORT,
    SMTP_STARTTLS_PORT,
    SMTP_TLS_PORT,
    ClientBase,
    Transaction,
    checked_hostname,
    closed_after_quit,
    raise_if_all_refused,
)
from ._payload import MessageSource, Payload
from ._transport import ConnectionTarget, build_tls_context, open_connection
from .email import prepare_message
from .errors import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .response import SMTPResponse
from .typing import Default, DefaultNumType, _default

__all__ = ["DEFAULT_TIMEOUT", "SMTP", "SMTP_PORT", "SMTP_STARTTLS_PORT", "SMTP_TLS_PORT"]


_CONFIG_KEYS: Final = (
    "hostname", "port", "username", "password", "oauth_token_generator", "local_hostname",
    "source_address", "use_tls", "start_tls", "validate_certs", "client_cert", "client_key",
    "tls_context", "cert_bundle", "socket_path", "sock",
)  # fmt: skip
# connect() keywords stored under another (private) name, as in aiosmtplib.
_CONFIG_ATTRIBUTES: Final = {
    "username": "_login_username",
    "password": "_login_password",
    "oauth_token_generator": "_oauth_token_generator",
    "start_tls": "_start_tls_on_connect",
}
_BOOLEAN_KEYS: Final = frozenset({"use_tls", "validate_certs"})


class SMTP(ClientBase):
    """An SMTP client connection (``async with SMTP(hostname=...) as smtp``)."""

    # -- connecting --------------------------------------------------------------------

    async def connect(self, *, timeout: DefaultNumType = _default, **config: Any) -> SMTPResponse:
        """Open the connection, read the greeting, upgrade to TLS and log in as
        configured; returns the greeting.

        Every keyword given replaces the stored setting, ``None`` included
        (``client_cert=None`` clears it, ``start_tls=None`` restores the automatic
        STARTTLS), except ``use_tls`` and ``validate_certs``, which are plain
        booleans whose ``None`` means "keep" (as in aiosmtplib)."""
        for key in config:
            if key not in _CONFIG_KEYS:
                raise TypeError(f"connect() got an unexpected keyword argument {key!r}")
        if self.is_connected:
            raise SMTPException("SMTP instance is already connected")
        for key, value in config.items():
            if value is None and key in _BOOLEAN_KEYS:
                continue
            setattr(self, _CONFIG_ATTRIBUTES.get(key, key), value)
        self._validate_config()
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        if self._connect_lock.locked() and not self._connecting and self.protocol is not None:
            # The lock belongs to a connection the server has since dropped and
            # nobody closed yet: close it now, as aiosmtplib does when the
            # connection is lost, so this connect does not wait for ever.
            self.close()
        # Held until close(): a connect racing one in progress (concurrent
        # ``async with client:`` blocks) waits for that connection to end.
        await self._connect_lock.acquire()
        self._connecting = True
        wait = self._timeout(timeout)
        try:
            greeting = await self._connect(wait)
        except BaseException:
            protocol, transport = self.protocol, self.transport
            self._connecting = False  # so that this close releases the connect lock
            self.close()
            if protocol is not None and transport is not None:
                # Let the close finish (over TLS: the server's close_notify, within
                # a grace), so that no socket outlives a failed connect, e.g. in an
                # asyncio.run() that ends right after.
                await closed_after_quit(protocol, transport)
            raise
        finally:
            self._connecting = False
        entered = self._blocks.get(asyncio.current_task())
        if entered:
            entered[-1] = self.protocol  # a block reconnecting: its own connection again
        return greeting

    async def _connect(self, timeout: float | None) -> SMTPResponse:
        loop = asyncio.get_running_loop()
        if self.local_hostname is None:
            self.local_hostname = checked_hostname(await asyncio.to_thread(socket.getfqdn))
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
        except SMTPServerDisconnected as error:
            # Closed before the greeting: a failure to connect, named as aiosmtplib does.
            raise SMTPConnectError(
                f"Error connecting to {hostname} on port {port}: {error}"
            ) from error
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

    async def __aenter__(self) -> SMTP:
        if not self.is_connected:
            await self.connect()
        # The connection this block uses, per task: if the server drops it, another
        # task's block may connect meanwhile, and this block's end must leave that
        # connection alone.
        self._blocks.setdefault(asyncio.current_task(), []).append(self.protocol)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        entered = self._blocks.get(task)
        if entered:
            own = entered.pop()
            if not entered:
                del self._blocks[task]
            if own is not self.protocol:
                return  # this block's connection is gone; the current one is another's
        if isinstance(
            exc, ConnectionError | TimeoutError | asyncio.TimeoutError | asyncio.CancelledError
        ):
            self._abort()
            return
        protocol = self.protocol
        try:
            if self.is_connected:
                await self.quit()
        except (SMTPServerDisconnected, SMTPResponseException, SMTPTimeoutError):
            pass
        finally:
            # Not once quit() has closed: by now another task's connect() (waiting
            # for this block to end) may own the connection.
            if self.protocol is protocol:
                self.close()

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
        upper = [option.upper() for option in options]
        payload = Payload(message, binary="BODY=BINARYMIME" in upper)
        utf8 = "SMTPUTF8" in upper
        # aiosmtplib's mailbox encoding: UTF-8 with the SMTPUTF8 option, else ASCII.
        encoding = "utf-8" if utf8 else "ascii"
        # Every address is checked before anything (even EHLO) is written: the
        # RCPT lines are built now; the MAIL line is built after EHLO, when SIZE
        # is known, and also once before it when an EHLO is still to be sent.
        rcpt_lines = [self._rcpt_line(rcpt, rcpt_opts, encoding) for rcpt in recipient_list]
        if self._sendmail_lock is None:
            self._sendmail_lock = asyncio.Lock()
        # A whole transaction at a time: tasks sharing this client would otherwise
        # interleave their commands (a nested MAIL, or one message's MAIL inside
        # another's DATA).  Pipelining within the transaction is unaffected.
        async with self._sendmail_lock:
            return await self._transact(
                sender, recipient_list, options=options, rcpt_lines=rcpt_lines,
                payload=payload, utf8=utf8, timeout=timeout,
            )  # fmt: skip

    async def _transact(
        self,
        sender: str,
        recipient_list: list[str],
        *,
        options: list[str],
        rcpt_lines: list[bytes],
        payload: Payload,
        utf8: bool,
        timeout: DefaultNumType,
    ) -> tuple[dict[str, SMTPResponse], str]:
        encoding = "utf-8" if utf8 else "ascii"
        if self.is_ehlo_or_helo_needed:
            self._mail_line(sender, options, encoding)
            await self._ehlo_or_helo_if_needed()
        if utf8 and not self.supports_extension("smtputf8"):
            raise SMTPNotSupported("SMTPUTF8 is not supported by this server")
        if payload.binary and not (
            self.supports_extension("binarymime") and self.supports_extension("chunking")
        ):
            raise SMTPNotSupported("BODY=BINARYMIME needs the server's BINARYMIME and CHUNKING")
        if (
            self.supports_extension("size")
            and payload.size is not None
            and not any(option.upper().startswith("SIZE=") for option in options)
        ):
            options.insert(0, f"SIZE={payload.size}")
        transaction = Transaction(
            sender,
            recipient_list,
            self._mail_line(sender, options, encoding),
            rcpt_lines,
            payload,
        )
        try:
            if self._transaction_open:
                return await self._send_lockstep(transaction, timeout)
            if self._use_bdat(transaction.payload):
                return await self._send_chunked(transaction, timeout)
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
        self, transaction: Transaction, timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        response = await self._command(transaction.mail_line, timeout)
        if response.code != 250:
            raise SMTPSenderRefused(response.code, response.message, transaction.sender)
        refused: dict[str, SMTPResponse] = {}
        for recipient, line in zip(transaction.recipients, transaction.rcpt_lines, strict=True):
            reply = await self._command(line, timeout)
            if reply.code not in (250, 251):
                refused[recipient] = reply
        raise_if_all_refused(refused, transaction.recipients)
        start = await self._command(b"DATA\r\n", timeout)
        if start.code != 354:
            raise SMTPDataError(start.code, start.message)
        return await self._deliver_payload(transaction, refused, timeout)

    def _use_bdat(self, payload: Payload) -> bool:
        # BINARYMIME travels by BDAT only; otherwise BDAT is used when asked for and
        # offered, for an in-memory message (a text stream goes with DATA).
        if payload.binary:
            return True
        return self.chunking and payload.content is not None and self.supports_extension("chunking")

    async def _send_chunked(
        self, transaction: Transaction, timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        """CHUNKING (RFC 3030): an in-memory message as one ``BDAT n LAST`` with no
        dot-stuffing; with PIPELINING, MAIL, every RCPT and the BDAT go in one write,
        one round trip per message.  A BINARYMIME stream goes as one BDAT per chunk
        read, then ``BDAT 0 LAST``."""
        content = transaction.payload.content
        whole = None if content is None else b"BDAT %d LAST\r\n" % len(content) + content
        lines = [transaction.mail_line, *transaction.rcpt_lines]
        pipelining = self.supports_extension("pipelining")
        if whole is not None and pipelining:
            replies = [
                SMTPResponse.from_reply(r) for r in await self._exchange([*lines, whole], timeout)
            ]
        else:
            replies = await self._envelope(lines, pipelining, timeout)
            if replies[0].code != 250 or all(r.code not in (250, 251) for r in replies[1:]):
                replies.append(SMTPResponse(503, "BDAT not sent"))
            elif whole is not None:
                replies.append(await self._command(whole, timeout))
            else:
                replies.append(await self._send_bdat_stream(transaction.payload, timeout))
        mail_reply, rcpt_replies, bdat_reply = replies[0], replies[1:-1], replies[-1]
        if mail_reply.code != 250:
            raise SMTPSenderRefused(mail_reply.code, mail_reply.message, transaction.sender)
        refused = {
            recipient: reply
            for recipient, reply in zip(transaction.recipients, rcpt_replies, strict=True)
            if reply.code not in (250, 251)
        }
        raise_if_all_refused(refused, transaction.recipients)
        if bdat_reply.code != 250:
            raise SMTPDataError(bdat_reply.code, bdat_reply.message)
        return refused, bdat_reply.message

    async def _envelope(
        self, lines: list[bytes], pipelining: bool, timeout: DefaultNumType
    ) -> list[SMTPResponse]:
        """MAIL and the RCPTs: in one write with PIPELINING, otherwise one by one
        (stopping, as smtplib does, when MAIL is refused)."""
        if pipelining:
            return [SMTPResponse.from_reply(r) for r in await self._exchange(lines, timeout)]
        replies = [await self._command(lines[0], timeout)]
        if replies[0].code != 250:
            return [*replies, *(SMTPResponse(503, "not sent") for _ in lines[1:])]
        replies.extend([await self._command(line, timeout) for line in lines[1:]])
        return replies

    async def _send_bdat_stream(self, payload: Payload, timeout: DefaultNumType) -> SMTPResponse:
        try:
            async for chunk in payload.binary_chunks():
                reply = await self._command(b"BDAT %d\r\n" % len(chunk) + chunk, timeout)
                if reply.code != 250:
                    return reply
        except BaseException:
            # The source or the connection failed between chunks: the server holds
            # part of a message that must never be completed; drop the connection.
            self._abort()
            raise
        return await self._command(b"BDAT 0 LAST\r\n", timeout)

    async def _deliver_payload(
        self, transaction: Transaction, refused: dict[str, SMTPResponse], timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        """Send the message after 354; the refused recipients and the final reply text."""
        return refused, (await self._send_payload(transaction.payload, timeout)).message

    async def _send_pipelined(
        self, transaction: Transaction, timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        lines = [transaction.mail_line, *transaction.rcpt_lines, b"DATA\r\n"]
        replies = [SMTPResponse.from_reply(reply) for reply in await self._exchange(lines, timeout)]
        refused = await self._judge_envelope(transaction, replies, timeout)
        return await self._deliver_payload(transaction, refused, timeout)

    async def _judge_envelope(
        self, transaction: Transaction, replies: list[SMTPResponse], timeout: DefaultNumType
    ) -> dict[str, SMTPResponse]:
        """The replies to a pipelined MAIL, its RCPTs and DATA: the refused recipients
        when DATA got 354 and the content is to follow; otherwise the error sendmail
        raises (after ending a DATA the server took anyway).  Shared by sendmail and
        the pool's pipelining across messages."""
        sender, recipients = transaction.sender, transaction.recipients
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        if data_reply.code == 354 and self.is_connected and mail_reply.code != 250:
            # DATA taken although our MAIL was refused: the server holds a transaction
            # that is not ours (one opened by a raw MAIL). Any end of data would
            # deliver it, so drop the connection: the server discards the message.
            self._abort()
        elif (
            data_reply.code == 354
            and self.is_connected
            and all(r.code not in (250, 251) for r in rcpt_replies)
        ):
            # The server took DATA although every recipient was refused (RFC 2920
            # 3.1): end it with an empty message it will refuse.
            await self._command(b".\r\n", timeout)
        if mail_reply.code != 250:
            raise SMTPSenderRefused(mail_reply.code, mail_reply.message, sender)
        refused = {
            recipient: reply
            for recipient, reply in zip(recipients, rcpt_replies, strict=True)
            if reply.code not in (250, 251)
        }
        raise_if_all_refused(refused, recipients)
        if data_reply.code != 354:
            raise SMTPDataError(data_reply.code, data_reply.message)
        return refused

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
        # By keyword: the caller's BODY=BINARYMIME is not joined by a second BODY.
        present = {option.partition("=")[0].upper() for option in given}
        options = [
            *given,
            *(option for option in extra if option.partition("=")[0].upper() not in present),
        ]
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

    # -- for SMTPPool: messages pipelined one after another (RFC 2920 section 3.1) ---------
    # smtpwire.client._pool_pipeline decides which messages travel together.

    async def _pool_exchange(
        self, lines: Sequence[bytes], parts: Sequence[int], timeout: DefaultNumType = _default
    ) -> tuple[list[list[SMTPReply]], Exception | None]:
        """Write ``lines`` at once and read their replies in ``parts`` (one message's
        final reply, then the next one's MAIL, RCPTs and DATA): the parts read, and
        the error that stopped the reading, after which the connection is closed.

        Parts, because the first reply settles a message whatever becomes of the
        rest: a 250 read before the connection broke is a delivered message.  A 421
        ends the reading too: the server is closing, later parts will never come."""
        protocol = self.protocol
        if protocol is None or self._command_lock is None:
            return [], SMTPServerDisconnected("Server not connected")
        if not self.is_connected:
            return [], protocol.not_connected()
        wait = self._timeout(timeout)
        done: list[list[SMTPReply]] = []
        async with self._command_lock:
            try:
                protocol.expect(sum(parts))
                protocol.write(b"".join(lines))
                for count in parts:
                    # Left as they are: most are 250s nobody reads the text of.
                    done.append(self._after_replies(await self._read(protocol, count, wait)))
                    if self.protocol is not protocol and len(done) < len(parts):
                        # The connection is gone: the server said 421 (_after_replies
                        # closed it), or another task closed it meanwhile.
                        reply = next((r for r in done[-1] if r.code == 421), None)
                        if reply is None:
                            return done, SMTPServerDisconnected("Server not connected")
                        text = SMTPResponse.from_reply(reply).message
                        return done, SMTPServerDisconnected(f"Server closing: 421 {text}")
            except asyncio.CancelledError:
                self._abort()  # replies still on their way would answer later commands
                raise
            except (SMTPServerDisconnected, SMTPTimeoutError, SMTPResponseException) as error:
                if self.protocol is protocol:
                    self._abort()  # the write failed: the stream is out of step
                return done, error
        return done, None
