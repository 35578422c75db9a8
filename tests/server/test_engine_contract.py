"""The server engine's contract (DESIGN.md, "Layers", rules of the adapter), as
regression tests written before the engine that meets them:

- LMTP answers once per accepted recipient after DATA / BDAT LAST in every
  outcome (RFC 2033 section 4.2, RFC 3030 section 3), failures included;
- every command received before the client's EOF or TLS close_notify is answered;
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
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme

from smtpwire.common.replies import SMTPReply
from smtpwire.server.controller import Controller
from smtpwire.server.handlers import Sink
from smtpwire.server.lmtp import LMTP
from smtpwire.server.smtp import SMTP, Envelope, Session
from support.engine_doubles import MemoryTLSClient, ProbedSMTP, RecordingTransport, TaskProbe
from support.server import (
    WAIT,
    RawClient,
    greeted,
    read_until_eof,
    serving,
    text,
)

HOST = "engine.test"
GREETING = f"220 {HOST} Python SMTP 1.4.6"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
BODY = b"Subject: contract\r\n\r\nbody line\r\n"


def texts(replies: list[SMTPReply]) -> list[str]:
    return [text(reply) for reply in replies]


def replies_to_eof(client: RawClient) -> list[str]:
    """Every reply the server sends until it closes the connection (parsed from
    raw bytes, so that a reply too many or too few shows)."""
    return texts(client.parser.feed(read_until_eof(client.sock)))


def bdat_last(chunk: bytes) -> bytes:
    return b"BDAT %d LAST\r\n%s" % (len(chunk), chunk)


# -- 1. LMTP: one reply per accepted recipient, whatever happens ----------------------------

LMTP_RECIPIENTS = ["bart@example.org", "cate@example.org"]


class LMTPHandler:
    """handle_DATA answers "250 2.1.5 Delivered" or raises ``error``;
    handle_RCPT refuses ``nobody@``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        if self.error is not None:
            raise self.error
        return "250 2.1.5 Delivered"


class LMTPHandlerWithExceptionHook(LMTPHandler):
    def __init__(self, error: Exception | None = None) -> None:
        super().__init__(error)
        self.exceptions: list[Exception] = []

    async def handle_exception(self, error: Exception) -> str:
        self.exceptions.append(error)
        return "451 4.3.0 Try again later"


@dataclass(frozen=True)
class Outcome:
    """One way a message can end, and the reply each accepted recipient gets."""

    handler: Callable[[], LMTPHandler]
    body: bytes
    reply: str
    server: dict[str, Any] = field(default_factory=dict)
    reaches_handler: bool = False


OUTCOMES = {
    "delivered": Outcome(LMTPHandler, BODY, "250 2.1.5 Delivered", reaches_handler=True),
    "handle_DATA-raises": Outcome(
        lambda: LMTPHandler(ValueError("mailbox store offline")),
        BODY,
        "500 Error: (ValueError) mailbox store offline",
        reaches_handler=True,
    ),
    "handle_exception-451": Outcome(
        lambda: LMTPHandlerWithExceptionHook(RuntimeError("quota service down")),
        BODY,
        "451 4.3.0 Try again later",
        reaches_handler=True,
    ),
    "too-big": Outcome(
        LMTPHandler,
        b"Subject: big\r\n\r\n" + b"0123456789abcdef\r\n" * 20,
        "552 Error: Too much mail data",
        {"data_size_limit": 200},
    ),
    "line-too-long": Outcome(
        LMTPHandler,
        b"Subject: long\r\n\r\n" + b"x" * 2000 + b"\r\n",
        "500 Line too long (see RFC5321 4.5.3.1.6)",
    ),
    "bare-lf-rejected": Outcome(
        LMTPHandler,
        b"Subject: bare\r\n\r\nbare\nline feed\r\n",
        "550 5.5.2 Error: bare <CR> or <LF> in message data",
        {"bare_lf": "reject"},
    ),
}
# A BDAT chunk has no lines, so no line is too long in it.
LMTP_CASES = [
    (outcome, verb)
    for outcome in OUTCOMES
    for verb in ("DATA", "BDAT")
    if (outcome, verb) != ("line-too-long", "BDAT")
]


def lmtp_transaction(
    port: int, recipients: list[str], verb: str, body: bytes
) -> tuple[list[str], list[str]]:
    """LHLO, MAIL and the RCPTs in lock-step (their replies), then the message and
    QUIT in one write, as Postfix's LMTP client sends them (every reply until the
    server closes)."""
    with RawClient(port) as client:
        assert text(client.reply()) == GREETING
        assert client.command("LHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<anne@example.org>")) == "250 OK"
        rcpt_replies = [text(client.command(f"RCPT TO:<{address}>")) for address in recipients]
        if verb == "DATA":
            client.send(b"DATA\r\n" + body + b".\r\nQUIT\r\n")
        else:
            client.send(bdat_last(body) + b"QUIT\r\n")
        return rcpt_replies, replies_to_eof(client)


@pytest.mark.parametrize(("outcome", "verb"), LMTP_CASES)
def test_lmtp_answers_each_accepted_recipient_in_every_outcome(outcome: str, verb: str) -> None:
    """LMTP (RFC 2033 section 4.2, RFC 3030 section 3): after DATA's dot or BDAT
    LAST, exactly one reply per accepted recipient -- delivered, handle_DATA
    raising (the error reply, from handle_exception when the handler has one), too
    big (552), a line too long (500), a bare LF under bare_lf="reject" (550) -- so
    that a client that sent QUIT right after the message gets both replies, then
    221, and never waits for a reply that does not come."""
    case = OUTCOMES[outcome]
    handler = case.handler()

    def factory() -> LMTP:
        return LMTP(handler, hostname=HOST, chunking=True, **case.server)

    with serving(factory) as server:
        rcpt_replies, replies = lmtp_transaction(server.port, LMTP_RECIPIENTS, verb, case.body)
    assert rcpt_replies == ["250 OK", "250 OK"]
    go_ahead = [GO_AHEAD] if verb == "DATA" else []
    assert replies == [*go_ahead, case.reply, case.reply, "221 Bye"]
    assert len(handler.envelopes) == (1 if case.reaches_handler else 0)
    if isinstance(handler, LMTPHandlerWithExceptionHook):
        assert handler.exceptions, "handle_exception was never called"
        assert all(isinstance(error, RuntimeError) for error in handler.exceptions)


@pytest.mark.parametrize("outcome", ["delivered", "handle_DATA-raises"])
@pytest.mark.parametrize("verb", ["DATA", "BDAT"])
def test_lmtp_recipient_refused_by_handle_rcpt_gets_no_reply_after_data(
    verb: str, outcome: str
) -> None:
    """LMTP: a recipient handle_RCPT refused (550) gets no reply after the message;
    the two accepted ones get one each, then QUIT's 221."""
    case = OUTCOMES[outcome]
    handler = case.handler()
    recipients = ["bart@example.org", "nobody@example.org", "cate@example.org"]
    with serving(lambda: LMTP(handler, hostname=HOST, chunking=True)) as server:
        rcpt_replies, replies = lmtp_transaction(server.port, recipients, verb, case.body)
    assert rcpt_replies == ["250 OK", "550 5.1.1 No such user", "250 OK"]
    go_ahead = [GO_AHEAD] if verb == "DATA" else []
    assert replies == [*go_ahead, case.reply, case.reply, "221 Bye"]
    assert [envelope.rcpt_tos for envelope in handler.envelopes] == [LMTP_RECIPIENTS]


# -- 2. every command received before the client's EOF / close_notify is answered ---------

ROUNDS = 50
FLIGHT_HEAD = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
FLIGHTS = {
    "BDAT": (
        FLIGHT_HEAD + bdat_last(BODY) + b"QUIT\r\n",
        ["250 OK", "250 OK", "250 OK", "221 Bye"],
    ),
    "DATA": (
        FLIGHT_HEAD + b"DATA\r\n" + BODY + b".\r\nQUIT\r\n",
        ["250 OK", "250 OK", GO_AHEAD, "250 OK", "221 Bye"],
    ),
}


class SlowDelivery:
    """handle_DATA takes a few milliseconds (a slow mailbox store), so its reply
    is due well after the client's last bytes have arrived."""

    def __init__(self) -> None:
        self.contents: list[bytes | None] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(0.005)  # simulated work, not synchronisation
        self.contents.append(envelope.original_content)
        return "250 OK"


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    certificate_authority.configure_trust(context)
    return context


def flight_then_close_notify(tls: MemoryTLSClient, flight: bytes) -> list[str]:
    """EHLO, then the flight, close_notify and a TCP half-close back to back, and
    only then every reply until the server closes."""
    assert tls.command("EHLO client.example").code == 250
    tls.send(flight)
    tls.close_notify_and_half_close()
    return texts(tls.read_replies_to_eof())


def starttls_round(port: int, client_context: ssl.SSLContext, flight: bytes) -> list[str]:
    with RawClient(port) as raw:
        assert text(raw.reply()) == GREETING
        assert "STARTTLS" in raw.command("EHLO client.example").lines
        assert text(raw.command("STARTTLS")) == "220 Ready to start TLS"
        tls = MemoryTLSClient(raw.sock, client_context)
        tls.handshake()
        return flight_then_close_notify(tls, flight)


def implicit_tls_round(port: int, client_context: ssl.SSLContext, flight: bytes) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        tls = MemoryTLSClient(sock, client_context)
        tls.handshake()
        assert text(tls.reply()) == GREETING
        return flight_then_close_notify(tls, flight)


@pytest.mark.parametrize("verb", ["BDAT", "DATA"])
def test_starttls_commands_before_close_notify_are_all_answered(
    verb: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """TLS: a client pipelines its transaction and QUIT, then sends close_notify
    and a TCP half-close before reading: every command is answered (the message
    delivered exactly once) in each of 50 rounds."""
    flight, expected = FLIGHTS[verb]
    handler = SlowDelivery()

    def factory() -> SMTP:
        return SMTP(handler, hostname=HOST, tls_context=server_context, chunking=True)

    with serving(factory) as server:
        for round_number in range(ROUNDS):
            replies = starttls_round(server.port, client_context, flight)
            assert replies == expected, f"round {round_number}"
    assert handler.contents == [BODY] * ROUNDS


@pytest.mark.parametrize("verb", ["BDAT", "DATA"])
def test_plain_tcp_commands_before_eof_are_all_answered(verb: str) -> None:
    """Plain TCP: the same flight followed by a half-close (shutdown(SHUT_WR)):
    every command is answered, in each of 50 rounds."""
    flight, expected = FLIGHTS[verb]
    handler = SlowDelivery()
    with serving(lambda: SMTP(handler, hostname=HOST, chunking=True)) as server:
        for round_number in range(ROUNDS):
            with greeted(server.port) as client:
                client.send(flight)
                client.sock.shutdown(socket.SHUT_WR)
                assert replies_to_eof(client) == expected, f"round {round_number}"
    assert handler.contents == [BODY] * ROUNDS


@pytest.mark.parametrize("verb", ["BDAT", "DATA"])
def test_implicit_tls_commands_before_close_notify_are_all_answered(
    verb: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Implicit TLS (a Controller with ssl_context): the flight, close_notify and a
    half-close before reading; every command is answered, in each of 50 rounds."""
    flight, expected = FLIGHTS[verb]
    handler = SlowDelivery()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=0,
        ssl_context=server_context,
        server_hostname=HOST,
        chunking=True,
    )
    controller.start()
    try:
        for round_number in range(ROUNDS):
            replies = implicit_tls_round(controller.port, client_context, flight)
            assert replies == expected, f"round {round_number}"
    finally:
        controller.stop()
    assert handler.contents == [BODY] * ROUNDS


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
