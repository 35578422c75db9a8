"""Hostile input against the SMTP server: overlong lines, odd bytes, oversize and
malformed messages, smuggling attempts, abrupt disconnects, bogus-command floods
and failing hooks.

Every case checks the exact reply, that the connection is still usable where it
should be, and what (if anything) reached the handler.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from smtpwire.common.replies import ReplyParser
from smtpwire.server.smtp import SMTP
from support.server import (
    WAIT,
    Delivered,
    RawClient,
    Recorder,
    ServerThread,
    read_until_eof,
    serving,
    text,
)

HOST = "testhost"
GREETING = f"220 {HOST} Python SMTP 1.4.6"
TOO_LONG = "500 Command line too long"
DATA_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH_DATA = "552 Error: Too much mail data"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder) -> Iterator[ServerThread]:
    with serving(lambda: SMTP(recorder, hostname=HOST)) as running:
        yield running


def limited_server(recorder: Recorder, **options: Any) -> AbstractContextManager[ServerThread]:
    return serving(lambda: SMTP(recorder, hostname=HOST, **options))


def connect(server: ServerThread) -> RawClient:
    client = RawClient(server.port)
    assert text(client.reply()) == GREETING
    return client


def start_transaction(client: RawClient) -> None:
    """EHLO, MAIL, RCPT, DATA in lock-step, through the 354."""
    assert client.command("EHLO client.example").code == 250
    assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
    assert text(client.command("RCPT TO:<b@example.org>")) == "250 OK"
    assert text(client.command("DATA")) == GO_AHEAD


def assert_transaction_works(client: RawClient, recorder: Recorder) -> None:
    """A complete transaction on the same connection is delivered."""
    before = len(recorder.messages)
    assert text(client.command("MAIL FROM:<next@example.com>")) == "250 OK"
    assert text(client.command("RCPT TO:<c@example.org>")) == "250 OK"
    assert text(client.command("DATA")) == GO_AHEAD
    client.send(b"Subject: next\r\n\r\nfine\r\n.\r\n")
    assert text(client.reply()) == "250 OK"
    assert recorder.messages[before:] == [
        Delivered("next@example.com", ("c@example.org",), b"Subject: next\r\n\r\nfine\r\n")
    ]


def wait_for_sessions(server: ServerThread) -> None:
    """Wait (bounded) for every connection task to end; each must end cleanly."""

    async def outcome() -> list[str]:
        tasks = [p._handler_coroutine for p in server.protocols]
        assert all(task is not None for task in tasks)
        _, pending = await asyncio.wait(tasks, timeout=WAIT)
        assert not pending, f"{len(pending)} connection task(s) still running"
        return [
            "cancelled" if task.cancelled() else repr(task.exception())
            for task in tasks
            if task.cancelled() or task.exception() is not None
        ]

    failures = asyncio.run_coroutine_threadsafe(outcome(), server.loop).result(WAIT + 1)
    assert failures == []
    assert server.tasks_pending() == 0


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def reset_abruptly(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- command lines -----------------------------------------------------------------------


def test_command_line_of_512_octets_is_accepted_and_513_refused(server: ServerThread) -> None:
    with connect(server) as client:
        line = "NOOP " + "x" * (512 - 5)
        assert len(line) == 512
        assert text(client.command(line)) == "250 OK"
        assert text(client.command(line + "x")) == TOO_LONG
        assert text(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize("length", [513, 700, 998, 999, 1000, 1001])
def test_command_line_between_limit_and_line_cap_is_refused(
    server: ServerThread, length: int
) -> None:
    with connect(server) as client:
        assert text(client.command("NOOP " + "x" * (length - 5))) == TOO_LONG
        assert text(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize("length", [1002, 1003, 4096, 70_000])
def test_command_line_over_line_cap_gets_one_reply(server: ServerThread, length: int) -> None:
    with connect(server) as client:
        # The overlong line and a NOOP in one write: exactly two replies, in order.
        client.send(b"NOOP " + b"x" * (length - 5) + b"\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(2)] == [TOO_LONG, "250 OK"]
        assert text(client.command("NOOP")) == "250 OK"


def test_overlong_line_with_bare_lf_is_refused(server: ServerThread) -> None:
    with connect(server) as client:
        client.send(b"NOOP " + b"x" * 2000 + b"\nNOOP\n")
        assert [text(reply) for reply in client.replies(2)] == [TOO_LONG, "250 OK"]


def test_mail_in_overlong_line_is_not_executed(server: ServerThread, recorder: Recorder) -> None:
    with connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        # The tail of a dropped overlong line must not be parsed as a command.
        client.send(b"X" * 3000 + b"MAIL FROM:<evil@example.com>\r\n")
        assert text(client.reply()) == TOO_LONG
        assert text(client.command("RCPT TO:<b@example.org>")) == "503 Error: need MAIL command"
        assert_transaction_works(client, recorder)


def test_five_megabyte_line_streams_in_bounded_memory(server: ServerThread) -> None:
    piece = b"A" * 65536
    pieces = (5 * 1024 * 1024) // len(piece)

    def inbound_state() -> tuple[int, bool]:
        protocol = server.protocols[0]
        return protocol._inbound.buffered, protocol._waiting_for_client

    with connect(server) as client:
        client.send(b"NOOP ")
        parked_sizes: list[int] = []
        for _ in range(pieces):
            client.send(piece)
            buffered, parked = server.call(inbound_state)
            # Never more than what one read can bring in on top of the line cap.
            assert buffered < 300 * 1024
            if parked:
                # Whenever the session waits for input, the overlong line has been
                # dropped down to at most the line cap.
                parked_sizes.append(buffered)
        # Once the input stops, the session parks; by then the line is dropped down
        # to at most the line cap.  Each probe is a round trip through the server's
        # loop, so the session gets to run between probes.
        for _ in range(1000):
            buffered, parked = server.call(inbound_state)
            if parked:
                parked_sizes.append(buffered)
                break
        assert parked_sizes, "the session never waited while the line streamed"
        assert max(parked_sizes) < 4096
        client.send(b"\r\n")
        assert text(client.reply()) == TOO_LONG
        assert text(client.command("NOOP")) == "250 OK"
        assert server.call(lambda: server.protocols[0]._inbound.buffered) == 0


def mail_line(length: int) -> str:
    """A valid MAIL command padded with trailing spaces to ``length`` octets."""
    line = "MAIL FROM:<a@example.com>"
    return line + " " * (length - len(line))


@pytest.mark.parametrize(
    ("options", "limit"),
    [
        ({}, 512 + 26),
        ({"enable_SMTPUTF8": True}, 512 + 26 + 10),
        ({"data_size_limit": None}, 512),
        ({"data_size_limit": None, "enable_SMTPUTF8": True}, 512 + 10),
    ],
)
def test_mail_line_limit_after_ehlo(
    recorder: Recorder, options: dict[str, Any], limit: int
) -> None:
    with limited_server(recorder, **options) as server, connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command(mail_line(limit + 1))) == TOO_LONG
        assert text(client.command(mail_line(limit))) == "250 OK"
        # Other verbs keep the 512 limit.
        assert text(client.command("NOOP " + "x" * 508)) == TOO_LONG


def test_mail_line_limit_without_ehlo_is_512(server: ServerThread) -> None:
    with connect(server) as client:
        assert text(client.command("HELO client.example")) == f"250 {HOST}"
        assert text(client.command(mail_line(513))) == TOO_LONG
        assert text(client.command(mail_line(512))) == "250 OK"


def test_helo_after_ehlo_restores_512_mail_limit(server: ServerThread) -> None:
    with connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("HELO client.example")) == f"250 {HOST}"
        assert text(client.command(mail_line(513))) == TOO_LONG


def test_repeated_ehlo_does_not_grow_mail_limit(server: ServerThread) -> None:
    # aiosmtpd adds 26 to a class-level limit on every EHLO (3 EHLOs -> 590).
    with connect(server) as client:
        for _ in range(3):
            assert client.command("EHLO client.example").code == 250
        assert text(client.command(mail_line(539))) == TOO_LONG
        assert text(client.command(mail_line(538))) == "250 OK"


def test_mail_limit_is_per_connection(recorder: Recorder) -> None:
    # aiosmtpd keeps the limits in one class-level dict: each new connection clears
    # it and each EHLO grows it, whoever sent it.
    with (
        serving(lambda: SMTP(recorder, hostname=HOST, enable_SMTPUTF8=True)) as utf8_server,
        serving(lambda: SMTP(recorder, hostname=HOST)) as plain_server,
    ):
        first = connect(plain_server)
        with first:
            assert first.command("EHLO first.example").code == 250
            with (
                connect(plain_server) as second,
                connect(utf8_server) as third,
                connect(plain_server) as fourth,
            ):
                for _ in range(3):
                    assert second.command("EHLO second.example").code == 250
                    assert third.command("EHLO third.example").code == 250
                assert text(fourth.command("HELO fourth.example")) == f"250 {HOST}"

                assert text(first.command(mail_line(539))) == TOO_LONG
                assert text(first.command(mail_line(538))) == "250 OK"
                assert text(second.command(mail_line(539))) == TOO_LONG
                assert text(second.command(mail_line(538))) == "250 OK"
                assert text(third.command(mail_line(549))) == TOO_LONG
                assert text(third.command(mail_line(548))) == "250 OK"
                assert text(fourth.command(mail_line(513))) == TOO_LONG
                assert text(fourth.command(mail_line(512))) == "250 OK"


# --- line endings and odd bytes ------------------------------------------------------------


def test_bare_lf_terminates_commands(server: ServerThread, recorder: Recorder) -> None:
    with connect(server) as client:
        client.send(b"EHLO client.example\nMAIL FROM:<a@example.com>\nRCPT TO:<b@example.org>\n")
        replies = client.replies(3)
        assert [reply.code for reply in replies] == [250, 250, 250]
        client.send(b"DATA\n")
        assert text(client.reply()) == GO_AHEAD
        client.send(b"Subject: lf\r\n\r\nbody\r\n.\r\n")
        assert text(client.reply()) == "250 OK"
        assert recorder.messages == [
            Delivered("a@example.com", ("b@example.org",), b"Subject: lf\r\n\r\nbody\r\n")
        ]


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"", "500 Error: bad syntax"),
        (b"   ", '500 Error: command "" not recognized'),
        (b"\xffOOP", "500 Error: bad syntax"),
        ("NÖOP".encode(), "500 Error: bad syntax"),
        (b"NOOP \x00\x01\x7f\x1b[2J", "250 OK"),
        (b"NOOP \xff\xfe", "500 Error: strict ASCII mode"),
        (b"MAIL FROM:<a\xff@example.com>", "500 Error: strict ASCII mode"),
        (b"VRFY \xc3\xa9", "500 Error: strict ASCII mode"),
        (b"EHLO", "501 Syntax: EHLO hostname"),
        (b"HELO", "501 Syntax: HELO hostname"),
    ],
)
def test_odd_bytes_get_a_reply_and_session_continues(
    server: ServerThread, line: bytes, reply: str
) -> None:
    with connect(server) as client:
        assert text(client.command(line)) == reply
        assert text(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize(
    "argument",
    [
        b"FROM:<a\x00b@example.com>",
        b"FROM:<a@example.com>\x00",
        b"FROM:<a\x01@example.com>",
        b"FROM:<a@exa\rmple.com>",
        b"FROM:<a@example.com> SIZE=1\x00",
    ],
)
def test_control_characters_in_mail_address_are_refused(
    server: ServerThread, recorder: Recorder, argument: bytes
) -> None:
    with connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        reply = client.command(b"MAIL " + argument)
        assert reply.code in (501, 553), reply
        # No transaction was started.
        assert text(client.command("RCPT TO:<b@example.org>")) == "503 Error: need MAIL command"
        assert_transaction_works(client, recorder)


@pytest.mark.parametrize(
    "line",
    [b"NO\rOP", b"NO\x00OP", b"NOOP\r", b"VRFY a\rb", b"VRFY <a\x00b@example.com>"],
    ids=["cr-in-verb", "nul-in-verb", "cr-before-crlf", "cr-in-vrfy", "nul-in-vrfy"],
)
def test_replies_never_echo_raw_control_characters(server: ServerThread, line: bytes) -> None:
    """A reply that quotes the client's input must stay a well-formed reply line:
    a raw CR or NUL in it makes conforming clients (our own parser among them)
    reject the reply and lose step with the server."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        parser = ReplyParser()
        received = bytearray()
        for _ in range(1000):
            received += sock.recv(4096)
            if received.endswith(b"\r\n"):
                break
        assert parser.feed(bytes(received))[0].code == 220
        sock.sendall(line + b"\r\nNOOP\r\n")
        raw = bytearray()
        for _ in range(1000):
            data = sock.recv(4096)
            assert data, "server closed the connection"
            raw += data
            if raw.endswith(b"250 OK\r\n"):
                break
        first, _, rest = bytes(raw).partition(b"\r\n")
        assert rest == b"250 OK\r\n"
        assert first[:1] in (b"2", b"5"), first
        assert b"\r" not in first
        assert b"\x00" not in first
        assert len(parser.feed(bytes(raw))) == 2


# --- DATA limits ---------------------------------------------------------------------------


def test_message_over_size_limit_is_refused_after_terminator(recorder: Recorder) -> None:
    with limited_server(recorder, data_size_limit=1000) as server, connect(server) as client:
        start_transaction(client)
        # Lines that look like commands: had the server given up on the message
        # early, they would have been executed and produced replies of their own.
        client.send(b"Subject: big\r\n\r\n" + b"NOOP\r\n" * 300)
        client.send(b"MAIL FROM:<evil@example.com>\r\n" * 10)
        client.send(b".\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(2)] == [TOO_MUCH_DATA, "250 OK"]
        assert recorder.messages == []
        # The envelope was reset: no RCPT without a new MAIL.
        assert text(client.command("RCPT TO:<b@example.org>")) == "503 Error: need MAIL command"
        assert_transaction_works(client, recorder)


def test_message_at_size_limit_is_accepted(recorder: Recorder) -> None:
    body = b"x" * 98 + b"\r\n"
    content = body * 10  # exactly 1000 octets of content
    with limited_server(recorder, data_size_limit=1000) as server, connect(server) as client:
        start_transaction(client)
        client.send(content + b".\r\n")
        assert text(client.reply()) == "250 OK"
        start_transaction(client)
        client.send(content + b"y\r\n.\r\n")
        assert text(client.reply()) == TOO_MUCH_DATA
    assert [message.content for message in recorder.messages] == [content]


def test_oversize_message_is_not_kept_in_memory(recorder: Recorder) -> None:
    limit = 100_000

    def kept() -> int:
        return sum(len(chunk) for chunk in server.protocols[0]._inbound._chunks)

    with limited_server(recorder, data_size_limit=limit) as server, connect(server) as client:
        start_transaction(client)
        line = b"y" * 998 + b"\r\n"
        for _ in range(40):
            client.send(line * 100)  # 100 kB a time, 4 MB in all
            assert server.call(kept) <= limit
        client.send(b".\r\n")
        assert text(client.reply()) == TOO_MUCH_DATA
        assert server.call(kept) == 0
        assert_transaction_works(client, recorder)
    assert len(recorder.messages) == 1


@pytest.mark.parametrize("length", [1000, 1001, 5000, 100_000])
def test_data_line_too_long_is_refused_after_terminator(
    server: ServerThread, recorder: Recorder, length: int
) -> None:
    with connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: long\r\n\r\n" + b"z" * length + b"\r\nNOOP\r\n.\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(2)] == [DATA_LINE_TOO_LONG, "250 OK"]
        assert recorder.messages == []
        assert text(client.command("RCPT TO:<b@example.org>")) == "503 Error: need MAIL command"
        assert_transaction_works(client, recorder)


def test_data_line_of_1001_octets_is_accepted(server: ServerThread, recorder: Recorder) -> None:
    line = b"z" * 999 + b"\r\n"
    stuffed = b".." + b"z" * 998 + b"\r\n"  # the stuffing dot does not count
    with connect(server) as client:
        start_transaction(client)
        client.send(line + stuffed + b".\r\n")
        assert text(client.reply()) == "250 OK"
    assert [message.content for message in recorder.messages] == [line + stuffed[1:]]


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (b"z" * 1500 + b"\r\n" + b"x\r\n" * 600, DATA_LINE_TOO_LONG),
        (b"x\r\n" * 600 + b"z" * 1500 + b"\r\n", TOO_MUCH_DATA),
    ],
    ids=["long-line-first", "size-first"],
)
def test_first_data_violation_wins(recorder: Recorder, body: bytes, reply: str) -> None:
    with limited_server(recorder, data_size_limit=1000) as server, connect(server) as client:
        start_transaction(client)
        client.send(body + b".\r\n")
        assert text(client.reply()) == reply
        assert recorder.messages == []
        assert_transaction_works(client, recorder)


# --- SMTP smuggling ------------------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<ceo@example.com>\r\n"
    b"RCPT TO:<victim@example.org>\r\n"
    b"DATA\r\n"
    b"Subject: smuggled\r\n\r\nNO SMUGGLING\r\n"
)


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n.\n", b"\r.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r"],
    ids=lambda end: end.replace(b"\r", b"CR").replace(b"\n", b"LF").decode(),
)
def test_smuggling_attempt_delivers_one_message(
    server: ServerThread, recorder: Recorder, fake_end: bytes
) -> None:
    with connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: real\r\n\r\nTesting" + fake_end + SMUGGLED + b"\r\n.\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(2)] == ["250 OK", "250 OK"]
        # The smuggled MAIL never became a transaction.
        assert text(client.command("RCPT TO:<b@example.org>")) == "503 Error: need MAIL command"
    assert len(recorder.messages) == 1
    (message,) = recorder.messages
    assert message.mail_from == "a@example.com"
    assert message.rcpt_tos == ("b@example.org",)
    assert b"NO SMUGGLING" in message.content
    assert b"ceo@example.com" in message.content


def test_aiosmtpd_smuggling_regression_case(server: ServerThread, recorder: Recorder) -> None:
    with connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: test\r\n\r\nTesting\n.\r\nNO SMUGGLING\n\r\n.\r\n")
        assert text(client.reply()) == "250 OK"
        assert text(client.command("NOOP")) == "250 OK"
    assert [message.content for message in recorder.messages] == [
        b"Subject: test\r\n\r\nTesting\n.\r\nNO SMUGGLING\n\r\n"
    ]


# --- disconnects ---------------------------------------------------------------------------

SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@example.com>\r\n"
    b"RCPT TO:<b@example.org>\r\n"
    b"DATA\r\n"
    b"Subject: cut\r\n\r\nline one\r\n.line two\r\n"
    b".\r\n"
    b"QUIT\r\n"
)
TERMINATOR_END = SESSION.index(b"\r\n.\r\n") + 5
SESSION_CONTENT = b"Subject: cut\r\n\r\nline one\r\nline two\r\n"


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    assert errors_logged(caplog) == []


def send_prefix_then(
    server: ServerThread, prefix: bytes, finish: Callable[[socket.socket], None]
) -> None:
    client = connect(server)
    try:
        if prefix:
            client.send(prefix)
        finish(client.sock)
    finally:
        client.close()


def half_close_and_drain(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_WR)
    read_until_eof(sock)


@pytest.mark.usefixtures("no_errors")
def test_eof_at_every_offset_delivers_only_terminated_message(
    server: ServerThread, recorder: Recorder
) -> None:
    for cut in range(len(SESSION) + 1):
        recorder.messages.clear()
        send_prefix_then(server, SESSION[:cut], half_close_and_drain)
        wait_for_sessions(server)
        expected = [SESSION_CONTENT] if cut >= TERMINATOR_END else []
        assert [message.content for message in recorder.messages] == expected, cut


@pytest.mark.usefixtures("no_errors")
def test_reset_at_every_offset_never_delivers_unterminated_message(
    server: ServerThread, recorder: Recorder
) -> None:
    for cut in range(len(SESSION) + 1):
        recorder.messages.clear()
        send_prefix_then(server, SESSION[:cut], reset_abruptly)
        wait_for_sessions(server)
        if cut < TERMINATOR_END:
            assert recorder.messages == [], cut
        else:
            # A RST may overtake unprocessed input; a message is then lost, never partial.
            assert [message.content for message in recorder.messages] in (
                [],
                [SESSION_CONTENT],
            ), cut


def after_mail(client: RawClient) -> None:
    assert client.command("EHLO client.example").code == 250
    assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"


def mid_data(client: RawClient) -> None:
    start_transaction(client)
    client.send(b"Subject: partial\r\n\r\nhalf a message\r\n.")


def nothing(client: RawClient) -> None:
    pass


def mid_command(client: RawClient) -> None:
    client.send(b"MAIL FROM:<a@exa")


@pytest.mark.usefixtures("no_errors")
@pytest.mark.parametrize("close", ["fin", "rst"])
@pytest.mark.parametrize(
    "point",
    [nothing, mid_command, after_mail, start_transaction, mid_data],
    ids=["after-greeting", "mid-command", "after-mail", "after-354", "mid-data"],
)
def test_disconnect_leaves_nothing_behind(
    server: ServerThread, recorder: Recorder, point: Callable[[RawClient], None], close: str
) -> None:
    client = connect(server)
    try:
        point(client)
    finally:
        if close == "rst":
            reset_abruptly(client.sock)
        client.close()
    wait_for_sessions(server)
    assert recorder.messages == []


@pytest.mark.usefixtures("no_errors")
def test_close_right_after_terminator_delivers_once(
    server: ServerThread, recorder: Recorder
) -> None:
    with connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: last\r\n\r\nbye\r\n.\r\n")
    wait_for_sessions(server)
    assert [message.content for message in recorder.messages] == [b"Subject: last\r\n\r\nbye\r\n"]


@pytest.mark.usefixtures("no_errors")
def test_reset_mid_data_of_large_message(server: ServerThread, recorder: Recorder) -> None:
    client = connect(server)
    try:
        start_transaction(client)
        for _ in range(20):
            client.send(b"x" * 998 + b"\r\n" + b"y\r\n" * 1000)
    finally:
        reset_abruptly(client.sock)
        client.close()
    wait_for_sessions(server)
    assert recorder.messages == []


@pytest.mark.usefixtures("no_errors")
def test_many_connections_dropped_mid_data(server: ServerThread, recorder: Recorder) -> None:
    clients = [connect(server) for _ in range(20)]
    try:
        for client in clients:
            start_transaction(client)
            client.send(b"Subject: many\r\n\r\npart")
    finally:
        for index, client in enumerate(clients):
            if index % 2:
                reset_abruptly(client.sock)
            client.close()
    wait_for_sessions(server)
    assert recorder.messages == []


# --- floods and limits ---------------------------------------------------------------------


def test_fifth_bogus_command_closes_connection(server: ServerThread) -> None:
    with connect(server) as client:
        for number in range(4):
            assert text(client.command(f"BOGUS{number}")) == (
                f'500 Error: command "BOGUS{number}" not recognized'
            )
            # Valid commands in between do not restore the budget.
            assert text(client.command("NOOP")) == "250 OK"
        assert text(client.command("BOGUS4")) == (
            "502 5.5.1 Too many unrecognized commands, goodbye."
        )
        assert client.closed_by_server()
    wait_for_sessions(server)


def test_pipelined_bogus_flood_stops_at_fifth(server: ServerThread) -> None:
    with connect(server) as client:
        client.send(b"XYZZY\r\n" * 50 + b"NOOP\r\n")
        replies = [text(reply) for reply in client.replies(5)]
        assert replies == ['500 Error: command "XYZZY" not recognized'] * 4 + [
            "502 5.5.1 Too many unrecognized commands, goodbye."
        ]
        assert client.closed_by_server()
    wait_for_sessions(server)


def test_commands_pipelined_after_quit_are_ignored(
    server: ServerThread, recorder: Recorder
) -> None:
    with connect(server) as client:
        client.sock.sendall(
            b"EHLO client.example\r\nQUIT\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n"
        )
        replies = ReplyParser().feed(read_until_eof(client.sock))
        assert [reply.code for reply in replies] == [250, 221]
    wait_for_sessions(server)
    assert recorder.messages == []


def test_command_call_limit_per_verb(recorder: Recorder) -> None:
    with limited_server(recorder, command_call_limit=3) as server, connect(server) as client:
        for _ in range(3):
            assert text(client.command("NOOP")) == "250 OK"
        assert text(client.command("HELP")).startswith("250 Supported commands:")
        assert text(client.command("NOOP")) == "421 4.7.0 NOOP sent too many times"
        assert client.closed_by_server()


def test_command_call_limit_mapping(recorder: Recorder) -> None:
    limits = {"NOOP": 1, "*": 2}
    with limited_server(recorder, command_call_limit=limits) as server, connect(server) as client:
        assert text(client.command("NOOP")) == "250 OK"
        assert text(client.command("RSET")) == "250 OK"
        assert text(client.command("RSET")) == "250 OK"
        assert text(client.command("RSET")) == "421 4.7.0 RSET sent too many times"
        assert client.closed_by_server()
    with limited_server(recorder, command_call_limit=limits) as server, connect(server) as client:
        client.send(b"NOOP\r\nNOOP\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(2)] == [
            "250 OK",
            "421 4.7.0 NOOP sent too many times",
        ]
        assert client.closed_by_server()


def test_call_limit_counts_per_connection(recorder: Recorder) -> None:
    with limited_server(recorder, command_call_limit=2) as server:
        for _ in range(3):
            with connect(server) as client:
                assert text(client.command("NOOP")) == "250 OK"
                assert text(client.command("NOOP")) == "250 OK"


# --- failing hooks -------------------------------------------------------------------------


class FailingDelivery(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = True

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.fail_next:
            self.fail_next = False
            raise ValueError("disk full")
        return await super().handle_DATA(server, session, envelope)


def test_failing_handle_data_gives_500_and_next_transaction_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = FailingDelivery()
    with serving(lambda: SMTP(handler, hostname=HOST)) as server, connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: one\r\n\r\nfirst\r\n.\r\n")
        assert text(client.reply()) == "500 Error: (ValueError) disk full"
        # The end of data ends the transaction whatever the outcome (RFC 5321
        # 4.1.1.4): a new MAIL is not "nested".
        assert_transaction_works(client, handler)
        assert text(client.command("QUIT")) == "221 Bye"
    assert handler.messages == [
        Delivered("next@example.com", ("c@example.org",), b"Subject: next\r\n\r\nfine\r\n")
    ]
    assert any("disk full" in repr(record.exc_info) for record in caplog.records)


def test_failing_handle_exception_still_replies() -> None:
    class Handler(FailingDelivery):
        async def handle_exception(self, error: Exception) -> str:
            raise RuntimeError("handler broke too")

    handler = Handler()
    with serving(lambda: SMTP(handler, hostname=HOST)) as server, connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: one\r\n\r\nfirst\r\n.\r\n")
        assert text(client.reply()) == "500 Error: (RuntimeError) handler broke too"
        assert text(client.command("NOOP")) == "250 OK"


def test_handle_exception_status_is_sent() -> None:
    class Handler(FailingDelivery):
        async def handle_exception(self, error: Exception) -> str:
            return f"451 4.3.0 try later ({error})"

    handler = Handler()
    with serving(lambda: SMTP(handler, hostname=HOST)) as server, connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: one\r\n\r\nfirst\r\n.\r\n")
        assert text(client.reply()) == "451 4.3.0 try later (disk full)"
        assert text(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        BrokenPipeError(32, "Broken pipe"),
        ConnectionAbortedError(103, "Software caused connection abort"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_connection_error_raised_by_handler_is_an_ordinary_failure(
    caplog: pytest.LogCaptureFixture, error: OSError
) -> None:
    """A handler relaying to another server fails with the connection errors of
    *that* connection; the client's session is fine and gets a reply (aiosmtpd
    sends the handle_exception reply for all of these)."""

    class Relay(Recorder):
        async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
            raise error

    handler = Relay()
    with serving(lambda: SMTP(handler, hostname=HOST)) as server, connect(server) as client:
        start_transaction(client)
        client.send(b"Subject: relay\r\n\r\nbody\r\n.\r\n")
        assert text(client.reply()) == f"500 Error: ({type(error).__name__}) {error}"
        assert text(client.command("NOOP")) == "250 OK"
        assert text(client.command("QUIT")) == "221 Bye"
        wait_for_sessions(server)


@pytest.mark.usefixtures("no_errors")
@pytest.mark.parametrize("close", ["fin", "rst"])
def test_disconnect_while_handler_is_busy(close: str) -> None:
    class SlowHandler(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.started = threading.Event()
            self.release = asyncio.Event()

        async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
            self.started.set()
            await self.release.wait()
            return await super().handle_DATA(server, session, envelope)

    handler = SlowHandler()
    with serving(lambda: SMTP(handler, hostname=HOST)) as server:
        client = connect(server)
        try:
            start_transaction(client)
            client.send(b"Subject: busy\r\n\r\nbody\r\n.\r\nNOOP\r\n")
            assert handler.started.wait(WAIT)
        finally:
            if close == "rst":
                reset_abruptly(client.sock)
            client.close()
        server.call(handler.release.set)
        wait_for_sessions(server)
    # The terminator arrived: the message was handed over exactly once.
    assert [message.content for message in handler.messages] == [b"Subject: busy\r\n\r\nbody\r\n"]
