"""Hardening beyond aiosmtpd: a cap on simultaneous connections, HTTP requests
refused, and clients that talk before the greeting refused.

Each runs over real loopback sockets against a Controller on port 0.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from smtpwire.server.controller import Controller
from smtpwire.server.smtp import SMTP
from support.server import RawClient, Recorder, read_until_eof, text

WAIT = 10.0


@contextmanager
def controller(handler: Any = None, **kwargs: Any) -> Iterator[Controller]:
    server = Controller(handler or Recorder(), hostname="127.0.0.1", port=0, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- max_connections ---------------------------------------------------------------------


def test_connection_over_the_cap_gets_421_and_is_closed() -> None:
    with controller(max_connections=3) as server, ExitStack() as stack:
        clients = [stack.enter_context(RawClient(server.port)) for _ in range(3)]
        for client in clients:
            assert client.reply().code == 220
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as extra:
            assert read_until_eof(extra) == b"421 4.7.0 Too many connections, try again later\r\n"
        # The three admitted sessions are unaffected.
        for client in clients:
            assert text(client.command("NOOP")) == "250 OK"
        # One leaves: its place is free again.
        assert clients[0].command("QUIT").code == 221
        assert clients[0].closed_by_server()
        clients[0].close()
        for _ in range(100):  # bounded: the server sees the close within a few tries
            with RawClient(server.port) as again:
                first = again.reply()
                if first.code == 220:
                    assert text(again.command("NOOP")) == "250 OK"
                    break
        else:
            pytest.fail("a freed connection slot was never reused")


def test_no_connection_cap_by_default() -> None:
    with controller() as server, ExitStack() as stack:
        clients = [stack.enter_context(RawClient(server.port)) for _ in range(30)]
        assert all(client.reply().code == 220 for client in clients)


@pytest.mark.parametrize("bad", [0, -1])
def test_max_connections_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        Controller(Recorder(), max_connections=bad)


# --- HTTP requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET / HTTP/1.1",
        b"POST /login HTTP/1.0",
        b"CONNECT mail.example:25 HTTP/1.1",
        b"HEAD / HTTP/2",
    ],
)
def test_http_request_line_is_refused_and_the_connection_closed(request_line: bytes) -> None:
    handler = Recorder()
    with controller(handler) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        client.send(request_line + b"\r\nHost: x\r\n\r\nMAIL FROM:<a@example.com>\r\n")
        reply = client.reply()
        assert text(reply) == "421 4.7.0 Error: HTTP request refused, this is an SMTP server"
        assert client.closed_by_server()
    assert handler.messages == []


def test_a_command_merely_named_like_http_is_not_refused() -> None:
    with controller() as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        # No " HTTP/x" at the end: an ordinary unknown command.
        assert text(client.command("GET mail")) == '500 Error: command "GET" not recognized'
        assert text(client.command("NOOP")) == "250 OK"


# --- early talkers ---------------------------------------------------------------------------


def test_client_talking_before_the_greeting_is_refused() -> None:
    handler = Recorder()
    with (
        controller(handler, greeting_delay=0.5) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock,
    ):
        sock.sendall(b"EHLO bot\r\nMAIL FROM:<spam@example.com>\r\n")
        received = read_until_eof(sock)
    assert received == b"554 5.5.1 Error: data sent before the greeting\r\n"
    assert handler.messages == []


def test_client_waiting_for_the_greeting_is_served_after_the_delay() -> None:
    with controller(greeting_delay=0.2) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        assert text(client.command("NOOP")) == "250 OK"


async def test_modern_turns_the_early_talker_check_on() -> None:
    # With delay 0 the check sees the bytes already there when the greeting is due
    # (timing-dependent end to end, hence checked on the instance).
    assert SMTP(Recorder(), modern=True)._greeting_delay == 0.0
    assert SMTP(Recorder(), modern=True, greeting_delay=2.0)._greeting_delay == 2.0
    assert SMTP(Recorder())._greeting_delay is None


async def test_greeting_delay_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="greeting_delay"):
        SMTP(Recorder(), greeting_delay=-1)


# --- slow and endless clients ----------------------------------------------------------------


def test_session_time_limit_closes_with_421() -> None:
    with controller(session_limit=0.3) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        assert text(client.command("NOOP")) == "250 OK"
        # No further command: the limit, not the idle timeout (300 s), ends it.
        assert text(client.reply()) == "421 4.4.2 Error: session time limit exceeded, closing"
        assert client.closed_by_server()


def test_slowloris_during_data_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from smtpwire.server import _connection

    monkeypatch.setattr(_connection, "_RATE_WINDOW", 0.2)
    handler = Recorder()
    with controller(handler, min_data_rate=10_000) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        client.send(b"HELO me\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert [r.code for r in client.replies(4)] == [250, 250, 250, 354]
        client.send(b"Subject: slow\r\n")  # then nothing: far below 10,000 octets/s
        assert text(client.reply()) == "421 4.4.2 Error: data arriving too slowly, closing"
        assert client.closed_by_server()
    assert handler.messages == []


def test_a_fast_client_is_not_affected_by_the_rate_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from smtpwire.server import _connection

    monkeypatch.setattr(_connection, "_RATE_WINDOW", 0.2)
    handler = Recorder()
    with controller(handler, min_data_rate=10_000) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        body = b"x" * 70 + b"\r\n"
        client.send(b"HELO me\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert [r.code for r in client.replies(4)] == [250, 250, 250, 354]
        client.send(body * 1000 + b".\r\n")
        assert text(client.reply()) == "250 OK"
    assert [len(m.content) for m in handler.messages] == [len(body) * 1000]


@pytest.mark.parametrize("name", ["session_limit", "min_data_rate"])
async def test_limits_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SMTP(Recorder(), **{name: 0})


def test_bdat_line_with_a_bare_lf_under_reject_closes_so_its_chunk_is_never_executed() -> None:
    handler = Recorder()
    with (
        controller(handler, chunking=True, bare_lf="reject") as server,
        RawClient(server.port) as client,
    ):
        assert client.reply().code == 220
        client.send(b"HELO me\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        assert [r.code for r in client.replies(3)] == [250, 250, 250]
        client.send(b"BDAT 6\nNOOP\r\n")
        assert text(client.reply()) == "500 5.5.2 Error: bare <CR> or <LF> received"
        assert client.closed_by_server()  # no "250 OK" for the NOOP inside the chunk
    assert handler.messages == []


# --- error budget --------------------------------------------------------------------------


def test_modern_session_is_closed_after_20_permanent_errors() -> None:
    with controller(modern=True) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client").code == 250
        for _ in range(19):
            assert client.command("RCPT TO:<x@example.com>").code == 503  # no MAIL yet
        assert client.command("RCPT TO:<x@example.com>").code == 503
        assert [text(reply) for reply in client.replies(1)] == [
            "421 4.7.0 Error: too many errors, closing"
        ]
        assert read_until_eof(client.sock) == b""


def test_temporary_errors_do_not_use_up_the_error_budget() -> None:
    with controller(modern=True, rcpt_limit=100) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client").code == 250
        assert client.command("MAIL FROM:<a@example.com>").code == 250
        wire = b"".join(f"RCPT TO:<r{n}@example.com>\r\n".encode() for n in range(150))
        client.send(wire)
        codes = [reply.code for reply in client.replies(150)]
        assert codes == [250] * 100 + [452] * 50
        assert client.command("NOOP").code == 250  # still open


def test_error_limit_is_configurable_and_off_by_default() -> None:
    with controller(error_limit=3) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        for _ in range(3):
            assert client.command("RCPT TO:<x@example.com>").code == 503
        assert client.reply().code == 421
    with controller() as server, RawClient(server.port) as client:  # aiosmtpd's default
        assert client.reply().code == 220
        assert client.command("HELO client").code == 250
        for _ in range(30):
            assert client.command("RCPT TO:<x@example.com>").code == 503
        assert client.command("NOOP").code == 250


@pytest.mark.parametrize("bad", [0, -1])
async def test_error_limit_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="error_limit must be at least 1"):
        SMTP(Recorder(), error_limit=bad)
