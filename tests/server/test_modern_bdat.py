"""CHUNKING and BINARYMIME (RFC 3030) on the server, over real sockets, and the
smtpwire client sending by BDAT to a modern server end to end.

A BDAT chunk is exactly its announced number of octets, taken as they are (no
dot-unstuffing, no terminator): whatever it holds, even CRLF.CRLF or command
lines, is message content and is never executed.  A refused chunk is still read
and dropped; a BDAT without a valid size closes the connection, since its chunk's
end is unknown.  The bare-LF policy applies to a BDAT message unless it is
BODY=BINARYMIME, which is delivered byte for byte.

The other extensions are in test_modern_extensions.py.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from smtpwire.client import SMTP as Client
from smtpwire.server.session import RecipientDSN
from smtpwire.server.smtp import SMTP
from support.server import WAIT, EnvelopeKeeper, greeted, replies_until_close, serving, text

HOST = "mx.test"
ENVELOPE = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n"
BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT <size> [LAST]"
BARE_IN_DATA = "550 5.5.2 Error: bare <CR> or <LF> in message data"


# -- helpers ------------------------------------------------------------------------------


Keeper = EnvelopeKeeper


class Tracking(SMTP):
    """An SMTP server that notes which of DATA and BDAT the client used."""

    def __init__(self, handler: Any, verbs: list[str], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.verbs = verbs

    async def smtp_DATA(self, arg: str | None) -> None:
        self.verbs.append("DATA")
        await super().smtp_DATA(arg)

    async def smtp_BDAT(self, arg: str | None) -> None:
        self.verbs.append(f"BDAT {arg}")
        await super().smtp_BDAT(arg)


def smtp(handler: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("hostname", HOST)
    kwargs.setdefault("chunking", True)
    return lambda: SMTP(handler, **kwargs)


def bdat(chunk: bytes, *, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n%s" % (len(chunk), b" LAST" if last else b"", chunk)


# -- BDAT on the wire -------------------------------------------------------------------------


def test_chunks_are_concatenated_and_never_executed() -> None:
    handler = Keeper()
    first = b"hello"
    # Dot lines, the DATA terminator and command lines: all content.
    second = b" world\r\n.\r\n..two dots\r\n.\r\nRSET\r\nMAIL FROM:<evil@x>\r\nQUIT\r\n"
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(first) + bdat(second, last=True) + b"NOOP\r\nQUIT\r\n")
        assert replies_until_close(client) == [
            "250 OK",
            "250 OK",
            "250 OK 5 octets received",
            "250 OK",
            "250 OK",
            "221 Bye",
        ]
    assert handler.contents == [first + second]
    assert handler.envelopes[0].mail_from == "a@x"


def test_bdat_zero_last_ends_the_message() -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"hello") + bdat(b"", last=True))
        assert [text(reply) for reply in client.replies(4)] == [
            "250 OK",
            "250 OK",
            "250 OK 5 octets received",
            "250 OK",
        ]
        # An empty message by BDAT alone, in a second transaction.
        client.send(ENVELOPE + b"BDAT 0 LAST\r\n")
        assert [text(reply) for reply in client.replies(3)] == ["250 OK"] * 3
        # LAST in any case.
        client.send(ENVELOPE + b"BDAT 2 last\r\nok")
        assert [text(reply) for reply in client.replies(3)] == ["250 OK"] * 3
    assert handler.contents == [b"hello", b"", b"ok"]


def test_bdat_with_enhanced_codes() -> None:
    handler = Keeper()
    with serving(smtp(handler, modern=True)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"abc") + bdat(b"def", last=True))
        assert [text(reply) for reply in client.replies(4)] == [
            "250 2.1.0 OK",
            "250 2.1.5 OK",
            "250 2.6.0 OK 3 octets received",
            "250 2.6.0 OK",
        ]
    assert handler.contents == [b"abcdef"]


@pytest.mark.parametrize("prefix", [b"", b"MAIL FROM:<a@x>\r\n"], ids=["no-mail", "no-rcpt"])
def test_bdat_before_rcpt_is_refused_and_its_chunk_consumed(prefix: bytes) -> None:
    handler = Keeper()
    chunk = b"NOOP\r\nNOOP\r\nRSET\r\n"
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(prefix + bdat(chunk, last=True) + b"NOOP\r\nQUIT\r\n")
        expected = ["250 OK"] if prefix else []
        assert replies_until_close(client) == [
            *expected,
            "503 Error: need RCPT command",
            "250 OK",
            "221 Bye",
        ]
    assert handler.envelopes == []


def test_refused_bdat_keeps_the_transaction_open() -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(b"MAIL FROM:<a@x>\r\n" + bdat(b"lost") + b"RCPT TO:<b@x>\r\n")
        client.send(bdat(b"kept", last=True))
        assert [text(reply) for reply in client.replies(4)] == [
            "250 OK",
            "503 Error: need RCPT command",
            "250 OK",
            "250 OK",
        ]
    assert handler.contents == [b"kept"]


def test_chunk_over_the_size_limit_is_refused_consumed_and_resets() -> None:
    handler = Keeper()
    with serving(smtp(handler, data_size_limit=10)) as server, greeted(server.port) as client:
        client.send(
            ENVELOPE
            + bdat(b"NOOP\r\n")
            + bdat(b"NOOP\r\n", last=True)  # 12 octets in all: over 10
            + b"MAIL FROM:<c@x>\r\nRCPT TO:<d@x>\r\n"  # no RSET needed
            + bdat(b"0123456789", last=True)  # exactly the limit
            + b"QUIT\r\n"
        )
        assert replies_until_close(client) == [
            "250 OK",
            "250 OK",
            "250 OK 6 octets received",
            "552 Error: Too much mail data",
            "250 OK",
            "250 OK",
            "250 OK",
            "221 Bye",
        ]
    assert handler.contents == [b"0123456789"]
    assert handler.envelopes[0].mail_from == "c@x"


@pytest.mark.parametrize("argument", ["abc", "", "5 FIRST", "-1", "5 LAST more", "0x5"])
def test_bdat_without_a_valid_size_closes_the_connection(argument: str) -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        command = f"BDAT {argument}".rstrip().encode()
        client.send(ENVELOPE + command + b"\r\nNOOP\r\nNOOP\r\n")
        assert replies_until_close(client) == ["250 OK", "250 OK", BDAT_SYNTAX]
    assert handler.envelopes == []


def test_a_chunk_in_many_small_writes_is_assembled() -> None:
    handler = Keeper()
    chunk = b"split\r\n.\r\nchunk\x00\xff"
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.send(ENVELOPE)
        assert [reply.code for reply in client.replies(2)] == [250, 250]
        wire = bdat(chunk, last=True) + b"NOOP\r\n"
        for index in range(20):  # the command line and the chunk's start, octet by octet
            client.send(wire[index : index + 1])
        client.send(wire[20:])
        assert [text(reply) for reply in client.replies(2)] == ["250 OK", "250 OK"]
    assert handler.contents == [chunk]


def test_a_chunk_whose_last_octets_arrive_alone_without_a_newline_is_answered() -> None:
    # The final segment holds no LF: the session must still be woken (it was not).
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE)
        assert [reply.code for reply in client.replies(2)] == [250, 250]
        client.send(b"NOOP\r\nBDAT 3 LAST\r\nab")
        assert text(client.reply()) == "250 OK"  # NOOP: the server has read "ab"
        client.send(b"c")
        assert text(client.reply()) == "250 OK"
    assert handler.contents == [b"abc"]


@pytest.mark.parametrize(
    "sent",
    [bdat(b"0123456789", last=True)[:-4], bdat(b"first") + bdat(b"0123456789")[:-1]],
    ids=["in-last", "after-a-chunk"],
)
def test_disconnecting_mid_chunk_delivers_nothing(sent: bytes) -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + sent)
        client.sock.shutdown(socket.SHUT_WR)
        replies = replies_until_close(client)
        assert replies[:2] == ["250 OK", "250 OK"]
        assert all(reply.startswith("250 OK 5 octets") for reply in replies[2:])
    assert handler.envelopes == []


def test_a_transaction_without_its_last_chunk_delivers_nothing() -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"part one") + b"RSET\r\nQUIT\r\n")
        assert replies_until_close(client) == [
            "250 OK",
            "250 OK",
            "250 OK 8 octets received",
            "250 OK",
            "221 Bye",
        ]
    assert handler.envelopes == []


def test_data_after_bdat_in_the_same_transaction_is_a_bad_sequence() -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"hello") + b"DATA\r\n")
        replies = [text(reply) for reply in client.replies(4)]
        assert replies[:3] == ["250 OK", "250 OK", "250 OK 5 octets received"]
        assert replies[3].startswith("503 "), replies[3]


# -- BINARYMIME ---------------------------------------------------------------------------

BINARY = b"\x00\x01 bare LF\n bare CR\r CRLF\r\n.\r\n\xff\xfe\r\n.."


def test_binarymime_refuses_data() -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(b"MAIL FROM:<a@x> BODY=BINARYMIME\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        assert [text(reply) for reply in client.replies(3)] == [
            "250 OK",
            "250 OK",
            "503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA",
        ]
        # The transaction is still open, for BDAT.
        client.send(bdat(b"bin", last=True))
        assert text(client.reply()) == "250 OK"
    assert handler.contents == [b"bin"]


@pytest.mark.parametrize("policy", ["keep", "reject", "normalize"])
def test_binarymime_by_bdat_is_delivered_untouched(policy: str) -> None:
    handler = Keeper()
    with serving(smtp(handler, bare_lf=policy)) as server, greeted(server.port) as client:
        client.send(
            b"MAIL FROM:<a@x> BODY=BINARYMIME\r\nRCPT TO:<b@x>\r\n"
            + bdat(BINARY[:7])
            + bdat(BINARY[7:], last=True)
        )
        assert [reply.code for reply in client.replies(4)] == [250] * 4
    assert handler.contents == [BINARY]
    assert handler.envelopes[0].body_type == "BINARYMIME"


@pytest.mark.parametrize(
    ("body", "body_type"), [("", None), (" BODY=8bitmime", "8BITMIME"), (" BODY=7BIT", "7BIT")]
)
def test_body_type_is_recorded(body: str, body_type: str | None) -> None:
    handler = Keeper()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(f"MAIL FROM:<a@x>{body}\r\nRCPT TO:<b@x>\r\n".encode() + bdat(b"x", last=True))
        assert [reply.code for reply in client.replies(3)] == [250] * 3
    assert handler.envelopes[0].body_type == body_type


def test_binarymime_needs_chunking() -> None:
    with serving(smtp(Keeper(), chunking=False)) as server, greeted(server.port) as client:
        assert text(client.command("MAIL FROM:<a@x> BODY=BINARYMIME")) == (
            "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        )


# -- the bare-LF policy for BDAT ------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "delivered"),
    [
        ("keep", b"one\ntwo\rthree\r\n"),
        ("normalize", b"one\r\ntwo\r\nthree\r\n"),
        ("reject", None),
    ],
)
def test_bare_newlines_in_a_bdat_message_follow_the_policy(
    policy: str, delivered: bytes | None
) -> None:
    handler = Keeper()
    with serving(smtp(handler, bare_lf=policy)) as server, greeted(server.port) as client:
        client.send(
            ENVELOPE
            + bdat(b"one\ntwo")
            + bdat(b"\rthree\r\n", last=True)
            + b"MAIL FROM:<c@x>\r\nRCPT TO:<d@x>\r\n"
            + bdat(b"clean\r\n", last=True)
            + b"QUIT\r\n"
        )
        final = BARE_IN_DATA if delivered is None else "250 OK"
        assert replies_until_close(client) == [
            "250 OK",
            "250 OK",
            "250 OK 7 octets received",
            final,
            "250 OK",
            "250 OK",
            "250 OK",
            "221 Bye",
        ]
    expected = [b"clean\r\n"] if delivered is None else [delivered, b"clean\r\n"]
    assert handler.contents == expected


def test_crlf_split_between_chunks_is_not_bare_under_reject() -> None:
    handler = Keeper()
    with serving(smtp(handler, bare_lf="reject")) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"line\r") + bdat(b"\nend\r\n", last=True))
        assert [text(reply) for reply in client.replies(4)][-1] == "250 OK"
    assert handler.contents == [b"line\r\nend\r\n"]


# -- end to end with smtpwire's client ---------------------------------------------------------


def client_for(port: int) -> Client:
    return Client(hostname="127.0.0.1", port=port, start_tls=False, chunking=True, timeout=WAIT)


def tracked(handler: Keeper, verbs: list[str], **kwargs: Any) -> Any:
    return lambda: Tracking(handler, verbs, hostname=HOST, modern=True, **kwargs)


async def test_client_sends_an_in_memory_message_by_bdat() -> None:
    handler, verbs = Keeper(), []
    message = b"Subject: chunked\r\n\r\n.starts with a dot\nbare LF\r\n"
    with serving(tracked(handler, verbs)) as server:
        async with client_for(server.port) as smtp_client:
            refused, reply = await smtp_client.sendmail("a@x", ["b@x", "c@x"], message)
    assert (refused, reply) == ({}, "2.6.0 OK")
    normalised = b"Subject: chunked\r\n\r\n.starts with a dot\r\nbare LF\r\n"
    assert verbs == [f"BDAT {len(normalised)} LAST"]
    assert handler.contents == [normalised]
    assert handler.envelopes[0].rcpt_tos == ["b@x", "c@x"]


async def test_client_binarymime_bytes_arrive_exactly() -> None:
    handler, verbs = Keeper(), []
    payload = bytes(range(256)) * 4 + BINARY
    with serving(tracked(handler, verbs)) as server:
        async with client_for(server.port) as smtp_client:
            await smtp_client.sendmail("a@x", ["b@x"], payload, mail_options=["BODY=BINARYMIME"])
    assert verbs == [f"BDAT {len(payload)} LAST"]
    assert handler.contents == [payload]
    assert handler.envelopes[0].body_type == "BINARYMIME"


async def test_client_streams_binarymime_chunk_by_chunk() -> None:
    handler, verbs = Keeper(), []
    parts = [b"\x00first\n", b"second\r", b"\r\n.\r\n", b"\xfflast"]

    async def source() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    with serving(tracked(handler, verbs)) as server:
        async with client_for(server.port) as smtp_client:
            await smtp_client.sendmail("a@x", ["b@x"], source(), mail_options=["BODY=BINARYMIME"])
    assert verbs == [f"BDAT {len(part)}" for part in parts] + ["BDAT 0 LAST"]
    assert handler.contents == [b"".join(parts)]


async def test_client_rcpt_options_reach_the_dsn_fields() -> None:
    handler, verbs = Keeper(), []
    with serving(tracked(handler, verbs)) as server:
        async with client_for(server.port) as smtp_client:
            await smtp_client.sendmail(
                "a@x", ["b@x", "c@x"], b"hi\r\n", rcpt_options=["NOTIFY=SUCCESS"]
            )
    notify = RecipientDSN(frozenset({"SUCCESS"}), None)
    assert handler.envelopes[0].rcpt_dsn == {"b@x": notify, "c@x": notify}


async def test_client_recipients_over_the_cap_are_refused_with_452() -> None:
    handler, verbs = Keeper(), []
    recipients = [f"r{number}@x" for number in range(150)]
    with serving(tracked(handler, verbs, rcpt_limit=100)) as server:
        async with client_for(server.port) as smtp_client:
            refused, _ = await smtp_client.sendmail("a@x", recipients, b"many\r\n")
    assert list(refused) == recipients[100:]
    assert {response.code for response in refused.values()} == {452}
    assert handler.envelopes[0].rcpt_tos == recipients[:100]
    assert handler.contents == [b"many\r\n"]
