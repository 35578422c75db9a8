"""smtpwire.client against a server that is slow, silent or stops reading, and
against callers that cancel: timeouts fire (and only then), the connection is
closed afterwards so a late reply can never pair with a later command, and
cancellation leaves neither a half-open client nor an unretrieved exception.

Waiting for a timeout to fire is the point of these tests, so their timeouts are
small; everything else synchronises on events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from smtpwire.client import (
    SMTP,
    SMTPConnectTimeoutError,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from support.fake_smtp import (
    WAIT,
    ClientInputSpy,
    FakeConnection,
    FakeSMTPServer,
    TLSFiles,
    assert_no_loop_errors,
    client_for,
)

SHORT = 0.2  # the timeout that is meant to fire
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


def silent_on(verb: bytes, *, only_first_connection: bool = True):  # type: ignore[no-untyped-def]
    """A script that never answers ``verb`` (on the first connection only, by default)."""

    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        first = connection is connection.server.connections[0]
        if line.upper().startswith(verb) and (first or not only_first_connection):
            return None
        return connection.default(line)

    return on_line


async def large_stream(produced: list[int], chunks: int = 256) -> AsyncIterator[bytes]:
    """Up to ``chunks`` MiB of message, counting what was pulled."""
    chunk = (b"x" * 1022 + b"\r\n") * 1024
    for _ in range(chunks):
        produced[0] += 1
        yield chunk


async def settle(task: asyncio.Future[object]) -> None:
    """Make sure ``task`` is finished and its outcome retrieved (even when a test
    fails half-way), so no "exception was never retrieved" leaks into later tests."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=WAIT)
    if task.done() and not task.cancelled():
        task.exception()


async def yield_until(predicate: Callable[[], bool], rounds: int = 10_000) -> None:
    """Let other callbacks run (no time passes) until ``predicate()`` holds."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


# --- connect -----------------------------------------------------------------------------------


async def test_no_greeting_times_out_connect() -> None:
    async with FakeSMTPServer(greeting=None) as server:
        client = client_for(server, timeout=SHORT)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(SMTPConnectTimeoutError) as caught:
            await client.connect()
        elapsed = loop.time() - start
        assert SHORT * 0.9 <= elapsed < WAIT
        assert caught.value.message == "Timed out waiting for server ready message"
        assert not client.is_connected
        await asyncio.wait_for(server.connection.closed.wait(), WAIT)


async def test_connect_timeout_argument_overrides_default_and_is_not_kept() -> None:
    async with FakeSMTPServer(greeting=None) as server:
        client = client_for(server, timeout=60)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(SMTPConnectTimeoutError):
            await client.connect(timeout=SHORT)
        assert loop.time() - start < WAIT
        assert client.timeout == 60


async def test_client_can_connect_again_after_connect_timeout() -> None:
    def greet_later(connection: FakeConnection) -> None:
        if len(connection.server.connections) > 1:
            connection.send(b"220 second time lucky\r\n")

    async with FakeSMTPServer(greeting=None, on_connect=greet_later) as server:
        client = client_for(server, timeout=SHORT)
        with pytest.raises(SMTPConnectTimeoutError):
            await client.connect()
        greeting = await client.connect(timeout=WAIT)
        assert greeting == SMTPResponse(220, "second time lucky")
        client.close()


# --- a reply that never comes ----------------------------------------------------------------


async def test_unanswered_command_times_out_and_closes() -> None:
    async with FakeSMTPServer(on_line=silent_on(b"NOOP")) as server:
        client = client_for(server, timeout=SHORT)
        await client.connect()
        await client.ehlo()
        with pytest.raises(SMTPReadTimeoutError) as caught:
            await client.noop()
        assert caught.value.message == "Timed out waiting for server response"
        assert isinstance(caught.value, TimeoutError)
        assert not client.is_connected
        connection = server.connection
        await asyncio.wait_for(connection.closed.wait(), WAIT)

        # The late reply goes nowhere: the old connection is gone, a new one is clean.
        connection.send(b"250 late reply to the first NOOP\r\n")
        with pytest.raises(SMTPServerDisconnected):
            await client.noop()
        await client.connect(timeout=WAIT)
        assert await client.noop(timeout=WAIT) == SMTPResponse(250, "OK")
        client.close()


async def test_reply_stopping_mid_way_times_out_and_closes() -> None:
    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"NOOP":
            return b"250-first line\r\n"
        return connection.default(line)

    async with FakeSMTPServer(on_line=on_line) as server:
        client = client_for(server, timeout=SHORT)
        await client.connect()
        await client.ehlo()
        with pytest.raises(SMTPReadTimeoutError):
            await client.noop()
        assert not client.is_connected
        await asyncio.wait_for(server.connection.closed.wait(), WAIT)


async def test_per_call_timeout_overrides_instance_default() -> None:
    async with FakeSMTPServer(on_line=silent_on(b"NOOP")) as server:
        client = client_for(server, timeout=60)
        await client.connect()
        await client.ehlo()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(SMTPReadTimeoutError):
            await client.noop(timeout=SHORT)
        assert SHORT * 0.9 <= loop.time() - start < WAIT
        assert client.timeout == 60


async def test_per_call_timeout_on_execute_command() -> None:
    async with FakeSMTPServer(on_line=silent_on(b"XSTALL")) as server:
        client = client_for(server, timeout=60)
        await client.connect()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(SMTPReadTimeoutError):
            await client.execute_command(b"XSTALL", timeout=SHORT)
        assert loop.time() - start < WAIT
        assert not client.is_connected


async def test_zero_timeout_is_an_immediate_timeout() -> None:
    async with FakeSMTPServer() as server:
        client = client_for(server)
        await client.connect()
        await client.ehlo()
        with pytest.raises(SMTPReadTimeoutError):
            await client.noop(timeout=0)
        assert not client.is_connected


async def test_timeout_none_waits_past_the_default() -> None:
    async with FakeSMTPServer(on_line=silent_on(b"NOOP")) as server:
        client = client_for(server, timeout=0.05)
        await client.connect(timeout=WAIT)
        await client.ehlo(timeout=WAIT)
        task = asyncio.ensure_future(client.noop(timeout=None))
        await server.wait_until(lambda: b"NOOP" in server.connection.lines)
        done, _ = await asyncio.wait({task}, timeout=SHORT * 2)  # well past 0.05 s
        assert not done, task.exception() if task.done() else None
        server.connection.send(b"250 worth the wait\r\n")
        assert await asyncio.wait_for(task, WAIT) == SMTPResponse(250, "worth the wait")
        assert client.is_connected
        client.close()


async def test_instance_timeout_none_waits() -> None:
    async with FakeSMTPServer(on_line=silent_on(b"NOOP")) as server:
        client = client_for(server, timeout=None)
        await client.connect()
        await client.ehlo()
        task = asyncio.ensure_future(client.noop())
        await server.wait_until(lambda: b"NOOP" in server.connection.lines)
        done, _ = await asyncio.wait({task}, timeout=SHORT)
        assert not done
        server.connection.send(b"250 done\r\n")
        assert await asyncio.wait_for(task, WAIT) == SMTPResponse(250, "done")
        client.close()


async def test_pipelined_read_timeout_survives_a_reply_arriving_as_it_fires() -> None:
    """The MAIL reply arrives in the same loop iteration in which the read timer
    fires; the RCPT and DATA replies never come.  The timeout must still end the
    wait (a timer that finds the waiter already woken must not just vanish)."""

    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"RCPT TO:<a@example.com>":
            # The MAIL reply is on the wire; keep the loop busy past the client's
            # read deadline so the reply and the timer are handled together.
            time.sleep(SHORT * 1.5)
            return None
        if line.startswith((b"RCPT", b"DATA")):
            return None
        return connection.default(line)

    async with FakeSMTPServer(extensions=["PIPELINING"], on_line=on_line) as server:
        client = client_for(server, timeout=SHORT)
        await client.connect()
        task = asyncio.ensure_future(
            client.sendmail("s@example.com", ["a@example.com", "b@example.com"], MESSAGE)
        )
        try:
            done, _ = await asyncio.wait({task}, timeout=WAIT)
            assert done, "the read timeout was lost: still waiting"
            with pytest.raises(SMTPReadTimeoutError):
                task.result()
        finally:
            await settle(task)
        assert not client.is_connected


async def test_final_data_reply_timeout_closes() -> None:
    def on_message(connection: FakeConnection, raw: bytes) -> bytes | None:
        return None

    async with FakeSMTPServer(on_message=on_message) as server:
        client = client_for(server, timeout=SHORT)
        await client.connect()
        with pytest.raises(SMTPReadTimeoutError):
            await client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert not client.is_connected
        assert server.connection.messages == [MESSAGE + b".\r\n"]


async def test_starttls_handshake_timeout(tmp_path: Path) -> None:
    tls = TLSFiles(tmp_path)

    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if b"STARTTLS" in connection.lines[:-1]:
            return None  # the ClientHello, read as plaintext: ignored
        return connection.default(line)

    # The server says 220 to STARTTLS and then never takes part in the handshake.
    async with FakeSMTPServer(
        tls_context=tls.server_context(), auto_tls=False, on_line=on_line
    ) as server:
        client = client_for(server, timeout=WAIT)
        await client.connect()
        with pytest.raises(SMTPTimeoutError) as caught:
            await client.starttls(tls_context=tls.client_context(), timeout=SHORT)
        assert "upgrading" in caught.value.message
        assert not client.is_connected
        await asyncio.wait_for(server.connection.closed.wait(), WAIT)


# --- a server that stops reading ---------------------------------------------------------------


def stop_reading_at_data(connection: FakeConnection, line: bytes) -> bytes | None:
    if line == b"DATA":
        connection.pause_reading()
    return connection.default(line)


async def test_server_that_stops_reading_times_out_the_upload() -> None:
    async with FakeSMTPServer(on_line=stop_reading_at_data) as server:
        client = client_for(server, timeout=SHORT)
        await client.connect()
        produced = [0]
        with pytest.raises(SMTPTimeoutError) as caught:
            await client.sendmail("a@example.com", ["b@example.com"], large_stream(produced))
        # Stuck writing, not waiting for a reply after having sent everything ...
        assert not isinstance(caught.value, SMTPReadTimeoutError)
        # ... and not reading the stream into memory ahead of the wire (loopback
        # socket buffers hold a few MiB).
        assert produced[0] <= 64
        assert not client.is_connected


async def test_upload_timeout_really_closes_the_socket() -> None:
    """After the write timeout the socket must go away, not linger while the
    transport waits forever to flush megabytes the peer will never read."""
    async with FakeSMTPServer(on_line=stop_reading_at_data) as server:
        client = client_for(server, timeout=SHORT)
        await client.connect()
        assert client.transport is not None
        sock = client.transport.get_extra_info("socket")
        with pytest.raises(SMTPTimeoutError):
            await client.sendmail("a@example.com", ["b@example.com"], large_stream([0]))
        # The server is not reading, so only the client's side can show it: a
        # polite close() would keep the socket open until its buffer drained.
        for _ in range(100):
            if sock.fileno() == -1:
                break
            await asyncio.sleep(0)
        assert sock.fileno() == -1


# --- cancellation --------------------------------------------------------------------------------


async def test_cancel_during_command_closes_the_client(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeSMTPServer(on_line=silent_on(b"NOOP")) as server:
        client = client_for(server)
        await client.connect()
        await client.ehlo()
        task = asyncio.ensure_future(client.noop())
        await server.wait_until(lambda: b"NOOP" in server.connection.lines)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not client.is_connected
        await asyncio.wait_for(server.connection.closed.wait(), WAIT)

        fresh = client_for(server)
        await fresh.connect()
        assert await fresh.noop() == SMTPResponse(250, "OK")
        await fresh.quit()
    assert_no_loop_errors(caplog)


async def test_cancelled_command_reply_never_pairs_with_the_next() -> None:
    noops: list[FakeConnection] = []

    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"NOOP":
            noops.append(connection)
            return None if len(noops) == 1 else b"250 reply to the second NOOP\r\n"
        return connection.default(line)

    async with FakeSMTPServer(on_line=on_line) as server:
        client = client_for(server)
        await client.connect()
        await client.ehlo()
        spy = ClientInputSpy(client)
        task = asyncio.ensure_future(client.noop())
        await server.wait_until(lambda: len(noops) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.connection.send(b"250 late reply to the cancelled NOOP\r\n")
        if client.is_connected:
            await spy.wait_for(b"late reply")
            response = await client.noop()
            assert response == SMTPResponse(250, "reply to the second NOOP")
        else:
            with pytest.raises(SMTPServerDisconnected):
                await client.noop()


async def test_cancel_inside_async_with_exits_promptly(caplog: pytest.LogCaptureFixture) -> None:
    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line in (b"NOOP", b"QUIT"):
            return None  # a server that has gone quiet
        return connection.default(line)

    async with FakeSMTPServer(on_line=on_line) as server:
        client = client_for(server, timeout=60)

        async def use() -> None:
            async with client:
                await client.noop()

        task = asyncio.ensure_future(use())
        try:
            await server.wait_until(
                lambda: bool(server.connections) and b"NOOP" in server.connection.lines
            )
            task.cancel()
            # __aexit__ must not wait 60 s for a QUIT reply on a connection whose
            # command was abandoned half-way.
            done, _ = await asyncio.wait({task}, timeout=WAIT)
            assert done, "still in __aexit__"
            with pytest.raises(asyncio.CancelledError):
                task.result()
        finally:
            await settle(task)
        assert not client.is_connected
    assert_no_loop_errors(caplog)


async def test_cancel_during_data_streaming(caplog: pytest.LogCaptureFixture) -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    async def stalling_source() -> AsyncIterator[bytes]:
        yield b"Subject: first part\r\n\r\n"
        started.set()
        await never.wait()
        yield b"never sent\r\n"

    async with FakeSMTPServer() as server:
        client = client_for(server)
        await client.connect()
        task = asyncio.ensure_future(
            client.sendmail("a@example.com", ["b@example.com"], stalling_source())
        )
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not client.is_connected
        connection = server.connection
        await asyncio.wait_for(connection.closed.wait(), WAIT)
        assert connection.messages == []  # no terminator: the half message is not delivered

        fresh = client_for(server)
        await fresh.connect()
        await fresh.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert server.connections[1].messages == [MESSAGE + b".\r\n"]
        await fresh.quit()
    assert_no_loop_errors(caplog)


async def test_cancel_during_pipelined_replies(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeSMTPServer(extensions=["PIPELINING"], on_line=silent_on(b"DATA")) as server:
        client = client_for(server)
        await client.connect()
        task = asyncio.ensure_future(
            client.sendmail("a@example.com", ["b@example.com", "c@example.com"], MESSAGE)
        )
        await server.wait_until(lambda: b"DATA" in server.connection.lines)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not client.is_connected
        await asyncio.wait_for(server.connection.closed.wait(), WAIT)
    assert_no_loop_errors(caplog)


@pytest.mark.parametrize("stage", ["accept", "greeting", "ehlo"])
async def test_cancel_during_connect(stage: str, caplog: pytest.LogCaptureFixture) -> None:
    """``accept``: cancelled in the loop iteration where the TCP connection is
    established; ``greeting``: while waiting for the 220; ``ehlo``: while waiting
    for the EHLO reply (start_tls=None says EHLO during connect)."""

    def greet(connection: FakeConnection) -> None:
        if stage == "ehlo" or len(connection.server.connections) > 1:
            connection.send(b"220 hello\r\n")

    async with FakeSMTPServer(
        greeting=None, on_connect=greet, on_line=silent_on(b"EHLO")
    ) as server:
        client = client_for(server, start_tls=None, timeout=60)
        task = asyncio.ensure_future(client.connect())
        try:
            if stage == "accept":
                await server.wait_connected()
            elif stage == "greeting":
                await server.wait_connected()
                await yield_until(lambda: client.protocol is not None)
            else:
                await server.wait_until(
                    lambda: bool(server.connections) and bool(server.connection.lines)
                )
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=WAIT)
            assert done, "the cancelled connect() is still running"
            with pytest.raises(asyncio.CancelledError):
                task.result()
        finally:
            await settle(task)
        assert not client.is_connected
        await asyncio.wait_for(server.connections[0].closed.wait(), WAIT)

        # The same instance is not left locked, and a new one connects too.
        await client.connect()
        assert await client.noop() == SMTPResponse(250, "OK")
        client.close()
        fresh = client_for(server)
        await fresh.connect()
        await fresh.quit()
    assert_no_loop_errors(caplog)


async def test_timeout_leaves_no_unretrieved_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeSMTPServer(on_line=silent_on(b"NOOP")) as server:
        client = client_for(server, timeout=SHORT)
        await client.connect()
        with pytest.raises(SMTPReadTimeoutError):
            await client.noop()
        server.connection.abort()
        del client
    assert_no_loop_errors(caplog)


async def test_many_clients_cancelled_together(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeSMTPServer(on_line=silent_on(b"NOOP", only_first_connection=False)) as server:
        clients = [client_for(server) for _ in range(5)]

        async def session(client: SMTP) -> None:
            await client.connect()
            await client.noop()

        tasks = [asyncio.ensure_future(session(client)) for client in clients]
        await server.wait_until(
            lambda: (
                len(server.connections) == 5
                and all(b"NOOP" in connection.lines for connection in server.connections)
            )
        )
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results)
        assert not any(client.is_connected for client in clients)
    assert_no_loop_errors(caplog)
