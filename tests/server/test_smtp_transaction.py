"""The mail transaction (MAIL, RCPT, DATA) against aiosmtpd 1.4.6's exact wire texts
and envelope conventions, with raw bytes and with Python's smtplib."""

from __future__ import annotations

import email.policy
import smtplib
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from smtpwire.server.smtp import SMTP, Envelope, Session
from support.server import RawClient, greeted, serving

HOST = "testhost"
MAIL_SYNTAX = "501 Syntax: MAIL FROM: <address>"
RCPT_SYNTAX = "501 Syntax: RCPT TO: <address>"
ESMTP_SUFFIX = " [SP <mail-parameters>]"
MALFORMED = "553 5.1.3 Error: malformed address"


class Recorder:
    """Keeps every delivered envelope (and the session it came in)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.sessions: list[Session] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.sessions.append(session)
        return "250 OK"


def smtp(handler: Any = None, **kwargs: Any) -> Any:
    kwargs.setdefault("hostname", HOST)
    handler = handler if handler is not None else Recorder()
    return lambda: SMTP(handler, **kwargs)


def envelope_of(server: Any) -> Envelope:
    envelope: Envelope = server.call(lambda: server.protocols[0].envelope)
    return envelope


# -- MAIL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line", ["MAIL FROM:<anne@example.com>", "RCPT TO:<anne@example.com>", "DATA"]
)
def test_transaction_commands_need_helo_first(line: str) -> None:
    with serving(smtp()) as server, RawClient(server.port) as client:
        client.reply()
        assert str(client.command(line)) == "503 Error: send HELO first"


@pytest.mark.parametrize(("greeting", "suffix"), [("HELO", ""), ("EHLO", ESMTP_SUFFIX)])
@pytest.mark.parametrize(
    "line",
    [
        "MAIL",
        "MAIL <anne@example.com>",
        "MAIL FROM:",
        "MAIL FROM:   ",
        "MAIL TO:<anne@example.com>",
        "MAIL FROM: Anne <anne@example.com>",
    ],
    ids=["no-arg", "no-from", "no-address", "blank-address", "to", "display-name"],
)
def test_mail_syntax_errors(greeting: str, suffix: str, line: str) -> None:
    with serving(smtp()) as server, greeted(server.port, f"{greeting} c.example") as client:
        assert str(client.command(line)) == MAIL_SYNTAX + suffix
        assert envelope_of(server).mail_from is None


def test_mail_parameters_after_helo_are_a_syntax_error() -> None:
    with serving(smtp()) as server, greeted(server.port, "HELO c.example") as client:
        assert str(client.command("MAIL FROM:<anne@example.com> SIZE=10000")) == MAIL_SYNTAX


@pytest.mark.parametrize(
    "params",
    ["SIZE 10000", "SIZE", "#$%=!@#", "SIZE = 10000", "SIZE=abc", "SIZE=-1", "SIZE="],
)
def test_mail_parameter_syntax_errors(params: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        reply = client.command(f"MAIL FROM:<anne@example.com> {params}")
        assert str(reply) == MAIL_SYNTAX + ESMTP_SUFFIX


@pytest.mark.parametrize("greeting", ["HELO c.example", "EHLO c.example"])
@pytest.mark.parametrize("address", ["<@example.com>", "<johnathon@>"])
def test_mail_malformed_address(greeting: str, address: str) -> None:
    with serving(smtp()) as server, greeted(server.port, greeting) as client:
        assert str(client.command(f"MAIL FROM: {address}")) == MALFORMED
        if greeting.startswith("EHLO"):
            assert str(client.command(f"MAIL FROM: {address} SIZE=28113")) == MALFORMED


@pytest.mark.parametrize(
    ("argument", "mail_from"),
    [
        ("<anne@example.com>", "anne@example.com"),
        ("anne@example.com", "anne@example.com"),
        ("   <anne@example.com>", "anne@example.com"),
        ("<anne+promo@example.com>", "anne+promo@example.com"),
        ("<anne@[127.0.0.1]>", "anne@[127.0.0.1]"),
        ("<@example.org:anne@example.com>", "anne@example.com"),
        ('<""@example.com>', '""@example.com'),
        ('<"anne arthur"@example.com>', '"anne arthur"@example.com'),
        ("<Postmaster>", "Postmaster"),
    ],
)
def test_mail_address_stored_as_aiosmtpd_does(argument: str, mail_from: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command(f"MAIL FROM:{argument}")) == "250 OK"
        assert envelope_of(server).mail_from == mail_from


@pytest.mark.parametrize(
    "argument",
    [
        "anne(comment)@example.com",
        "(comment)anne@example.com",
        "<anne@example.com(comment)>",
        "<a b@example.com>",
    ],
    ids=["comment-local", "comment-first", "comment-domain", "space"],
)
def test_rfc5322_only_addresses_are_malformed(argument: str) -> None:
    """aiosmtpd's header parser accepts these (normalised); smtpwire's RFC 5321
    parser refuses them, as docs/migrating.md ("Addresses") documents."""
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command(f"MAIL FROM:{argument}")) == MALFORMED
        assert client.command("MAIL FROM:<anne@example.com>").code == 250
        assert str(client.command(f"RCPT TO:{argument}")) == MALFORMED
        assert envelope_of(server).rcpt_tos == []


@pytest.mark.parametrize("line", ["MAIL FROM:<>", "MAIL FROM: <>", "mail from:<>"])
def test_null_sender_is_stored_as_angle_brackets(line: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command(line)) == "250 OK"
        assert envelope_of(server).mail_from == "<>"
        assert str(client.command("MAIL FROM:<anne@example.com>")) == (
            "503 Error: nested MAIL command"
        )
        assert str(client.command("RCPT TO:<bart@example.com>")) == "250 OK"


def test_nested_mail() -> None:
    with serving(smtp()) as server, greeted(server.port, "HELO c.example") as client:
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"
        assert str(client.command("MAIL FROM:<bart@example.com>")) == (
            "503 Error: nested MAIL command"
        )
        assert envelope_of(server).mail_from == "anne@example.com"


@pytest.mark.parametrize(
    ("params", "options"),
    [
        ("BODY=7BIT", ["BODY=7BIT"]),
        ("BODY=8BITMIME", ["BODY=8BITMIME"]),
        ("body=8bitmime", ["BODY=8BITMIME"]),
        ("SIZE=10000", ["SIZE=10000"]),
        ("size=100 body=7bit", ["SIZE=100", "BODY=7BIT"]),
        ("  SIZE=10000  ", ["SIZE=10000"]),
    ],
)
def test_mail_parameters_accepted_and_stored_upper_cased(params: str, options: list[str]) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command(f"MAIL FROM:<anne@example.com> {params}")) == "250 OK"
        envelope = envelope_of(server)
        assert envelope.mail_options == options
        assert envelope.smtp_utf8 is False


@pytest.mark.parametrize("params", ["BODY=FOOBAR", "BODY=BINARYMIME", "BODY 9BIT"])
def test_mail_bad_body(params: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command(f"MAIL FROM:<anne@example.com> {params}")) == (
            "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        )


@pytest.mark.parametrize("params", ["BODY=8BITMIME", "BODY=FOOBAR"])
def test_mail_body_is_unrecognized_when_decoding_data(params: str) -> None:
    with serving(smtp(decode_data=True)) as server, greeted(server.port) as client:
        assert str(client.command(f"MAIL FROM:<anne@example.com> {params}")) == (
            "555 MAIL FROM parameters not recognized or not implemented"
        )


def test_mail_smtputf8_enabled() -> None:
    with serving(smtp(enable_SMTPUTF8=True)) as server, greeted(server.port) as client:
        reply = client.command("MAIL FROM:<anne\u00cb@example.com> SMTPUTF8".encode())
        assert str(reply) == "250 OK"
        envelope = envelope_of(server)
        assert envelope.mail_from == "anne\u00cb@example.com"
        assert envelope.smtp_utf8 is True
        assert envelope.mail_options == ["SMTPUTF8"]


def test_undecodable_address_bytes_are_refused_with_smtputf8() -> None:
    """aiosmtpd stores an address that is not UTF-8 with surrogate escapes; RFC 6531
    allows only UTF-8, so smtpwire refuses it (documented in docs/migrating.md)
    and the next, valid, command still works."""
    handler = Recorder()
    with (
        serving(smtp(handler, enable_SMTPUTF8=True)) as server,
        greeted(server.port) as client,
    ):
        malformed = "553 5.1.3 Error: malformed address"
        assert str(client.command(b"MAIL FROM:anne\xff@example.com")) == malformed
        assert str(client.command(b"MAIL FROM:<anne@example.com>")) == "250 OK"
        assert str(client.command(b"RCPT TO:<bart\xff@example.com>")) == malformed
    assert handler.envelopes == []


@pytest.mark.parametrize(
    ("kwargs", "params", "expected"),
    [
        ({}, "SMTPUTF8", "501 Error: SMTPUTF8 disabled"),
        ({}, "SMTPUTF8=YES", "501 Error: SMTPUTF8 takes no arguments"),
        ({"enable_SMTPUTF8": True}, "SMTPUTF8=YES", "501 Error: SMTPUTF8 takes no arguments"),
    ],
)
def test_mail_smtputf8_refused(kwargs: dict[str, Any], params: str, expected: str) -> None:
    with serving(smtp(**kwargs)) as server, greeted(server.port) as client:
        assert str(client.command(f"MAIL FROM:<anne@example.com> {params}")) == expected
        assert envelope_of(server).mail_from is None


def test_mail_size_over_the_limit() -> None:
    with serving(smtp(data_size_limit=9999)) as server, greeted(server.port) as client:
        assert str(client.command("MAIL FROM:<anne@example.com> SIZE=10000")) == (
            "552 Error: message size exceeds fixed maximum message size"
        )
        assert str(client.command("MAIL FROM:<anne@example.com> SIZE=9999")) == "250 OK"


@pytest.mark.parametrize("limit", [None, 0])
def test_mail_size_unlimited(limit: int | None) -> None:
    with serving(smtp(data_size_limit=limit)) as server, greeted(server.port) as client:
        assert str(client.command("MAIL FROM:<anne@example.com> SIZE=99999999999")) == "250 OK"


@pytest.mark.parametrize("params", ["FOO=BAR", "FOO", "AUTH=<>", "RET=HDRS"])
def test_mail_unknown_parameter(params: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command(f"MAIL FROM:<anne@example.com> {params}")) == (
            "555 MAIL FROM parameters not recognized or not implemented"
        )
        assert envelope_of(server).mail_from is None


# -- RCPT --------------------------------------------------------------------------------------


def test_rcpt_needs_mail() -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command("RCPT TO:<bart@example.com>")) == "503 Error: need MAIL command"


@pytest.mark.parametrize(
    "line",
    [
        "RCPT",
        "RCPT <bart@example.com>",
        "RCPT TO:",
        "RCPT FROM:<bart@example.com>",
        "RCPT TO: <bart@example.com> SIZE=1000",
        "RCPT TO: bart <bart@example.com>",
    ],
    ids=["no-arg", "no-to", "no-address", "from", "params", "display-name"],
)
def test_rcpt_syntax_errors_after_helo(line: str) -> None:
    with serving(smtp()) as server, greeted(server.port, "HELO c.example") as client:
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command(line)) == RCPT_SYNTAX


@pytest.mark.parametrize(
    "line",
    [
        "RCPT",
        "RCPT <bart@example.com>",
        "RCPT TO:",
        "RCPT TO: <bart@example.com> #$%=!@#",
        "RCPT TO: bart <bart@example.com>",
    ],
    ids=["no-arg", "no-to", "no-address", "bad-params", "display-name"],
)
def test_rcpt_syntax_errors_after_ehlo(line: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command(line)) == RCPT_SYNTAX + ESMTP_SUFFIX


@pytest.mark.parametrize("address", ["<@example.com>", "<johnathon@>", "<>"])
def test_rcpt_malformed_address(address: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command(f"RCPT TO: {address}")) == MALFORMED
        assert envelope_of(server).rcpt_tos == []


@pytest.mark.parametrize(
    "params", ["FOOBAR", "NOTIFY=NEVER", "ORCPT=rfc822;bart@example.com", "SIZE=10"]
)
def test_rcpt_any_parameter_is_unrecognized(params: str) -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command(f"RCPT TO:<bart@example.com> {params}")) == (
            "555 RCPT TO parameters not recognized or not implemented"
        )
        assert envelope_of(server).rcpt_tos == []


def test_rcpt_tos_accumulate_in_order() -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        client.command("MAIL FROM:<anne@example.com>")
        for address in (
            "bart@example.com",
            "<cate@example.com>",
            "<Postmaster>",
            "bart@example.com",
        ):
            assert str(client.command(f"RCPT TO:{address}")) == "250 OK"
        envelope = envelope_of(server)
        assert envelope.rcpt_tos == [
            "bart@example.com",
            "cate@example.com",
            "Postmaster",
            "bart@example.com",
        ]
        assert envelope.rcpt_options == []


# -- DATA --------------------------------------------------------------------------------------


def test_data_needs_rcpt() -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert str(client.command("DATA")) == "503 Error: need RCPT command"
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command("DATA")) == "503 Error: need RCPT command"


def test_data_with_argument() -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        client.command("MAIL FROM:<anne@example.com>")
        client.command("RCPT TO:<bart@example.com>")
        assert str(client.command("DATA FOOBAR")) == "501 Syntax: DATA"
        assert str(client.command("DATA")) == "354 End data with <CR><LF>.<CR><LF>"
        assert str(client.command(".")) == "250 OK"


def start_data(client: RawClient, *recipients: str) -> None:
    assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"
    for recipient in recipients or ("bart@example.com",):
        assert str(client.command(f"RCPT TO:<{recipient}>")) == "250 OK"
    assert str(client.command("DATA")) == "354 End data with <CR><LF>.<CR><LF>"


@pytest.mark.parametrize(
    ("sent", "content"),
    [
        (b".\r\n", b""),
        (b"Subject: t\r\n\r\nbody\r\n.\r\n", b"Subject: t\r\n\r\nbody\r\n"),
        (b"..two\r\n.x\r\nlast\r\n.\r\n", b".two\r\nx\r\nlast\r\n"),
        (b"a\r\n\r\n\r\n.\r\n", b"a\r\n\r\n\r\n"),
        (b"keep\rbare\nends\r\n.\r\n", b"keep\rbare\nends\r\n"),
        (b"no. end\r\n .\r\n.\r\n", b"no. end\r\n .\r\n"),
    ],
    ids=["empty", "simple", "dot-unstuffing", "blank-lines", "bare-cr-lf", "not-terminators"],
)
def test_data_content_and_original_content(sent: bytes, content: bytes) -> None:
    handler = Recorder()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        start_data(client)
        client.send(sent)
        assert str(client.reply()) == "250 OK"
        (envelope,) = handler.envelopes
        assert envelope.content == content
        assert envelope.original_content == content
        assert envelope.mail_from == "anne@example.com"
        assert envelope.rcpt_tos == ["bart@example.com"]


def test_data_decoded_to_str() -> None:
    handler = Recorder()
    with serving(smtp(handler, decode_data=True)) as server, greeted(server.port) as client:
        start_data(client)
        client.send(b"Subject: t\r\n\r\n..dot\r\n.\r\n")
        assert str(client.reply()) == "250 OK"
        (envelope,) = handler.envelopes
        assert envelope.content == "Subject: t\r\n\r\n.dot\r\n"
        assert envelope.original_content == b"Subject: t\r\n\r\n.dot\r\n"


def test_data_decoded_as_utf8_with_smtputf8() -> None:
    handler = Recorder()
    factory = smtp(handler, decode_data=True, enable_SMTPUTF8=True)
    with serving(factory) as server, greeted(server.port) as client:
        start_data(client)
        client.send("caf\u00e9\r\n".encode() + b"\xff\r\n.\r\n")
        assert str(client.reply()) == "250 OK"
        (envelope,) = handler.envelopes
        assert envelope.content == "caf\u00e9\r\n\udcff\r\n"
        assert envelope.original_content == "caf\u00e9\r\n".encode() + b"\xff\r\n"


def test_data_non_ascii_in_strict_ascii_mode() -> None:
    handler = Recorder()
    with serving(smtp(handler, decode_data=True)) as server, greeted(server.port) as client:
        start_data(client)
        client.send("caf\u00e9\r\n.\r\n".encode())
        assert str(client.reply()) == "500 Error: strict ASCII mode"
        assert handler.envelopes == []
        # Unlike aiosmtpd the envelope is reset, as documented in docs/migrating.md.
        assert envelope_of(server).mail_from is None
        assert str(client.command("MAIL FROM:<carl@example.com>")) == "250 OK"


def test_undecoded_data_keeps_non_ascii_bytes() -> None:
    handler = Recorder()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        start_data(client)
        client.send(b"\xff\xfe\r\n.\r\n")
        assert str(client.reply()) == "250 OK"
        assert handler.envelopes[0].content == b"\xff\xfe\r\n"


def test_data_without_handle_data_hook_replies_ok() -> None:
    with serving(smtp(object())) as server, greeted(server.port) as client:
        start_data(client)
        client.send(b"hello\r\n.\r\n")
        assert str(client.reply()) == "250 OK"


def test_envelope_reset_after_delivery_and_second_transaction() -> None:
    handler = Recorder()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        start_data(client, "bart@example.com", "cate@example.com")
        client.send(b"first\r\n.\r\n")
        assert str(client.reply()) == "250 OK"
        envelope = envelope_of(server)
        assert (envelope.mail_from, envelope.rcpt_tos, envelope.content) == (None, [], None)
        # Same session: no new EHLO, and MAIL is not "nested".
        assert str(client.command("MAIL FROM:<dave@example.com> BODY=8BITMIME")) == "250 OK"
        assert str(client.command("RCPT TO:<elle@example.com>")) == "250 OK"
        assert client.command("DATA").code == 354
        client.send(b"second\r\n.\r\n")
        assert str(client.reply()) == "250 OK"
        first, second = handler.envelopes
        assert (first.mail_from, first.rcpt_tos, first.content) == (
            "anne@example.com",
            ["bart@example.com", "cate@example.com"],
            b"first\r\n",
        )
        assert (second.mail_from, second.rcpt_tos, second.content) == (
            "dave@example.com",
            ["elle@example.com"],
            b"second\r\n",
        )
        assert (first.mail_options, second.mail_options) == ([], ["BODY=8BITMIME"])
        assert handler.sessions[0] is handler.sessions[1]
        assert handler.sessions[0].host_name == "client.example"


def test_pipelined_transaction() -> None:
    handler = Recorder()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        client.send(
            b"MAIL FROM:<anne@example.com>\r\nRCPT TO:<bart@example.com>\r\nDATA\r\n"
            b"line\r\n.\r\nNOOP\r\n"
        )
        assert [str(reply) for reply in client.replies(5)] == [
            "250 OK",
            "250 OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 OK",
            "250 OK",
        ]
        assert handler.envelopes[0].content == b"line\r\n"


def test_data_too_much_mail() -> None:
    handler = Recorder()
    with serving(smtp(handler, data_size_limit=20)) as server, greeted(server.port) as client:
        start_data(client)
        client.send(b"a" * 30 + b"\r\n.\r\n")
        assert str(client.reply()) == "552 Error: Too much mail data"
        assert handler.envelopes == []
        assert envelope_of(server).mail_from is None


def test_data_line_too_long() -> None:
    handler = Recorder()
    with serving(smtp(handler)) as server, greeted(server.port) as client:
        start_data(client)
        client.send(b"a" * 5555 + b"\r\n.\r\n")
        assert str(client.reply()) == "500 Line too long (see RFC5321 4.5.3.1.6)"
        assert handler.envelopes == []
        assert str(client.command("NOOP")) == "250 OK"


# -- smtplib interop ---------------------------------------------------------------------------


def test_smtplib_sendmail_round_trip() -> None:
    handler = Recorder()
    message = "From: anne@example.com\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"
    with serving(smtp(handler)) as server, smtplib.SMTP("127.0.0.1", server.port) as client:
        refused = client.sendmail(
            "anne@example.com", ["bart@example.com", "cate@example.com"], message
        )
        assert refused == {}
    (envelope,) = handler.envelopes
    assert envelope.mail_from == "anne@example.com"
    assert envelope.rcpt_tos == ["bart@example.com", "cate@example.com"]
    assert envelope.mail_options == [f"SIZE={len(message)}"]
    assert envelope.content == message.encode()


def test_smtplib_send_message_round_trip() -> None:
    handler = Recorder()
    message = EmailMessage()
    message["From"] = "Anne <anne@example.com>"
    message["To"] = "bart@example.com, cate@example.com"
    message["Subject"] = "caf\u00e9 report"
    message.set_content("Numbers\n.\n..\nend\n")
    factory = smtp(handler, decode_data=False)
    with serving(factory) as server, smtplib.SMTP("127.0.0.1", server.port) as client:
        assert client.send_message(message) == {}
        assert client.quit() == (221, b"Bye")
    (envelope,) = handler.envelopes
    assert envelope.mail_from == "anne@example.com"
    assert envelope.rcpt_tos == ["bart@example.com", "cate@example.com"]
    assert isinstance(envelope.content, bytes)
    received = BytesParser(policy=email.policy.default).parsebytes(envelope.content)
    assert received["Subject"] == "caf\u00e9 report"
    assert received["To"] == "bart@example.com, cate@example.com"
    assert received.get_content() == "Numbers\r\n.\r\n..\r\nend\r\n"


def test_smtplib_sees_data_errors() -> None:
    with (
        serving(smtp(data_size_limit=100)) as server,
        smtplib.SMTP("127.0.0.1", server.port) as client,
    ):
        client.helo("client.example")  # no SIZE parameter: the limit applies at the end
        with pytest.raises(smtplib.SMTPDataError) as raised:
            client.sendmail("anne@example.com", ["bart@example.com"], "z" * 200)
        assert raised.value.args == (552, b"Error: Too much mail data")
        assert client.noop() == (250, b"OK")
