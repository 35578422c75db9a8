"""Ready-made handlers: aiosmtpd's set (Sink, Debugging, Proxy, Message,
AsyncMessage, Mailbox) under the same names, plus :class:`Queue`.

The server treats every attribute whose name starts with ``handle_`` as a hook,
so helpers here never use that prefix; ``handle_message`` is the one exception
aiosmtpd also has, and it is harmless because no SMTP verb is called MESSAGE.

Handlers that the command line can build (``-c``) offer a ``from_cli(parser,
*args)`` class method that turns the positional arguments into an instance and
reports bad ones through ``parser.error`` (exit status 2, like any usage error).
"""

from __future__ import annotations

import asyncio
import email
import email.message
import errno
import logging
import mailbox
import os
import queue as queue_module
import re
import sys
from abc import ABCMeta, abstractmethod
from argparse import ArgumentParser
from typing import TYPE_CHECKING, Final, TextIO

from smtpwire.client.errors import (
    SMTPException,
    SMTPHeloError,
    SMTPRecipientsRefused,
    SMTPResponseException,
)
from smtpwire.client.response import SMTPResponse
from smtpwire.client.smtp import SMTP as SMTPClient
from smtpwire.common import normalize_line_endings

if TYPE_CHECKING:
    from .session import Envelope, PeerType, Session
    from .smtp import SMTP

__all__ = [
    "AsyncMessage",
    "Debugging",
    "Mailbox",
    "Message",
    "MessageBase",
    "Proxy",
    "Queue",
    "Sink",
]

log = logging.getLogger("mail.debug")

MESSAGE_FOLLOWS = "---------- MESSAGE FOLLOWS ----------"
END_MESSAGE = "------------ END MESSAGE ------------"

#: How long the Proxy waits on any one socket operation with its upstream: RFC
#: 5321 section 4.5.3.2 asks clients for minutes, not forever, and a stuck
#: upstream must not pin a worker thread for the life of the process.
PROXY_TIMEOUT = 300.0

_PORT = re.compile(r"[0-9]{1,5}")


class Sink:
    """Accepts every message and keeps nothing: a server with no hooks at all,
    so every command gets the server's default reply."""

    @classmethod
    def from_cli(cls, parser: ArgumentParser, *args: str) -> Sink:
        if args:
            parser.error("Sink handler does not accept arguments")
        return cls()


class Debugging:
    """Prints each message to a stream, in aiosmtpd's layout, so that scripts
    and tests written against aiosmtpd's output keep working.

    The peer is shown as an ``X-Peer`` line after the headers.  aiosmtpd drops
    that line when the message has no blank line (headers only, or no headers
    at all); here it then comes after the last line instead, so the peer is
    always shown.

    With ``envelope=True`` (what the command line builds: someone watching the
    server's output wants to see who the mail is from and to, which the headers
    need not say) ``X-MailFrom`` and ``X-RcptTo`` lines follow ``X-Peer``, the
    names :class:`Message` handlers use.  The default keeps aiosmtpd's layout
    line for line.
    """

    def __init__(self, stream: TextIO | None = None, *, envelope: bool = False) -> None:
        self.stream: TextIO = sys.stdout if stream is None else stream
        self.envelope = envelope

    @classmethod
    def from_cli(cls, parser: ArgumentParser, *args: str) -> Debugging:
        if args not in ((), ("stdout",), ("stderr",)):
            parser.error("Debugging usage: [stdout|stderr]")
        return cls(sys.stderr if args == ("stderr",) else sys.stdout, envelope=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.stream.write(_debugging_text(session.peer, envelope, with_envelope=self.envelope))
        # One write and a flush per message: the text shows up at once even when
        # stdout is a pipe, and concurrent messages never interleave.
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()
        return "250 OK"


def _debugging_text(peer: PeerType, envelope: Envelope, *, with_envelope: bool = False) -> str:
    lines = [MESSAGE_FOLLOWS]
    # aiosmtpd's lines: each list when not empty, then one blank line.
    if envelope.mail_options:
        lines.append(f"mail options: {envelope.mail_options}")
    if envelope.rcpt_options:
        lines.append(f"rcpt options: {envelope.rcpt_options}")
    if envelope.mail_options or envelope.rcpt_options:
        lines.append("")
    content = envelope.content
    if isinstance(content, (bytes, bytearray)):
        # Split first, then decode each line: a UTF-8 NEL (C2 85) in bytes content
        # is not a line break, as in aiosmtpd.
        body = [line.decode("utf-8", errors="replace") for line in content.splitlines()]
    elif isinstance(content, str):
        body = content.splitlines()
    else:
        body = []
    try:
        end_of_headers = body.index("")
    except ValueError:
        end_of_headers = len(body)
    lines += body[:end_of_headers]
    lines.append(f"X-Peer: {peer!r}")
    if with_envelope:
        lines.append(f"X-MailFrom: {envelope.mail_from or ''}")
        lines.append(f"X-RcptTo: {', '.join(envelope.rcpt_tos)}")
    lines += body[end_of_headers:]
    lines.append(END_MESSAGE)
    return "\n".join(lines) + "\n"


ENVELOPE_HEADERS: Final = ("X-Peer", "X-MailFrom", "X-RcptTo")


class MessageBase:
    """Turns the received content into an :class:`email.message.Message` with
    the envelope recorded in ``X-Peer``, ``X-MailFrom`` and ``X-RcptTo``
    headers, for handlers that want a parsed message rather than bytes.

    The headers are appended, as in aiosmtpd, so a header of the same name sent
    by the client comes first: ``message.get_all("X-Peer")[-1]`` is the one this
    server added (and a relay chain keeps every hop's).  A subclass that sets
    ``replace_envelope_headers`` drops the client's copies instead, so that
    ``message["X-Peer"]`` cannot be forged.
    """

    replace_envelope_headers = False

    def __init__(self, message_class: type[email.message.Message] | None = None) -> None:
        self.message_class = message_class

    def prepare_message(self, session: Session, envelope: Envelope) -> email.message.Message:
        factory = self.message_class or email.message.Message
        data = envelope.content
        # bytearray too, as in aiosmtpd: a hook may have edited the content in place.
        if isinstance(data, (bytes, bytearray)):
            message = email.message_from_bytes(data, factory)
        elif isinstance(data, str):
            message = email.message_from_string(data, factory)
        else:
            raise TypeError(f"Expected str or bytes, got {type(data)}")
        if self.replace_envelope_headers:
            for name in ENVELOPE_HEADERS:
                del message[name]
        message["X-Peer"] = str(session.peer)
        message["X-MailFrom"] = envelope.mail_from or ""
        message["X-RcptTo"] = ", ".join(envelope.rcpt_tos)
        return message


class Message(MessageBase, metaclass=ABCMeta):
    """Base for handlers that act on a parsed message synchronously.

    ``handle_message`` runs inside the event loop: it must be quick (no network
    calls, no long disk work); use :class:`AsyncMessage` otherwise.
    """

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.handle_message(self.prepare_message(session, envelope))
        return "250 OK"

    @abstractmethod
    def handle_message(self, message: email.message.Message) -> None:
        raise NotImplementedError


class AsyncMessage(MessageBase, metaclass=ABCMeta):
    """Base for handlers that act on a parsed message with a coroutine."""

    def __init__(
        self,
        message_class: type[email.message.Message] | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(message_class)
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop given to the constructor, else the running one.

        aiosmtpd looked the loop up at construction time, which warns or fails
        on recent Pythons when no loop runs yet; looking it up when used (from
        inside ``handle_message``) finds the loop actually serving the message.
        """
        if self._loop is not None:
            return self._loop
        return asyncio.get_running_loop()

    @loop.setter
    def loop(self, value: asyncio.AbstractEventLoop | None) -> None:
        self._loop = value

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.handle_message(self.prepare_message(session, envelope))
        return "250 OK"

    @abstractmethod
    async def handle_message(self, message: email.message.Message) -> None:
        raise NotImplementedError


class Mailbox(Message):
    """Delivers each message into a Maildir, which other programs (mail
    clients, test assertions) can read while the server runs."""

    def __init__(
        self,
        mail_dir: str | os.PathLike[str],
        message_class: type[email.message.Message] | None = None,
    ) -> None:
        self.mail_dir = mail_dir
        self.mailbox = mailbox.Maildir(mail_dir)
        prepare_maildir(mail_dir)
        super().__init__(message_class)

    def handle_message(self, message: email.message.Message) -> None:
        self.mailbox.add(message)

    def reset(self) -> None:
        """Empty the Maildir, e.g. between tests."""
        self.mailbox.clear()

    @classmethod
    def from_cli(cls, parser: ArgumentParser, *args: str) -> Mailbox:
        if not args:
            parser.error("The directory for the maildir is required")
        if len(args) > 1:
            parser.error("Too many arguments for Mailbox handler")
        return cls(args[0])


#: The Maildir's own folders: deliveries are written to tmp and renamed into new.
MAILDIR_FOLDERS: Final = ("tmp", "new", "cur")


def prepare_maildir(mail_dir: str | os.PathLike[str]) -> None:
    """Make a Maildir of an existing directory (an empty volume mounted for the
    mail, say) and refuse at once what cannot hold one.

    :class:`mailbox.Maildir` creates the folders only along with the directory
    itself, and checks nothing: without this, a directory that exists but is
    empty, a path that is a file, or a directory the server cannot write would
    only fail at the first delivery, as an error for the sending client.  The
    errors are :class:`OSError` with the path, which the command line reports
    in one line.
    """
    top = os.fspath(mail_dir)
    if not os.path.isdir(top):
        raise NotADirectoryError(errno.ENOTDIR, "the Maildir is not a directory", top)
    for name in MAILDIR_FOLDERS:
        folder = os.path.join(top, name)
        if not os.path.lexists(folder):
            os.mkdir(folder, 0o700)
        elif not os.path.isdir(folder):
            raise NotADirectoryError(errno.ENOTDIR, "a Maildir folder is not a directory", folder)
    for name in ("tmp", "new"):  # where a delivery writes (cur is the readers')
        folder = os.path.join(top, name)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "the Maildir is not writable", folder)


class Queue(Message):
    """Puts each message on a :class:`queue.Queue`, so that a test (or any
    other thread) can wait for mail with ``queue.get(timeout=...)`` instead of
    polling.

    The message carries the same ``X-Peer``/``X-MailFrom``/``X-RcptTo``
    headers as with :class:`Message`.  A bounded queue that is full makes the
    server answer ``452`` (try again later) rather than block the event loop.
    """

    def __init__(
        self,
        queue: queue_module.Queue[email.message.Message] | None = None,
        message_class: type[email.message.Message] | None = None,
    ) -> None:
        super().__init__(message_class)
        self.queue: queue_module.Queue[email.message.Message] = (
            queue_module.Queue() if queue is None else queue
        )

    def handle_message(self, message: email.message.Message) -> None:
        self.queue.put_nowait(message)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            return await super().handle_DATA(server, session, envelope)
        except queue_module.Full:
            log.warning("Queue handler: the queue is full, message deferred")
            return "452 4.3.1 Insufficient system storage, try again later"


class Proxy:
    """Relays each message to another SMTP server through smtpwire.client, adding
    an ``X-Peer`` header with the client's address.

    The relay runs on the event loop without blocking it (aiosmtpd ran a blocking
    :mod:`smtplib` session inside the loop, stalling every connection for the
    length of the upstream session).  Line endings are normalised to CRLF before
    relaying, so a bare CR or LF accepted from the client cannot end the DATA
    section early at a lenient upstream.  The sender gets the upstream's own
    reply: its final ``250`` text, or its refusal (sender refused, every
    recipient refused, message refused).  When the upstream cannot be reached the
    sender gets a temporary ``451`` and keeps the message, where aiosmtpd
    answered ``250`` and lost it.  Recipients refused while others were accepted
    are logged on ``mail.debug``.
    """

    def __init__(self, remote_hostname: str, remote_port: int) -> None:
        self._hostname = remote_hostname
        self._port = remote_port

    @classmethod
    def from_cli(cls, parser: ArgumentParser, *args: str) -> Proxy:
        """``-c smtpwire.server.handlers.Proxy HOST PORT`` (aiosmtpd's CLI could
        not build a Proxy at all: it has no ``from_cli``)."""
        if len(args) != 2:
            parser.error("Proxy usage: HOST PORT (the SMTP server to relay to)")
        host, port = args
        if not _PORT.fullmatch(port) or not 0 < int(port) <= 65535:
            parser.error(f"Proxy: invalid port number: {port}")
        return cls(host, int(port))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = _with_peer_header(normalize_line_endings(_raw_content(envelope)), session.peer)
        recipients = list(envelope.rcpt_tos)
        try:
            refused, message = await self._relay(
                envelope.mail_from or "", recipients, data, _wanted_options(envelope)
            )
        except SMTPRecipientsRefused as error:
            log.info("we got some refusals: %s", error.recipients)
            first = error.recipients[0]
            return _one_line(first.code, first.message)
        except SMTPResponseException as error:
            log.info("the upstream refused the message: %s %s", error.code, error.message)
            return _one_line(error.code, error.message)
        except (OSError, SMTPException) as error:
            log.exception("Proxy: relaying to %s:%s failed", self._hostname, self._port)
            log.info("we got some refusals: %s", dict.fromkeys(recipients, (-1, str(error))))
            return "451 4.4.0 Error: relaying to the upstream server failed, try again later"
        if refused:
            log.info("we got some refusals: %s", refused)
        return _one_line(250, message)

    async def _relay(
        self, mail_from: str, recipients: list[str], data: bytes, options: list[str]
    ) -> tuple[dict[str, SMTPResponse], str]:
        client = SMTPClient(
            hostname=self._hostname, port=self._port, start_tls=False, timeout=PROXY_TIMEOUT
        )
        async with client:
            try:
                await client.ehlo()
            except SMTPHeloError:
                await client.helo()
            if not client.supports_extension("8bitmime"):
                options = [option for option in options if option != "BODY=8BITMIME"]
            return await client.sendmail(mail_from, recipients, data, mail_options=options)


def _one_line(code: int, message: str) -> str:
    """A reply line from an upstream reply (a multi-line text joined with spaces)."""
    text = " ".join(message.split("\n")).strip()
    return f"{code} {text}" if text else str(code)


def _raw_content(envelope: Envelope) -> bytes:
    # Relay the content as the handler chain left it (bytearray included, as in
    # aiosmtpd); a str content (decode_data) is only a view of the bytes received.
    if isinstance(envelope.content, (bytes, bytearray)):
        return bytes(envelope.content)
    if envelope.original_content is not None:
        return envelope.original_content
    if isinstance(envelope.content, str):
        return envelope.content.encode("utf-8", errors="surrogateescape")
    raise TypeError(f"Expected str or bytes, got {type(envelope.content)}")


def _with_peer_header(data: bytes, peer: PeerType) -> bytes:
    """Insert ``X-Peer`` at the end of the header section (``data`` has CRLF
    line endings), or at the top when the message has no blank line."""
    address = peer[0] if isinstance(peer, tuple) else str(peer)
    header = b"X-Peer: " + address.encode("utf-8", errors="backslashreplace") + b"\r\n"
    if data.startswith(b"\r\n"):
        index = 0
    else:
        blank = data.find(b"\r\n\r\n")
        index = blank + 2 if blank >= 0 else 0
    return data[:index] + header + data[index:]


def _wanted_options(envelope: Envelope) -> list[str]:
    """The MAIL parameters that still hold for the relayed copy (the client
    computes SIZE itself)."""
    options = []
    if envelope.smtp_utf8 or "SMTPUTF8" in envelope.mail_options:
        options.append("SMTPUTF8")
    if "BODY=8BITMIME" in envelope.mail_options:
        options.append("BODY=8BITMIME")
    return options
