"""One ``SMTP`` shared by several tasks, as aiosmtplib allows (issue 15): whole
transactions are serialised, so concurrent ``sendmail()``/``send_message()`` calls
on one connection all deliver instead of interleaving their commands (a nested
MAIL, or one message's MAIL landing inside another's DATA); a ``connect()`` that
races one in progress waits until that connection is closed, so concurrent
``async with client:`` blocks run in turn.  Over real sockets, against
smtpwire.server (one command per round trip) and a scripted server that offers
PIPELINING (one write per transaction, which must stay so).

When the server drops the connection, the client closes as ``close()`` does (as
aiosmtplib's connection-lost handling does), so a ``connect()`` waiting for the
connect lock goes ahead instead of waiting for ever.  Those races run against a
scripted asyncio server in the test's loop (127.0.0.1, port 0) that hangs up when
the test tells it to; every wait is bounded.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import pytest

import smtpwire.client as aiosmtplib
from smtpwire.client.protocol import SMTPProtocol
from smtpwire.client.response import SMTPResponse
from support.client_harness import Sink, make_client
from support.fake_smtp import WAIT, FakeConnection, FakeSMTPServer, client_for
from support.server import ServerThread

MESSAGES = 6


def raw_message(index: int) -> bytes:
    return f"Subject: message {index}\r\n\r\nbody {index}\r\n".encode()


async def test_concurrent_sendmail_on_one_connection_all_delivered(
    server: ServerThread, sink: Sink
) -> None:
    client = make_client(server)
    async with client:
        results = await asyncio.gather(
            *(
                client.sendmail(f"s{i}@example.com", [f"r{i}@example.com"], raw_message(i))
                for i in range(MESSAGES)
            )
        )
    assert [refused for refused, _ in results] == [{}] * MESSAGES
    assert sorted(sink.messages) == sorted(
        (f"s{i}@example.com", [f"r{i}@example.com"], raw_message(i)) for i in range(MESSAGES)
    )
    assert len(server.protocols) == 1  # one connection carried them all


async def test_concurrent_send_message_on_one_connection_all_delivered(
    server: ServerThread, sink: Sink
) -> None:
    def message(index: int) -> EmailMessage:
        built = EmailMessage()
        built["From"] = f"s{index}@example.com"
        built["To"] = f"r{index}@example.com"
        built["Subject"] = f"message {index}"
        built.set_content(f"body {index}")
        return built

    client = make_client(server)
    async with client:
        await asyncio.gather(*(client.send_message(message(i)) for i in range(MESSAGES)))
    envelopes = sorted((sender, recipients) for sender, recipients, _ in sink.messages)
    assert envelopes == [(f"s{i}@example.com", [f"r{i}@example.com"]) for i in range(MESSAGES)]
    for sender, _, content in sink.messages:
        index = sender.removeprefix("s").partition("@")[0]
        assert f"body {index}".encode() in content


async def test_concurrent_sendmail_with_pipelining_keeps_one_write_per_transaction() -> None:
    async with FakeSMTPServer(extensions=("PIPELINING", "8BITMIME")) as server:
        client = client_for(server)
        async with client:
            await client.ehlo()
            await asyncio.gather(
                *(
                    client.sendmail(f"s{i}@example.com", [f"r{i}@example.com"], raw_message(i))
                    for i in range(MESSAGES)
                )
            )
        connection = server.connection
        # Every message arrived whole and in the transaction its MAIL opened.
        assert len(connection.messages) == MESSAGES
        mails = [line for line in connection.lines if line.startswith(b"MAIL")]
        for mail, content in zip(mails, connection.messages, strict=True):
            index = mail.split(b"<s", 1)[1].split(b"@", 1)[0]
            assert b"body " + index + b"\r\n.\r\n" in content
            assert b"MAIL FROM" not in content
        # Pipelining inside a transaction stays: MAIL, RCPT and DATA in one chunk.
        batches = [chunk for chunk in connection.chunks if chunk.startswith(b"MAIL FROM")]
        assert len(batches) == MESSAGES
        assert all(chunk.endswith(b"DATA\r\n") and b"RCPT TO" in chunk for chunk in batches)


async def test_concurrent_async_with_blocks_run_in_turn(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    order: list[str] = []

    async def use(index: int) -> None:
        async with client:
            order.append(f"enter {index}")
            await client.sendmail(f"s{index}@example.com", ["r@example.com"], raw_message(index))
            order.append(f"exit {index}")

    await asyncio.gather(use(0), use(1), use(2))
    assert order == ["enter 0", "exit 0", "enter 1", "exit 1", "enter 2", "exit 2"]
    assert [sender for sender, _, _ in sink.messages] == [f"s{i}@example.com" for i in range(3)]
    assert len(server.protocols) == 3  # each block had its own connection
    assert not client.is_connected


async def test_connect_racing_a_connect_in_progress_waits_for_close(server: ServerThread) -> None:
    client = make_client(server)
    first = asyncio.ensure_future(client.connect())
    second = asyncio.ensure_future(client.connect())
    await first
    assert client.is_connected
    # The connect lock is held until close(): after a whole round trip on the first
    # connection, the second connect is still waiting and has opened nothing.
    assert (await client.noop()).code == 250
    assert not second.done()
    assert len(server.protocols) == 1
    client.close()
    greeting = await asyncio.wait_for(second, 10)
    assert greeting.code == 220
    assert client.is_connected
    await client.quit()
    assert len(server.protocols) == 2


async def test_connect_on_a_connected_client_still_raises(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPException) as caught:
            await client.connect()
        assert caught.value.message == "SMTP instance is already connected"
        assert (await client.noop()).code == 250


# --- the server drops the connection ------------------------------------------------------


async def connected_with_a_connect_waiting(
    client: aiosmtplib.SMTP,
) -> asyncio.Future[SMTPResponse]:
    """Connect ``client``, and start a second connect() that waits for the lock."""
    first = asyncio.ensure_future(client.connect())
    second = asyncio.ensure_future(client.connect())
    assert (await asyncio.wait_for(first, WAIT)).code == 220
    # A whole round trip later the second connect is still waiting, having opened nothing.
    assert (await client.noop()).code == 250
    assert not second.done()
    return second


async def test_waiting_connect_goes_ahead_when_the_server_drops_the_connection() -> None:
    async with FakeSMTPServer() as server:
        client = client_for(server)
        second = await connected_with_a_connect_waiting(client)
        assert len(server.connections) == 1
        server.connections[0].close()  # e.g. the server's idle timeout
        try:
            greeting = await asyncio.wait_for(second, WAIT)
        finally:
            second.cancel()
            client.close()
        assert greeting.code == 220
        assert len(server.connections) == 2


async def test_a_dropped_connection_leaves_the_client_as_close_does() -> None:
    async with FakeSMTPServer(extensions=["SIZE 1000", "AUTH PLAIN"]) as server:
        client = client_for(server)
        await client.connect()
        await client.ehlo()
        protocol = client.protocol
        assert protocol is not None
        server.connection.close()
        assert await protocol.wait_lost(WAIT)
        assert client.protocol is None
        assert client.transport is None
        assert not client.is_connected
        assert client.last_ehlo_response is None
        assert client.esmtp_extensions == {}
        assert client.server_auth_methods == []
        # The connect lock is free: connect() does not wait.
        assert (await asyncio.wait_for(client.connect(), WAIT)).code == 220
        assert (await client.ehlo()).code == 250
        await client.quit()


async def both_connects_greeted(client: aiosmtplib.SMTP) -> None:
    """Two connect() calls at once, the second waiting for the lock while the first
    connection is lost: each gets a greeting, and the client is left connected."""
    first = asyncio.ensure_future(client.connect())
    second = asyncio.ensure_future(client.connect())
    try:
        assert (await asyncio.wait_for(first, WAIT)).code == 220
        assert (await asyncio.wait_for(second, WAIT)).code == 220
    finally:
        first.cancel()
        second.cancel()
    assert client.is_connected


async def test_waiting_connect_goes_ahead_when_the_server_hangs_up_after_its_greeting() -> None:
    def hang_up_on_the_first(connection: FakeConnection) -> None:
        if len(connection.server.connections) == 1:
            connection.close()  # right after the greeting

    async with FakeSMTPServer(on_connect=hang_up_on_the_first) as server:
        client = client_for(server)
        await both_connects_greeted(client)
        assert (await client.noop()).code == 250
        await client.quit()
        assert len(server.connections) == 2


async def test_waiting_connect_goes_ahead_when_the_server_drops_during_a_command() -> None:
    def silent_help(connection: FakeConnection, line: bytes) -> bytes | None:
        return None if line.upper() == b"HELP" else connection.default(line)

    async with FakeSMTPServer(on_line=silent_help) as server:
        client = client_for(server)
        second = await connected_with_a_connect_waiting(client)
        command = asyncio.ensure_future(client.help())
        await server.wait_until(lambda: b"HELP" in server.connection.lines)
        server.connection.close()
        try:
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                await asyncio.wait_for(command, WAIT)
            assert (await asyncio.wait_for(second, WAIT)).code == 220
        finally:
            second.cancel()
            client.close()
        assert len(server.connections) == 2


async def test_a_connection_lost_with_its_last_replies_in_still_frees_the_lock() -> None:
    # The order a loop can deliver things in, set up by hand: the reply a command
    # waits for arrives and the connection is lost before the reading task runs
    # again.  The reader still gets its reply; then the client closes.
    async with FakeSMTPServer() as server:
        client = client_for(server)
        second = await connected_with_a_connect_waiting(client)
        protocol, transport = client.protocol, client.transport
        assert protocol is not None
        assert transport is not None
        assert client._command_lock is not None
        try:
            async with client._command_lock:  # a command in flight
                protocol.expect(1)
                protocol.data_received(b"250 2.0.0 OK\r\n")
                transport.abort()
                assert await protocol.wait_lost(WAIT)
                # Not dropped under the command that is reading.
                assert client.protocol is protocol
                replies = await client._read(protocol, 1, WAIT)
            assert [reply.code for reply in replies] == [250]
            assert (await asyncio.wait_for(second, WAIT)).code == 220
        finally:
            second.cancel()
            client.close()
        assert len(server.connections) == 2


class LostAtTheEndOfConnect(aiosmtplib.SMTP):
    """A connect() whose connection is lost after its last exchange, before it
    returns (the server hanging up right after its greeting, seen late)."""

    lose_it = True

    async def _connect(self, timeout: float | None) -> SMTPResponse:
        greeting = await super()._connect(timeout)
        protocol = self.protocol
        assert isinstance(protocol, SMTPProtocol)
        if self.lose_it:
            self.lose_it = False
            assert self.transport is not None
            self.transport.abort()
            assert await protocol.wait_lost(WAIT)
        return greeting


async def test_waiting_connect_goes_ahead_when_a_connect_ends_on_a_lost_connection() -> None:
    async with FakeSMTPServer() as server:
        client = LostAtTheEndOfConnect(
            hostname="127.0.0.1", port=server.port, local_hostname="client.example",
            start_tls=False, timeout=WAIT,
        )  # fmt: skip
        await both_connects_greeted(client)
        await client.quit()
        assert len(server.connections) == 2


async def test_an_async_with_block_whose_connection_dropped_leaves_the_next_ones_alone() -> None:
    """Block 1's connection is dropped by the server; block 2's connect() goes ahead.
    Block 1 ending afterwards must not QUIT or close block 2's connection."""
    async with FakeSMTPServer() as server:
        client = client_for(server)
        inside_first = asyncio.Event()
        leave_first = asyncio.Event()
        second_connected = asyncio.Event()
        first_left = asyncio.Event()

        async def first() -> None:
            async with client:
                inside_first.set()
                await asyncio.wait_for(leave_first.wait(), WAIT)
            first_left.set()

        async def second() -> tuple[dict[str, SMTPResponse], str]:
            async with client:  # entered with the first: its connect() waits for the lock
                second_connected.set()
                await asyncio.wait_for(first_left.wait(), WAIT)
                return await client.sendmail("a@example.com", ["b@example.com"], b"hi\r\n")

        tasks = [asyncio.ensure_future(first()), asyncio.ensure_future(second())]
        try:
            await asyncio.wait_for(inside_first.wait(), WAIT)
            await server.wait_connected(1)
            server.connections[0].close()
            await asyncio.wait_for(second_connected.wait(), WAIT)
            leave_first.set()
            _, (refused, _) = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        finally:
            for task in tasks:
                task.cancel()
            client.close()
        assert refused == {}
        assert len(server.connections) == 2
        assert b"QUIT" not in server.connections[1].received.split(b"MAIL")[0]


async def test_a_block_that_reconnects_after_a_drop_still_quits_its_new_connection() -> None:
    async with FakeSMTPServer() as server:
        client = client_for(server)
        async with client:
            protocol = client.protocol
            assert protocol is not None
            server.connections[0].close()
            assert await protocol.wait_lost(WAIT)
            await client.connect()
            assert (await client.noop()).code == 250
        await server.wait_until(lambda: b"QUIT" in server.connections[1].received)
        assert not client.is_connected
