"""Attack probes on AUTH (RFC 4954), over real sockets, against an authenticator
that accepts one password only (plaintext allowed: ``auth_require_tls=False``).

A password-guessing client is stopped in one session by the error budget (modern:
``421`` after ``error_limit`` replies of 5xx), and across sessions by the per-address
AuthFailureLimiter a modern Controller shares between its sessions.  Overlong,
undecodable and cancelled exchanges end the exchange with one reply and leave the
session usable; the next AUTH starts fresh.
"""

from __future__ import annotations

import socket
from base64 import b64encode
from collections.abc import Callable
from typing import Any

import pytest

from smtpwire.server.controller import Controller
from smtpwire.server.smtp import SMTP, AuthResult
from support.server import (
    RawClient,
    ServerThread,
    read_until_eof,
    replies_until_close,
    serving,
    text,
)

HOST = "mx.test"
SECRET = b"the-only-password"
SUCCESS = "235 2.7.0 Authentication successful"
INVALID = "535 5.7.8 Authentication credentials invalid"
TOO_MANY_ERRORS = "421 4.7.0 Error: too many errors, closing"


class OnePassword:
    """Accepts user "anne" with SECRET; counts the attempts it saw."""

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.attempts += 1
        if auth_data.login == b"anne" and auth_data.password == SECRET:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


def b64(data: bytes) -> str:
    return b64encode(data).decode()


def plain(password: bytes) -> str:
    return "AUTH PLAIN " + b64(b"\0anne\0" + password)


def smtp(authenticator: OnePassword, **kwargs: Any) -> Callable[[], SMTP]:
    kwargs.setdefault("hostname", HOST)
    kwargs.setdefault("auth_require_tls", False)
    return lambda: SMTP(object(), authenticator=authenticator, **kwargs)


def ehlo(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply().code == 220
    assert client.command("EHLO client.example").code == 250
    return client


def settled(server: ServerThread) -> bool:
    """Every connection task finished (a bounded number of hops into its loop)."""
    return any(server.tasks_pending() == 0 for _ in range(100))


def authenticated(server: Any) -> Any:
    return server.call(lambda: server.protocols[-1].session.authenticated)


# -- brute force ------------------------------------------------------------------------------


def test_guessing_in_one_modern_session_is_cut_off_by_the_error_budget() -> None:
    authenticator = OnePassword()
    with (
        serving(smtp(authenticator, modern=True, error_limit=5)) as server,
        ehlo(server.port) as client,
    ):
        for guess in range(4):
            assert text(client.command(plain(b"guess-%d" % guess))) == INVALID
        client.send(plain(b"guess-4").encode() + b"\r\n" + plain(SECRET).encode() + b"\r\n")
        # The fifth failure is answered, then 421; the right password after it is not run.
        assert replies_until_close(client) == [INVALID, TOO_MANY_ERRORS]
        assert authenticated(server) is None
    assert authenticator.attempts == 5


def test_guessing_in_one_modern_session_with_the_default_budget_of_20() -> None:
    authenticator = OnePassword()
    with (
        serving(smtp(authenticator, modern=True)) as server,
        ehlo(server.port) as client,
    ):
        wire = "".join(f"{plain(b'guess-%d' % n)}\r\n" for n in range(25)).encode()
        client.send(wire)
        assert replies_until_close(client) == [INVALID] * 20 + [TOO_MANY_ERRORS]
    assert authenticator.attempts == 20


def test_classic_session_has_no_error_budget() -> None:
    # aiosmtpd's behaviour, kept without ``modern``: guessing goes on for ever.
    authenticator = OnePassword()
    with serving(smtp(authenticator)) as server, ehlo(server.port) as client:
        wire = "".join(f"{plain(b'guess-%d' % n)}\r\n" for n in range(50)).encode()
        client.send(wire)
        assert [text(reply) for reply in client.replies(50)] == [INVALID] * 50
        assert text(client.command(plain(SECRET))) == SUCCESS
    assert authenticator.attempts == 51


def test_guessing_across_sessions_without_a_shared_limiter_is_not_limited() -> None:
    """The error budget is per session: without an AuthFailureLimiter shared by the
    sessions (a bare SMTP factory), a client that reconnects every few guesses is
    never slowed down.  A modern Controller and the CLI share one (below)."""
    authenticator = OnePassword()
    with serving(smtp(authenticator, modern=True, error_limit=5)) as server:
        for _ in range(10):
            with ehlo(server.port) as client:
                for guess in range(4):
                    assert text(client.command(plain(b"guess-%d" % guess))) == INVALID
        with ehlo(server.port) as client:
            assert text(client.command(plain(SECRET))) == SUCCESS
    assert authenticator.attempts == 41


def test_guessing_across_sessions_from_one_address_is_throttled() -> None:
    """30 refused credentials from one address: AUTH answers 454 4.7.0 without
    asking the authenticator; the session stays usable."""
    authenticator = OnePassword()
    controller = Controller(
        object(),
        hostname="127.0.0.1",
        port=0,
        modern=True,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        for _ in range(10):
            with ehlo(controller.port) as client:
                for guess in range(3):
                    client.command(plain(b"guess-%d" % guess))
        with ehlo(controller.port) as client:
            reply = client.command(plain(b"yet-another-guess"))
            assert reply.code == 454
            assert reply.lines[0].startswith("4.7.0 ")
            assert text(client.command("NOOP")) == "250 2.0.0 OK"  # not a closed session
    finally:
        controller.stop()
    assert authenticator.attempts == 30  # the throttled attempt never reached it


# -- malformed exchanges ----------------------------------------------------------------------


@pytest.mark.parametrize("modern", [False, True], ids=["classic", "modern"])
def test_initial_response_over_the_line_limit(modern: bool) -> None:
    authenticator = OnePassword()
    code = "5.5.2 " if modern else ""
    with (
        serving(smtp(authenticator, modern=modern)) as server,
        ehlo(server.port) as client,
    ):
        for length in (600, 20_000, 1_000_000):
            assert text(client.command("AUTH PLAIN " + "A" * length)) == (
                f"500 {code}Command line too long"
            )
        assert text(client.command(plain(SECRET))) == SUCCESS
    assert authenticator.attempts == 1


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_challenge_answer_over_the_line_limit_ends_the_exchange(mechanism: str) -> None:
    authenticator = OnePassword()
    with serving(smtp(authenticator)) as server, ehlo(server.port) as client:
        for length in (2_000, 1_000_000):
            assert client.command(f"AUTH {mechanism}").code == 334
            assert text(client.command("A" * length)) == (
                "500 5.5.6 Authentication Exchange line is too long"
            )
            assert text(client.command("NOOP")) == "250 OK"
        assert authenticated(server) is None
        assert text(client.command(plain(SECRET))) == SUCCESS
    assert authenticator.attempts == 1


@pytest.mark.parametrize(
    "exchange",
    [
        ["AUTH PLAIN !!!!"],
        ["AUTH PLAIN QUJD=EFG"],
        ["AUTH PLAIN", "QUJDRA=="[:-1]],
        ["AUTH LOGIN", "bm90\x01YjY0"],
        ["AUTH LOGIN", b64(b"anne"), "p@ss"],
    ],
    ids=["junk", "padding-inside", "bad-padding", "control", "login-password"],
)
def test_malformed_base64_is_501_and_the_next_auth_starts_fresh(exchange: list[str]) -> None:
    authenticator = OnePassword()
    with serving(smtp(authenticator)) as server, ehlo(server.port) as client:
        *challenged, last = exchange
        for line in challenged:
            assert client.command(line).code == 334
        assert text(client.command(last)) == "501 5.5.2 Can't decode base64"
        assert text(client.command("NOOP")) == "250 OK"
        assert text(client.command(plain(SECRET))) == SUCCESS
    assert authenticator.attempts == 1


@pytest.mark.parametrize(
    "exchange",
    [["AUTH PLAIN"], ["AUTH LOGIN"], ["AUTH LOGIN", b64(b"anne")]],
    ids=["plain", "login-user", "login-password"],
)
def test_continuation_after_cancel_is_a_command_and_auth_starts_fresh(
    exchange: list[str],
) -> None:
    authenticator = OnePassword()
    with serving(smtp(authenticator)) as server, ehlo(server.port) as client:
        for line in exchange:
            assert client.command(line).code == 334
        # The cancel and what the client meant to send next, in one write.
        client.send(b"*\r\n" + b64(SECRET).encode() + b"\r\n")
        assert [text(reply) for reply in client.replies(2)] == [
            "501 5.7.0 Auth aborted",
            f'500 Error: command "{b64(SECRET).upper()}" not recognized',
        ]
        assert authenticated(server) is None
        # A fresh exchange: LOGIN asks for the user name again.
        assert text(client.command("AUTH LOGIN")) == "334 VXNlciBOYW1lAA=="
        assert text(client.command(b64(b"anne"))) == "334 UGFzc3dvcmQA"
        assert text(client.command(b64(SECRET))) == SUCCESS
    assert authenticator.attempts == 1


def test_auth_after_success_is_refused_and_guessing_stops() -> None:
    authenticator = OnePassword()
    with serving(smtp(authenticator)) as server, ehlo(server.port) as client:
        assert text(client.command(plain(SECRET))) == SUCCESS
        assert text(client.command(plain(b"other"))) == "503 Already authenticated"
    assert authenticator.attempts == 1


def test_closing_mid_exchange_leaves_nothing_running() -> None:
    authenticator = OnePassword()
    with serving(smtp(authenticator)) as server:
        client = ehlo(server.port)
        assert client.command("AUTH LOGIN").code == 334
        client.sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(client.sock) == b""
        client.close()
        assert settled(server)
    assert authenticator.attempts == 0
