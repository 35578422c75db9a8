"""One ``SMTP`` shared by several tasks, as aiosmtplib allows (issue 15): whole
transactions are serialised, so concurrent ``sendmail()``/``send_message()`` calls
on one connection all deliver instead of interleaving their commands (a nested
MAIL, or one message's MAIL landing inside another's DATA); a ``connect()`` that
races one in progress waits until that connection is closed, so concurrent
``async with client:`` blocks run in turn.  Over real sockets, against
smtpwire.server (one command per round trip) and a scripted server that offers
PIPELINING (one write per transaction, which must stay so).
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import pytest

import smtpwire.client as aiosmtplib
from support.client_harness import Sink, make_client
from support.fake_smtp import FakeSMTPServer, client_for
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
