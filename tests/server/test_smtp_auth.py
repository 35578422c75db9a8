"""AUTH (RFC 4954) with aiosmtpd 1.4.6's reply texts, mechanisms and hooks: the
built-in PLAIN and LOGIN, authenticator / auth_callback, handler mechanisms, and
credentials kept out of logs and reprs."""

from __future__ import annotations

import logging
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpwire.server.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    auth_mechanism,
)
from support.server import RawClient, ServerThread, serving

HOST = "testhost"
SUCCESS = "235 2.7.0 Authentication successful"
INVALID = "535 5.7.8 Authentication credentials invalid"
PASSWORD = "s3cr3t-Pa55"  # noqa: S105 - a test credential, looked for in the logs


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return b64encode(raw).decode()


def plain(login: str = "anne", word: str = PASSWORD) -> str:
    return b64(f"\0{login}\0{word}")


class Authenticator:
    """Accepts login "anne" with PASSWORD; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.calls.append((server, session, envelope, mechanism, auth_data))
        if auth_data.login == b"tempfail":
            return AuthResult(
                success=False, handled=False, message="454 4.7.0 Temporary authentication failure"
            )
        if auth_data == (b"anne", PASSWORD.encode()):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


class AsyncAuthenticator(Authenticator):
    async def __call__(  # type: ignore[override]
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        return super().__call__(server, session, envelope, mechanism, auth_data)


def smtp(handler: Any = None, **kwargs: Any) -> Callable[[], SMTP]:
    kwargs.setdefault("hostname", HOST)
    kwargs.setdefault("auth_require_tls", False)
    if "auth_callback" not in kwargs:
        kwargs.setdefault("authenticator", Authenticator())
    return lambda: SMTP(handler if handler is not None else object(), **kwargs)


def connect(port: int, greeting: str | None = "EHLO client.example") -> RawClient:
    client = RawClient(port)
    assert client.reply().code == 220
    if greeting:
        assert client.command(greeting).code == 250
    return client


def session_of(server: ServerThread) -> Session:
    session: Session = server.call(lambda: server.protocols[0].session)
    return session


# -- preconditions -----------------------------------------------------------------------------


def test_auth_before_ehlo() -> None:
    with serving(smtp()) as server, connect(server.port, greeting=None) as client:
        assert str(client.command(f"AUTH PLAIN {plain()}")) == "503 Error: send EHLO first"


def test_auth_after_helo_is_not_a_command() -> None:
    with serving(smtp()) as server, connect(server.port, "HELO client.example") as client:
        assert str(client.command(f"AUTH PLAIN {plain()}")) == (
            "500 Error: command 'AUTH' not recognized"
        )


def test_auth_requires_tls_by_default() -> None:
    factory = smtp(auth_require_tls=True)
    with serving(factory) as server, connect(server.port, greeting=None) as client:
        reply = client.command("EHLO client.example")
        assert list(reply.lines) == ["testhost", "SIZE 33554432", "8BITMIME", "HELP"]
        assert str(client.command(f"AUTH PLAIN {plain()}")) == (
            "538 5.7.11 Encryption required for requested authentication mechanism"
        )
        assert session_of(server).authenticated is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("AUTH", "501 Not enough value"),
        ("AUTH   ", "501 Not enough value"),
        ("AUTH PLAIN a b", "501 Too many values"),
        ("AUTH CRAM-MD5", "504 5.5.4 Unrecognized authentication type"),
        ("AUTH GSSAPI abc", "504 5.5.4 Unrecognized authentication type"),
    ],
)
def test_auth_argument_errors(line: str, expected: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(line)) == expected
        assert str(client.command("NOOP")) == "250 OK"


# -- PLAIN and LOGIN with an authenticator -----------------------------------------------------


@pytest.mark.parametrize("authenticator_class", [Authenticator, AsyncAuthenticator])
@pytest.mark.parametrize("verb", ["AUTH PLAIN", "auth plain", "AUTH Plain"])
def test_plain_with_initial_response(authenticator_class: type, verb: str) -> None:
    authenticator = authenticator_class()
    with (
        serving(smtp(authenticator=authenticator)) as server,
        connect(server.port) as client,
    ):
        assert str(client.command(f"{verb} {plain()}")) == SUCCESS
        ((hook_server, session, envelope, mechanism, auth_data),) = authenticator.calls
        assert hook_server is server.protocols[0]
        assert session is session_of(server)
        assert isinstance(envelope, Envelope)
        assert mechanism == "PLAIN"
        assert auth_data == LoginPassword(b"anne", PASSWORD.encode())
        assert session.authenticated is True
        assert session.auth_data == LoginPassword(b"anne", PASSWORD.encode())
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"


def test_plain_with_challenge() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.send(b"AUTH PLAIN\r\n")
        assert client.reply().to_bytes() == b"334 \r\n"
        assert str(client.command(plain())) == SUCCESS
        assert session_of(server).authenticated is True


def test_plain_authzid_is_ignored() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command("AUTH PLAIN " + b64(b"admin\0anne\0" + PASSWORD.encode()))) == (
            SUCCESS
        )


@pytest.mark.parametrize("authenticator_class", [Authenticator, AsyncAuthenticator])
def test_login_with_challenges(authenticator_class: type) -> None:
    authenticator = authenticator_class()
    with (
        serving(smtp(authenticator=authenticator)) as server,
        connect(server.port) as client,
    ):
        assert str(client.command("AUTH LOGIN")) == "334 VXNlciBOYW1lAA=="
        assert str(client.command(b64("anne"))) == "334 UGFzc3dvcmQA"
        assert str(client.command(b64(PASSWORD))) == SUCCESS
        assert [call[3:] for call in authenticator.calls] == [
            ("LOGIN", LoginPassword(b"anne", PASSWORD.encode()))
        ]
        assert session_of(server).authenticated is True


def test_login_with_initial_response() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(f"auth login {b64('anne')}")) == "334 UGFzc3dvcmQA"
        assert str(client.command(b64(PASSWORD))) == SUCCESS


@pytest.mark.parametrize(
    "exchange",
    [
        [f"AUTH PLAIN {plain(word='wrong')}"],
        ["AUTH PLAIN", plain(login="bart")],
        ["AUTH LOGIN", b64("anne"), b64("wrong")],
        [f"AUTH LOGIN {b64('bart')}", b64(PASSWORD)],
    ],
    ids=["plain-initial", "plain-challenge", "login-challenges", "login-initial"],
)
def test_bad_credentials(exchange: list[str]) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        *challenged, last = exchange
        for line in challenged:
            assert client.command(line).code == 334
        assert str(client.command(last)) == INVALID
        session = session_of(server)
        assert (session.authenticated, session.auth_data) == (None, None)
        assert str(client.command(f"AUTH PLAIN {plain()}")) == SUCCESS


def test_authenticator_message_replaces_the_failure_reply() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(f"AUTH PLAIN {plain(login='tempfail')}")) == (
            "454 4.7.0 Temporary authentication failure"
        )


@pytest.mark.parametrize(
    "exchange",
    [["AUTH PLAIN", "*"], ["AUTH LOGIN", "*"], ["AUTH LOGIN", b64("anne"), "*"]],
    ids=["plain", "login-username", "login-password"],
)
def test_client_aborts_with_star(exchange: list[str]) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        *challenged, last = exchange
        for line in challenged:
            assert client.command(line).code == 334
        assert str(client.command(last)) == "501 5.7.0 Auth aborted"
        # Nothing else was queued: the next reply belongs to the next command.
        assert str(client.command("NOOP")) == "250 OK"
        assert session_of(server).authenticated is None


@pytest.mark.parametrize(
    "exchange",
    [
        ["AUTH PLAIN not-b64"],
        ["AUTH PLAIN", "ab@%"],
        ["AUTH LOGIN ab@%"],
        ["AUTH LOGIN", "not-b64"],
        ["AUTH LOGIN", b64("anne"), "ab@%"],
    ],
)
def test_bad_base64(exchange: list[str]) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        *challenged, last = exchange
        for line in challenged:
            assert client.command(line).code == 334
        assert str(client.command(last)) == "501 5.5.2 Can't decode base64"
        assert str(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize(
    "exchange",
    [
        ["AUTH PLAIN " + b64(b"\0onlylogin")],
        ["AUTH PLAIN PQ=="],
        ["AUTH PLAIN", b64("no-nul-at-all")],
        ["AUTH PLAIN " + b64(b"a\0b\0c\0d")],
    ],
    ids=["one-nul", "equals", "challenge-no-nul", "three-nuls"],
)
def test_plain_cannot_split(exchange: list[str]) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        *challenged, last = exchange
        for line in challenged:
            assert client.command(line).code == 334
        assert str(client.command(last)) == "501 5.5.2 Can't split auth value"


def test_already_authenticated_and_rset_keeps_it() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(f"AUTH PLAIN {plain()}")) == SUCCESS
        assert str(client.command("AUTH")) == "503 Already authenticated"
        assert str(client.command(f"AUTH LOGIN {b64('anne')}")) == "503 Already authenticated"
        assert str(client.command("RSET")) == "250 OK"
        assert str(client.command("AUTH PLAIN")) == "503 Already authenticated"


# -- legacy auth_callback ----------------------------------------------------------------------


def test_auth_callback() -> None:
    calls: list[tuple[str, bytes, bytes]] = []

    def callback(mechanism: str, login: bytes, password: bytes) -> bool:
        calls.append((mechanism, login, password))
        return login == b"anne" and password == PASSWORD.encode()

    with serving(smtp(auth_callback=callback)) as server, connect(server.port) as client:
        assert str(client.command(f"AUTH PLAIN {plain(word='nope')}")) == INVALID
        assert str(client.command(f"AUTH PLAIN {plain()}")) == SUCCESS
        session = session_of(server)
        assert session.authenticated is True
        assert session.auth_data == LoginPassword(b"anne", PASSWORD.encode())
        assert session.login_data == b"anne"
    assert calls == [
        ("PLAIN", b"anne", b"nope"),
        ("PLAIN", b"anne", PASSWORD.encode()),
    ]


def test_without_authenticator_or_callback_every_login_fails() -> None:
    factory = smtp(authenticator=None)
    with serving(factory) as server, connect(server.port) as client:
        assert str(client.command(f"AUTH PLAIN {plain()}")) == INVALID


# -- auth_required -----------------------------------------------------------------------------


async def test_auth_required_without_tls_warns() -> None:
    with pytest.warns(UserWarning, match=r"^Requiring AUTH while not requiring TLS can lead"):
        SMTP(object(), auth_required=True, auth_require_tls=False)


@contextmanager
def auth_required_server() -> Iterator[ServerThread]:
    built: list[SMTP] = []
    with serving(built.pop) as server:
        with pytest.warns(UserWarning, match="Requiring AUTH while not requiring TLS"):
            built.append(
                SMTP(
                    object(),
                    hostname=HOST,
                    auth_required=True,
                    auth_require_tls=False,
                    authenticator=Authenticator(),
                    loop=server.loop,
                )
            )
        yield server


def test_auth_required_blocks_transaction_until_authenticated() -> None:
    required = "530 5.7.0 Authentication required"
    with auth_required_server() as server, connect(server.port, greeting=None) as client:
        assert str(client.command("HELP")) == required
        assert str(client.command("VRFY anne@example.com")) == required
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "503 Error: send HELO first"
        assert client.command("EHLO client.example").code == 250
        for line in ("MAIL FROM:<anne@example.com>", "RCPT TO:<bart@example.com>", "DATA"):
            assert str(client.command(line)) == required
        assert str(client.command("NOOP")) == "250 OK"
        assert str(client.command(f"AUTH PLAIN {plain()}")) == SUCCESS
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"
        assert str(client.command("RCPT TO:<bart@example.com>")) == "250 OK"
        assert client.command("HELP").code == 250
        assert client.command("VRFY anne@example.com").code == 252


# -- handler mechanisms ------------------------------------------------------------------------


class Mechanisms:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, list[str]]] = []

    async def auth_CUSTOM(self, server: SMTP, args: list[str]) -> AuthResult:
        self.calls.append(("CUSTOM", server, list(args)))
        return AuthResult(success=args[1:] == ["letmein"], handled=False, auth_data="custom-id")

    async def auth_ASK(self, server: SMTP, args: list[str]) -> AuthResult:
        answer = await server.challenge_auth("Who are you?")
        if answer is MISSING:
            return AuthResult(success=False)
        return AuthResult(success=answer == b"anne", handled=False, auth_data=answer)

    async def auth_WITH__DASH(self, server: SMTP, args: list[str]) -> AuthResult:
        return AuthResult(success=True, auth_data="dash")

    @auth_mechanism("x-named")
    async def auth_whatever(self, server: SMTP, args: list[str]) -> AuthResult:
        return AuthResult(success=True, auth_data="named")

    async def auth_LEGACYOK(self, server: SMTP, args: list[str]) -> Any:
        return "legacy-login"

    async def auth_LEGACYFALSE(self, server: SMTP, args: list[str]) -> Any:
        return False

    async def auth_LEGACYMISSING(self, server: SMTP, args: list[str]) -> Any:
        return MISSING

    async def auth_LEGACYNONE(self, server: SMTP, args: list[str]) -> Any:
        await server.push("235 2.7.0 Handled it myself")
        return None


MECHANISM_LINE = (
    "AUTH ASK CUSTOM LEGACYFALSE LEGACYMISSING LEGACYNONE LEGACYOK LOGIN PLAIN WITH-DASH X-NAMED"
)


def test_handler_mechanisms_are_advertised_sorted() -> None:
    with serving(smtp(Mechanisms())) as server, connect(server.port, greeting=None) as client:
        reply = client.command("EHLO client.example")
        assert list(reply.lines) == [
            "testhost",
            "SIZE 33554432",
            "8BITMIME",
            MECHANISM_LINE,
            "HELP",
        ]


def test_handler_mechanism_with_arguments() -> None:
    handler = Mechanisms()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        assert str(client.command("AUTH CUSTOM wrong")) == INVALID
        assert str(client.command("AUTH custom letmein")) == SUCCESS
        assert [(name, args) for name, _, args in handler.calls] == [
            ("CUSTOM", ["CUSTOM", "wrong"]),
            ("CUSTOM", ["CUSTOM", "letmein"]),
        ]
        assert handler.calls[0][1] is server.protocols[0]
        session = session_of(server)
        assert (session.authenticated, session.auth_data) == (True, "custom-id")


def test_handler_mechanism_with_a_challenge() -> None:
    with serving(smtp(Mechanisms())) as server, connect(server.port) as client:
        assert str(client.command("AUTH ASK")) == f"334 {b64('Who are you?')}"
        assert str(client.command(b64("anne"))) == SUCCESS
        assert session_of(server).auth_data == b"anne"


@pytest.mark.parametrize(
    ("line", "expected", "auth_data"),
    [
        ("AUTH WITH-DASH", SUCCESS, "dash"),
        ("AUTH X-NAMED", SUCCESS, "named"),
        ("AUTH WITH__DASH", "504 5.5.4 Unrecognized authentication type", None),
        ("AUTH WHATEVER", "504 5.5.4 Unrecognized authentication type", None),
    ],
)
def test_handler_mechanism_names(line: str, expected: str, auth_data: Any) -> None:
    with serving(smtp(Mechanisms())) as server, connect(server.port) as client:
        assert str(client.command(line)) == expected
        assert session_of(server).auth_data == auth_data


@pytest.mark.parametrize(
    ("mechanism", "expected", "authenticated"),
    [
        ("LEGACYOK", SUCCESS, True),
        ("LEGACYFALSE", INVALID, None),
        ("LEGACYMISSING", INVALID, None),
        ("LEGACYNONE", "235 2.7.0 Handled it myself", None),
    ],
)
def test_legacy_mechanism_return_values(mechanism: str, expected: str, authenticated: Any) -> None:
    with serving(smtp(Mechanisms())) as server, connect(server.port) as client:
        assert str(client.command(f"AUTH {mechanism}")) == expected
        assert str(client.command("NOOP")) == "250 OK"
        session = session_of(server)
        assert session.authenticated is authenticated
        if authenticated:
            assert session.login_data == "legacy-login"


class OverridePlain:
    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return AuthResult(success=True, auth_data="from-handler")


def test_handler_mechanism_overrides_builtin() -> None:
    with serving(smtp(OverridePlain())) as server, connect(server.port) as client:
        assert str(client.command("AUTH PLAIN")) == SUCCESS
        assert session_of(server).auth_data == "from-handler"


@pytest.mark.parametrize("name", ["with.dot", "sp ace", "", "caf\u00e9"])
def test_auth_mechanism_decorator_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="Invalid AUTH mechanism name"):
        auth_mechanism(name)


def test_auth_exclude_mechanism() -> None:
    factory = smtp(auth_exclude_mechanism=["LOGIN"])
    with serving(factory) as server, connect(server.port, greeting=None) as client:
        reply = client.command("EHLO client.example")
        assert "AUTH PLAIN" in reply.lines
        assert str(client.command("AUTH LOGIN")) == "504 5.5.4 Unrecognized authentication type"
        assert str(client.command(f"AUTH PLAIN {plain()}")) == SUCCESS


class AuthHook:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> str:
        self.calls.append(list(args))
        return "235 2.7.0 Hook says yes"


def test_handle_auth_hook_replaces_mechanism_dispatch() -> None:
    handler = AuthHook()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        assert str(client.command(f"AUTH PLAIN {plain()}")) == "235 2.7.0 Hook says yes"
        assert handler.calls == [["PLAIN", plain()]]
        assert str(client.command("AUTH NOPE")) == "504 5.5.4 Unrecognized authentication type"


# -- secrets -----------------------------------------------------------------------------------


def test_login_password_and_auth_result_hide_the_password() -> None:
    credentials = LoginPassword(b"anne", PASSWORD.encode())
    for text in (str(credentials), repr(credentials)):
        assert "anne" in text
        assert PASSWORD not in text
    assert str(credentials) == "LoginPassword(login='anne', password=...)"
    result = AuthResult(success=True, auth_data=credentials)
    assert repr(result) == "AuthResult(success=True, handled=True, message=None, auth_data=...)"
    assert credentials.login == b"anne"
    assert credentials.password == PASSWORD.encode()
    assert tuple(credentials) == (b"anne", PASSWORD.encode())


async def test_available_mechanisms_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mail.log")
    SMTP(object())
    assert "Available AUTH mechanisms: LOGIN(builtin) PLAIN(builtin)" in caplog.messages


async def test_available_handler_mechanisms_are_logged_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mail.log")
    SMTP(OverridePlain())
    SMTP(Mechanisms(), auth_exclude_mechanism=["LOGIN"])
    assert "Available AUTH mechanisms: LOGIN(builtin) PLAIN" in caplog.messages
    assert (
        "Available AUTH mechanisms: ASK CUSTOM LEGACYFALSE LEGACYMISSING LEGACYNONE LEGACYOK"
        " PLAIN(builtin) WITH-DASH X-NAMED"
    ) in caplog.messages


def test_password_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mail.log")
    with serving(smtp()) as server:
        with connect(server.port) as client:
            assert str(client.command(f"AUTH PLAIN {plain()}")) == SUCCESS
        with connect(server.port) as client:
            assert client.command("AUTH PLAIN").code == 334
            assert str(client.command(plain())) == SUCCESS
        with connect(server.port) as client:
            assert client.command("AUTH LOGIN").code == 334
            assert client.command(b64("anne")).code == 334
            assert str(client.command(b64(PASSWORD))) == SUCCESS
        with connect(server.port) as client:
            assert client.command(f"AUTH LOGIN {b64('anne')}").code == 334
            assert str(client.command(b64("wrong-" + PASSWORD))) == INVALID
            assert str(client.command("QUIT")) == "221 Bye"
    records = [record for record in caplog.records if record.name == "mail.log"]
    assert any("AUTH" in record.getMessage() for record in records)  # the log was on
    secrets = (PASSWORD, b64(PASSWORD), plain(), b64("wrong-" + PASSWORD))
    for record in records:
        message = record.getMessage()
        for secret in secrets:
            assert secret not in message, (secret, message)
