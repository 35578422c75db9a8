"""Sending mail over real sockets against smtpwire.server: ``sendmail`` (envelope,
content exactly as delivered, refusals, SIZE, SMTPUTF8), ``send_message`` (the
envelope from the headers, Bcc kept off the wire, SMTPUTF8) and the module-level
``send()``.  Pipelining and streamed messages have their own files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from smtpwire.server.smtp import SMTP as ServerSMTP
from support.client_harness import RefusingHandler, make_client
from support.server import ServerThread, serving

HOST = "testhost"
WAIT = 10.0
UTF8_RECIPIENT = "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"  # 用户@例子.广告
UTF8_SENDER = "jos\u00e9@ex\u00e4mple.com"
NOT_SUPPORTED = (
    "An address containing non-ASCII characters was provided, but SMTPUTF8 is not "
    "supported by this server"
)


@dataclass(frozen=True)
class Delivered:
    mail_from: str | None
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes
    smtp_utf8: bool


class Sink(RefusingHandler):
    """Records every delivered message; refuses senders starting "refused", recipients
    starting "nobody", and messages holding ``REJECT-ME``."""

    accepted = "250 2.0.0 Queued as 42"
    name_the_refused_recipient = True

    def __init__(self) -> None:
        self.messages: list[Delivered] = []

    def record(self, envelope: Any) -> None:
        self.messages.append(
            Delivered(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                envelope.original_content,
                envelope.smtp_utf8,
            )
        )


class RecordingServer(ServerSMTP):
    """Keeps every chunk that arrives, to check the bytes on the wire."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(bytes(data))
        super().data_received(data)


@contextmanager
def smtp_server(sink: Sink, **kwargs: Any) -> Iterator[ServerThread]:
    kwargs.setdefault("hostname", HOST)
    with serving(lambda: RecordingServer(sink, **kwargs)) as server:
        yield server


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def server(sink: Sink) -> Iterator[ServerThread]:
    with smtp_server(sink) as running:
        yield running


def wire(server: ServerThread, index: int = 0) -> bytes:
    """Everything the server's ``index``-th connection received."""
    return b"".join(server.call(lambda: list(server.protocols[index].received)))


def commands(server: ServerThread, index: int = 0) -> list[bytes]:
    """The command verbs the server received (outside message content)."""
    verbs = []
    in_data = False
    for line in wire(server, index).split(b"\r\n"):
        if in_data:
            in_data = line != b"."
            continue
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
        if verb:
            verbs.append(verb)
        in_data = verb == b"DATA"
    return verbs


# --- sendmail -------------------------------------------------------------------------------


async def test_sendmail_delivers_envelope_and_content(server: ServerThread, sink: Sink) -> None:
    message = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody line\r\n"
    client = make_client(server)
    async with client:
        result = await client.sendmail("a@example.com", ["b@example.com", "c@example.com"], message)
    assert result == ({}, "2.0.0 Queued as 42")
    assert sink.messages == [
        Delivered(
            "a@example.com",
            ["b@example.com", "c@example.com"],
            [f"SIZE={len(message)}"],
            message,
            False,
        )
    ]


async def test_sendmail_accepts_one_recipient_as_str(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        await client.sendmail("a@example.com", "b@example.com", "plain\r\n")
    assert [m.rcpt_tos for m in sink.messages] == [["b@example.com"]]


async def test_sendmail_accepts_bracketed_and_display_name_free_addresses(
    server: ServerThread, sink: Sink
) -> None:
    client = make_client(server)
    async with client:
        await client.sendmail("<a@example.com>", ["<b@example.com>"], b"x\r\n")
    assert (sink.messages[0].mail_from, sink.messages[0].rcpt_tos) == (
        "a@example.com",
        ["b@example.com"],
    )


@pytest.mark.parametrize(
    ("message", "delivered"),
    [
        (b"no final newline", b"no final newline\r\n"),
        (b"bare\nline feeds\n", b"bare\r\nline feeds\r\n"),
        (b"bare\rcarriage returns\r", b"bare\r\ncarriage returns\r\n"),
        (b"mixed\r\n\n\r\r\nend", b"mixed\r\n\r\n\r\n\r\nend\r\n"),
        (
            b".leading dot\r\n..two dots\r\n.\r\nlast",
            b".leading dot\r\n..two dots\r\n.\r\nlast\r\n",
        ),
        (b"dot after bare LF\n.\n", b"dot after bare LF\r\n.\r\n"),
        (b"", b"\r\n"),  # as aiosmtplib: a line ending is always added
    ],
    ids=["no-final-crlf", "bare-lf", "bare-cr", "mixed", "dots", "dot-after-lf", "empty"],
)
async def test_sendmail_normalises_and_stuffs(
    server: ServerThread, sink: Sink, message: bytes, delivered: bytes
) -> None:
    client = make_client(server)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], message)
        # A second message on the same connection: the first one ended exactly.
        await client.sendmail("a@example.com", ["b@example.com"], b"second\r\n")
    assert [m.content for m in sink.messages] == [delivered, b"second\r\n"]


async def test_sendmail_dot_stuffs_on_the_wire(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], b".\r\n.x\nend")
    data = wire(server)
    start = data.index(b"DATA\r\n") + len(b"DATA\r\n")
    assert data[start:].startswith(b"..\r\n..x\r\nend\r\n.\r\n")
    assert sink.messages[0].content == b".\r\n.x\r\nend\r\n"


async def test_sendmail_partial_refusal_returns_the_refused(
    server: ServerThread, sink: Sink
) -> None:
    client = make_client(server)
    async with client:
        refused, message = await client.sendmail(
            "a@example.com",
            ["b@example.com", "nobody1@example.com", "c@example.com", "nobody2@example.com"],
            b"partial\r\n",
        )
    assert message == "2.0.0 Queued as 42"
    assert refused == {
        "nobody1@example.com": (550, "5.1.1 No such user nobody1@example.com"),
        "nobody2@example.com": (550, "5.1.1 No such user nobody2@example.com"),
    }
    assert all(isinstance(r, aiosmtplib.SMTPResponse) for r in refused.values())
    assert [m.rcpt_tos for m in sink.messages] == [["b@example.com", "c@example.com"]]


async def test_sendmail_all_refused_raises_with_a_list(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
            await client.sendmail(
                "a@example.com", ["nobody1@example.com", "nobody2@example.com"], b"x\r\n"
            )
        errors = caught.value.recipients
        assert isinstance(errors, list)
        assert [(e.recipient, e.code, e.message) for e in errors] == [
            ("nobody1@example.com", 550, "5.1.1 No such user nobody1@example.com"),
            ("nobody2@example.com", 550, "5.1.1 No such user nobody2@example.com"),
        ]
        assert all(isinstance(e, aiosmtplib.SMTPRecipientRefused) for e in errors)
        # The transaction was reset; the connection takes the next message.
        assert await client.sendmail("a@example.com", ["b@example.com"], b"next\r\n") == (
            {},
            "2.0.0 Queued as 42",
        )
    assert [m.content for m in sink.messages] == [b"next\r\n"]
    assert commands(server)[-3:] == [b"RCPT", b"DATA", b"QUIT"]
    assert b"RSET" in commands(server)


async def test_sendmail_to_no_recipients_raises_recipients_refused(
    server: ServerThread, sink: Sink
) -> None:
    """aiosmtplib raises SMTPRecipientsRefused([]) when there is no recipient
    (``len(errors) == len(recipients)`` holds for zero), so code catching that
    keeps working; the connection stays usable."""
    client = make_client(server)
    async with client:
        for recipients in ([], ()):
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
                await client.sendmail("a@example.com", recipients, b"x\r\n")
            assert caught.value.recipients == []
        await client.sendmail("a@example.com", ("b@example.com",), b"tuple\r\n")
    assert [m.content for m in sink.messages] == [b"tuple\r\n"]


async def test_sendmail_sender_refused(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await client.sendmail("refused@example.com", ["b@example.com"], b"x\r\n")
        assert (caught.value.code, caught.value.sender) == (553, "refused@example.com")
        assert client.is_connected
        await client.sendmail("a@example.com", ["b@example.com"], b"after\r\n")
    assert [m.content for m in sink.messages] == [b"after\r\n"]
    assert b"RCPT" not in commands(server)[: commands(server).index(b"RSET")]


async def test_sendmail_data_refused(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await client.sendmail("a@example.com", ["b@example.com"], b"REJECT-ME\r\n")
        assert (caught.value.code, caught.value.message) == (554, "5.6.0 Message refused")
        await client.sendmail("a@example.com", ["b@example.com"], b"fine\r\n")
    assert [m.content for m in sink.messages] == [b"fine\r\n"]


async def test_sendmail_checks_every_address_before_writing(server: ServerThread) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(ValueError):  # noqa: PT011 - any ValueError; nothing written
            await client.sendmail(
                "a@example.com", ["b@example.com", "c@example.com\r\nRSET"], b"x\r\n"
            )
        with pytest.raises(ValueError):  # noqa: PT011
            await client.sendmail("a@example.com> SIZE=1", ["b@example.com"], b"x\r\n")
        assert client.is_connected
    assert b"MAIL" not in commands(server)


# --- SIZE ---------------------------------------------------------------------------------------


async def test_size_option_goes_first(server: ServerThread, sink: Sink) -> None:
    message = b"Subject: sized\r\n\r\nbody\r\n"
    client = make_client(server)
    async with client:
        await client.sendmail(
            "a@example.com", ["b@example.com"], message, mail_options=["BODY=8BITMIME"]
        )
    assert sink.messages[0].mail_options == [f"SIZE={len(message)}", "BODY=8BITMIME"]
    assert f"MAIL FROM:<a@example.com> SIZE={len(message)} BODY=8BITMIME\r\n".encode() in wire(
        server
    )


async def test_size_counts_octets_after_line_ending_normalisation(
    server: ServerThread, sink: Sink
) -> None:
    client = make_client(server)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], b"one\ntwo\rthree\r\n")
    normalised = b"one\r\ntwo\r\nthree\r\n"
    assert sink.messages[0].mail_options == [f"SIZE={len(normalised)}"]


async def test_size_does_not_count_stuffed_dots(server: ServerThread, sink: Sink) -> None:
    # RFC 1870 section 3: the size excludes "doubled quoting dots".
    message = b".one\r\n.two\r\n"
    client = make_client(server)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], message)
    assert sink.messages[0].mail_options == [f"SIZE={len(message)}"]


async def test_size_given_by_the_caller_is_not_doubled(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], b"x\r\n", mail_options=["SIZE=3"])
    assert sink.messages[0].mail_options == ["SIZE=3"]


async def test_no_size_without_the_extension(sink: Sink) -> None:
    with smtp_server(sink, data_size_limit=None) as server:
        client = make_client(server)
        async with client:
            await client.ehlo()
            assert not client.supports_extension("size")
            await client.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
    assert sink.messages[0].mail_options == []


async def test_message_larger_than_the_server_limit_is_refused_at_mail(sink: Sink) -> None:
    with smtp_server(sink, data_size_limit=100) as server:
        client = make_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.sendmail("a@example.com", ["b@example.com"], b"x" * 200 + b"\r\n")
            assert caught.value.code == 552
            await client.sendmail("a@example.com", ["b@example.com"], b"small\r\n")
        assert b"DATA" in commands(server)
    assert [m.content for m in sink.messages] == [b"small\r\n"]


# --- SMTPUTF8 with sendmail ------------------------------------------------------------------


async def test_sendmail_smtputf8(sink: Sink) -> None:
    with smtp_server(sink, enable_SMTPUTF8=True) as server:
        client = make_client(server)
        async with client:
            await client.sendmail(
                UTF8_SENDER, [UTF8_RECIPIENT], b"utf8\r\n", mail_options=["SMTPUTF8"]
            )
    delivered = sink.messages[0]
    assert (delivered.mail_from, delivered.rcpt_tos) == (UTF8_SENDER, [UTF8_RECIPIENT])
    assert delivered.smtp_utf8
    assert delivered.mail_options == ["SIZE=6", "SMTPUTF8"]


async def test_sendmail_smtputf8_needs_the_extension(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPNotSupported):
            await client.sendmail(
                UTF8_SENDER, [UTF8_RECIPIENT], b"utf8\r\n", mail_options=["SMTPUTF8"]
            )
        assert client.is_connected
    assert b"MAIL" not in commands(server)
    assert sink.messages == []


# --- send_message ------------------------------------------------------------------------------


def email_message(**headers: str) -> EmailMessage:
    message = EmailMessage()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Hello there.\n")
    return message


async def test_send_message_takes_the_envelope_from_headers(
    server: ServerThread, sink: Sink
) -> None:
    message = email_message(
        From="Anne <anne@example.com>",
        To="Bob <bob@example.com>, carol@example.com",
        Cc="dave@example.com",
        Bcc="Secret <eve@example.com>",
        Subject="headers",
    )
    client = make_client(server)
    async with client:
        assert await client.send_message(message) == ({}, "2.0.0 Queued as 42")
    delivered = sink.messages[0]
    assert delivered.mail_from == "anne@example.com"
    assert delivered.rcpt_tos == [
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "eve@example.com",
    ]
    assert delivered.mail_options == [f"SIZE={len(delivered.content)}", "BODY=8BITMIME"]
    assert b"Bcc" not in delivered.content
    assert b"eve@example.com" not in delivered.content
    parsed = message_from_bytes(delivered.content, policy=default_policy)
    assert parsed["To"] == "Bob <bob@example.com>, carol@example.com"
    assert parsed["Subject"] == "headers"
    assert delivered.content.endswith(b"\r\n\r\nHello there.\r\n")
    assert message["Bcc"] == "Secret <eve@example.com>"  # the caller's copy keeps it


async def test_send_message_prefers_sender_header(server: ServerThread, sink: Sink) -> None:
    message = email_message(
        From="author@example.com", Sender="secretary@example.com", To="b@example.com"
    )
    client = make_client(server)
    async with client:
        await client.send_message(message)
    assert sink.messages[0].mail_from == "secretary@example.com"


async def test_send_message_uses_resent_headers(server: ServerThread, sink: Sink) -> None:
    message = email_message(
        From="author@example.com",
        To="original@example.com",
        Resent_Date="Mon, 01 Jan 2024 00:00:00 +0000",
        Resent_From="forwarder@example.com",
        Resent_To="new@example.com",
    )
    client = make_client(server)
    async with client:
        await client.send_message(message)
    assert (sink.messages[0].mail_from, sink.messages[0].rcpt_tos) == (
        "forwarder@example.com",
        ["new@example.com"],
    )


async def test_send_message_with_explicit_envelope_still_strips_bcc(
    server: ServerThread, sink: Sink
) -> None:
    message = email_message(From="a@example.com", To="b@example.com", Bcc="hidden@example.com")
    client = make_client(server)
    async with client:
        await client.send_message(
            message, sender="bounce@example.com", recipients="other@example.com"
        )
    delivered = sink.messages[0]
    assert (delivered.mail_from, delivered.rcpt_tos) == (
        "bounce@example.com",
        ["other@example.com"],
    )
    assert b"hidden@example.com" not in delivered.content


async def test_send_message_compat32_message(server: ServerThread, sink: Sink) -> None:
    message = Message()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Bcc"] = "c@example.com"
    message["Subject"] = "old"
    message.set_payload("From the old API\n.a dot line\n")
    client = make_client(server)
    async with client:
        await client.send_message(message)
    delivered = sink.messages[0]
    assert delivered.rcpt_tos == ["b@example.com", "c@example.com"]
    # Neither ">From" mangling nor a stuffed dot reaches the recipient.
    assert delivered.content.endswith(b"\r\n\r\nFrom the old API\r\n.a dot line\r\n")
    assert b"Bcc" not in delivered.content


async def test_send_message_partial_refusal(server: ServerThread, sink: Sink) -> None:
    message = email_message(From="a@example.com", To="b@example.com, nobody@example.com")
    client = make_client(server)
    async with client:
        refused, _ = await client.send_message(message)
    assert list(refused) == ["nobody@example.com"]
    assert sink.messages[0].rcpt_tos == ["b@example.com"]


async def test_send_message_does_not_repeat_options_the_caller_gave(
    server: ServerThread, sink: Sink
) -> None:
    message = email_message(From="a@example.com", To="b@example.com")
    client = make_client(server)
    async with client:
        await client.send_message(message, mail_options=["body=8bitmime"])
    mail_lines = [line for line in wire(server).split(b"\r\n") if line.startswith(b"MAIL")]
    assert len(mail_lines) == 1
    assert mail_lines[0].upper().count(b"BODY=8BITMIME") == 1


async def test_send_message_without_from_raises(server: ServerThread) -> None:
    message = email_message(To="b@example.com")
    client = make_client(server)
    async with client:
        with pytest.raises(ValueError, match="No From header provided in message"):
            await client.send_message(message)


async def test_send_message_without_recipients_raises(server: ServerThread) -> None:
    message = email_message(From="a@example.com")
    client = make_client(server)
    async with client:
        with pytest.raises(ValueError, match="No recipient headers provided in message"):
            await client.send_message(message)


async def test_send_message_smtputf8(sink: Sink) -> None:
    message = email_message(From=UTF8_SENDER, To=f"User <{UTF8_RECIPIENT}>", Subject="utf8")
    with smtp_server(sink, enable_SMTPUTF8=True) as server:
        client = make_client(server)
        async with client:
            await client.send_message(message)
        assert f"RCPT TO:<{UTF8_RECIPIENT}>\r\n".encode() in wire(server)
    delivered = sink.messages[0]
    assert (delivered.mail_from, delivered.rcpt_tos) == (UTF8_SENDER, [UTF8_RECIPIENT])
    assert delivered.smtp_utf8
    assert delivered.mail_options == [
        f"SIZE={len(delivered.content)}",
        "SMTPUTF8",
        "BODY=8BITMIME",
    ]
    assert f"To: User <{UTF8_RECIPIENT}>".encode() in delivered.content  # raw UTF-8 header


async def test_send_message_smtputf8_not_supported(server: ServerThread, sink: Sink) -> None:
    message = email_message(From="a@example.com", To=UTF8_RECIPIENT)
    client = make_client(server)
    async with client:
        with pytest.raises(aiosmtplib.SMTPNotSupported, match=NOT_SUPPORTED):
            await client.send_message(message)
        assert client.is_connected
        await client.send_message(email_message(From="a@example.com", To="b@example.com"))
    assert [m.rcpt_tos for m in sink.messages] == [["b@example.com"]]


async def test_non_ascii_display_name_needs_no_smtputf8(server: ServerThread, sink: Sink) -> None:
    message = email_message(From="J\u00f6s\u00e9 <jose@example.com>", To="b@example.com")
    client = make_client(server)
    async with client:
        await client.send_message(message)
    delivered = sink.messages[0]
    assert "SMTPUTF8" not in delivered.mail_options
    assert delivered.content.isascii()  # the name travels RFC 2047-encoded
    parsed = message_from_bytes(delivered.content, policy=default_policy)
    assert parsed["From"] == "J\u00f6s\u00e9 <jose@example.com>"


# --- send() ------------------------------------------------------------------------------------


async def test_send_an_email_message(server: ServerThread, sink: Sink) -> None:
    message = email_message(From="a@example.com", To="b@example.com", Bcc="c@example.com")
    result = await aiosmtplib.send(
        message, hostname="127.0.0.1", port=server.port, local_hostname="one.shot", timeout=WAIT
    )
    assert result == ({}, "2.0.0 Queued as 42")
    assert sink.messages[0].rcpt_tos == ["b@example.com", "c@example.com"]
    assert b"c@example.com" not in sink.messages[0].content
    assert commands(server)[-1] == b"QUIT"
    assert server.call(lambda: server.protocols[0].session.host_name) == "one.shot"


@pytest.mark.parametrize("message", [b"raw bytes\r\n", "raw str\r\n"], ids=["bytes", "str"])
async def test_send_raw_with_envelope(
    server: ServerThread, sink: Sink, message: str | bytes
) -> None:
    result = await aiosmtplib.send(
        message,
        sender="a@example.com",
        recipients=["b@example.com", "nobody@example.com"],
        hostname="127.0.0.1",
        port=server.port,
        timeout=WAIT,
    )
    assert result[0] == {"nobody@example.com": (550, "5.1.1 No such user nobody@example.com")}
    raw = message if isinstance(message, bytes) else message.encode()
    assert sink.messages == [
        Delivered("a@example.com", ["b@example.com"], [f"SIZE={len(raw)}"], raw, False)
    ]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({}, "Recipients must be provided with raw messages."),
        ({"sender": "a@example.com"}, "Recipients must be provided with raw messages."),
        ({"recipients": ["b@example.com"]}, "Sender must be provided with raw messages."),
        ({"recipients": []}, "Recipients must be provided with raw messages."),
    ],
)
@pytest.mark.parametrize("message", [b"raw\r\n", "raw\r\n"], ids=["bytes", "str"])
async def test_send_raw_needs_sender_and_recipients(
    server: ServerThread, message: str | bytes, kwargs: dict[str, Any], text: str
) -> None:
    with pytest.raises(ValueError, match=f"^{text}$"):
        await aiosmtplib.send(message, hostname="127.0.0.1", port=server.port, **kwargs)
    assert server.protocols == []  # refused before connecting


async def test_send_all_refused_raises(server: ServerThread, sink: Sink) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(
            b"x\r\n",
            sender="a@example.com",
            recipients="nobody@example.com",
            hostname="127.0.0.1",
            port=server.port,
            timeout=WAIT,
        )
    assert sink.messages == []
