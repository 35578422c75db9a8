"""The server engine's contract with user code (DESIGN.md, "Layers", rules of the
adapter; issue 14, section 2):

- nothing needs a *running* loop before ``connection_made`` (aiosmtpd's ``loop=``);
- hooks and overridden methods run in a real ``asyncio.Task``, and the session's
  contextvars flow from hook to hook (and never to another session);
- ``await push(status)`` has written the reply when it returns, while the replies
  the server makes itself for a pipelined batch still leave in one write;
- ``ConnectionResetError`` / ``CancelledError`` from a command or a hook mean the
  client is gone: no reply, no ``handle_exception``;
- the end of a session always calls ``transport.close()``.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys
from typing import Any

import pytest

from smtpwire.common.replies import SMTPReply
from smtpwire.server.handlers import Sink
from smtpwire.server.smtp import SMTP, Envelope, Session
from support.engine_doubles import (
    BODY,
    GO_AHEAD,
    GREETING,
    HOST,
    ProbedSMTP,
    RecordingTransport,
    TaskProbe,
    replies_to_eof,
    texts,
)
from support.server import (
    WAIT,
    RawClient,
    greeted,
    read_until_eof,
    serving,
    text,
)

# -- 3. driving a protocol with loop= and no running loop (aiosmtpd's test style) ----------


def test_protocol_with_loop_argument_is_driven_without_a_running_loop() -> None:
    """SMTP(handler, loop=L) built and connected outside any running loop (no
    "RuntimeError: no running event loop"); running L then greets, answers EHLO
    fed through data_received, and ends the session task, which runs on L."""
    loop = asyncio.new_event_loop()
    try:
        protocol = SMTP(Sink(), hostname=HOST, loop=loop)
        transport = RecordingTransport()
        protocol.connection_made(transport)
        loop.run_until_complete(
            asyncio.wait_for(transport.until_written(GREETING.encode() + b"\r\n"), WAIT)
        )
        task = protocol._handler_coroutine
        assert task is not None
        assert task.get_loop() is loop

        protocol.data_received(b"EHLO client.example\r\n")
        loop.run_until_complete(asyncio.wait_for(transport.until_written(b"250 HELP\r\n"), WAIT))
        assert transport.written.endswith(
            f"250-{HOST}\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250 HELP\r\n".encode()
        )

        protocol.connection_lost(None)
        loop.run_until_complete(asyncio.wait_for(asyncio.wait({task}), WAIT))
        assert task.done()
    finally:
        loop.close()


# -- 4. hooks and overridden methods run in a task --------------------------------------------


PROBED_SESSION = [
    ("HELO client.example", "250 helo probed"),
    ("EHLO client.example", f"250-{HOST}\r\n250 ehlo probed"),
    ("MAIL FROM:<a@example.org>", "250 mail probed"),
    ("RCPT TO:<b@example.org>", "250 rcpt probed"),
    ("DATA", GO_AHEAD),
    (BODY.decode() + ".", "250 data probed"),
    ("RSET", "250 rset probed"),
    ("NOOP", "250 noop probed"),
    ("NOOP fail", "500 Error: (ValueError) probe failure"),
    ("VRFY <b@example.org>", "252 vrfy probed"),
    ("QUIT", "221 quit probed"),
]
PROBED_NAMES = {
    "handle_HELO",
    "handle_EHLO",
    "handle_MAIL",
    "handle_RCPT",
    "handle_DATA",
    "handle_RSET",
    "handle_NOOP",
    "handle_VRFY",
    "handle_QUIT",
    "push",
    "check_helo_needed",
    "check_auth_needed",
    "smtp_NOOP",
    "handle_exception",
    "_create_session",
    "_create_envelope",
}


def reply_text(reply: SMTPReply) -> str:
    """A reply as sent, lines joined by CRLF."""
    lines = reply.lines
    return "\r\n".join(
        f"{reply.code}{'-' if n < len(lines) - 1 else ' '}{line}" for n, line in enumerate(lines)
    )


@pytest.mark.parametrize("pipelined", [False, True], ids=["lock-step", "pipelined"])
def test_hooks_and_overridden_methods_run_in_a_task(pipelined: bool) -> None:
    """Every handler hook (HELO, EHLO, MAIL, RCPT, DATA, RSET, NOOP, VRFY, QUIT) and
    every overridden method (push, check_helo_needed, check_auth_needed, smtp_NOOP,
    handle_exception, _create_session, _create_envelope) runs inside an asyncio
    Task, with asyncio.timeout usable (3.11+), lock-step and pipelined alike."""
    probe = TaskProbe()
    with (
        serving(lambda: ProbedSMTP(probe, hostname=HOST)) as server,
        RawClient(server.port) as client,
    ):
        assert text(client.reply()) == GREETING
        if pipelined:
            client.send(b"".join(line.encode() + b"\r\n" for line, _ in PROBED_SESSION))
            replies = [reply_text(reply) for reply in client.replies(len(PROBED_SESSION))]
        else:
            replies = [reply_text(client.command(line)) for line, _ in PROBED_SESSION]
        assert read_until_eof(client.sock) == b""
    assert replies == [reply for _, reply in PROBED_SESSION]
    assert {name for name, _ in probe.in_task} >= PROBED_NAMES
    outside_a_task = sorted({name for name, in_task in probe.in_task if not in_task})
    assert not outside_a_task, f"ran outside a task: {outside_a_task}"
    if sys.version_info >= (3, 11):
        no_timeout = sorted({name for name, works in probe.timeout_works if not works})
        assert not no_timeout, f"asyncio.timeout failed in: {no_timeout}"


# -- 5. contextvars flow from hook to hook, within one session only -------------------------

SESSION_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("smtpwire_test_session_name")
SENDER: contextvars.ContextVar[str] = contextvars.ContextVar("smtpwire_test_sender")
UNSET = "<unset>"


class ContextHandler:
    """handle_EHLO sets SESSION_NAME to the client's name (after noting what it
    saw), handle_MAIL sets SENDER; later hooks note both."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []  # (client, hook, session name, sender)

    def note(self, session: Session, hook: str) -> None:
        client = session.host_name or UNSET
        self.seen.append((client, hook, SESSION_NAME.get(UNSET), SENDER.get(UNSET)))

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.note(session, "EHLO")
        SESSION_NAME.set(hostname)
        return lines

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.note(session, "MAIL")
        SENDER.set(address)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.note(session, "RCPT")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.note(session, "DATA")
        return "250 OK"


class StreamingContextHandler(ContextHandler):
    """The same, with the message read through handle_DATA_STREAM."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    async def handle_DATA_STREAM(
        self, server: SMTP, session: Session, envelope: Envelope, body: Any
    ) -> str:
        self.note(session, "DATA_STREAM")
        received = b"".join([chunk async for chunk in body])
        self.note(session, "DATA_STREAM end")
        self.bodies.append(received)
        return "250 OK"


def context_transaction(client: RawClient, name: str, *, pipelined: bool) -> list[str]:
    lines = [f"MAIL FROM:<{name}@example.org>", "RCPT TO:<b@example.org>", "DATA"]
    if pipelined:
        client.send("".join(line + "\r\n" for line in lines).encode() + BODY + b".\r\n")
        return texts(client.replies(4))
    replies = [text(client.command(line)) for line in lines]
    client.send(BODY + b".\r\n")
    return [*replies, text(client.reply())]


@pytest.mark.parametrize("pipelined", [False, True], ids=["lock-step", "pipelined"])
@pytest.mark.parametrize("handler_class", [ContextHandler, StreamingContextHandler])
def test_contextvars_flow_between_hooks_of_one_session_only(
    handler_class: type[ContextHandler], pipelined: bool
) -> None:
    """A ContextVar set in handle_EHLO (and one set in handle_MAIL) is seen by the
    later hooks of the same session, handle_DATA_STREAM included, and never by
    another session, which starts from the server's context."""
    handler = handler_class()
    with (
        serving(lambda: SMTP(handler, hostname=HOST)) as server,
        greeted(server.port, "EHLO one.example") as one,
        greeted(server.port, "EHLO two.example") as two,
    ):
        expected = ["250 OK", "250 OK", GO_AHEAD, "250 OK"]
        assert context_transaction(one, "first", pipelined=pipelined) == expected
        assert context_transaction(two, "second", pipelined=pipelined) == expected
        assert context_transaction(one, "third", pipelined=pipelined) == expected
    data_hooks = ["DATA"] if handler_class is ContextHandler else ["DATA_STREAM", "DATA_STREAM end"]

    def transaction(client: str, sender: str, previous_sender: str) -> list[Any]:
        return [
            (client, "MAIL", client, previous_sender),
            (client, "RCPT", client, sender),
            *[(client, hook, client, sender) for hook in data_hooks],
        ]

    assert handler.seen == [
        ("one.example", "EHLO", UNSET, UNSET),
        ("two.example", "EHLO", UNSET, UNSET),
        *transaction("one.example", "first@example.org", UNSET),
        *transaction("two.example", "second@example.org", UNSET),
        *transaction("one.example", "third@example.org", "first@example.org"),
    ]


# -- 6. push has written the reply when it returns; batches still leave in one write -------


class ByeSMTP(SMTP):
    async def smtp_XBYE(self, arg: str | None) -> None:
        await self.push("221 custom bye")
        assert self.transport is not None
        self.transport.close()


@pytest.mark.parametrize("before", [b"", b"NOOP\r\n"], ids=["alone", "after-noop"])
def test_push_then_close_in_a_subclass_command_delivers_the_reply(before: bytes) -> None:
    """await push() has written the reply when it returns: a subclass command that
    pushes "221 custom bye" and closes the transport gets it to the client."""
    with (
        serving(lambda: ByeSMTP(Sink(), hostname=HOST)) as server,
        greeted(server.port) as client,
    ):
        client.send(before + b"XBYE\r\n")
        expected = ["250 OK"] * before.count(b"NOOP") + ["221 custom bye"]
        assert replies_to_eof(client) == expected


class WrittenAtPush(SMTP):
    """An overridden smtp_NOOP notes whether its first line had reached the
    transport when push returned."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.written_when_push_returned: list[bool] = []

    async def smtp_NOOP(self, arg: str | None) -> None:
        transport = self.transport
        assert isinstance(transport, RecordingTransport)
        await self.push("250-first line")
        self.written_when_push_returned.append(transport.written.endswith(b"250-first line\r\n"))
        await self.push("250 last line")


async def test_push_has_written_when_it_returns() -> None:
    """await push() has handed the reply to the transport when it returns (seen from
    an overridden smtp_NOOP, on a recording transport)."""
    protocol = WrittenAtPush(Sink(), hostname=HOST)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    try:
        await asyncio.wait_for(transport.until_written(GREETING.encode() + b"\r\n"), WAIT)
        protocol.data_received(b"NOOP\r\n")
        await asyncio.wait_for(transport.until_written(b"250 last line\r\n"), WAIT)
        assert protocol.written_when_push_returned == [True]
    finally:
        await end_session(protocol)


async def test_replies_to_a_pipelined_batch_leave_in_one_write() -> None:
    """The replies the server makes itself for pipelined commands (three NOOPs in
    one read) reach the transport in one write call (RFC 2920 section 3.2)."""
    protocol = SMTP(Sink(), hostname=HOST)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    try:
        await asyncio.wait_for(transport.until_written(GREETING.encode() + b"\r\n"), WAIT)
        before = len(transport.writes)
        protocol.data_received(b"NOOP\r\nNOOP\r\nNOOP\r\n")
        await asyncio.wait_for(
            transport.until(lambda: transport.written.endswith(b"250 OK\r\n" * 3)), WAIT
        )
        assert transport.writes[before:] == [b"250 OK\r\n250 OK\r\n250 OK\r\n"]
    finally:
        await end_session(protocol)


async def end_session(protocol: SMTP) -> None:
    task = protocol._handler_coroutine
    protocol.connection_lost(None)
    if task is not None:
        await asyncio.wait_for(asyncio.wait({task}), WAIT)


# -- 7. a connection reset or a cancellation inside a command: the client is gone ----------


class ResetHandler:
    """handle_MAIL raises what the sender's address asks for; handle_exception
    notes every call."""

    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address == "reset@example.org":
            raise ConnectionResetError("peer reset")
        if address == "cancel@example.org":
            raise asyncio.CancelledError
        envelope.mail_from = address
        return "250 OK"

    async def handle_exception(self, error: Exception) -> str:
        self.exceptions.append(error)
        return "451 4.3.0 handle_exception called"


class ResetSMTP(SMTP):
    async def smtp_XRESET(self, arg: str | None) -> None:
        raise ConnectionResetError("peer reset")

    async def smtp_XCANCEL(self, arg: str | None) -> None:
        raise asyncio.CancelledError


def first_read(sock: socket.socket) -> bytes:
    """The first bytes the server sends (b"" for a close, reset included); the
    server's reply, if it sends one, shows at once instead of after a timeout."""
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize(
    "line",
    [
        "MAIL FROM:<reset@example.org>",
        "MAIL FROM:<cancel@example.org>",
        "XRESET",
        "XCANCEL",
    ],
    ids=["hook-reset", "hook-cancelled", "command-reset", "command-cancelled"],
)
def test_reset_or_cancelled_in_a_command_closes_without_reply(line: str) -> None:
    """ConnectionResetError or CancelledError raised in an smtp_* method or a hook:
    the connection is closed with no reply and no handle_exception call, and
    another client connected meanwhile is still served."""
    handler = ResetHandler()
    with (
        serving(lambda: ResetSMTP(handler, hostname=HOST)) as server,
        greeted(server.port) as gone,
        greeted(server.port) as other,
    ):
        gone.send(line.encode() + b"\r\n")
        assert first_read(gone.sock) == b""
        assert text(other.command("NOOP")) == "250 OK"
        assert text(other.command("MAIL FROM:<ok@example.org>")) == "250 OK"
        assert text(other.command("QUIT")) == "221 Bye"
    assert handler.exceptions == []


# -- 8. the end of a session closes the transport, even one that says it is closing -------


@pytest.mark.parametrize("closing_from", ["start", "greeting"])
async def test_session_end_calls_close_even_when_transport_is_closing(closing_from: str) -> None:
    """At the end of a session (QUIT) the server calls transport.close() even when
    transport.is_closing() already answers True (a peer gone, a TLS close_notify):
    the transport's own resources are released only by close()."""
    protocol = SMTP(Sink(), hostname=HOST)
    transport = RecordingTransport(always_closing=closing_from == "start")
    protocol.connection_made(transport)
    task = protocol._handler_coroutine
    assert task is not None
    try:
        if closing_from == "greeting":
            await asyncio.wait_for(transport.until_written(GREETING.encode() + b"\r\n"), WAIT)
            transport.always_closing = True
        protocol.data_received(b"QUIT\r\n")
        closed = asyncio.ensure_future(transport.until(lambda: transport.close_calls > 0))
        try:
            await asyncio.wait({closed, task}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        assert transport.close_calls >= 1
    finally:
        await end_session(protocol)
