"""Tests that kill the mutants of ``smtpwire/client/protocol.py`` that survived the
first mutmut run over it (docs/mutation.md, "The client's protocol").  They drive
:class:`SMTPProtocol` by hand on the running loop, with a stub transport: each
names the rule the mutant broke.

* ``not_connected``: the error for a command on a dead connection says "Server
  not connected" (aiosmtplib's words, which callers match) unless the server said
  421, and only then repeats the 421; a connection merely lost is not a 421.
* ``discard_buffered``: after STARTTLS's 220 the protocol expects no reply at all
  until the next command is announced, so a reply that turns up in between is
  dropped, not paired with EHLO.
* ``resume_writing``: asyncio calls it whenever the write buffer drains, whether or
  not anyone waits in ``drain()``; it must not fail then, nor on a drain that was
  cancelled; ``writing_paused`` is a bool again afterwards.
* ``drain``: it waits only while writing is paused *and* the connection is up:
  not paused, or paused on a connection already closing, it returns at once.
* ``_deadline_reached``: a read's timer that fires after the read got its replies
  lapses without an error on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from smtpwire.client import SMTPServerDisconnected
from smtpwire.client.protocol import SMTPProtocol

WAIT = 1.0  # bound on any wait for something that should happen at once
TIMER = 0.02  # a read timeout that is meant to lapse during the test


class StubTransport(asyncio.Transport):
    """Keeps what the protocol writes; ``closing`` is what ``is_closing()`` says."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def connected() -> tuple[SMTPProtocol, StubTransport]:
    protocol = SMTPProtocol(asyncio.get_running_loop())
    transport = StubTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def greeted() -> tuple[SMTPProtocol, StubTransport]:
    protocol, transport = connected()
    protocol.data_received(b"220 server.example ESMTP\r\n")
    greeting = await asyncio.wait_for(protocol.read_reply(), WAIT)
    assert greeting.code == 220
    return protocol, transport


def finishes_at_once(coroutine: Coroutine[Any, Any, None]) -> bool:
    """Whether ``coroutine`` returns at its first step, without waiting for anything."""
    try:
        coroutine.send(None)
    except StopIteration:
        return True
    coroutine.close()
    return False


# --- not_connected ---------------------------------------------------------------------------


async def test_write_before_any_connection_says_server_not_connected() -> None:
    protocol = SMTPProtocol(asyncio.get_running_loop())
    with pytest.raises(SMTPServerDisconnected) as raised:
        protocol.write(b"NOOP\r\n")
    assert str(raised.value) == "Server not connected"
    assert raised.value.message == "Server not connected"
    assert protocol.not_connected().message == "Server not connected"


@pytest.mark.parametrize("how", ["eof", "lost", "lost with error"])
async def test_write_after_a_lost_connection_says_server_not_connected(how: str) -> None:
    # The read that noticed the loss got "Unexpected EOF received" / "Connection
    # lost"; a command written afterwards gets aiosmtplib's "Server not connected",
    # which is only replaced by the server's own words when it said 421.
    protocol, transport = await greeted()
    if how == "eof":
        protocol.eof_received()
    protocol.connection_lost(ConnectionResetError("reset") if how == "lost with error" else None)
    with pytest.raises(SMTPServerDisconnected) as raised:
        protocol.write(b"NOOP\r\n")
    assert str(raised.value) == "Server not connected"
    assert transport.written == b""


async def test_write_after_the_servers_421_repeats_it() -> None:
    # The contrast to the test above: an unsolicited 421 is why, and says so.
    protocol, transport = await greeted()
    protocol.data_received(b"421 4.3.2 shutting down\r\n")
    assert transport.closing
    with pytest.raises(SMTPServerDisconnected) as raised:
        protocol.write(b"NOOP\r\n")
    assert str(raised.value) == "Server closing: 421 4.3.2 shutting down"


# --- discard_buffered ------------------------------------------------------------------------


async def test_after_starttls_a_reply_before_the_next_command_is_dropped() -> None:
    protocol, transport = await greeted()
    protocol.expect(1)
    protocol.write(b"STARTTLS\r\n")
    protocol.data_received(b"220 2.0.0 ready\r\n")
    assert (await asyncio.wait_for(protocol.read_reply(), WAIT)).code == 220
    protocol.discard_buffered()
    # Nothing is expected now: a reply arriving before EHLO is announced is out of
    # turn (a man in the middle's, or a confused server's) and must not answer EHLO.
    protocol.data_received(b"250 injected.example\r\n")
    protocol.expect(1)
    protocol.write(b"EHLO client.example\r\n")
    protocol.data_received(b"250 server.example\r\n")
    reply = await asyncio.wait_for(protocol.read_reply(), WAIT)
    assert reply.message == "server.example"
    assert transport.written == b"STARTTLS\r\nEHLO client.example\r\n"


# --- resume_writing --------------------------------------------------------------------------


async def test_resume_writing_with_nobody_draining() -> None:
    protocol, _ = connected()
    protocol.pause_writing()
    paused_before = protocol.writing_paused
    protocol.resume_writing()  # the buffer drained before anyone called drain()
    assert (paused_before, protocol.writing_paused) == (True, False)
    assert protocol.writing_paused is False  # a bool, as annotated, not just falsy
    protocol.resume_writing()  # asyncio may call it again; still no waiter
    assert protocol.writing_paused is False


async def test_resume_writing_after_a_cancelled_drain() -> None:
    protocol, _ = connected()
    protocol.pause_writing()
    draining = asyncio.ensure_future(protocol.drain())
    # Cancel it once it waits: call_soon runs after the task's first step.
    asyncio.get_running_loop().call_soon(draining.cancel)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(draining, WAIT)
    protocol.resume_writing()  # its waiter is cancelled: done, left alone
    assert protocol.writing_paused is False
    assert finishes_at_once(protocol.drain())


async def test_resume_writing_wakes_a_drain() -> None:
    protocol, _ = connected()
    protocol.pause_writing()
    draining = asyncio.ensure_future(protocol.drain())
    asyncio.get_running_loop().call_soon(protocol.resume_writing)
    await asyncio.wait_for(draining, WAIT)
    assert protocol.writing_paused is False


# --- drain -----------------------------------------------------------------------------------


async def test_drain_does_not_wait_when_writing_is_not_paused() -> None:
    protocol, _ = connected()
    assert finishes_at_once(protocol.drain())
    protocol.pause_writing()
    protocol.resume_writing()
    assert finishes_at_once(protocol.drain())


async def test_drain_does_not_wait_on_a_closing_connection_while_paused() -> None:
    # Paused, then the transport is closing (a write failed, the peer went): no
    # resume_writing will ever come; waiting would only end at the caller's timeout.
    protocol, transport = connected()
    protocol.pause_writing()
    transport.closing = True
    assert finishes_at_once(protocol.drain())
    transport.closing = False
    protocol.connection_lost(None)
    assert protocol.writing_paused
    assert finishes_at_once(protocol.drain())


async def test_drain_waits_while_paused_and_connected() -> None:
    protocol, _ = connected()
    protocol.pause_writing()
    assert not finishes_at_once(protocol.drain())


# --- _deadline_reached -----------------------------------------------------------------------


async def test_a_reads_timer_that_fires_after_the_read_lapses_quietly() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        protocol, _ = await greeted()
        protocol.expect(1)
        reading = asyncio.ensure_future(protocol.read_replies(1, timeout=TIMER))
        # The reply comes after the read armed its timer (the task's first step).
        loop.call_soon(protocol.data_received, b"250 ok\r\n")
        (reply,) = await asyncio.wait_for(reading, WAIT)
        assert reply.code == 250
        # The read's timer is still set, for no later than now + TIMER; the loop
        # runs timers in deadline order, so this one fires after it.
        fired = loop.create_future()
        loop.call_at(loop.time() + TIMER + 0.001, fired.set_result, None)
        await asyncio.wait_for(fired, WAIT)
        assert errors == []
        # And the protocol still times a read out.
        protocol.expect(1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(protocol.read_replies(1, timeout=TIMER), WAIT)
        assert errors == []
    finally:
        loop.set_exception_handler(previous)
