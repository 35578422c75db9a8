"""LMTP (RFC 2033): LHLO instead of HELO/EHLO, and after DATA one reply per
accepted recipient (aiosmtpd sends a single reply; smtpwire follows the RFC)."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

import pytest

from smtpwire.server.lmtp import LMTP
from smtpwire.server.smtp import SMTP, Envelope, Session
from support.server import RawClient, serving

HOST = "testhost"
RECIPIENTS = ["bart@example.com", "cate@example.com", "dave@example.com"]


class Statuses:
    """handle_DATA returns whatever ``status`` is; the envelopes are kept."""

    def __init__(self, status: Any) -> None:
        self.status = status
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> Any:
        self.envelopes.append(envelope)
        return self.status


def lmtp(handler: Any = None, **kwargs: Any) -> Callable[[], LMTP]:
    kwargs.setdefault("hostname", HOST)
    return lambda: LMTP(handler if handler is not None else object(), **kwargs)


def connect(port: int, greeting: str | None = "LHLO client.example") -> RawClient:
    client = RawClient(port)
    assert str(client.reply()) == "220 testhost Python SMTP 1.4.6"
    if greeting:
        assert client.command(greeting).code == 250
    return client


def send_message(client: RawClient, recipients: list[str], body: bytes = b"hi\r\n") -> None:
    assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"
    for recipient in recipients:
        assert str(client.command(f"RCPT TO:<{recipient}>")) == "250 OK"
    assert str(client.command("DATA")) == "354 End data with <CR><LF>.<CR><LF>"
    client.send(body + b".\r\n")


def test_lhlo_lists_extensions_like_ehlo() -> None:
    with serving(lmtp()) as server, connect(server.port, greeting=None) as client:
        reply = client.command("LHLO client.example")
        assert list(reply.lines) == ["testhost", "SIZE 33554432", "8BITMIME", "HELP"]
        session = server.call(lambda: server.protocols[0].session)
        assert (session.host_name, session.extended_smtp) == ("client.example", True)


def test_lhlo_without_hostname() -> None:
    with serving(lmtp()) as server, connect(server.port, greeting=None) as client:
        assert str(client.command("LHLO")) == "501 Syntax: LHLO hostname"


@pytest.mark.parametrize("verb", ["HELO", "EHLO", "helo"])
def test_helo_and_ehlo_are_not_lmtp(verb: str) -> None:
    with serving(lmtp()) as server, connect(server.port, greeting=None) as client:
        assert str(client.command(f"{verb} client.example")) == (
            f'500 Error: command "{verb.upper()}" not recognized'
        )
        assert server.call(lambda: server.protocols[0].session.host_name) is None
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "503 Error: send HELO first"


def test_help_lists_lhlo() -> None:
    with serving(lmtp()) as server, connect(server.port, greeting=None) as client:
        assert str(client.command("HELP")) == (
            "250 Supported commands: AUTH DATA HELP LHLO MAIL NOOP QUIT RCPT RSET VRFY"
        )
        assert str(client.command("HELP LHLO")) == "250 Syntax: LHLO hostname"
        assert str(client.command("HELP HELO")) == (
            "501 Supported commands: AUTH DATA HELP LHLO MAIL NOOP QUIT RCPT RSET VRFY"
        )


def test_one_default_reply_per_recipient() -> None:
    with serving(lmtp()) as server, connect(server.port) as client:
        send_message(client, RECIPIENTS)
        assert [str(reply) for reply in client.replies(3)] == ["250 OK"] * 3
        assert str(client.command("NOOP")) == "250 OK"


def test_handle_data_string_is_repeated_per_recipient() -> None:
    handler = Statuses("250 2.1.5 Delivered")
    with serving(lmtp(handler)) as server, connect(server.port) as client:
        send_message(client, RECIPIENTS, b"Subject: x\r\n\r\n..dot\r\n")
        assert [str(reply) for reply in client.replies(3)] == ["250 2.1.5 Delivered"] * 3
        assert str(client.command("NOOP")) == "250 OK"
    (envelope,) = handler.envelopes
    assert envelope.rcpt_tos == RECIPIENTS
    assert envelope.content == b"Subject: x\r\n\r\n.dot\r\n"


def test_handle_data_list_gives_one_reply_each() -> None:
    statuses = ["250 2.1.5 bart ok", "452 4.2.2 cate over quota", "550 5.1.1 dave unknown"]
    with serving(lmtp(Statuses(statuses))) as server, connect(server.port) as client:
        send_message(client, RECIPIENTS)
        assert [str(reply) for reply in client.replies(3)] == statuses
        assert str(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize(
    "status",
    [["250 only one"], ["250 a", "250 b", "250 c", "250 d"], [], 250],
    ids=["too-few", "too-many", "empty", "not-a-status"],
)
def test_handle_data_wrong_statuses_give_451_each(status: Any) -> None:
    with serving(lmtp(Statuses(status))) as server, connect(server.port) as client:
        send_message(client, RECIPIENTS)
        replies = client.replies(3)
        assert [reply.code for reply in replies] == [451] * 3
        assert str(client.command("NOOP")) == "250 OK"


def test_second_transaction_after_per_recipient_replies() -> None:
    handler = Statuses("250 OK")
    with serving(lmtp(handler)) as server, connect(server.port) as client:
        send_message(client, RECIPIENTS[:2], b"one\r\n")
        assert [str(reply) for reply in client.replies(2)] == ["250 OK"] * 2
        send_message(client, RECIPIENTS[2:], b"two\r\n")
        assert str(client.reply()) == "250 OK"
        assert str(client.command("QUIT")) == "221 Bye"
    assert [(e.rcpt_tos, e.content) for e in handler.envelopes] == [
        (RECIPIENTS[:2], b"one\r\n"),
        (RECIPIENTS[2:], b"two\r\n"),
    ]


def test_smtplib_lmtp_client() -> None:
    """smtplib.LMTP speaks LHLO but, like SMTP.sendmail, reads only the first
    reply after DATA; the other recipients' replies follow in order."""
    statuses = ["250 2.1.5 bart ok", "550 5.1.1 cate unknown"]
    handler = Statuses(statuses)
    with serving(lmtp(handler)) as server:
        client = smtplib.LMTP("127.0.0.1", server.port)
        try:
            code, message = client.ehlo("client.example")  # sends LHLO
            assert (code, message) == (250, b"testhost\nSIZE 33554432\n8BITMIME\nHELP")
            refused = client.sendmail(
                "anne@example.com",
                ["bart@example.com", "cate@example.com"],
                "Subject: t\r\n\r\nhi\r\n",
            )
            assert refused == {}
            assert client.getreply() == (550, b"5.1.1 cate unknown")
            assert client.noop() == (250, b"OK")
            assert client.quit() == (221, b"Bye")
        finally:
            client.close()
    (envelope,) = handler.envelopes
    assert envelope.mail_from == "anne@example.com"
    assert envelope.rcpt_tos == ["bart@example.com", "cate@example.com"]
    assert envelope.content == b"Subject: t\r\n\r\nhi\r\n"
