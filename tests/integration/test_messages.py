"""What travels: SMTPUTF8 addresses, 8BITMIME bodies, dot-stuffing and line endings,
a 50 MiB message checked by SHA-256, size limits, hundreds of recipients with partial
refusals, and each way of sending (one command at a time, PIPELINING, BDAT) seen both
from the client's results and from the bytes the server received.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from integration.harness import Delivery, Inbox, Server, StartServer, WireTap, make_client

# How the message goes: (server keywords, client keywords).
MODES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "lockstep": ({}, {}),  # aiosmtpd's EHLO: no PIPELINING, so one command at a time
    "pipelining": ({"modern": True, "chunking": False}, {}),
    "bdat": ({"modern": True}, {"chunking": True}),  # PIPELINING and CHUNKING
}
EACH_MODE = pytest.mark.parametrize("mode", sorted(MODES))


def start_in_mode(
    start_server: StartServer, handler: Any, mode: str, **kwargs: Any
) -> tuple[Server, dict[str, Any]]:
    server_options, client_options = MODES[mode]
    server = start_server(handler, protocol=WireTap, **server_options, **kwargs)
    return server, client_options


def wire(server: Server) -> list[bytes]:
    return list(server.tracker.wire)


def options_besides_size(delivery: Delivery) -> list[str]:
    """MAIL's parameters but SIZE= (which the client adds for an in-memory message)."""
    return [option for option in delivery.mail_options if not option.startswith("SIZE=")]


# --- SMTPUTF8 -------------------------------------------------------------------------------------

UTF8_SENDER = "jos\u00e9@ex\u00e4mple.com"
UTF8_RECIPIENT = "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"  # 用户@例子.广告
UTF8_SUBJECT = "Gr\u00fc\u00dfe \u2713"


def utf8_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Jos\u00e9 <{UTF8_SENDER}>"
    message["To"] = f"\u5f20\u4f1f <{UTF8_RECIPIENT}>"
    message["Subject"] = UTF8_SUBJECT
    message.set_content("\u00dcn\u00efc\u00f6d\u00e9 body \u2713\n", cte="8bit")
    return message


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "starttls"])
async def test_smtputf8_message(
    start_server: StartServer,
    inbox: Inbox,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    over_tls: bool,
) -> None:
    server = start_server(inbox, tls=server_context if over_tls else None)
    async with make_client(server, tls_context=client_context) as client:
        assert await client.send_message(utf8_message()) == ({}, "OK")
    await server.all_closed()
    [delivery] = inbox.deliveries
    assert delivery.over_tls is over_tls
    assert (delivery.mail_from, delivery.rcpt_tos) == (UTF8_SENDER, (UTF8_RECIPIENT,))
    assert delivery.smtp_utf8
    assert options_besides_size(delivery) == ["SMTPUTF8", "BODY=8BITMIME"]
    # With SMTPUTF8 the headers travel as raw UTF-8 (no RFC 2047 encoded words).
    assert f"Subject: {UTF8_SUBJECT}\r\n".encode() in delivery.content
    parsed = email.message_from_bytes(delivery.content, policy=email.policy.SMTPUTF8)
    assert parsed["Subject"] == UTF8_SUBJECT
    assert parsed.get_content().splitlines() == ["\u00dcn\u00efc\u00f6d\u00e9 body \u2713"]


@EACH_MODE
async def test_smtputf8_sendmail(start_server: StartServer, inbox: Inbox, mode: str) -> None:
    server, options = start_in_mode(start_server, inbox, mode)
    body = f"Subject: {UTF8_SUBJECT}\r\n\r\n\u2713\r\n".encode()
    async with make_client(server, **options) as client:
        result = await client.sendmail(
            UTF8_SENDER, [UTF8_RECIPIENT, "plain@example.org"], body, mail_options=["SMTPUTF8"]
        )
        assert result[0] == {}
    [delivery] = inbox.deliveries
    assert (delivery.mail_from, delivery.rcpt_tos, delivery.content) == (
        UTF8_SENDER,
        (UTF8_RECIPIENT, "plain@example.org"),
        body,
    )
    assert delivery.smtp_utf8


class MailWatcher(Inbox):
    """Also records every MAIL command that reached the server."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: list[str] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.senders.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


async def test_smtputf8_needs_the_servers_support(start_server: StartServer) -> None:
    """Against a server without SMTPUTF8 the client refuses before MAIL: nothing is
    sent that the server could mangle."""
    watcher = MailWatcher()
    server = start_server(watcher, enable_SMTPUTF8=False)
    async with make_client(server) as client:
        with pytest.raises(aiosmtplib.SMTPNotSupported):
            await client.send_message(utf8_message())
        with pytest.raises(aiosmtplib.SMTPNotSupported):
            await client.sendmail(
                UTF8_SENDER, [UTF8_RECIPIENT], b"x\r\n", mail_options=["SMTPUTF8"]
            )
        # The connection is fine for ASCII mail.
        await client.sendmail("a@example.org", ["b@example.org"], b"ascii\r\n")
    assert watcher.senders == ["a@example.org"]
    assert watcher.contents == [b"ascii\r\n"]


# --- 8BITMIME -------------------------------------------------------------------------------------

EIGHT_BIT = (
    (
        "Subject: 8bit\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001f600\r\n"
    ).encode()
    + bytes(range(0x80, 0x100))
    + b"\r\nlatin-1: \xe9\xe8\xe0\r\n"
)


@EACH_MODE
async def test_8bitmime_body_arrives_byte_for_byte(
    start_server: StartServer, inbox: Inbox, mode: str
) -> None:
    server, options = start_in_mode(start_server, inbox, mode)
    async with make_client(server, **options) as client:
        assert client.supports_extension("8bitmime")
        await client.sendmail(
            "a@example.org", ["b@example.org"], EIGHT_BIT, mail_options=["BODY=8BITMIME"]
        )
    [delivery] = inbox.deliveries
    assert delivery.content == EIGHT_BIT
    assert delivery.body_type == "8BITMIME"


async def test_8bit_email_message(start_server: StartServer, inbox: Inbox) -> None:
    message = EmailMessage()
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message["Subject"] = "8bit"
    message.set_content("Gr\u00fc\u00dfe aus K\u00f6ln\n", cte="8bit")
    server = start_server(inbox)
    async with make_client(server) as client:
        await client.send_message(message)
    [delivery] = inbox.deliveries
    assert options_besides_size(delivery) == ["BODY=8BITMIME"]
    assert b"Content-Transfer-Encoding: 8bit" in delivery.content
    assert "Gr\u00fc\u00dfe aus K\u00f6ln".encode() in delivery.content


async def test_8bit_email_message_to_a_7bit_server(start_server: StartServer, inbox: Inbox) -> None:
    """A server without 8BITMIME (decode_data=True drops it from EHLO) gets the
    message re-encoded as 7-bit; its text survives the round trip."""
    message = EmailMessage()
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message["Subject"] = "7bit"
    message.set_content("Gr\u00fc\u00dfe aus K\u00f6ln\n", cte="8bit")
    server = start_server(inbox, decode_data=True, enable_SMTPUTF8=False)
    async with make_client(server) as client:
        await client.ehlo()
        assert not client.supports_extension("8bitmime")
        await client.send_message(message)
    [delivery] = inbox.deliveries
    assert options_besides_size(delivery) == []
    assert delivery.content.isascii()
    parsed = email.message_from_bytes(delivery.content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content() == "Gr\u00fc\u00dfe aus K\u00f6ln\n"


# --- transparency: dots and line endings ----------------------------------------------------------

TRICKY = b".leading dot\r\n..two dots\r\n.\r\n. \r\nbare LF\nbare CR\rno newline at the end"
TRICKY_DELIVERED = (
    b".leading dot\r\n..two dots\r\n.\r\n. \r\nbare LF\r\nbare CR\r\nno newline at the end\r\n"
)


@EACH_MODE
async def test_dots_and_line_endings(start_server: StartServer, inbox: Inbox, mode: str) -> None:
    """A line holding only a dot cannot end the message early; the client normalises
    bare CR and LF and the server gets the lines back exactly."""
    server, options = start_in_mode(start_server, inbox, mode)
    async with make_client(server, **options) as client:
        await client.sendmail("a@example.org", ["b@example.org"], TRICKY)
        await client.sendmail("a@example.org", ["b@example.org"], b".")
    assert inbox.contents == [TRICKY_DELIVERED, b".\r\n"]
    received = b"".join(wire(server))
    if mode == "bdat":
        # BDAT counts octets: nothing is stuffed.
        assert b"\r\n..two dots" in received
        assert b"\r\n...two dots" not in received
    else:
        assert b"\r\n...two dots" in received


# --- a 50 MiB message -----------------------------------------------------------------------------

BIG_TARGET = 50 * 2**20


def big_message(digest: Any) -> Iterator[bytes]:
    """About 50 MiB in 1 MiB chunks, produced as sent (never whole in memory),
    with lines that start with a dot now and then; ``digest`` sees every byte."""
    header = b"Subject: fifty mebibytes\r\n\r\n"
    digest.update(header)
    yield header
    line = b"y" * 998 + b"\r\n"
    dotted = b"." + b"z" * 997 + b"\r\n"
    chunk = (line * 127 + dotted) * 8  # 1 MiB exactly: 1024 lines of 1000 octets
    sent = len(header)
    while sent < BIG_TARGET:
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "starttls"])
async def test_fifty_mebibyte_message(
    start_server: StartServer,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    over_tls: bool,
) -> None:
    inbox = Inbox(keep_content=False)  # the handler keeps a digest, not the message
    server = start_server(
        inbox, tls=server_context if over_tls else None, data_size_limit=64 * 2**20
    )
    digest = hashlib.sha256()
    async with make_client(server, tls_context=client_context, timeout=60) as client:
        assert await client.sendmail("a@example.org", ["b@example.org"], big_message(digest)) == (
            {},
            "OK",
        )
    await server.all_closed()
    [(size, sha256)] = inbox.digests
    assert size > BIG_TARGET
    assert sha256 == digest.hexdigest()


async def test_size_limit(start_server: StartServer, inbox: Inbox) -> None:
    server = start_server(inbox, data_size_limit=2**20)
    too_big = b"x" * 998 + b"\r\n"
    too_big *= 2 * 2**20 // len(too_big)
    async with make_client(server) as client:
        # In memory: the client declares SIZE and MAIL is refused up front.
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("a@example.org", ["b@example.org"], too_big)
        assert (refused.value.code, refused.value.message) == (
            552,
            "Error: message size exceeds fixed maximum message size",
        )
        # Streamed: no SIZE, so the server counts, discards, and refuses at the end.
        with pytest.raises(aiosmtplib.SMTPDataError) as failure:
            await client.sendmail("a@example.org", ["b@example.org"], iter([too_big]))
        assert (failure.value.code, failure.value.message) == (552, "Error: Too much mail data")
        await client.sendmail("a@example.org", ["b@example.org"], b"small\r\n")
    assert inbox.contents == [b"small\r\n"]


# --- many recipients ------------------------------------------------------------------------------


class Mailboxes(Inbox):
    """Refuses "nobody-*" for good (550) and "full-*" for now (452)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody-"):
            return f"550 5.1.1 <{address}>: no such user"
        if address.startswith("full-"):
            return "452 4.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"


def recipients(count: int) -> list[str]:
    def address(number: int) -> str:
        if number % 7 == 3:
            return f"nobody-{number}@example.org"
        if number % 11 == 5:
            return f"full-{number}@example.org"
        return f"user-{number}@example.org"

    return [address(number) for number in range(count)]


@EACH_MODE
async def test_many_recipients_with_partial_refusals(start_server: StartServer, mode: str) -> None:
    mailboxes = Mailboxes()
    # error_limit: the modern server's error budget would end the session after 20
    # refusals (see test_error_budget_ends_a_pipelined_transaction).
    server, options = start_in_mode(start_server, mailboxes, mode, error_limit=1000)
    everyone = recipients(400)
    async with make_client(server, **options) as client:
        refused, reply = await client.sendmail("a@example.org", everyone, b"to many\r\n")
    assert reply.endswith("OK")
    expected_refused = {
        address: (550, f"5.1.1 <{address}>: no such user")
        for address in everyone
        if address.startswith("nobody-")
    } | {
        address: (452, "4.2.2 Mailbox full") for address in everyone if address.startswith("full-")
    }
    assert {address: (r.code, r.message) for address, r in refused.items()} == expected_refused
    [delivery] = mailboxes.deliveries
    assert delivery.rcpt_tos == tuple(a for a in everyone if a.startswith("user-"))
    assert len(delivery.rcpt_tos) == 400 - len(expected_refused)


async def test_recipients_past_the_servers_limit_are_refused_for_now(
    start_server: StartServer, inbox: Inbox
) -> None:
    server = start_server(inbox, modern=True, rcpt_limit=100)
    everyone = [f"user-{n}@example.org" for n in range(130)]
    async with make_client(server) as client:
        await client.ehlo()
        assert client.esmtp_extensions["limits"] == "RCPTMAX=100"
        refused, _ = await client.sendmail("a@example.org", everyone, b"capped\r\n")
    assert sorted(refused) == sorted(everyone[100:])
    assert {(r.code, r.message) for r in refused.values()} == {
        (452, "4.5.3 Error: too many recipients")
    }
    assert [d.rcpt_tos for d in inbox.deliveries] == [tuple(everyone[:100])]


@pytest.mark.parametrize("mode", ["pipelining", "bdat"])
async def test_error_budget_ends_a_pipelined_transaction(
    start_server: StartServer, mode: str
) -> None:
    """The modern server's error budget (20 replies of 5xx, then 421 and close) cuts
    a pipelined batch with many refused recipients short: the client loses the
    connection and nothing is delivered, not even to the recipients it accepted."""
    mailboxes = Mailboxes()
    server, options = start_in_mode(start_server, mailboxes, mode)
    batch = [f"nobody-{n}@example.org" for n in range(25)] + ["user-1@example.org"]
    client = make_client(server, **options)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.sendmail("a@example.org", batch, b"probing\r\n")
    assert not client.is_connected
    await server.all_closed()
    assert mailboxes.deliveries == []


@EACH_MODE
async def test_every_recipient_refused(start_server: StartServer, mode: str) -> None:
    mailboxes = Mailboxes()
    server, options = start_in_mode(start_server, mailboxes, mode)
    nobody = ["nobody-1@example.org", "full-2@example.org"]
    async with make_client(server, **options) as client:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as failure:
            await client.sendmail("a@example.org", nobody, b"to no one\r\n")
        assert [(r.recipient, r.code) for r in failure.value.recipients] == [
            ("nobody-1@example.org", 550),
            ("full-2@example.org", 452),
        ]
        # The transaction was reset: the connection goes on.
        await client.sendmail("a@example.org", ["user-1@example.org"], b"next\r\n")
    assert mailboxes.contents == [b"next\r\n"]


@EACH_MODE
async def test_every_recipient_refused_twice(start_server: StartServer, mode: str) -> None:
    mailboxes = Mailboxes()
    server, options = start_in_mode(start_server, mailboxes, mode)
    async with make_client(server, **options) as client:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as failure:
            await client.sendmail(
                "a@example.org", ["nobody-1@example.org", "nobody-1@example.org"], b"x\r\n"
            )
        assert {r.code for r in failure.value.recipients} == {550}
    assert mailboxes.deliveries == []


# --- the way commands travel ----------------------------------------------------------------------


@EACH_MODE
async def test_commands_on_the_wire(start_server: StartServer, inbox: Inbox, mode: str) -> None:
    server, options = start_in_mode(start_server, inbox, mode)
    rcpts = ["b@example.org", "c@example.org", "d@example.org"]
    async with make_client(server, **options) as client:
        await client.ehlo()
        assert client.supports_extension("pipelining") is (mode != "lockstep")
        assert client.supports_extension("chunking") is (mode == "bdat")
        await client.sendmail("a@example.org", rcpts, b"Subject: wire\r\n\r\nbody\r\n")
    assert inbox.contents == [b"Subject: wire\r\n\r\nbody\r\n"]
    chunks = wire(server)
    commands = [chunk for chunk in chunks if chunk[:4] in (b"MAIL", b"RCPT", b"DATA", b"BDAT")]
    if mode == "lockstep":
        # One command per round trip: MAIL, three RCPTs, DATA, each alone.
        assert [c.split(b" ", 1)[0].rstrip(b"\r\n") for c in commands] == [
            b"MAIL",
            b"RCPT",
            b"RCPT",
            b"RCPT",
            b"DATA",
        ]
        assert all(c.count(b"\r\n") == 1 for c in commands)
    elif mode == "pipelining":
        # MAIL, every RCPT and DATA in one write (RFC 2920); the message after 354.
        [batch] = commands
        assert batch.startswith(b"MAIL FROM:<a@example.org>")
        assert batch.count(b"RCPT TO:") == 3
        assert batch.endswith(b"DATA\r\n")
    else:
        # One round trip: MAIL, RCPTs and the whole message as one BDAT chunk.
        [batch] = commands
        assert batch.count(b"RCPT TO:") == 3
        assert b"\r\nBDAT 23 LAST\r\nSubject: wire\r\n\r\nbody\r\n" in batch
        assert b"DATA" not in batch


def binary_chunks() -> Iterator[bytes]:
    yield b"\x00\x01 NUL and friends\r\n"
    yield b".\r\n"  # would end a DATA section
    yield b"bare\rCR and bare\nLF\r\n\x00"


async def test_binarymime_stream_travels_untouched(start_server: StartServer, inbox: Inbox) -> None:
    server = start_server(inbox, protocol=WireTap, modern=True)
    async with make_client(server) as client:
        await client.sendmail(
            "a@example.org", ["b@example.org"], binary_chunks(), mail_options=["BODY=BINARYMIME"]
        )
    [delivery] = inbox.deliveries
    assert delivery.content == b"".join(binary_chunks())
    assert delivery.body_type == "BINARYMIME"
    received = b"".join(wire(server))
    assert b"BDAT 3\r\n.\r\n" in received
    assert received.endswith(b"BDAT 0 LAST\r\nQUIT\r\n")


async def test_binarymime_needs_chunking(start_server: StartServer) -> None:
    watcher = MailWatcher()
    server = start_server(watcher)  # aiosmtpd's extensions: no CHUNKING, no BINARYMIME
    async with make_client(server) as client:
        with pytest.raises(aiosmtplib.SMTPNotSupported):
            await client.sendmail(
                "a@example.org", ["b@example.org"], b"\x00", mail_options=["BODY=BINARYMIME"]
            )
    assert watcher.senders == []
    assert watcher.deliveries == []


# --- a transaction already open -------------------------------------------------------------------


async def test_sendmail_inside_an_open_transaction_lockstep(
    start_server: StartServer, inbox: Inbox
) -> None:
    """``mail()`` by hand, then ``sendmail()``: its MAIL is refused as nested, and
    nothing is delivered (the client then resets the transaction)."""
    server = start_server(inbox)
    async with make_client(server) as client:
        await client.mail("first@example.org")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("second@example.org", ["b@example.org"], b"payload\r\n")
        assert (refused.value.code, refused.value.message) == (503, "Error: nested MAIL command")
        await client.sendmail("second@example.org", ["b@example.org"], b"retried\r\n")
    assert [(d.mail_from, d.content) for d in inbox.deliveries] == [
        ("second@example.org", b"retried\r\n")
    ]


@pytest.mark.parametrize("opened_by", ["mail", "execute_command"])
@pytest.mark.parametrize("mode", ["pipelining", "bdat"])
async def test_sendmail_inside_an_open_transaction_pipelined(
    start_server: StartServer, inbox: Inbox, mode: str, opened_by: str
) -> None:
    server, options = start_in_mode(start_server, inbox, mode)
    async with make_client(server, **options) as client:
        if opened_by == "mail":
            await client.mail("first@example.org")
        else:
            await client.ehlo()
            assert (await client.execute_command(b"MAIL FROM:<first@example.org>")).code == 250
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("second@example.org", ["b@example.org"], b"payload\r\n")
        assert refused.value.code == 503
        await client.noop()
    # The caller was told the message was refused: nothing may have been delivered.
    assert inbox.deliveries == []
