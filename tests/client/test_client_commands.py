"""The client's single commands over real sockets against smtpwire.server.

EHLO/HELO and what the client keeps from them, HELP/RSET/NOOP/VRFY/EXPN,
MAIL/RCPT/DATA one at a time and raw ``execute_command``.  Everything is used
through ``import smtpwire.client as aiosmtplib``, the way migrated code uses it.
(Connecting, QUIT/close, timeouts and the 1.x style are in test_client_connect.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from support.client_harness import (
    CLIENT_NAME,
    HOST,
    UTF8_ADDRESS,
    NoEhloServer,
    Sink,
    make_client,
    on_server,
    smtp_server,
)
from support.server import ServerThread

# --- EHLO / HELO ------------------------------------------------------------------------------


async def test_ehlo_sets_extensions(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        response = await client.ehlo()
        assert response.code == 250
        assert response.message == f"{HOST}\nSIZE 33554432\n8BITMIME\nHELP"
        assert client.last_ehlo_response == response
        assert client.supports_esmtp
        assert not client.is_ehlo_or_helo_needed
        assert client.esmtp_extensions == {"size": "33554432", "8bitmime": "", "help": ""}
        assert client.supports_extension("SIZE")
        assert client.supports_extension("8bitmime")
        assert not client.supports_extension("pipelining")
        assert not client.supports_extension("starttls")
        assert client.server_auth_methods == []
        session = on_server(server, lambda p: (p.session.host_name, p.session.extended_smtp))
        assert session == (CLIENT_NAME, True)


async def test_ehlo_with_a_hostname(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        await client.ehlo(hostname="other.example")
        assert on_server(server, lambda p: p.session.host_name) == "other.example"


async def test_ehlo_lists_auth_methods_lower_cased() -> None:
    def accept(*args: Any) -> Any:
        from smtpwire.server.smtp import AuthResult

        return AuthResult(success=True)

    with smtp_server(auth_require_tls=False, authenticator=accept) as server:
        client = make_client(server)
        async with client:
            await client.ehlo()
            assert client.esmtp_extensions["auth"] == "LOGIN PLAIN"
            assert sorted(client.server_auth_methods) == ["login", "plain"]
            assert client.supported_auth_methods == ["plain", "login"]


async def test_helo(server: ServerThread) -> None:
    client = make_client(server, start_tls=False)
    async with client:
        response = await client.helo()
        assert response == (250, HOST)
        assert client.last_helo_response == response
        assert client.last_ehlo_response is None
        assert not client.supports_esmtp
        assert not client.is_ehlo_or_helo_needed
        session = on_server(server, lambda p: (p.session.host_name, p.session.extended_smtp))
        assert session == (CLIENT_NAME, False)


async def test_ehlo_refused_raises_helo_error() -> None:
    with smtp_server(cls=NoEhloServer) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPHeloError) as caught:
                await client.ehlo()
            assert caught.value.code == 500
            assert client.last_ehlo_response is None
            assert client.is_connected


async def test_lazy_greeting_falls_back_to_helo(sink: Sink) -> None:
    with smtp_server(sink, cls=NoEhloServer) as server:
        client = make_client(server)
        async with client:
            await client.sendmail("a@example.com", ["b@example.com"], b"hi\r\n")
            assert client.last_helo_response is not None
            assert not client.supports_esmtp
            assert "SIZE=" not in str(on_server(server, lambda p: p.envelope.mail_options))
    assert sink.messages == [("a@example.com", ["b@example.com"], b"hi\r\n")]


async def test_commands_greet_lazily(server: ServerThread) -> None:
    client = make_client(server, start_tls=False)  # None would EHLO to look for STARTTLS
    async with client:
        assert client.is_ehlo_or_helo_needed
        assert on_server(server, lambda p: p.session.host_name) is None
        await client.mail("a@example.com")
        assert client.last_ehlo_response is not None
        assert on_server(server, lambda p: p.session.host_name) == CLIENT_NAME


# --- simple commands --------------------------------------------------------------------------


async def test_help_returns_the_text(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        text = await client.help()
        assert isinstance(text, str)
        assert text.startswith("Supported commands: ")
        assert {"DATA", "EHLO", "HELO", "MAIL", "NOOP", "QUIT", "RCPT", "RSET"} <= set(
            text.removeprefix("Supported commands: ").split()
        )


async def test_rset_and_noop(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        await client.mail("a@example.com")
        assert on_server(server, lambda p: p.envelope.mail_from) == "a@example.com"
        assert await client.rset() == (250, "OK")
        assert on_server(server, lambda p: p.envelope.mail_from) is None
        assert await client.noop() == (250, "OK")


async def test_vrfy(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        response = await client.vrfy("someone@example.com")
        assert response == (252, "Cannot VRFY user, but will accept message and attempt delivery")


async def test_vrfy_refused_raises() -> None:
    class Handler(Sink):
        async def handle_VRFY(self, server: Any, session: Any, envelope: Any, address: str) -> str:
            return "550 5.1.1 No such user" if address == "ghost" else "250 <real@example.com>"

    with smtp_server(Handler()) as server:
        client = make_client(server)
        async with client:
            assert await client.vrfy("real") == (250, "<real@example.com>")
            with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
                await client.vrfy("ghost")
            assert (caught.value.code, caught.value.message) == (550, "5.1.1 No such user")
            assert client.is_connected


async def test_expn_not_implemented_raises(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
            await client.expn("list@example.com")
        assert caught.value.code == 502
        assert caught.value.message == "EXPN not implemented"
        assert caught.value.args == (502, "EXPN not implemented")
        assert (await client.noop()).code == 250


async def test_vrfy_smtputf8(sink: Sink) -> None:
    with smtp_server(sink, enable_SMTPUTF8=True) as server:
        client = make_client(server)
        async with client:
            response = await client.vrfy(UTF8_ADDRESS, options=["SMTPUTF8"])
            assert response.code == 252


async def test_vrfy_smtputf8_needs_the_extension(server: ServerThread) -> None:
    """As aiosmtplib: the SMTPUTF8 option needs the extension, and without the option
    a non-ASCII address is refused; either way nothing 8-bit goes to the server."""
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPNotSupported):
            await client.vrfy(UTF8_ADDRESS, options=["SMTPUTF8"])
        with pytest.raises(aiosmtplib.SMTPNotSupported):
            await client.expn(UTF8_ADDRESS, options=["SMTPUTF8"])
        with pytest.raises(ValueError):  # noqa: PT011 - UnicodeEncodeError in aiosmtplib
            await client.vrfy(UTF8_ADDRESS)
        assert (await client.noop()).code == 250


@pytest.mark.parametrize("address", ["a@b.example\r\nRSET", "a@b.example\nQUIT", "a\x00b"])
async def test_control_characters_in_addresses_are_refused(
    server: ServerThread, address: str
) -> None:
    client = make_client(server)
    async with client:
        for call in (client.mail, client.rcpt, client.vrfy, client.expn):
            with pytest.raises(ValueError):  # noqa: PT011 - any ValueError; nothing sent
                await call(address)
        assert (await client.noop()).code == 250
        assert on_server(server, lambda p: p.envelope.mail_from) is None


# --- MAIL / RCPT / DATA one at a time ---------------------------------------------------------


async def test_mail_rcpt_data(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        assert await client.mail("a@example.com") == (250, "OK")
        assert await client.rcpt("b@example.com") == (250, "OK")
        assert await client.rcpt("<c@example.com>") == (250, "OK")
        response = await client.data(b"Subject: hi\r\n\r\n.leading dot\r\nbare\nend")
        assert response == (250, "OK")
    assert sink.messages == [
        (
            "a@example.com",
            ["b@example.com", "c@example.com"],
            b"Subject: hi\r\n\r\n.leading dot\r\nbare\r\nend\r\n",
        )
    ]


async def test_mail_with_options(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        await client.mail("a@example.com", options=["BODY=8BITMIME", "SIZE=10"])
        options = on_server(server, lambda p: list(p.envelope.mail_options))
        assert options == ["BODY=8BITMIME", "SIZE=10"]


async def test_mail_and_rcpt_with_utf8_addresses(sink: Sink) -> None:
    with smtp_server(sink, enable_SMTPUTF8=True) as server:
        client = make_client(server)
        async with client:
            await client.mail(UTF8_ADDRESS, options=["SMTPUTF8"], encoding="utf-8")
            await client.rcpt(UTF8_ADDRESS, encoding="utf-8")
            await client.data(b"utf8\r\n")
    assert sink.messages == [(UTF8_ADDRESS, [UTF8_ADDRESS], b"utf8\r\n")]


async def test_mail_refused_raises_sender_refused(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await client.mail("refused@example.com")
        error = caught.value
        assert (error.code, error.message, error.sender) == (
            553,
            "5.7.1 Sender refused",
            "refused@example.com",
        )
        assert error.args == (553, "5.7.1 Sender refused", "refused@example.com")
        assert (await client.mail("fine@example.com")).code == 250


async def test_rcpt_refused_raises_recipient_refused(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        await client.mail("a@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
            await client.rcpt("nobody@example.com")
        error = caught.value
        assert (error.code, error.message, error.recipient) == (
            550,
            "5.1.1 No such user",
            "nobody@example.com",
        )
        assert (await client.rcpt("b@example.com")).code == 250


async def test_rcpt_before_mail_raises(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
            await client.rcpt("b@example.com")
        assert caught.value.code == 503


async def test_data_without_recipients_raises_data_error(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        await client.mail("a@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await client.data(b"hello\r\n")
        assert (caught.value.code, caught.value.message) == (503, "Error: need RCPT command")
        assert (await client.noop()).code == 250


async def test_data_refused_after_the_message_raises_data_error(
    server: ServerThread, sink: Sink
) -> None:
    client = make_client(server)
    async with client:
        await client.mail("a@example.com")
        await client.rcpt("b@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await client.data(b"REJECT-ME\r\n")
        assert (caught.value.code, caught.value.message) == (554, "5.6.0 Message refused")
        assert (await client.noop()).code == 250
    assert sink.messages == []


async def test_data_str_must_be_ascii(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        await client.mail("a@example.com")
        await client.rcpt("b@example.com")
        with pytest.raises(UnicodeEncodeError):
            await client.data("caf\u00e9\r\n")
        assert (await client.data("plain text\r\n")).code == 250
    assert sink.messages == [("a@example.com", ["b@example.com"], b"plain text\r\n")]


# --- execute_command ------------------------------------------------------------------------


async def test_execute_command_returns_any_reply(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        assert await client.execute_command(b"NOOP") == (250, "OK")
        assert await client.execute_command(b"HELO", b"raw.example") == (250, HOST)
        response = await client.execute_command(b"XYZZY")
        assert response == (500, 'Error: command "XYZZY" not recognized')
        assert client.is_connected


async def test_execute_command_takes_a_whole_line_as_aiosmtplib_does(
    server: ServerThread,
) -> None:
    client = make_client(server)
    async with client:
        assert await client.execute_command(b"HELO raw.example") == (250, HOST)
        assert (await client.execute_command(b"MAIL FROM:<a@example.com>")).code == 250
        assert (await client.execute_command(b"RCPT", b"TO:<b@example.com>")).code == 250


@pytest.mark.parametrize("argument", [b"x\r\nQUIT", b"x\nQUIT", b"x\x00y", b"x\x7fy"])
@pytest.mark.parametrize("whole_line", [False, True])
async def test_execute_command_refuses_control_characters(
    server: ServerThread, argument: bytes, whole_line: bool
) -> None:
    client = make_client(server)
    async with client:
        args = (b"NOOP " + argument,) if whole_line else (b"NOOP", argument)
        with pytest.raises(ValueError):  # noqa: PT011 - the text is the client's own
            await client.execute_command(*args)
        assert (await client.noop()).code == 250
        assert client.is_connected


async def test_execute_command_sees_the_server_closing(server: ServerThread) -> None:
    client = make_client(server)
    await client.connect()
    assert await client.execute_command(b"QUIT") == (221, "Bye")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.noop()
    assert not client.is_connected
