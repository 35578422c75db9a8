"""Faults on either side: timeouts (a stalled server, a stalled client), a caller
cancelling mid-message, a handler failing, too many connections, and the server
stopped while clients are connected.  Whatever happens, no message is delivered
twice and no handler ever sees a truncated one.

Waiting for a timeout to fire is the point of some of these tests, so those
timeouts are short; everything else waits for events.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from integration.harness import (
    WAIT,
    Gate,
    Inbox,
    StartServer,
    WireTap,
    make_client,
    message_number,
    numbered_message,
)

SHORT = 0.5  # seconds: a timeout meant to fire
BODY = b"Subject: faults\r\n\r\n" + b"line of the message\r\n" * 100
MODERN = pytest.mark.parametrize("modern", [False, True], ids=["lockstep", "pipelining"])


class GatedInbox(Inbox):
    """``handle_DATA`` waits at :attr:`gate` (for messages holding ``hold``) before it
    records the message and answers: a server that is slow to accept."""

    def __init__(self, hold: bytes = b"") -> None:
        super().__init__()
        self.gate = Gate()
        self.hold = hold

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold in envelope.original_content:
            await self.gate.wait()
        self.record(session, envelope)
        return "250 OK"


class GatedRecipients(Inbox):
    """``handle_RCPT`` waits at :attr:`gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await self.gate.wait()
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def stalling_stream(head: bytes, resume: asyncio.Event, tail: bytes) -> AsyncIterator[bytes]:
    """A message source that stalls after ``head`` until ``resume`` is set: an
    application whose message generator hangs halfway."""
    yield head
    await asyncio.wait_for(resume.wait(), WAIT)
    yield tail


async def outcome(task: asyncio.Task[Any]) -> BaseException | None:
    """Let ``task`` finish by itself (bounded by WAIT, then cancelled) and return its
    exception."""
    await asyncio.wait({task}, timeout=WAIT)
    return await settle(task)


async def settle(task: asyncio.Task[Any]) -> BaseException | None:
    """Finish ``task`` (cancelling it if it is still running, so a failing test does
    not leak it) and return its exception."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task}, timeout=WAIT)
    assert task.done()
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


# --- the client's timeout against a stalled server ---------------------------------------------


@MODERN
async def test_client_times_out_while_the_server_sits_on_the_message(
    start_server: StartServer, modern: bool
) -> None:
    """The server has the whole message but does not answer: the client gives up
    after its timeout and drops the connection.  The handler, released later,
    delivers the message once and whole (the client cannot know: the classic
    duplicate window of RFC 1047, which is why the client never retries)."""
    inbox = GatedInbox()
    server = start_server(inbox, modern=modern)
    client = make_client(server)
    await client.connect()
    started = time.monotonic()
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await client.sendmail("a@example.org", ["b@example.org"], BODY, timeout=SHORT)
    assert time.monotonic() - started >= SHORT * 0.9
    assert not client.is_connected
    assert inbox.gate.reached.is_set()
    assert inbox.deliveries == []
    inbox.gate.open()
    [delivery] = await inbox.arrived(1)
    await server.sessions_done()
    assert delivery.content == BODY
    assert len(inbox.deliveries) == 1


@MODERN
async def test_client_times_out_on_a_stalled_recipient(
    start_server: StartServer, modern: bool
) -> None:
    """Stalled at RCPT: the client times out before the message went out; once the
    server carries on, the connection is gone and nothing is delivered (with
    pipelining DATA was already sent, and still nothing comes of it)."""
    handler = GatedRecipients()
    server = start_server(handler, modern=modern)
    client = make_client(server)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await client.sendmail("a@example.org", ["b@example.org"], BODY, timeout=SHORT)
    assert not client.is_connected
    handler.gate.open()
    await server.all_closed()
    await server.sessions_done()
    assert handler.gate.reached.is_set()
    assert handler.deliveries == []


# --- the server's idle timeout against a stalled client ----------------------------------------


async def test_server_idle_timeout_closes_a_silent_client(
    start_server: StartServer, inbox: Inbox
) -> None:
    server = start_server(inbox, timeout=SHORT)
    client = make_client(server)
    started = time.monotonic()
    await client.connect()
    await client.ehlo()
    await server.closed_connections(1)  # the client just waits: the server gives up
    assert time.monotonic() - started >= SHORT * 0.9
    assert not client.is_connected
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.noop()
    assert inbox.deliveries == []


@MODERN
async def test_server_idle_timeout_mid_message_delivers_nothing(
    start_server: StartServer, inbox: Inbox, modern: bool
) -> None:
    """The client's message source stalls halfway through DATA: the server says 421
    and closes after its idle timeout; the half message is never delivered, and
    the client, once its source resumes, learns that the connection is gone."""
    server = start_server(inbox, timeout=SHORT, modern=modern)
    client = make_client(server)
    await client.connect()
    resume = asyncio.Event()
    head = b"Subject: half\r\n\r\n" + b"first half\r\n" * 50
    sending = asyncio.create_task(
        client.sendmail(
            "a@example.org", ["b@example.org"], stalling_stream(head, resume, b"second half\r\n")
        )
    )
    try:
        await server.closed_connections(1)
        resume.set()
        error = await outcome(sending)
    finally:
        await settle(sending)
    # The 421 came as the answer to the message, or the connection was found closed first.
    assert isinstance(error, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPDataError)
    if isinstance(error, aiosmtplib.SMTPDataError):
        assert error.code == 421
    assert not client.is_connected
    await server.sessions_done()
    assert inbox.deliveries == []


async def test_a_slow_but_steady_upload_outlasts_the_idle_timeout(
    start_server: StartServer, inbox: Inbox
) -> None:
    """Each received line restarts the server's idle timer (aiosmtpd cuts off a DATA
    upload longer than its timeout): here the upload takes twice the timeout."""
    timeout = 1.0
    server = start_server(inbox, timeout=timeout)

    async def trickle() -> AsyncIterator[bytes]:
        yield b"Subject: slow\r\n\r\n"
        for number in range(6):
            await asyncio.sleep(timeout / 4)  # pacing the upload, not synchronisation
            yield b"line %d\r\n" % number

    async with make_client(server) as client:
        started = time.monotonic()
        await client.sendmail("a@example.org", ["b@example.org"], trickle())
        assert time.monotonic() - started > timeout
    [delivery] = inbox.deliveries
    assert delivery.content.endswith(b"line 4\r\nline 5\r\n")


# --- cancellation ---------------------------------------------------------------------------------


@MODERN
async def test_cancelled_mid_data_delivers_nothing(
    start_server: StartServer, inbox: Inbox, modern: bool
) -> None:
    server = start_server(inbox, protocol=WireTap, modern=modern)
    client = make_client(server)
    await client.connect()
    resume = asyncio.Event()  # never set: the task is cancelled while the source stalls
    head = b"Subject: cancelled\r\n\r\n" + b"x" * 500 + b"\r\nEND-OF-PART-ONE\r\n"
    sending = asyncio.create_task(
        client.sendmail(
            "a@example.org", ["b@example.org"], stalling_stream(head, resume, b"never sent\r\n")
        )
    )
    try:
        await server.wire_holds(b"END-OF-PART-ONE")  # the server is mid-DATA
        sending.cancel()
        error = await settle(sending)
    finally:
        await settle(sending)
    assert isinstance(error, asyncio.CancelledError)
    assert not client.is_connected  # dropped: half a message must never be completed
    await server.all_closed()
    await server.sessions_done()
    assert inbox.deliveries == []
    # The server is fine; the next client's message is the only one delivered.
    async with make_client(server) as other:
        await other.sendmail("a@example.org", ["b@example.org"], b"after\r\n")
    assert inbox.contents == [b"after\r\n"]


async def test_cancelled_while_waiting_for_the_final_reply(start_server: StartServer) -> None:
    """The message is complete on the server when the caller cancels: it is
    delivered once, whole, never cut short by the client going away."""
    inbox = GatedInbox()
    server = start_server(inbox)
    client = make_client(server)
    await client.connect()
    sending = asyncio.create_task(client.sendmail("a@example.org", ["b@example.org"], BODY))
    try:
        await inbox.gate.until_reached()
        sending.cancel()
        assert isinstance(await settle(sending), asyncio.CancelledError)
    finally:
        await settle(sending)
    assert not client.is_connected
    inbox.gate.open()
    await inbox.arrived(1)
    await server.sessions_done()
    assert inbox.contents == [BODY]


# --- a failing handler, too many connections ------------------------------------------------------


class Exploding(Inbox):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"explode" in envelope.original_content:
            raise RuntimeError("the mail store is on fire")
        return await super().handle_DATA(server, session, envelope)


async def test_a_failing_handler_refuses_that_message_only(
    start_server: StartServer, server_errors: list[logging.LogRecord]
) -> None:
    handler = Exploding()
    server = start_server(handler)
    async with make_client(server) as client:
        with pytest.raises(aiosmtplib.SMTPDataError) as failure:
            await client.sendmail("a@example.org", ["b@example.org"], b"explode\r\n")
        assert (failure.value.code, failure.value.message) == (
            500,
            "Error: (RuntimeError) the mail store is on fire",
        )
        await client.sendmail("a@example.org", ["b@example.org"], b"fine\r\n")
    assert handler.contents == [b"fine\r\n"]
    assert [record.getMessage() for record in server_errors] == [
        f"{server_errors[0].args[0]!r} SMTP session exception"
    ]


async def test_too_many_connections(start_server: StartServer, inbox: Inbox) -> None:
    server = start_server(inbox, max_connections=2)
    first, second = make_client(server), make_client(server)
    await first.connect()
    await second.connect()
    third = make_client(server)
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
        await third.connect()
    assert (refused.value.code, refused.value.message) == (
        421,
        "4.7.0 Too many connections, try again later",
    )
    await first.quit()
    await server.closed_connections(1)  # (the refused one never became a session)
    async with make_client(server) as fourth:
        await fourth.sendmail("a@example.org", ["b@example.org"], b"room again\r\n")
    await second.quit()
    assert inbox.contents == [b"room again\r\n"]


# --- the server stops under its clients ----------------------------------------------------------


async def test_server_stopped_while_clients_are_connected(
    start_server: StartServer,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """Clients in every state when the server stops: one that finished a message,
    one idle, one idle over TLS, one stalled mid-DATA, one waiting for the reply to
    a complete message.  Each learns the server is gone; only the message that was
    accepted before the stop was delivered."""
    inbox = GatedInbox(hold=b"HOLD")
    server = start_server(inbox, protocol=WireTap, tls=server_context)
    clients: list[aiosmtplib.SMTP] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        finished = make_client(server, start_tls=False)
        idle = make_client(server, start_tls=False)
        idle_tls = make_client(server, start_tls=True, tls_context=client_context)
        streaming = make_client(server, start_tls=False)
        waiting = make_client(server, start_tls=False)
        clients += [finished, idle, idle_tls, streaming, waiting]
        for client in clients:
            await client.connect()
        await finished.sendmail("a@example.org", ["b@example.org"], b"before the stop\r\n")
        await idle.ehlo()

        resume = asyncio.Event()
        head = b"Subject: cut\r\n\r\nMID-DATA-MARK\r\n"
        tasks.append(
            asyncio.create_task(
                streaming.sendmail(
                    "a@example.org", ["b@example.org"], stalling_stream(head, resume, b"rest\r\n")
                )
            )
        )
        tasks.append(
            asyncio.create_task(waiting.sendmail("a@example.org", ["b@example.org"], b"HOLD\r\n"))
        )
        await server.wire_holds(b"MID-DATA-MARK")
        await inbox.gate.until_reached()

        await asyncio.to_thread(server.stop)

        for client in (finished, idle, idle_tls):
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                await client.noop()
        resume.set()
        for task in tasks:
            assert isinstance(await outcome(task), aiosmtplib.SMTPServerDisconnected)
        inbox.gate.open()  # too late: the handler was cancelled with its session
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await make_client(server).connect()
    finally:
        for task in tasks:
            await settle(task)
        for client in clients:
            client.close()
    assert inbox.contents == [b"before the stop\r\n"]


async def test_server_stopped_in_the_middle_of_a_flood(start_server: StartServer) -> None:
    """Ten connections sending as fast as they can when the server stops.  Every
    message a client saw accepted was delivered; none was delivered twice or cut
    short; at most the one in flight per connection is delivered unbeknown to its
    client (its 250 lost with the connection)."""
    inbox = Inbox()
    server = start_server(inbox)
    size = 32 * 1024

    async def flood(worker: int) -> tuple[list[int], BaseException]:
        accepted: list[int] = []
        client = make_client(server)
        try:
            await client.connect()
            for index in range(10_000):
                number = worker * 10_000 + index
                await client.sendmail(
                    "a@example.org", ["b@example.org"], numbered_message(number, size=size)
                )
                accepted.append(number)
        except aiosmtplib.SMTPException as error:
            return accepted, error
        finally:
            client.close()
        raise AssertionError("the server never stopped")

    workers = [asyncio.create_task(flood(worker)) for worker in range(10)]
    try:
        await inbox.arrived(40)
        await asyncio.to_thread(server.stop)
        results = await asyncio.wait_for(asyncio.gather(*workers), WAIT)
    finally:
        for worker in workers:
            await settle(worker)

    for _, error in results:
        assert isinstance(error, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError)
    accepted = {number for numbers, _ in results for number in numbers}
    delivered = [message_number(content) for content in inbox.contents]
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    for number, content in zip(delivered, inbox.contents, strict=True):
        assert content == numbered_message(number, size=size), "a message was cut short"
    assert accepted <= set(delivered), "a message the client saw accepted was lost"
    assert len(set(delivered) - accepted) <= len(workers)
