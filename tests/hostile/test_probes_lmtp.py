"""Attack probes on LMTP (RFC 2033), over real sockets: whatever goes wrong at the
end of a message, the client gets exactly one reply per accepted recipient, and
the next reply belongs to its next command; LHLO, EHLO and HELO are not confused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from smtpwire.server.lmtp import LMTP
from smtpwire.server.smtp import SMTP
from support.server import RawClient, replies_until_close, serving, text

HOST = "lmtp.test"
# Three RCPTs, the middle one refused: two accepted recipients.
ENVELOPE = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<nobody@x>\r\nRCPT TO:<c@x>\r\n"
CLASSIC_ENVELOPE = ["250 OK", "250 OK", "550 5.1.1 No such user", "250 OK"]
MODERN_ENVELOPE = ["250 2.1.0 OK", "250 2.1.5 OK", "550 5.1.1 No such user", "250 2.1.5 OK"]
START = "354 End data with <CR><LF>.<CR><LF>"


class Mailboxes:
    """Refuses recipients starting "nobody"; handle_DATA answers ``status`` (raising
    it if it is an exception) and keeps what it was given."""

    def __init__(self, status: Any = "250 OK") -> None:
        self.status = status
        self.delivered: list[tuple[list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> Any:
        if isinstance(self.status, Exception):
            raise self.status
        self.delivered.append((list(envelope.rcpt_tos), envelope.original_content))
        return self.status


def lmtp(handler: Any, **kwargs: Any) -> Callable[[], LMTP]:
    kwargs.setdefault("hostname", HOST)
    return lambda: LMTP(handler, **kwargs)


def lhlo(port: int) -> RawClient:
    client = RawClient(port)
    assert text(client.reply()) == f"220 {HOST} Python SMTP 1.4.6"
    assert client.command("LHLO client.example").code == 250
    return client


# -- one reply per accepted recipient, whatever fails -------------------------------------------


@pytest.mark.parametrize(
    ("options", "status", "body", "reply"),
    [
        ({}, RuntimeError("disk on fire"), b"hi\r\n", "500 Error: (RuntimeError) disk on fire"),
        ({}, ["250 only one"], b"hi\r\n", "451 4.3.0 Error: no delivery status for this recipient"),
        ({}, ["250 a", "250 b", "250 c"], b"hi\r\n", None),
        ({}, 250, b"hi\r\n", None),
        ({"data_size_limit": 10}, "250 OK", b"x" * 20 + b"\r\n", "552 Error: Too much mail data"),
        ({}, "250 OK", b"x" * 2000 + b"\r\n", "500 Line too long (see RFC5321 4.5.3.1.6)"),
        (
            {"bare_lf": "reject"},
            "250 OK",
            b"a\nb\r\n",
            "550 5.5.2 Error: bare <CR> or <LF> in message data",
        ),
    ],
    ids=["raises", "too-few", "too-many", "not-a-status", "too-big", "line-too-long", "bare-lf"],
)
def test_every_failure_gets_one_reply_per_accepted_recipient_then_quit(
    options: dict[str, Any], status: Any, body: bytes, reply: str | None
) -> None:
    expected = reply or "451 4.3.0 Error: no delivery status for this recipient"
    handler = Mailboxes(status)
    with serving(lmtp(handler, **options)) as server, lhlo(server.port) as client:
        client.send(ENVELOPE + b"DATA\r\n" + body + b".\r\nQUIT\r\n")
        assert replies_until_close(client) == [
            *CLASSIC_ENVELOPE,
            START,
            expected,
            expected,
            "221 Bye",
        ]
    if not isinstance(status, Exception) and reply is not None and reply.startswith("5"):
        assert handler.delivered == []  # refused by the server: never handed over


def test_modern_handler_failure_gets_451_per_recipient() -> None:
    handler = Mailboxes(RuntimeError("boom"))
    with serving(lmtp(handler, modern=True)) as server, lhlo(server.port) as client:
        client.send(ENVELOPE + b"DATA\r\nhi\r\n.\r\nQUIT\r\n")
        failure = "451 4.3.0 Error: internal server error"
        assert replies_until_close(client) == [
            *MODERN_ENVELOPE,
            START,
            failure,
            failure,
            "221 2.0.0 Bye",
        ]


def test_per_recipient_statuses_and_the_next_transaction() -> None:
    handler = Mailboxes(["250 2.1.5 b stored", "452 4.2.2 c over quota"])
    with serving(lmtp(handler)) as server, lhlo(server.port) as client:
        client.send(ENVELOPE + b"DATA\r\nhi\r\n.\r\n")
        assert [text(reply) for reply in client.replies(7)] == [
            *CLASSIC_ENVELOPE,
            START,
            "250 2.1.5 b stored",
            "452 4.2.2 c over quota",
        ]
        handler.status = "250 OK"
        client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<d@x>\r\nDATA\r\nagain\r\n.\r\nQUIT\r\n")
        assert replies_until_close(client) == ["250 OK", "250 OK", START, "250 OK", "221 Bye"]
    assert handler.delivered[1] == (["d@x"], b"again\r\n")


def test_bdat_last_gets_one_reply_per_recipient_even_when_refused() -> None:
    handler = Mailboxes()
    with (
        serving(lmtp(handler, modern=True, data_size_limit=10)) as server,
        lhlo(server.port) as client,
    ):
        client.send(ENVELOPE + b"BDAT 20 LAST\r\n" + b"QUIT\r\n" * 3 + b"yy" + b"QUIT\r\n")
        too_much = "552 5.3.4 Error: Too much mail data"
        assert replies_until_close(client) == [
            *MODERN_ENVELOPE,
            too_much,
            too_much,
            "221 2.0.0 Bye",
        ]
    assert handler.delivered == []


def test_data_without_an_accepted_recipient_gets_a_single_reply() -> None:
    handler = Mailboxes()
    with serving(lmtp(handler)) as server, lhlo(server.port) as client:
        client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<nobody@x>\r\nDATA\r\nQUIT\r\n")
        assert replies_until_close(client) == [
            "250 OK",
            "550 5.1.1 No such user",
            "503 Error: need RCPT command",
            "221 Bye",
        ]


# -- LHLO, EHLO and HELO ----------------------------------------------------------------------


@pytest.mark.parametrize("modern", [False, True], ids=["classic", "modern"])
def test_ehlo_and_helo_are_unknown_under_lmtp_and_change_nothing(modern: bool) -> None:
    handler = Mailboxes()
    with serving(lmtp(handler, modern=modern)) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        for verb in ("EHLO", "HELO", "ehlo"):
            assert text(client.command(f"{verb} client.example")) == (
                f'500 Error: command "{verb.upper()}" not recognized'
            )
        refused = "503 5.5.1 Error: send HELO first" if modern else "503 Error: send HELO first"
        assert text(client.command("MAIL FROM:<a@x>")) == refused
        assert client.command("LHLO client.example").code == 250
        assert text(client.command("EHLO other.example")) == (
            '500 Error: command "EHLO" not recognized'
        )
        # The LHLO session stands: its transaction goes on.
        ok = "250 2.1.0 OK" if modern else "250 OK"
        assert text(client.command("MAIL FROM:<a@x>")) == ok
        host = server.call(lambda: server.protocols[0].session.host_name)
    assert host == "client.example"


def test_lhlo_is_unknown_under_smtp() -> None:
    with (
        serving(lambda: SMTP(Mailboxes(), hostname=HOST)) as server,
        RawClient(server.port) as client,
    ):
        assert client.reply().code == 220
        assert text(client.command("LHLO client.example")) == (
            '500 Error: command "LHLO" not recognized'
        )
        assert text(client.command("MAIL FROM:<a@x>")) == "503 Error: send HELO first"
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@x>")) == "250 OK"


def test_lhlo_under_modern_smtp_is_an_unknown_command_with_its_enhanced_code() -> None:
    with (
        serving(lambda: SMTP(Mailboxes(), hostname=HOST, modern=True)) as server,
        RawClient(server.port) as client,
    ):
        assert client.reply().code == 220
        assert text(client.command("XLHLO client.example")) == (
            '500 5.5.2 Error: command "XLHLO" not recognized'
        )
        assert text(client.command("LHLO client.example")) == (
            '500 5.5.2 Error: command "LHLO" not recognized'
        )
