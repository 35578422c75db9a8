"""TLS and AUTH against smtpwire.server: STARTTLS as ``start_tls`` None/True/False
decides, implicit TLS, certificate validation (a trustme CA the client does or
does not trust), the aiosmtplib 1.x STARTTLS example, and ``login()`` / the
mechanisms / credentials given to ``connect`` against the server's authenticator.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

import smtpwire.client as aiosmtplib
from smtpwire.server.controller import Controller
from smtpwire.server.smtp import MISSING, SMTP, AuthResult, LoginPassword, auth_mechanism
from support.server import ServerThread, serving

HOST = "testhost"
WAIT = 10.0
PASSWORD = "s3cr3t-P\u00e4ss"  # noqa: S105 - a test credential; non-ASCII travels as UTF-8
SUCCESS = (235, "2.7.0 Authentication successful")
STARTTLS_MISSING = "SMTP STARTTLS extension not supported by server."


@dataclass(frozen=True)
class Delivered:
    mail_from: str | None
    rcpt_tos: list[str]
    content: bytes
    over_tls: bool
    authenticated: bool | None


class Sink:
    """Records each message with whether its session was encrypted and authenticated."""

    def __init__(self) -> None:
        self.messages: list[Delivered] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Delivered(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                session.ssl is not None,
                session.authenticated,
            )
        )
        return "250 OK"


class Authenticator:
    """Accepts "anne" with PASSWORD; records (mechanism, login, password) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, bytes]] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.calls.append((mechanism, auth_data.login, auth_data.password))
        if auth_data == (b"anne", PASSWORD.encode()):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


class CramMD5Sink(Sink):
    """Offers CRAM-MD5 (RFC 2195) as a handler mechanism."""

    challenge = b"<1896.697170952@testhost>"

    def __init__(self) -> None:
        super().__init__()
        self.cram_logins: list[bytes] = []

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        answer = await server.challenge_auth(self.challenge)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        login, _, digest = bytes(answer).partition(b" ")
        self.cram_logins.append(login)
        expected = hmac.new(PASSWORD.encode(), self.challenge, "md5").hexdigest().encode()
        return AuthResult(
            success=login == b"anne" and hmac.compare_digest(digest, expected), handled=False
        )


class XOAuth2Sink(Sink):
    """Offers XOAUTH2; accepts "anne" with "good-token", else sends the JSON error
    challenge, waits for the client's empty answer, then refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[tuple[bytes, bytes]] = []
        self.error_answers: list[bytes] = []

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = base64.b64decode(args[1])
        fields = dict(part.split(b"=", 1) for part in blob.split(b"\x01") if part)
        user, token = fields[b"user"], fields[b"auth"].removeprefix(b"Bearer ")
        self.tokens.append((user, token))
        if (user, token) == (b"anne", b"good-token"):
            return AuthResult(success=True)
        answer = await server.challenge_auth('{"status":"401","schemes":"bearer"}')
        self.error_answers.append(bytes(answer))
        return AuthResult(success=False, handled=False)


# --- certificates --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


@pytest.fixture
def sink() -> Sink:
    return Sink()


@contextmanager
def smtp_server(handler: Any, **kwargs: Any) -> Iterator[ServerThread]:
    kwargs.setdefault("hostname", HOST)
    with serving(lambda: SMTP(handler, **kwargs)) as server:
        yield server


@contextmanager
def smtps_server(handler: Any, context: ssl.SSLContext, **kwargs: Any) -> Iterator[Controller]:
    """Implicit TLS (SMTPS): encrypted from the first byte."""
    controller = Controller(
        handler, hostname="127.0.0.1", port=0, ssl_context=context, server_hostname=HOST, **kwargs
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def make_client(port: int, **kwargs: Any) -> aiosmtplib.SMTP:
    kwargs.setdefault("local_hostname", "client.test")
    kwargs.setdefault("timeout", WAIT)
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=port, **kwargs)


async def send_one(client: aiosmtplib.SMTP, content: bytes = b"secret\r\n") -> None:
    assert await client.sendmail("a@example.com", ["b@example.com"], content) == ({}, "OK")


# --- STARTTLS ----------------------------------------------------------------------------------


async def test_start_tls_none_upgrades_when_offered(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with smtp_server(sink, tls_context=server_context) as server:
        client = make_client(server.port, tls_context=client_context)
        async with client:
            assert client.get_transport_info("sslcontext") is client_context
            assert client.get_transport_info("peercert") is not None
            await send_one(client)
            # RFC 3207: the client forgot the plaintext EHLO and asked again.
            assert client.last_ehlo_response is not None
            assert not client.supports_extension("starttls")
            session_ssl = server.call(lambda: server.protocols[0].session.ssl)
            assert session_ssl is not None
    assert sink.messages == [
        Delivered("a@example.com", ["b@example.com"], b"secret\r\n", True, None)
    ]


async def test_first_command_after_starttls_is_answered_every_time(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """The client writes EHLO as soon as its side of the handshake is done; that
    EHLO may reach the server before the server's own ``start_tls`` returns, and
    must be answered all the same (here 20 times over, to catch the race)."""
    with smtp_server(sink, tls_context=server_context) as server:
        for attempt in range(20):
            client = make_client(server.port, start_tls=True, tls_context=client_context)
            await client.connect()
            try:
                assert (await client.ehlo()).code == 250, attempt
            finally:
                client.close()


async def test_start_tls_none_stays_plain_when_not_offered(sink: Sink) -> None:
    with smtp_server(sink) as server:
        client = make_client(server.port)
        async with client:
            assert client.get_transport_info("sslcontext") is None
            await send_one(client, b"plain\r\n")
    assert [m.over_tls for m in sink.messages] == [False]


async def test_start_tls_true_upgrades(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with smtp_server(sink, tls_context=server_context) as server:
        client = make_client(server.port, start_tls=True, tls_context=client_context)
        async with client:
            assert client.get_transport_info("sslcontext") is not None
            await send_one(client)
    assert [m.over_tls for m in sink.messages] == [True]


async def test_start_tls_true_requires_the_offer(sink: Sink) -> None:
    with smtp_server(sink) as server:
        client = make_client(server.port, start_tls=True)
        with pytest.raises(aiosmtplib.SMTPException, match=f"^{STARTTLS_MISSING}$"):
            await client.connect()
        assert not client.is_connected
    assert sink.messages == []


async def test_start_tls_false_never_upgrades(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with smtp_server(sink, tls_context=server_context) as server:
        client = make_client(server.port, start_tls=False, tls_context=client_context)
        async with client:
            await client.ehlo()
            assert client.supports_extension("starttls")
            assert client.get_transport_info("sslcontext") is None
            await send_one(client, b"plain\r\n")
            assert server.call(lambda: server.protocols[0].session.ssl) is None
    assert [m.over_tls for m in sink.messages] == [False]


async def test_starttls_by_hand_after_the_server_insists(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with smtp_server(sink, tls_context=server_context, require_starttls=True) as server:
        client = make_client(server.port, start_tls=False)
        async with client:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
            assert (caught.value.code, caught.value.message) == (
                530,
                "Must issue a STARTTLS command first",
            )
            response = await client.starttls(tls_context=client_context)
            assert response == (220, "Ready to start TLS")
            assert client.last_ehlo_response is None  # asked again lazily
            await send_one(client)
            with pytest.raises(aiosmtplib.SMTPException, match="already using TLS"):
                await client.starttls()
    assert [m.over_tls for m in sink.messages] == [True]


async def test_starttls_when_not_offered_raises(sink: Sink) -> None:
    with smtp_server(sink) as server:
        client = make_client(server.port, start_tls=False)
        async with client:
            with pytest.raises(aiosmtplib.SMTPException, match=f"^{STARTTLS_MISSING}$"):
                await client.starttls()
            assert client.is_connected
            await send_one(client, b"still plain\r\n")


async def test_starttls_with_an_untrusted_certificate_fails(
    sink: Sink, server_context: ssl.SSLContext
) -> None:
    with smtp_server(sink, tls_context=server_context) as server:
        client = make_client(server.port, start_tls=True)  # the system CAs only
        with pytest.raises((ssl.SSLError, aiosmtplib.SMTPException)):
            await client.connect()
        assert not client.is_connected
    assert sink.messages == []


async def test_starttls_without_validation(sink: Sink, server_context: ssl.SSLContext) -> None:
    with smtp_server(sink, tls_context=server_context) as server:
        client = make_client(server.port, validate_certs=False)
        async with client:
            assert client.get_transport_info("sslcontext") is not None
            await send_one(client)
    assert [m.over_tls for m in sink.messages] == [True]


def test_starttls_in_the_1x_style(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """aiosmtplib 1.x: ``SMTP(..., loop=loop, use_tls=False)``, connect, then
    ``starttls()`` by hand; ``loop=`` turns the automatic upgrade off."""
    with smtp_server(sink, tls_context=server_context) as server:
        loop = asyncio.new_event_loop()
        smtp: aiosmtplib.SMTP | None = None
        try:
            with pytest.warns(DeprecationWarning, match="loop"):
                smtp = aiosmtplib.SMTP(
                    hostname="127.0.0.1", port=server.port, loop=loop, use_tls=False, timeout=WAIT
                )
            loop.run_until_complete(smtp.connect())
            assert smtp.get_transport_info("sslcontext") is None
            response = loop.run_until_complete(smtp.starttls(tls_context=client_context))
            assert response.code == 220
            loop.run_until_complete(
                smtp.sendmail("a@example.com", ["b@example.com"], b"1.x tls\r\n")
            )
            loop.run_until_complete(smtp.quit())
        finally:
            if smtp is not None:
                smtp.close()
            loop.run_until_complete(asyncio.sleep(0))  # let the transport finish closing
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
    assert sink.messages == [
        Delivered("a@example.com", ["b@example.com"], b"1.x tls\r\n", True, None)
    ]


# --- implicit TLS ---------------------------------------------------------------------------------


async def test_use_tls(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with smtps_server(sink, server_context) as controller:
        client = make_client(controller.port, use_tls=True, tls_context=client_context)
        greeting = await client.connect()
        assert greeting.code == 220
        assert client.get_transport_info("sslcontext") is client_context
        await send_one(client)
        await client.quit()
    assert sink.messages == [
        Delivered("a@example.com", ["b@example.com"], b"secret\r\n", True, None)
    ]


async def test_use_tls_with_a_cert_bundle(
    sink: Sink, ca: trustme.CA, server_context: ssl.SSLContext, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with smtps_server(sink, server_context) as controller:
        client = make_client(controller.port, use_tls=True, cert_bundle=str(bundle))
        async with client:
            await send_one(client)
    assert [m.over_tls for m in sink.messages] == [True]


async def test_use_tls_with_an_untrusted_certificate_fails(
    sink: Sink, server_context: ssl.SSLContext
) -> None:
    with smtps_server(sink, server_context) as controller:
        with pytest.raises(aiosmtplib.SMTPConnectError) as caught:
            await aiosmtplib.send(
                b"never\r\n",
                sender="a@example.com",
                recipients=["b@example.com"],
                hostname="127.0.0.1",
                port=controller.port,
                use_tls=True,
                timeout=WAIT,
            )
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert sink.messages == []


async def test_use_tls_without_validation(sink: Sink, server_context: ssl.SSLContext) -> None:
    with smtps_server(sink, server_context) as controller:
        await aiosmtplib.send(
            b"unverified\r\n",
            sender="a@example.com",
            recipients=["b@example.com"],
            hostname="127.0.0.1",
            port=controller.port,
            use_tls=True,
            validate_certs=False,
            timeout=WAIT,
        )
    assert [(m.content, m.over_tls) for m in sink.messages] == [(b"unverified\r\n", True)]


# --- AUTH ---------------------------------------------------------------------------------------


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator()


@pytest.fixture
def auth_server(sink: Sink, authenticator: Authenticator) -> Iterator[ServerThread]:
    with smtp_server(sink, auth_require_tls=False, authenticator=authenticator) as server:
        yield server


async def test_login(auth_server: ServerThread, authenticator: Authenticator, sink: Sink) -> None:
    client = make_client(auth_server.port)
    async with client:
        assert await client.login("anne", PASSWORD) == SUCCESS
        await send_one(client)
    # PLAIN before LOGIN (CRAM-MD5 is not offered).
    assert authenticator.calls == [("PLAIN", b"anne", PASSWORD.encode())]
    assert [m.authenticated for m in sink.messages] == [True]


@pytest.mark.parametrize("method", ["auth_plain", "auth_login"])
async def test_each_mechanism(
    auth_server: ServerThread, authenticator: Authenticator, method: str
) -> None:
    client = make_client(auth_server.port)
    async with client:
        await client.ehlo()
        assert await getattr(client, method)("anne", PASSWORD) == SUCCESS
    mechanism = method.removeprefix("auth_").upper()
    assert authenticator.calls == [(mechanism, b"anne", PASSWORD.encode())]


async def test_login_with_bytes(auth_server: ServerThread, authenticator: Authenticator) -> None:
    client = make_client(auth_server.port)
    async with client:
        assert await client.login(b"anne", PASSWORD.encode()) == SUCCESS


async def test_login_failure(auth_server: ServerThread, authenticator: Authenticator) -> None:
    client = make_client(auth_server.port)
    async with client:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await client.login("anne", "wrong")
        assert caught.value.code == 535
        assert caught.value.message == "5.7.8 Authentication credentials invalid"
        # Every mechanism both sides have was tried, in aiosmtplib's order.
        assert [call[0] for call in authenticator.calls] == ["PLAIN", "LOGIN"]
        assert client.is_connected
        assert await client.login("anne", PASSWORD) == SUCCESS


@pytest.mark.parametrize("method", ["auth_plain", "auth_login"])
async def test_each_mechanism_failing(auth_server: ServerThread, method: str) -> None:
    client = make_client(auth_server.port)
    async with client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await getattr(client, method)("anne", "wrong")
        assert caught.value.code == 535
        assert (await client.noop()).code == 250


async def test_login_on_connect(
    auth_server: ServerThread, authenticator: Authenticator, sink: Sink
) -> None:
    client = make_client(auth_server.port, username="anne", password=PASSWORD)
    async with client:
        await send_one(client)
    assert authenticator.calls == [("PLAIN", b"anne", PASSWORD.encode())]
    assert [m.authenticated for m in sink.messages] == [True]


async def test_login_on_connect_given_to_connect(
    auth_server: ServerThread, authenticator: Authenticator
) -> None:
    client = make_client(auth_server.port)
    await client.connect(username="anne", password=PASSWORD)
    try:
        assert authenticator.calls == [("PLAIN", b"anne", PASSWORD.encode())]
    finally:
        await client.quit()


async def test_failed_login_on_connect_closes(
    auth_server: ServerThread, authenticator: Authenticator, sink: Sink
) -> None:
    client = make_client(auth_server.port, username="anne", password="wrong")  # noqa: S106
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
        await client.connect()
    assert caught.value.code == 535
    assert not client.is_connected
    assert sink.messages == []


async def test_send_with_credentials(
    auth_server: ServerThread, authenticator: Authenticator, sink: Sink
) -> None:
    await aiosmtplib.send(
        b"authenticated\r\n",
        sender="a@example.com",
        recipients="b@example.com",
        hostname="127.0.0.1",
        port=auth_server.port,
        username="anne",
        password=PASSWORD,
        timeout=WAIT,
    )
    assert [m.authenticated for m in sink.messages] == [True]


async def test_login_without_auth_extension(sink: Sink) -> None:
    with smtp_server(sink) as server:
        client = make_client(server.port)
        async with client:
            with pytest.raises(
                aiosmtplib.SMTPException,
                match="The SMTP AUTH extension is not supported by this server",
            ):
                await client.login("anne", PASSWORD)


async def test_login_uses_login_when_plain_is_excluded(
    sink: Sink, authenticator: Authenticator
) -> None:
    with smtp_server(
        sink,
        auth_require_tls=False,
        authenticator=authenticator,
        auth_exclude_mechanism=["PLAIN"],
    ) as server:
        client = make_client(server.port)
        async with client:
            assert await client.login("anne", PASSWORD) == SUCCESS
            assert client.supported_auth_methods == ["login"]
    assert authenticator.calls == [("LOGIN", b"anne", PASSWORD.encode())]


async def test_login_prefers_cram_md5(authenticator: Authenticator) -> None:
    handler = CramMD5Sink()
    with smtp_server(handler, auth_require_tls=False, authenticator=authenticator) as server:
        client = make_client(server.port)
        async with client:
            await client.ehlo()
            assert client.supported_auth_methods == ["cram-md5", "plain", "login"]
            assert await client.login("anne", PASSWORD) == SUCCESS
            await send_one(client)
    assert handler.cram_logins == [b"anne"]
    assert authenticator.calls == []
    assert [m.authenticated for m in handler.messages] == [True]


async def test_auth_after_starttls(
    sink: Sink,
    authenticator: Authenticator,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """AUTH is only offered once encrypted (auth_require_tls); the client upgrades
    first, asks EHLO again, and then logs in."""
    with smtp_server(sink, tls_context=server_context, authenticator=authenticator) as server:
        client = make_client(
            server.port, tls_context=client_context, username="anne", password=PASSWORD
        )
        async with client:
            await send_one(client)
    assert authenticator.calls == [("PLAIN", b"anne", PASSWORD.encode())]
    assert sink.messages == [
        Delivered("a@example.com", ["b@example.com"], b"secret\r\n", True, True)
    ]


async def test_login_without_auth_over_tls_has_no_tls_hint(
    sink: Sink, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """aiosmtplib suggests TLS only when the connection is not encrypted yet."""
    with smtp_server(
        sink, tls_context=server_context, auth_exclude_mechanism=["PLAIN", "LOGIN"]
    ) as server:
        client = make_client(server.port, tls_context=client_context)
        async with client:
            assert client.get_transport_info("sslcontext") is not None
            with pytest.raises(aiosmtplib.SMTPException) as caught:
                await client.login("anne", PASSWORD)
    assert caught.value.message == "The SMTP AUTH extension is not supported by this server."


async def test_xoauth2_on_connect(authenticator: Authenticator) -> None:
    handler = XOAuth2Sink()

    async def token() -> str:
        return "good-token"

    with smtp_server(handler, auth_require_tls=False, authenticator=authenticator) as server:
        client = make_client(server.port, username="anne", oauth_token_generator=token)
        async with client:
            await send_one(client)
    assert handler.tokens == [(b"anne", b"good-token")]
    assert authenticator.calls == []  # login() used XOAUTH2, not PLAIN
    assert [m.authenticated for m in handler.messages] == [True]


async def test_xoauth2_failure_reads_the_error_challenge(authenticator: Authenticator) -> None:
    handler = XOAuth2Sink()
    with smtp_server(handler, auth_require_tls=False, authenticator=authenticator) as server:
        client = make_client(server.port)
        async with client:
            await client.ehlo()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
                await client.auth_xoauth2("anne", "expired-token")
            assert caught.value.code == 535
            assert (await client.noop()).code == 250  # the exchange ended in step
    assert handler.tokens == [(b"anne", b"expired-token")]
    assert handler.error_answers == [b""]


async def test_login_refused_before_tls(
    sink: Sink, authenticator: Authenticator, server_context: ssl.SSLContext
) -> None:
    with smtp_server(sink, tls_context=server_context, authenticator=authenticator) as server:
        client = make_client(server.port, start_tls=False)
        async with client:
            with pytest.raises(aiosmtplib.SMTPException, match="Try connecting via TLS"):
                await client.login("anne", PASSWORD)
    assert authenticator.calls == []
