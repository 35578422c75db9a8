"""AUTH end to end: PLAIN, LOGIN (the server's authenticator), CRAM-MD5 (the server's
``cram_md5_secret``) and XOAUTH2 (an aiosmtpd-style ``auth_XOAUTH2`` method on the
handler), each over STARTTLS and over implicit TLS, with the right and the wrong
credentials; and AUTH refused in plaintext when the server requires TLS for it.
"""

from __future__ import annotations

import base64
import ssl
import threading
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from integration.harness import Certificates, Inbox, Server, StartServer, make_client
from smtpwire.server.smtp import MISSING, AuthResult, LoginPassword

USER = "anne"
PASSWORD = "s3cr3t-P\u00e4ss\u00f6rd"  # noqa: S105 - a test credential; travels as UTF-8
TOKEN = "ya29.good-token"  # noqa: S105 - a test credential
SUCCESS = (235, "2.7.0 Authentication successful")
INVALID = (535, "5.7.8 Authentication credentials invalid")
ENCRYPTION_REQUIRED = (538, "5.7.11 Encryption required for requested authentication mechanism")
TLS_HINT = "The SMTP AUTH extension is not supported by this server. Try connecting via TLS"
BODY = b"Subject: auth\r\n\r\nauthenticated mail\r\n"


class Accounts(Inbox):
    """The server side of every mechanism, recording each attempt.

    PLAIN and LOGIN reach :meth:`authenticate` (the SMTP ``authenticator``); CRAM-MD5
    needs the plaintext secret (:meth:`cram_md5_secret`); XOAUTH2 is this handler's
    own mechanism, found by its ``auth_XOAUTH2`` name.
    """

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self.attempts: list[tuple[str, bytes, bytes]] = []  # (mechanism, user, secret)

    def _note(self, mechanism: str, user: bytes, secret: bytes) -> None:
        with self._guard:
            self.attempts.append((mechanism, user, secret))

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self._note(mechanism, auth_data.login, auth_data.password)
        if (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode()):
            return AuthResult(success=True, auth_data=auth_data.login)
        return AuthResult(success=False, handled=False)

    def cram_md5_secret(self, username: bytes) -> str | None:
        self._note("CRAM-MD5", username, b"")
        return PASSWORD if username == USER.encode() else None

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        if len(args) > 1:
            blob = base64.b64decode(args[1])
        else:
            answer = await server.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            blob = bytes(answer)
        fields = dict(part.split(b"=", 1) for part in blob.split(b"\x01") if b"=" in part)
        user = fields.get(b"user", b"")
        token = fields.get(b"auth", b"").removeprefix(b"Bearer ")
        self._note("XOAUTH2", user, token)
        if (user, token) == (USER.encode(), TOKEN.encode()):
            return AuthResult(success=True, auth_data=user)
        # RFC 7628 / Google: the error details as a challenge, answered by an empty line.
        await server.challenge_auth('{"status":"401","schemes":"bearer"}')
        return AuthResult(success=False, handled=False)

    @property
    def mechanisms(self) -> list[str]:
        with self._guard:
            return [attempt[0] for attempt in self.attempts]


def auth_server(
    start_server: StartServer,
    accounts: Accounts,
    context: ssl.SSLContext,
    *,
    implicit: bool,
    **kwargs: Any,
) -> Server:
    kwargs.setdefault("auth_required", True)
    return start_server(
        accounts,
        tls=context,
        implicit=implicit,
        authenticator=accounts.authenticate,
        cram_md5_secret=accounts.cram_md5_secret,
        **kwargs,
    )


def tls_client(
    server: Server, context: ssl.SSLContext, *, implicit: bool, **kwargs: Any
) -> aiosmtplib.SMTP:
    return make_client(
        server,
        use_tls=implicit,
        start_tls=None if implicit else True,
        tls_context=context,
        **kwargs,
    )


@pytest.fixture
def accounts() -> Accounts:
    return Accounts()


TRANSPORTS = pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
MECHANISMS = {
    "PLAIN": ("auth_plain", PASSWORD),
    "LOGIN": ("auth_login", PASSWORD),
    "CRAM-MD5": ("auth_crammd5", PASSWORD),
    "XOAUTH2": ("auth_xoauth2", TOKEN),
}


@TRANSPORTS
@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
async def test_each_mechanism_over_tls(
    start_server: StartServer,
    accounts: Accounts,
    certificates: Certificates,
    implicit: bool,
    mechanism: str,
) -> None:
    method, secret = MECHANISMS[mechanism]
    server = auth_server(start_server, accounts, certificates.server_context(), implicit=implicit)
    async with tls_client(server, certificates.client_context(), implicit=implicit) as client:
        await client.ehlo()
        # Offered only now that the connection is encrypted; XOAUTH2 came from the
        # handler's auth_XOAUTH2 method, CRAM-MD5 from cram_md5_secret.
        assert sorted(client.server_auth_methods) == ["cram-md5", "login", "plain", "xoauth2"]
        assert await getattr(client, method)(USER, secret) == SUCCESS
        assert await client.sendmail("anne@example.org", ["bob@example.org"], BODY) == ({}, "OK")
    await server.all_closed()
    assert accounts.mechanisms == [mechanism]
    [delivery] = accounts.deliveries
    assert (delivery.over_tls, delivery.authenticated, delivery.content) == (True, True, BODY)
    assert delivery.auth_data == USER.encode()


@TRANSPORTS
@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
async def test_each_mechanism_refuses_the_wrong_secret(
    start_server: StartServer,
    accounts: Accounts,
    certificates: Certificates,
    implicit: bool,
    mechanism: str,
) -> None:
    method, _ = MECHANISMS[mechanism]
    server = auth_server(start_server, accounts, certificates.server_context(), implicit=implicit)
    async with tls_client(server, certificates.client_context(), implicit=implicit) as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failure:
            await getattr(client, method)(USER, "wrong")
        assert (failure.value.code, failure.value.message) == INVALID
        # Still connected, still not authenticated: the server requires AUTH first.
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("anne@example.org", ["bob@example.org"], BODY)
        assert (refused.value.code, refused.value.message) == (
            530,
            "5.7.0 Authentication required",
        )
        # And the right secret still works on the same connection.
        method, secret = MECHANISMS[mechanism]
        assert await getattr(client, method)(USER, secret) == SUCCESS
        await client.sendmail("anne@example.org", ["bob@example.org"], BODY)
    await server.all_closed()
    assert accounts.mechanisms == [mechanism, mechanism]
    assert [d.authenticated for d in accounts.deliveries] == [True]


@TRANSPORTS
async def test_login_on_connect_prefers_cram_md5(
    start_server: StartServer,
    accounts: Accounts,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    implicit: bool,
) -> None:
    """``username``/``password`` given to the client: it logs in during connect(),
    with the strongest mechanism both sides have (aiosmtplib's order)."""
    server = auth_server(start_server, accounts, server_context, implicit=implicit)
    client = tls_client(server, client_context, implicit=implicit, username=USER, password=PASSWORD)
    async with client:
        await client.sendmail("anne@example.org", ["bob@example.org"], BODY)
    await server.all_closed()
    assert accounts.mechanisms == ["CRAM-MD5"]
    assert [d.authenticated for d in accounts.deliveries] == [True]


async def test_login_falls_back_to_plain_without_cram_md5(
    start_server: StartServer,
    accounts: Accounts,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = auth_server(
        start_server,
        accounts,
        server_context,
        implicit=False,
        auth_exclude_mechanism=["CRAM-MD5", "XOAUTH2"],
    )
    await aiosmtplib.send(
        BODY,
        sender="anne@example.org",
        recipients=["bob@example.org"],
        hostname=server.hostname,
        port=server.port,
        start_tls=True,
        tls_context=client_context,
        username=USER,
        password=PASSWORD,
        timeout=10,
    )
    await server.all_closed()
    assert accounts.mechanisms == ["PLAIN"]
    assert [d.authenticated for d in accounts.deliveries] == [True]


async def test_oauth_token_generator_on_connect(
    start_server: StartServer,
    accounts: Accounts,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = auth_server(start_server, accounts, server_context, implicit=True)
    fetched: list[int] = []

    async def token() -> str:
        fetched.append(1)
        return TOKEN

    client = tls_client(
        server, client_context, implicit=True, username=USER, oauth_token_generator=token
    )
    async with client:
        await client.sendmail("anne@example.org", ["bob@example.org"], BODY)
    await server.all_closed()
    assert fetched == [1]
    assert accounts.mechanisms == ["XOAUTH2"]
    assert [d.authenticated for d in accounts.deliveries] == [True]


async def test_wrong_password_on_connect_closes_and_delivers_nothing(
    start_server: StartServer,
    accounts: Accounts,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = auth_server(start_server, accounts, server_context, implicit=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failure:
        await aiosmtplib.send(
            BODY,
            sender="anne@example.org",
            recipients=["bob@example.org"],
            hostname=server.hostname,
            port=server.port,
            start_tls=True,
            tls_context=client_context,
            username=USER,
            password="wrong",  # noqa: S106
            timeout=10,
        )
    assert (failure.value.code, failure.value.message) == INVALID
    await server.all_closed()
    # login() tried every mechanism both sides have, then gave up.
    assert accounts.mechanisms == ["CRAM-MD5", "PLAIN", "LOGIN"]
    assert accounts.deliveries == []


# --- AUTH and plaintext ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_tls", [True, False], ids=["starttls-offered", "no-tls"])
async def test_auth_is_not_offered_in_plaintext(
    start_server: StartServer,
    accounts: Accounts,
    server_context: ssl.SSLContext,
    with_tls: bool,
) -> None:
    """auth_require_tls (the default): no AUTH in the plaintext EHLO, so login()
    refuses before any credential is written, with a hint to use TLS."""
    server = start_server(
        accounts,
        tls=server_context if with_tls else None,
        authenticator=accounts.authenticate,
        cram_md5_secret=accounts.cram_md5_secret,
        auth_required=True,
    )
    async with make_client(server, start_tls=False) as client:
        await client.ehlo()
        assert not client.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPException) as failure:
            await client.login(USER, PASSWORD)
        assert str(failure.value).startswith(TLS_HINT)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("anne@example.org", ["bob@example.org"], BODY)
        assert refused.value.code == 530
    assert accounts.attempts == []
    assert accounts.deliveries == []


@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
async def test_auth_command_in_plaintext_is_refused_with_538(
    start_server: StartServer,
    accounts: Accounts,
    server_context: ssl.SSLContext,
    mechanism: str,
) -> None:
    """A client that sends AUTH anyway gets 538 and the server never looks at the
    credentials (neither authenticator nor secret lookup nor mechanism runs)."""
    method, secret = MECHANISMS[mechanism]
    server = start_server(
        accounts,
        tls=server_context,
        authenticator=accounts.authenticate,
        cram_md5_secret=accounts.cram_md5_secret,
    )
    async with make_client(server, start_tls=False) as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failure:
            await getattr(client, method)(USER, secret)
        assert (failure.value.code, failure.value.message) == ENCRYPTION_REQUIRED
        # Unauthenticated plaintext mail is still fine when AUTH is not required.
        await client.sendmail("anne@example.org", ["bob@example.org"], BODY)
    assert accounts.attempts == []
    assert [(d.over_tls, d.authenticated) for d in accounts.deliveries] == [(False, None)]


async def test_auth_after_starttls_on_the_same_connection(
    start_server: StartServer,
    accounts: Accounts,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """Refused in plaintext, then accepted once the same connection is upgraded."""
    server = auth_server(start_server, accounts, server_context, implicit=False)
    async with make_client(server, start_tls=False, tls_context=client_context) as client:
        await client.ehlo()  # auth_plain() does not greet by itself (as aiosmtplib)
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failure:
            await client.auth_plain(USER, PASSWORD)
        assert (failure.value.code, failure.value.message) == ENCRYPTION_REQUIRED
        await client.starttls()
        assert await client.login(USER, PASSWORD) == SUCCESS
        await client.sendmail("anne@example.org", ["bob@example.org"], BODY)
    await server.all_closed()
    assert accounts.mechanisms == ["CRAM-MD5"]
    assert [(d.over_tls, d.authenticated) for d in accounts.deliveries] == [(True, True)]
