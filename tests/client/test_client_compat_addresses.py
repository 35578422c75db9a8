"""Envelope addresses as aiosmtplib 5.1.3 sends them (issue 15): ``mail()`` and
``rcpt()`` encode with their ``encoding`` argument (ASCII by default) whatever the
options say, so a non-ASCII address without ``encoding="utf-8"`` raises
UnicodeEncodeError before anything is sent; a malformed address that cannot
inject (``"@@"``) goes to the server, whose refusal is reported as aiosmtplib
reports it; anything that could inject a command or a parameter is still a
ValueError before anything is written.
"""

from __future__ import annotations

import pytest

import smtpwire.client as aiosmtplib
from support.client_harness import Sink, make_client
from support.fake_smtp import FakeSMTPServer, client_for
from support.server import ServerThread

UTF8_ADDRESS = "jos\u00e9@ex\u00e4mple.com"
MESSAGE = b"Subject: hello\r\n\r\nhi\r\n"


def envelope_lines(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.split(b":", 1)[0].upper() in (b"MAIL FROM", b"RCPT TO")]


# --- encoding -------------------------------------------------------------------------------


async def test_mail_with_smtputf8_option_still_uses_the_encoding_argument() -> None:
    async with FakeSMTPServer(extensions=["SMTPUTF8", "8BITMIME"]) as server:
        client = client_for(server)
        async with client:
            await client.ehlo()
            with pytest.raises(UnicodeEncodeError):
                await client.mail(UTF8_ADDRESS, options=["SMTPUTF8"])
            assert envelope_lines(server.connection.lines) == []
            response = await client.mail(UTF8_ADDRESS, options=["SMTPUTF8"], encoding="utf-8")
            assert response.code == 250
            assert envelope_lines(server.connection.lines) == [
                f"MAIL FROM:<{UTF8_ADDRESS}> SMTPUTF8".encode()
            ]


async def test_rcpt_uses_the_encoding_argument() -> None:
    async with FakeSMTPServer(extensions=["SMTPUTF8"]) as server:
        client = client_for(server)
        async with client:
            await client.mail("a@example.com", options=["SMTPUTF8"], encoding="utf-8")
            with pytest.raises(UnicodeEncodeError):
                await client.rcpt(UTF8_ADDRESS)
            assert (await client.rcpt(UTF8_ADDRESS, encoding="utf-8")).code == 250
            assert envelope_lines(server.connection.lines)[1:] == [
                f"RCPT TO:<{UTF8_ADDRESS}>".encode()
            ]


@pytest.mark.parametrize("where", ["sender", "recipient"])
async def test_sendmail_non_ascii_address_without_smtputf8(where: str) -> None:
    sender, recipient = (
        (UTF8_ADDRESS, "b@example.com") if where == "sender" else ("a@example.com", UTF8_ADDRESS)
    )
    async with FakeSMTPServer(extensions=["SMTPUTF8"]) as server:
        client = client_for(server)
        async with client:
            with pytest.raises(UnicodeEncodeError):
                await client.sendmail(sender, [recipient], MESSAGE)
            assert envelope_lines(server.connection.lines) == []


# --- malformed but injection-free: the server decides ---------------------------------------


async def test_malformed_recipient_is_sent_and_refused(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
            await client.sendmail("a@example.com", ["@@"], MESSAGE)
        assert (await client.noop()).code == 250  # still in step
    [refusal] = caught.value.recipients
    assert refusal.recipient == "@@"
    assert refusal.code == 553
    assert sink.messages == []


async def test_malformed_recipient_among_good_ones(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        refused, _ = await client.sendmail("a@example.com", ["@@", "b@example.com"], MESSAGE)
    assert list(refused) == ["@@"]
    assert refused["@@"].code == 553
    assert sink.messages == [("a@example.com", ["b@example.com"], MESSAGE)]


async def test_malformed_recipient_with_pipelining() -> None:
    def refuse_malformed(connection: object, line: bytes) -> bytes | None:
        if line == b"RCPT TO:<@@>":
            return b"553 5.1.3 Error: malformed address\r\n"
        return connection.default(line)  # type: ignore[attr-defined]

    async with FakeSMTPServer(extensions=["PIPELINING"], on_line=refuse_malformed) as server:
        client = client_for(server)
        async with client:
            refused, _ = await client.sendmail("a@example.com", ["b@example.com", "@@"], MESSAGE)
        assert refused == {"@@": aiosmtplib.SMTPResponse(553, "5.1.3 Error: malformed address")}
        assert len(server.connection.messages) == 1


async def test_malformed_address_in_rcpt_and_mail(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as sender_refused:
            await client.mail("@@")
        assert sender_refused.value.sender == "@@"
        await client.mail("a@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as recipient_refused:
            await client.rcpt("@@")
        assert recipient_refused.value.recipient == "@@"
        assert recipient_refused.value.code == 553


INJECTIONS = {
    "CRLF": "a@example.com\r\nRSET",
    "LF": "a@example.com\nRSET",
    "CR": "a@example.com\rRSET",
    "NUL": "a@exa\x00mple.com",
    "VT": "a@exa\x0bmple.com",
    "DEL": "a@exa\x7fmple.com",
    "angle brackets": "a@example.com> AUTH=<x@example.com",
    "space": "a@example.com SIZE=1",
    "malformed and a space": "@@ NOTIFY=NEVER",
    "second path": "<a@example.com> <b@example.com>",
}


@pytest.mark.parametrize("address", list(INJECTIONS.values()), ids=list(INJECTIONS))
async def test_injection_is_still_refused_before_sending(address: str) -> None:
    async with FakeSMTPServer() as server:
        client = client_for(server)
        async with client:
            with pytest.raises(ValueError, match="invalid address"):
                await client.sendmail("a@example.com", [address], MESSAGE)
            with pytest.raises(ValueError, match="invalid address"):
                await client.sendmail(address, ["b@example.com"], MESSAGE)
            with pytest.raises(ValueError, match="invalid address"):
                await client.mail(address)
            await client.mail("a@example.com")
            with pytest.raises(ValueError, match="invalid address"):
                await client.rcpt(address)
            assert envelope_lines(server.connection.lines) == [b"MAIL FROM:<a@example.com>"]
