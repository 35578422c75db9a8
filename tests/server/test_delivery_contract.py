"""Nothing lost at the end of a message or a connection (issue 14, section 1),
regression tests for two delivery bugs found with real MTAs:

- LMTP answers once per accepted recipient after DATA / BDAT LAST in every
  outcome (RFC 2033 section 4.2, RFC 3030 section 3), failures included: Postfix
  pipelines QUIT after the dot and reads each reply as a recipient's status;
- every command received before the client's EOF or TLS close_notify is answered
  (Exim sends MAIL, RCPT, BDAT LAST, QUIT, close_notify and a half-close in one
  flight, then reads).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from smtpwire.server.controller import Controller
from smtpwire.server.lmtp import LMTP
from smtpwire.server.smtp import SMTP, Envelope, Session
from support.engine_doubles import (
    BODY,
    GO_AHEAD,
    GREETING,
    HOST,
    MemoryTLSClient,
    bdat_last,
    replies_to_eof,
    texts,
)
from support.server import (
    WAIT,
    RawClient,
    greeted,
    serving,
    text,
)

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
