"""Pipelining (RFC 2920) against smtpwire.server with PIPELINING advertised.

The proof that commands were pipelined is on the server side: every chunk its
``data_received`` gets is recorded, and on loopback one client write arrives as
one chunk.  A lock-step client cannot put ``DATA`` in the same chunk as ``MAIL``
(it must wait for MAIL's reply first), so a chunk holding MAIL, every RCPT and
DATA is one write.  The error semantics must be lock-step's: each case below runs
against both servers and expects the same outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from smtpwire.server._content import Accumulated
from smtpwire.server.smtp import SMTP as ServerSMTP
from support.client_harness import RefusingHandler, make_client
from support.server import ServerThread, serving

HOST = "testhost"
WAIT = 10.0
RECIPIENTS = [f"r{i}@example.com" for i in range(5)]


@dataclass(frozen=True)
class Delivered:
    mail_from: str | None
    rcpt_tos: list[str]
    content: bytes


class Sink(RefusingHandler):
    """Records every delivered message; refuses senders starting "refused", recipients
    starting "nobody", and messages holding ``REJECT-ME``."""

    name_the_refused_recipient = True

    def __init__(self) -> None:
        self.messages: list[Delivered] = []

    def record(self, envelope: Any) -> None:
        self.messages.append(
            Delivered(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )


class RecordingServer(ServerSMTP):
    """Keeps every chunk ``data_received`` gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(bytes(data))
        super().data_received(data)


class PipeliningServer(RecordingServer):
    def _ehlo_lines(self) -> list[str]:
        return [*super()._ehlo_lines(), "250-PIPELINING"]


SERVERS = pytest.mark.parametrize(
    "server_class", [PipeliningServer, RecordingServer], ids=["pipelining", "lock-step"]
)


@contextmanager
def smtp_server(
    sink: Sink, server_class: type[RecordingServer] = PipeliningServer, **kwargs: Any
) -> Iterator[ServerThread]:
    kwargs.setdefault("hostname", HOST)
    with serving(lambda: server_class(sink, **kwargs)) as server:
        yield server


@pytest.fixture
def sink() -> Sink:
    return Sink()


def chunks(server: ServerThread, index: int = 0) -> list[bytes]:
    return list(server.call(lambda: list(server.protocols[index].received)))


def transaction_lines(sender: str, recipients: list[str], size: int) -> list[bytes]:
    return [
        f"MAIL FROM:<{sender}> SIZE={size}\r\n".encode(),
        *(f"RCPT TO:<{r}>\r\n".encode() for r in recipients),
        b"DATA\r\n",
    ]


# --- one write -----------------------------------------------------------------------------------


async def test_pipelined_transaction_is_one_write(sink: Sink) -> None:
    message = b"Subject: pipelined\r\n\r\nbody\r\n"
    with smtp_server(sink) as server:
        client = make_client(server)
        async with client:
            assert await client.sendmail("a@example.com", RECIPIENTS, message) == ({}, "OK")
            assert client.supports_extension("pipelining")
        received = chunks(server)
    expected = b"".join(transaction_lines("a@example.com", RECIPIENTS, len(message)))
    assert expected in received  # MAIL, 5 RCPT and DATA arrived as one chunk
    # EHLO, the transaction, the message, QUIT: four round trips instead of ten.
    assert len(received) == 4
    assert sink.messages == [Delivered("a@example.com", RECIPIENTS, message)]


async def test_lock_step_without_pipelining(sink: Sink) -> None:
    message = b"Subject: lock-step\r\n\r\nbody\r\n"
    with smtp_server(sink, RecordingServer) as server:
        client = make_client(server)
        async with client:
            await client.sendmail("a@example.com", RECIPIENTS, message)
            assert not client.supports_extension("pipelining")
        received = chunks(server)
    lines = transaction_lines("a@example.com", RECIPIENTS, len(message))
    # Each command waited for the previous reply: one chunk per command.
    assert received[1 : 1 + len(lines)] == lines
    assert len(received) == 1 + len(lines) + 2  # EHLO ... message, QUIT
    assert sink.messages == [Delivered("a@example.com", RECIPIENTS, message)]


async def test_several_messages_pipelined_on_one_connection(sink: Sink) -> None:
    with smtp_server(sink) as server:
        client = make_client(server)
        async with client:
            for number in range(3):
                recipients = [f"to{number}-{i}@example.com" for i in range(number + 1)]
                message = f"Subject: {number}\r\n\r\n.{number}\r\n".encode()
                await client.sendmail(f"from{number}@example.com", recipients, message)
        received = chunks(server)
    assert len(server.protocols) == 1
    assert [(m.mail_from, m.rcpt_tos, m.content) for m in sink.messages] == [
        (
            f"from{n}@example.com",
            [f"to{n}-{i}@example.com" for i in range(n + 1)],
            f"Subject: {n}\r\n\r\n.{n}\r\n".encode(),
        )
        for n in range(3)
    ]
    assert sum(1 for chunk in received if chunk.startswith(b"MAIL") and b"DATA" in chunk) == 3


async def test_send_message_is_pipelined(sink: Sink) -> None:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = ", ".join(RECIPIENTS[:3])
    message["Bcc"] = RECIPIENTS[3]
    message.set_content("hi\n")
    with smtp_server(sink) as server:
        client = make_client(server)
        async with client:
            await client.send_message(message)
        received = chunks(server)
    assert any(c.startswith(b"MAIL") and c.endswith(b"DATA\r\n") for c in received)
    assert sink.messages[0].rcpt_tos == RECIPIENTS[:4]
    assert b"Bcc" not in sink.messages[0].content


# --- the same errors as lock-step ------------------------------------------------------------


@SERVERS
async def test_sender_refused(sink: Sink, server_class: type[RecordingServer]) -> None:
    with smtp_server(sink, server_class) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.sendmail("refused@example.com", RECIPIENTS, b"x\r\n")
            error = caught.value
            assert (error.code, error.message, error.sender) == (
                553,
                "5.7.1 Sender refused",
                "refused@example.com",
            )
            assert client.is_connected
            assert await client.noop() == (250, "OK")
            assert await client.sendmail("a@example.com", RECIPIENTS, b"after\r\n") == ({}, "OK")
    assert sink.messages == [Delivered("a@example.com", RECIPIENTS, b"after\r\n")]


@SERVERS
async def test_partial_recipient_refusal(sink: Sink, server_class: type[RecordingServer]) -> None:
    recipients = ["nobody0@example.com", "a@example.com", "nobody1@example.com", "b@example.com"]
    with smtp_server(sink, server_class) as server:
        client = make_client(server)
        async with client:
            refused, message = await client.sendmail("s@example.com", recipients, b"part\r\n")
            assert message == "OK"
            assert refused == {
                "nobody0@example.com": (550, "5.1.1 No such user nobody0@example.com"),
                "nobody1@example.com": (550, "5.1.1 No such user nobody1@example.com"),
            }
            assert list(refused) == ["nobody0@example.com", "nobody1@example.com"]
            assert await client.sendmail("s@example.com", ["c@example.com"], b"next\r\n") == (
                {},
                "OK",
            )
    assert sink.messages == [
        Delivered("s@example.com", ["a@example.com", "b@example.com"], b"part\r\n"),
        Delivered("s@example.com", ["c@example.com"], b"next\r\n"),
    ]


@SERVERS
async def test_all_recipients_refused(sink: Sink, server_class: type[RecordingServer]) -> None:
    recipients = [f"nobody{i}@example.com" for i in range(3)]
    with smtp_server(sink, server_class) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
                await client.sendmail("s@example.com", recipients, b"none\r\n")
            assert [(e.recipient, e.code) for e in caught.value.recipients] == [
                (r, 550) for r in recipients
            ]
            assert client.is_connected
            assert await client.noop() == (250, "OK")
            assert await client.sendmail("s@example.com", ["a@example.com"], b"ok\r\n") == (
                {},
                "OK",
            )
    assert sink.messages == [Delivered("s@example.com", ["a@example.com"], b"ok\r\n")]


@SERVERS
async def test_message_refused_after_data(sink: Sink, server_class: type[RecordingServer]) -> None:
    with smtp_server(sink, server_class) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                await client.sendmail("s@example.com", RECIPIENTS, b"REJECT-ME\r\n")
            assert (caught.value.code, caught.value.message) == (554, "5.6.0 Message refused")
            assert await client.sendmail("s@example.com", RECIPIENTS, b"ok\r\n") == ({}, "OK")
    assert [m.content for m in sink.messages] == [b"ok\r\n"]


@SERVERS
async def test_size_refused_at_mail(sink: Sink, server_class: type[RecordingServer]) -> None:
    with smtp_server(sink, server_class, data_size_limit=64) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.sendmail("s@example.com", RECIPIENTS, b"x" * 100 + b"\r\n")
            assert caught.value.code == 552
            assert await client.sendmail("s@example.com", RECIPIENTS, b"small\r\n") == ({}, "OK")
    assert [m.content for m in sink.messages] == [b"small\r\n"]


@SERVERS
async def test_data_command_refused(sink: Sink, server_class: type[RecordingServer]) -> None:
    class Handler(Sink):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            raise AssertionError("no message may arrive")

    class RefusingData(server_class):  # type: ignore[valid-type,misc]
        async def smtp_DATA(self, arg: str | None) -> None:
            await self.push("451 4.3.0 Try DATA later")

    handler = Handler()
    with smtp_server(handler, RefusingData) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                await client.sendmail("s@example.com", RECIPIENTS, b"x\r\n")
            assert (caught.value.code, caught.value.message) == (451, "4.3.0 Try DATA later")
            assert client.is_connected
            assert await client.noop() == (250, "OK")
        received = b"".join(chunks(server))
    assert b"\r\nx\r\n" not in received  # the message never followed the refused DATA
    assert handler.messages == []


async def test_data_accepted_despite_no_recipients_is_ended_empty(sink: Sink) -> None:
    """RFC 2920 section 3.1: a server that answers 354 although every RCPT failed
    gets an empty message (a lone ".") and must refuse it; nothing is delivered."""

    class LaxServer(PipeliningServer):
        async def smtp_DATA(self, arg: str | None) -> None:
            if self.envelope.rcpt_tos:
                await super().smtp_DATA(arg)
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content = Accumulated()
            await self._read_message(self._state_machine.data_decoder(), content.write)
            self.lax_content = content.value()
            self._set_post_data_state()
            await self.push("554 5.5.1 No valid recipients")

    with smtp_server(sink, LaxServer) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await client.sendmail("s@example.com", ["nobody@example.com"], b"secret\r\n")
            assert client.is_connected
            assert await client.sendmail("s@example.com", ["a@example.com"], b"ok\r\n") == (
                {},
                "OK",
            )
        assert server.call(lambda: server.protocols[0].lax_content) == b""
        received = b"".join(chunks(server))
    assert b"secret" not in received
    assert sink.messages == [Delivered("s@example.com", ["a@example.com"], b"ok\r\n")]
