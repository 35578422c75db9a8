"""Attack probes on BDAT (RFC 3030) against a modern server, over real sockets.

A chunk is exactly its announced number of octets: a client that announces fewer
than it sends has the extra octets read as commands (only after exactly n
octets); one that announces more has the server wait for the rest, then time out.
Sizes over the SIZE limit are refused with 552 and their octets still read and
dropped, never allocated; pipelined lines inside a chunk are content, never run.
"""

from __future__ import annotations

import socket
import tracemalloc
from typing import Any

import pytest

from smtpwire.server.smtp import SMTP
from support.server import (
    EnvelopeKeeper,
    RawClient,
    ServerThread,
    greeted,
    replies_until_close,
    serving,
    text,
)

HOST = "mx.test"
ENVELOPE = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n"
ENVELOPE_OK = ["250 2.1.0 OK", "250 2.1.5 OK"]
DELIVERED = "250 2.6.0 OK"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
TOO_MUCH = "552 5.3.4 Error: Too much mail data"
TIMEOUT = f"421 4.4.2 {HOST} Error: timeout exceeded"


def modern(handler: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("hostname", HOST)
    return lambda: SMTP(handler, modern=True, **kwargs)


def bdat(chunk: bytes, *, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n%s" % (len(chunk), b" LAST" if last else b"", chunk)


def received(count: int) -> str:
    return f"250 2.6.0 OK {count} octets received"


def chunk(client: RawClient, wire: bytes) -> str:
    """Send a BDAT command with its chunk (no line ending after it) and read the reply."""
    client.send(wire)
    return text(client.reply())


def envelope_sent(client: RawClient) -> None:
    client.send(ENVELOPE)
    assert [text(reply) for reply in client.replies(2)] == ENVELOPE_OK


def pending_tasks_settle(server: ServerThread) -> None:
    """Every connection task finished (a bounded number of hops into its loop)."""
    assert any(server.tasks_pending() == 0 for _ in range(100))


# -- chunk sizes that lie -------------------------------------------------------------------


def test_more_octets_than_announced_are_commands_after_exactly_n() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + b"BDAT 3 LAST\r\nabcNOOP\r\nxyz\r\nQUIT\r\n")
        assert replies_until_close(client) == [
            *ENVELOPE_OK,
            DELIVERED,
            "250 2.0.0 OK",  # NOOP: right after the third octet
            '500 5.5.2 Error: command "XYZ" not recognized',
            "221 2.0.0 Bye",
        ]
    assert handler.contents == [b"abc"]


def test_announced_size_shorter_than_the_command_it_swallows() -> None:
    # "BDAT 3" then "QUIT\r\n": "QUI" is content, "T" starts the next command line.
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + b"BDAT 3 LAST\r\nQUIT\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(4)] == [
            *ENVELOPE_OK,
            DELIVERED,
            '500 5.5.2 Error: command "T" not recognized',
        ]
        assert text(client.command("NOOP")) == "250 2.0.0 OK"
        assert text(client.reply()) == "250 2.0.0 OK"  # the pipelined NOOP, then this one
    assert handler.contents == [b"QUI"]


def test_fewer_octets_than_announced_wait_then_time_out_delivering_nothing() -> None:
    handler = EnvelopeKeeper()
    with (
        serving(modern(handler, timeout=0.5)) as server,
        greeted(server.port) as client,
    ):
        # The commands that follow are octets of the chunk: none is answered.
        client.send(ENVELOPE + b"BDAT 100 LAST\r\nshort\r\nNOOP\r\nQUIT\r\n")
        assert replies_until_close(client) == [*ENVELOPE_OK, TIMEOUT]
        pending_tasks_settle(server)
    assert handler.envelopes == []


def test_fewer_octets_than_announced_then_eof_delivers_nothing() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"first") + b"BDAT 10 LAST\r\nNOOP\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        assert replies_until_close(client) == [*ENVELOPE_OK, received(5)]
        pending_tasks_settle(server)
    assert handler.envelopes == []


# -- BDAT 0 LAST ------------------------------------------------------------------------------


def test_bdat_zero_last_alone_is_an_empty_message() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + b"BDAT 0 LAST\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(4)] == [
            *ENVELOPE_OK,
            DELIVERED,
            "250 2.0.0 OK",
        ]
    assert handler.contents == [b""]


def test_bdat_zero_last_ends_a_chunked_message() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"one\r\n") + bdat(b"two\r\n") + b"BDAT 0 LAST\r\n")
        assert [text(reply) for reply in client.replies(5)] == [
            *ENVELOPE_OK,
            received(5),
            received(5),
            DELIVERED,
        ]
        # The transaction is over: another BDAT needs a new envelope.
        assert text(client.command(b"BDAT 0 LAST")) == NEED_RCPT
    assert handler.contents == [b"one\r\ntwo\r\n"]


def test_bdat_zero_last_without_a_transaction_is_refused_and_the_session_goes_on() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        assert text(client.command(b"BDAT 0 LAST")) == NEED_RCPT
        assert text(client.command(b"BDAT 0")) == NEED_RCPT
        envelope_sent(client)
        assert text(client.command(b"BDAT 0 LAST")) == DELIVERED
    assert handler.contents == [b""]


# -- huge announced sizes -------------------------------------------------------------------


def test_chunk_over_the_size_limit_is_refused_after_its_octets_are_consumed() -> None:
    handler = EnvelopeKeeper()
    commands = b"NOOP\r\n" * 10  # 60 octets, over the limit of 50: never run
    with (
        serving(modern(handler, data_size_limit=50)) as server,
        greeted(server.port) as client,
    ):
        client.send(ENVELOPE + bdat(commands, last=True) + b"NOOP\r\n")
        assert [text(reply) for reply in client.replies(4)] == [
            *ENVELOPE_OK,
            TOO_MUCH,
            "250 2.0.0 OK",
        ]
        # The transaction failed: a new one is needed, and works.
        envelope_sent(client)
        assert chunk(client, bdat(b"x" * 50, last=True)) == DELIVERED
    assert handler.contents == [b"x" * 50]


def test_absurd_announced_size_is_drained_in_bounded_memory_then_times_out() -> None:
    # 20 digits (the parser's cap, about 10**20 octets): over any SIZE limit, so the
    # chunk is read and dropped.  The server does not allocate the announced size
    # and does not close at once: it drains what comes until the client idles.
    handler = EnvelopeKeeper()
    with (
        serving(modern(handler, timeout=0.5)) as server,
        greeted(server.port) as client,
    ):
        envelope_sent(client)
        block = b"NOOP\r\n" * 10_000  # 60 kB of would-be commands
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            client.send(b"BDAT 99999999999999999999 LAST\r\n")
            for _ in range(64):  # about 4 MB
                client.send(block)
            replies = replies_until_close(client)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert replies == [TIMEOUT]  # not one NOOP of the chunk was answered
        assert peak < 2 * 1024 * 1024, peak
        pending_tasks_settle(server)
    assert handler.envelopes == []


def test_21_digit_size_is_a_syntax_error_and_closes() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + b"BDAT 999999999999999999999 LAST\r\nNOOP\r\n")
        assert replies_until_close(client) == [
            *ENVELOPE_OK,
            "501 5.5.4 Syntax: BDAT <size> [LAST]",
        ]
    assert handler.envelopes == []


def test_chunks_adding_up_over_the_limit_fail_the_transaction() -> None:
    handler = EnvelopeKeeper()
    with (
        serving(modern(handler, data_size_limit=20)) as server,
        greeted(server.port) as client,
    ):
        client.send(
            ENVELOPE
            + bdat(b"0123456789")
            + bdat(b"0123456789012")  # 23 in all: refused, not LAST
            + bdat(b"abc", last=True)  # the transaction is gone
            + b"QUIT\r\n"
        )
        assert replies_until_close(client) == [
            *ENVELOPE_OK,
            received(10),
            TOO_MUCH,
            NEED_RCPT,
            "221 2.0.0 Bye",
        ]
    assert handler.envelopes == []


# -- BDAT mixed with DATA ---------------------------------------------------------------------


def test_data_after_bdat_is_refused_and_the_bdat_transaction_can_still_end() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(b"part1 ") + b"DATA\r\n")
        assert [text(reply) for reply in client.replies(4)] == [
            *ENVELOPE_OK,
            received(6),
            "503 5.5.1 Error: DATA after BDAT in the same transaction",
        ]
        # No 354 was sent: a dot line here is an unknown command, not an end of data.
        assert text(client.command(b"hello")) == '500 5.5.2 Error: command "HELLO" not recognized'
        assert chunk(client, bdat(b"part2", last=True)) == DELIVERED
    assert handler.contents == [b"part1 part2"]


def test_bdat_after_data_is_a_new_transaction_and_bdat_inside_data_is_content() -> None:
    handler = EnvelopeKeeper()
    body = b"BDAT 4 LAST\r\nRSET\r\n"
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + b"DATA\r\n" + body + b".\r\n" + bdat(b"abc", last=True))
        assert [text(reply) for reply in client.replies(5)] == [
            *ENVELOPE_OK,
            "354 End data with <CR><LF>.<CR><LF>",
            DELIVERED,
            NEED_RCPT,  # DATA ended the transaction; the chunk was still consumed
        ]
        assert text(client.command("NOOP")) == "250 2.0.0 OK"
    assert handler.contents == [body]


def test_bdat_after_a_refused_data_works() -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        envelope_sent(client)
        assert text(client.command("DATA now")) == "501 5.5.4 Syntax: DATA"
        assert chunk(client, bdat(b"ok", last=True)) == DELIVERED
    assert handler.contents == [b"ok"]


# -- BDAT after a failed chunk ----------------------------------------------------------------


def test_bdat_after_a_chunk_refused_for_size_needs_a_new_transaction() -> None:
    handler = EnvelopeKeeper()
    with (
        serving(modern(handler, data_size_limit=8)) as server,
        greeted(server.port) as client,
    ):
        envelope_sent(client)
        assert chunk(client, bdat(b"123456789")) == TOO_MUCH
        assert chunk(client, bdat(b"RSET\r\n", last=True)) == NEED_RCPT
        envelope_sent(client)
        assert chunk(client, bdat(b"fresh", last=True)) == DELIVERED
    assert handler.contents == [b"fresh"]


class Failing(EnvelopeKeeper):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if envelope.original_content == b"boom":
            raise RuntimeError("disk full")
        return await super().handle_DATA(server, session, envelope)


def test_bdat_after_a_failed_last_chunk_starts_over() -> None:
    handler = Failing()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        envelope_sent(client)
        assert chunk(client, bdat(b"bo")) == received(2)
        assert chunk(client, bdat(b"om", last=True)) == ("451 4.3.0 Error: internal server error")
        assert chunk(client, bdat(b"more", last=True)) == NEED_RCPT
        envelope_sent(client)
        assert chunk(client, bdat(b"fine", last=True)) == DELIVERED
    assert handler.contents == [b"fine"]


def test_bare_lf_in_a_chunk_under_reject_fails_the_message_not_the_session() -> None:
    handler = EnvelopeKeeper()
    with (
        serving(modern(handler, bare_lf="reject")) as server,
        greeted(server.port) as client,
    ):
        envelope_sent(client)
        assert chunk(client, bdat(b"a\nb")) == received(3)
        assert chunk(client, bdat(b"c\r\n", last=True)) == (
            "550 5.5.2 Error: bare <CR> or <LF> in message data"
        )
        assert chunk(client, bdat(b"d", last=True)) == NEED_RCPT
    assert handler.envelopes == []


# -- pipelined commands inside the chunk ------------------------------------------------------


@pytest.mark.parametrize(
    "inside",
    [
        b"QUIT\r\n",
        b"RSET\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@x>\r\nDATA\r\nspam\r\n.\r\n",
        b"BDAT 5 LAST\r\nevil!",
        b"\r\n.\r\nMAIL FROM:<evil@x>\r\n",
    ],
    ids=["quit", "transaction", "nested-bdat", "dot-terminator"],
)
def test_commands_after_bdat_last_inside_the_chunk_are_content(inside: bytes) -> None:
    handler = EnvelopeKeeper()
    with serving(modern(handler)) as server, greeted(server.port) as client:
        client.send(ENVELOPE + bdat(inside, last=True) + b"NOOP\r\n")
        assert [text(reply) for reply in client.replies(4)] == [
            *ENVELOPE_OK,
            DELIVERED,
            "250 2.0.0 OK",
        ]
        assert text(client.command("QUIT")) == "221 2.0.0 Bye"
        assert client.closed_by_server()
    assert handler.contents == [inside]
    assert handler.senders == ["a@x"]
