"""Connecting as aiosmtplib 5.1.3 does (issue 15): ``connect()`` keywords override
the stored settings even when ``None``; a socket with TLS needs a hostname; a
server that hangs up before its greeting is a connect error; XOAUTH2 on connect
checks its username and the server's mechanisms before anything is sent; an
empty HELO/EHLO name is refused.  Over real sockets against a scripted loopback
server (port 0) where the behaviour is on the wire.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import smtpwire.client as aiosmtplib
from smtpwire.client.lmtp import LMTP
from support.fake_smtp import FakeConnection, FakeSMTPServer, TLSFiles, client_for

EMPTY_NAME = "The local_hostname param must not be empty"


# --- connect() keywords: an explicit None overrides too -------------------------------------


async def test_connect_with_sock_and_hostname_port_none() -> None:
    async with FakeSMTPServer() as server:
        client = client_for(server)  # hostname and port stored
        sock = socket.create_connection(("127.0.0.1", server.port))
        greeting = await client.connect(hostname=None, port=None, sock=sock)
        try:
            assert greeting.code == 220
            assert (client.hostname, client.port, client.sock) == (None, None, sock)
            assert (await client.noop()).code == 250
        finally:
            client.close()


async def test_connect_client_cert_none_clears_it(tmp_path: Path) -> None:
    tls = TLSFiles(tmp_path)
    async with FakeSMTPServer(tls_context=tls.server_context()) as server:
        client = client_for(server, client_cert=str(tmp_path / "missing.pem"), start_tls=True)
        # With the stored certificate kept, a TLS context beside it is a ValueError.
        await client.connect(client_cert=None, tls_context=tls.client_context())
        try:
            assert client.client_cert is None
            assert client.get_transport_info("sslcontext") is not None
            assert (await client.noop()).code == 250
        finally:
            client.close()


async def test_connect_start_tls_none_restores_automatic_starttls(tmp_path: Path) -> None:
    tls = TLSFiles(tmp_path)
    async with FakeSMTPServer(tls_context=tls.server_context()) as server:
        client = client_for(server, start_tls=False, tls_context=tls.client_context())
        await client.connect(start_tls=None)
        try:
            assert client.get_transport_info("sslcontext") is not None
            assert b"STARTTLS" in server.connection.lines
            await server.wait_until(lambda: server.connection.tls)
        finally:
            client.close()


async def test_connect_use_tls_none_keeps_the_stored_value() -> None:
    # aiosmtplib types use_tls and validate_certs as plain booleans: None means "keep".
    async with FakeSMTPServer() as server:
        client = client_for(server, validate_certs=False)
        await client.connect(use_tls=None, validate_certs=None)
        try:
            assert client.use_tls is False
            assert client.validate_certs is False
        finally:
            client.close()


# --- a socket with TLS needs a hostname -----------------------------------------------------


@pytest.mark.parametrize("where", ["sock", "socket_path"])
def test_socket_with_tls_and_no_hostname_is_refused(where: str, tmp_path: Path) -> None:
    with socket.socket() as sock:
        target = {"sock": sock} if where == "sock" else {"socket_path": str(tmp_path / "s")}
        with pytest.raises(ValueError, match="hostname is required") as caught:
            aiosmtplib.SMTP(use_tls=True, **target)  # type: ignore[arg-type]
        assert str(caught.value) == "If using a socket with TLS, hostname is required"
        aiosmtplib.SMTP(use_tls=True, hostname="mail.example.com", **target)  # type: ignore[arg-type]


async def test_connect_with_socket_tls_and_hostname_none_is_refused() -> None:
    async with FakeSMTPServer() as server:
        client = client_for(server)
        with (
            socket.create_connection(("127.0.0.1", server.port)) as sock,
            pytest.raises(ValueError, match="hostname is required"),
        ):
            await client.connect(hostname=None, port=None, sock=sock, use_tls=True)
        assert not client.is_connected


# --- a server that closes before its greeting -----------------------------------------------


async def test_eof_before_the_greeting_is_a_connect_error() -> None:
    def hang_up(connection: FakeConnection) -> None:
        connection.close()

    async with FakeSMTPServer(greeting=None, on_connect=hang_up) as server:
        client = client_for(server)
        with pytest.raises(aiosmtplib.SMTPConnectError) as caught:
            await client.connect()
    assert caught.value.message == (
        f"Error connecting to 127.0.0.1 on port {server.port}: Unexpected EOF received"
    )
    assert isinstance(caught.value, ConnectionError)
    assert client.transport is None
    assert client.protocol is None
    assert not client.is_connected


async def test_reset_before_the_greeting_is_a_connect_error() -> None:
    def reset(connection: FakeConnection) -> None:
        connection.abort()

    async with FakeSMTPServer(greeting=None, on_connect=reset) as server:
        client = client_for(server)
        with pytest.raises(aiosmtplib.SMTPConnectError) as caught:
            await client.connect()
    assert caught.value.message.startswith(f"Error connecting to 127.0.0.1 on port {server.port}: ")
    assert (client.transport, client.protocol) == (None, None)


# --- XOAUTH2 on connect ---------------------------------------------------------------------


async def test_oauth_token_generator_without_username() -> None:
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return "token"

    async with FakeSMTPServer(extensions=["AUTH XOAUTH2"]) as server:
        client = client_for(server, oauth_token_generator=token)
        with pytest.raises(aiosmtplib.SMTPException) as caught:
            await client.connect()
        lines = server.connection.lines
    assert type(caught.value) is aiosmtplib.SMTPException
    assert caught.value.message == "username is required when using oauth_token_generator"
    assert calls == []
    assert not any(line.upper().startswith(b"AUTH") for line in lines)
    assert not client.is_connected


@pytest.mark.parametrize("extensions", [["AUTH PLAIN LOGIN"], []], ids=["no XOAUTH2", "no AUTH"])
async def test_oauth_token_generator_and_a_server_without_xoauth2(extensions: list[str]) -> None:
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return "token"

    async with FakeSMTPServer(extensions=extensions) as server:
        client = client_for(server, username="anne", oauth_token_generator=token)
        with pytest.raises(aiosmtplib.SMTPException) as caught:
            await client.connect()
        lines = server.connection.lines
    assert type(caught.value) is aiosmtplib.SMTPException
    assert caught.value.message == (
        "oauth_token_generator provided but server does not support XOAUTH2"
    )
    assert calls == []
    assert not any(line.upper().startswith(b"AUTH") for line in lines)
    assert not client.is_connected


# --- HELO/EHLO: an empty name is refused ----------------------------------------------------


@pytest.mark.parametrize("command", ["helo", "ehlo"])
@pytest.mark.parametrize("name", ["", "   "], ids=["empty", "blank"])
async def test_empty_helo_ehlo_hostname_is_refused(command: str, name: str) -> None:
    async with FakeSMTPServer() as server:
        client = client_for(server)
        async with client:
            with pytest.raises(ValueError, match=EMPTY_NAME) as caught:
                await getattr(client, command)(hostname=name)
            assert str(caught.value) == EMPTY_NAME
            assert server.connection.lines == []  # nothing was sent
            # None still means the default name.
            assert (await getattr(client, command)(hostname=None)).code == 250
            assert server.connection.lines[-1].endswith(b" client.example")


async def test_empty_lhlo_hostname_is_refused() -> None:
    async with FakeSMTPServer() as server:
        client = LMTP(
            hostname="127.0.0.1", port=server.port, local_hostname="client.example", start_tls=False
        )
        await client.connect()
        try:
            with pytest.raises(ValueError, match=EMPTY_NAME):
                await client.ehlo(hostname="")
            assert server.connection.lines == []
        finally:
            client.close()


def test_empty_local_hostname_is_refused() -> None:
    with pytest.raises(ValueError, match=EMPTY_NAME) as caught:
        aiosmtplib.SMTP(local_hostname="")
    assert str(caught.value) == EMPTY_NAME
