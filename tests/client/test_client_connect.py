"""Connecting and disconnecting over real sockets against smtpwire.server: the
greeting, ``async with``, connect errors, a client that is not (or is already)
connected, ``get_transport_info``, QUIT/close, timeouts, other transports (a Unix
socket, a given socket, a bound source address) and the aiosmtplib 1.x
``loop=`` style.  Used through ``import smtpwire.client as aiosmtplib``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from support.client_harness import (
    CLIENT_NAME,
    HOST,
    WAIT,
    ClosingNoticeServer,
    RefusingGreetingServer,
    SilentServer,
    Sink,
    StuckNoopServer,
    free_port,
    make_client,
    on_server,
    smtp_server,
)
from support.server import ServerThread

# --- connecting ----------------------------------------------------------------------------


async def test_connect_returns_the_220_greeting(server: ServerThread) -> None:
    client = make_client(server)
    greeting = await client.connect()
    try:
        assert isinstance(greeting, aiosmtplib.SMTPResponse)
        assert greeting == (220, f"{HOST} Python SMTP 1.4.6")
        assert greeting.code == aiosmtplib.SMTPStatus.ready
        assert client.is_connected
    finally:
        client.close()


async def test_async_with_connects_and_quits(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client as entered:
        assert entered is client
        assert client.is_connected
        await client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
    assert not client.is_connected
    assert client.transport is None
    assert sink.messages == [("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")]


async def test_async_with_on_a_connected_client_keeps_the_connection(
    server: ServerThread,
) -> None:
    client = make_client(server)
    await client.connect()
    async with client:
        assert (await client.noop()).code == 250
    assert not client.is_connected
    assert len(server.protocols) == 1


async def test_async_with_after_the_server_closed(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        assert await client.execute_command(b"QUIT") == (221, "Bye")
    assert not client.is_connected


async def test_async_with_closes_on_an_error_inside(server: ServerThread) -> None:
    client = make_client(server)
    with pytest.raises(KeyError):
        async with client:
            raise KeyError("inside")
    assert not client.is_connected


async def test_connect_arguments_are_kept(server: ServerThread) -> None:
    client = aiosmtplib.SMTP(timeout=WAIT)
    greeting = await client.connect(
        hostname="127.0.0.1", port=server.port, local_hostname="given.example"
    )
    assert greeting.code == 220
    assert (client.hostname, client.port, client.local_hostname) == (
        "127.0.0.1",
        server.port,
        "given.example",
    )
    await client.ehlo()
    assert on_server(server, lambda p: p.session.host_name) == "given.example"
    await client.quit()


async def test_unix_socket(tmp_path: Any) -> None:
    from smtpwire.server.controller import UnixSocketController

    sink = Sink()
    path = str(tmp_path / "smtp.sock")
    controller = UnixSocketController(sink, unix_socket=path, server_hostname=HOST)
    controller.start()
    try:
        client = aiosmtplib.SMTP(socket_path=path, local_hostname=CLIENT_NAME, timeout=WAIT)
        async with client:
            await client.sendmail("a@example.com", ["b@example.com"], b"unix\r\n")
    finally:
        controller.stop()
    assert sink.messages == [("a@example.com", ["b@example.com"], b"unix\r\n")]


async def test_given_socket(server: ServerThread, sink: Sink) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    sock.setblocking(False)
    client = aiosmtplib.SMTP(sock=sock, local_hostname=CLIENT_NAME, timeout=WAIT)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], b"sock\r\n")
    assert sink.messages == [("a@example.com", ["b@example.com"], b"sock\r\n")]


async def test_source_address(server: ServerThread) -> None:
    client = make_client(server, source_address=("127.0.0.1", 0))
    async with client:
        local = client.get_transport_info("sockname")
        assert local[0] == "127.0.0.1"
        assert tuple(on_server(server, lambda p: p.session.peer)) == tuple(local)


async def test_default_local_hostname_is_used_for_ehlo(server: ServerThread) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=WAIT)
    async with client:
        await client.ehlo()
        assert client.local_hostname
        host_name = on_server(server, lambda p: p.session.host_name)
        assert host_name == client.local_hostname


async def test_connect_error_for_a_closed_port() -> None:
    port = free_port()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname=CLIENT_NAME)
    with pytest.raises(aiosmtplib.SMTPConnectError) as caught:
        await client.connect()
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.message.startswith(f"Error connecting to 127.0.0.1 on port {port}")
    assert not client.is_connected


async def test_connect_twice_raises(server: ServerThread) -> None:
    client = make_client(server)
    await client.connect()
    try:
        with pytest.raises(aiosmtplib.SMTPException, match="already connected"):
            await client.connect()
        assert client.is_connected  # the first connection is untouched
        assert (await client.noop()).code == 250
    finally:
        client.close()
    assert len(server.protocols) == 1


async def test_reconnect_after_close(server: ServerThread) -> None:
    client = make_client(server)
    await client.connect()
    await client.ehlo()
    client.close()
    assert not client.is_connected
    assert client.last_ehlo_response is None
    assert client.esmtp_extensions == {}
    greeting = await client.connect()
    assert greeting.code == 220
    assert (await client.noop()).code == 250
    await client.quit()
    assert len(server.protocols) == 2


async def test_non_220_greeting_raises_connect_response_error() -> None:
    with smtp_server(cls=RefusingGreetingServer) as server:
        client = make_client(server)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
            await client.connect()
        assert (caught.value.code, caught.value.message) == (554, "5.3.2 No service today")
        assert isinstance(caught.value, aiosmtplib.SMTPConnectError)
        assert not client.is_connected


async def test_greeting_timeout_is_a_connect_timeout() -> None:
    with smtp_server(cls=SilentServer) as server:
        client = make_client(server)
        with pytest.raises(aiosmtplib.SMTPConnectTimeoutError):
            await client.connect(timeout=0.2)
        assert not client.is_connected


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.noop(),
        lambda c: c.ehlo(),
        lambda c: c.helo(),
        lambda c: c.rset(),
        lambda c: c.mail("a@example.com"),
        lambda c: c.execute_command(b"NOOP"),
        lambda c: c.sendmail("a@example.com", ["b@example.com"], b"x\r\n"),
    ],
    ids=["noop", "ehlo", "helo", "rset", "mail", "execute_command", "sendmail"],
)
async def test_commands_before_connect_raise_server_disconnected(
    call: Callable[[aiosmtplib.SMTP], Any],
) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=free_port())
    with pytest.raises(aiosmtplib.SMTPServerDisconnected, match=r"^Server not connected$"):
        await call(client)


def test_get_transport_info_before_connect_raises() -> None:
    client = aiosmtplib.SMTP()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected, match=r"^Server not connected$"):
        client.get_transport_info("peername")


async def test_get_transport_info(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        assert client.get_transport_info("peername") == ("127.0.0.1", server.port)
        assert client.get_transport_info("sslcontext") is None
        local = client.get_transport_info("sockname")
        peer = on_server(server, lambda p: p.session.peer)
        assert tuple(peer) == tuple(local)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        client.get_transport_info("peername")


# --- QUIT and close ---------------------------------------------------------------------------


async def test_quit(server: ServerThread) -> None:
    client = make_client(server)
    await client.connect()
    response = await client.quit()
    assert response == (221, "Bye")
    assert not client.is_connected
    assert client.protocol is None
    assert client.transport is None
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.noop()


async def test_close_drops_the_connection() -> None:
    closed = threading.Event()

    class Server(ClosingNoticeServer):
        pass

    Server.closed = closed
    with smtp_server(cls=Server) as server:
        client = make_client(server)
        await client.connect()
        await client.ehlo()
        client.close()
        assert not client.is_connected
        assert client.esmtp_extensions == {}
        assert await asyncio.to_thread(closed.wait, WAIT)
        client.close()  # a second close is harmless


async def test_reply_421_closes_the_connection() -> None:
    class Handler(Sink):
        async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: Any) -> str:
            return "421 4.3.2 Shutting down"

    with smtp_server(Handler()) as server:
        client = make_client(server)
        await client.connect()
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
            await client.noop()
        assert caught.value.code == 421
        assert not client.is_connected


# --- timeouts ---------------------------------------------------------------------------------


async def test_per_call_timeouts_are_accepted(server: ServerThread) -> None:
    client = make_client(server, timeout=None)
    await client.connect(timeout=WAIT)
    assert (await client.ehlo(timeout=WAIT)).code == 250
    assert (await client.noop(timeout=None)).code == 250
    assert (await client.rset(timeout=WAIT)).code == 250
    assert (await client.mail("a@example.com", timeout=WAIT)).code == 250
    assert (await client.rcpt("b@example.com", timeout=WAIT)).code == 250
    assert (await client.data(b"x\r\n", timeout=WAIT)).code == 250
    assert (await client.execute_command(b"NOOP", timeout=WAIT)).code == 250
    assert isinstance(await client.help(timeout=WAIT), str)
    assert (await client.vrfy("a@example.com", timeout=WAIT)).code == 252
    refused, _ = await client.sendmail("a@example.com", ["b@example.com"], b"y\r\n", timeout=WAIT)
    assert refused == {}
    assert (await client.quit(timeout=WAIT)).code == 221


async def test_read_timeout_closes_the_connection() -> None:
    with smtp_server(cls=StuckNoopServer) as server:
        client = make_client(server)
        await client.connect()
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError) as caught:
            await client.noop(timeout=0.2)
        assert isinstance(caught.value, aiosmtplib.SMTPTimeoutError)
        assert isinstance(caught.value, asyncio.TimeoutError)
        assert not client.is_connected


# --- the aiosmtplib 1.x style -----------------------------------------------------------------


def test_loop_argument_in_1x_style(server: ServerThread, sink: Sink) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.warns(DeprecationWarning, match="loop"):
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, loop=loop)
        greeting = loop.run_until_complete(smtp.connect())
        assert greeting.code == 220
        refused, message = loop.run_until_complete(
            smtp.sendmail("a@example.com", ["b@example.com"], "Subject: 1.x\n\nold style\n")
        )
        assert (refused, message) == ({}, "OK")
        assert loop.run_until_complete(smtp.quit()).code == 221
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    assert sink.messages == [
        ("a@example.com", ["b@example.com"], b"Subject: 1.x\r\n\r\nold style\r\n")
    ]


def test_sendmail_sync(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    result = client.sendmail_sync("a@example.com", "b@example.com", b"sync\r\n")
    assert result == ({}, "OK")
    assert not client.is_connected
    assert sink.messages == [("a@example.com", ["b@example.com"], b"sync\r\n")]
