"""Attack probes on SMTPUTF8 (RFC 6531) addresses, over real sockets, with
``enable_SMTPUTF8`` and without it.

Invalid UTF-8 (stray octets, overlong forms such as C0 AF, encoded surrogates) is
a malformed address (553); NUL and control characters are refused after decoding
and never echoed raw; without SMTPUTF8 any non-ASCII octet is "strict ASCII
mode".  Unicode normalisation is not the server's business: an address is kept
exactly as sent, NFC or NFD.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import pytest

from smtpwire.server.smtp import SMTP
from support.server import EnvelopeKeeper, RawClient, replies_until_close, serving, text

HOST = "mx.test"
MALFORMED = "553 5.1.3 Error: malformed address"
STRICT_ASCII = "500 Error: strict ASCII mode"
NFC = unicodedata.normalize("NFC", "jos\u00e9@ex\u00e4mple.com")
NFD = unicodedata.normalize("NFD", NFC)

BAD_LOCAL_PARTS = {
    "stray-ff": b"\xff",
    "overlong-slash": b"\xc0\xaf",
    "overlong-nul": b"\xc0\x80",
    "encoded-surrogate": b"\xed\xa0\x80",
    "truncated": b"\xe2\x82",
    "nul": b"a\x00b",
    "soh": b"a\x01b",
    "del": b"a\x7fb",
    "c1-nel": "a\u0085b".encode(),
}


def server_factory(handler: Any, **kwargs: Any) -> Callable[[], SMTP]:
    kwargs.setdefault("hostname", HOST)
    return lambda: SMTP(handler, **kwargs)


def ehlo(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply().code == 220
    assert client.command("EHLO client.example").code == 250
    return client


def raw_reply(client: RawClient, line: bytes) -> bytes:
    """The reply's octets as sent (one-line replies only)."""
    client.send(line + b"\r\n")
    data = b""
    for _ in range(100):  # bounded: each read waits at most the socket's timeout
        data += client.sock.recv(65536)
        if data.endswith(b"\r\n"):
            break
    assert data.count(b"\r\n") == 1, data
    return data


# -- invalid UTF-8, NUL and control characters ------------------------------------------------


@pytest.mark.parametrize("local", list(BAD_LOCAL_PARTS.values()), ids=list(BAD_LOCAL_PARTS))
def test_bad_sender_and_recipient_are_malformed_and_nothing_is_delivered(local: bytes) -> None:
    handler = EnvelopeKeeper()
    with (
        serving(server_factory(handler, enable_SMTPUTF8=True)) as server,
        ehlo(server.port) as client,
    ):
        assert raw_reply(client, b"MAIL FROM:<" + local + b"@x> SMTPUTF8") == (
            MALFORMED.encode() + b"\r\n"
        )
        assert text(client.command("MAIL FROM:<a@x> SMTPUTF8")) == "250 OK"
        assert raw_reply(client, b"RCPT TO:<" + local + b"@x>") == MALFORMED.encode() + b"\r\n"
        # The refused recipient was never added: DATA has none.
        assert text(client.command("DATA")) == "503 Error: need RCPT command"
        assert text(client.command("RCPT TO:<ok@x>")) == "250 OK"
        client.send(b"DATA\r\nhi\r\n.\r\nQUIT\r\n")
        assert replies_until_close(client) == [
            "354 End data with <CR><LF>.<CR><LF>",
            "250 OK",
            "221 Bye",
        ]
    assert [(envelope.mail_from, envelope.rcpt_tos) for envelope in handler.envelopes] == [
        ("a@x", ["ok@x"])
    ]


@pytest.mark.parametrize("local", list(BAD_LOCAL_PARTS.values()), ids=list(BAD_LOCAL_PARTS))
def test_without_smtputf8_non_ascii_is_strict_ascii_and_controls_malformed(local: bytes) -> None:
    handler = EnvelopeKeeper()
    expected = STRICT_ASCII if not local.isascii() else MALFORMED
    with serving(server_factory(handler)) as server, ehlo(server.port) as client:
        assert text(client.command(b"MAIL FROM:<" + local + b"@x>")) == expected
        assert text(client.command("MAIL FROM:<a@x>")) == "250 OK"
        assert text(client.command(b"RCPT TO:<" + local + b"@x>")) == expected
        assert text(client.command("NOOP")) == "250 OK"
    assert handler.envelopes == []


def test_smtputf8_address_without_smtputf8_offered_is_refused() -> None:
    with (
        serving(server_factory(EnvelopeKeeper())) as server,
        ehlo(server.port) as client,
    ):
        assert text(client.command(f"MAIL FROM:<{NFC}>".encode())) == STRICT_ASCII
        assert text(client.command(b"MAIL FROM:<a@x> SMTPUTF8")) == ("501 Error: SMTPUTF8 disabled")


@pytest.mark.parametrize(
    "argument",
    [b"<a\x00b@x>", b"a\x01b", b"a\x1bb[2J"],
    ids=["nul", "soh", "escape-sequence"],
)
def test_vrfy_never_echoes_c0_controls(argument: bytes) -> None:
    with (
        serving(server_factory(EnvelopeKeeper(), enable_SMTPUTF8=True)) as server,
        ehlo(server.port) as client,
    ):
        reply = raw_reply(client, b"VRFY " + argument)
        assert (
            reply
            == b"502 Could not VRFY "
            + bytes(0x3F if octet < 0x20 or octet == 0x7F else octet for octet in argument)
            + b"\r\n"
        )
        assert text(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize("argument", [b"\xff", b"\xc0\xaf"], ids=["stray-ff", "overlong"])
def test_vrfy_with_invalid_utf8_is_refused_without_an_internal_error(argument: bytes) -> None:
    with (
        serving(server_factory(EnvelopeKeeper(), enable_SMTPUTF8=True)) as server,
        ehlo(server.port) as client,
    ):
        reply = raw_reply(client, b"VRFY " + argument)
        assert reply == b"502 Could not VRFY " + b"?" * len(argument) + b"\r\n"


def test_vrfy_never_echoes_c1_controls() -> None:
    with (
        serving(server_factory(EnvelopeKeeper(), enable_SMTPUTF8=True)) as server,
        ehlo(server.port) as client,
    ):
        reply = raw_reply(client, "VRFY a\u0085b".encode())
        assert reply == b"502 Could not VRFY a?b\r\n"


def test_modern_replies_to_bad_addresses_carry_no_raw_octets() -> None:
    with (
        serving(server_factory(EnvelopeKeeper(), modern=True, enable_SMTPUTF8=True)) as server,
        ehlo(server.port) as client,
    ):
        for local in BAD_LOCAL_PARTS.values():
            reply = raw_reply(client, b"MAIL FROM:<" + local + b"@x> SMTPUTF8")
            assert reply == MALFORMED.encode() + b"\r\n"
        assert text(client.command("NOOP")) == "250 2.0.0 OK"


# -- normalisation forms -------------------------------------------------------------------------


def test_nfc_and_nfd_addresses_are_stored_as_sent_byte_for_byte() -> None:
    assert NFC != NFD
    handler = EnvelopeKeeper()
    with (
        serving(server_factory(handler, enable_SMTPUTF8=True)) as server,
        ehlo(server.port) as client,
    ):
        client.send(
            f"MAIL FROM:<{NFD}> SMTPUTF8\r\nRCPT TO:<{NFC}>\r\nRCPT TO:<{NFD}>\r\n".encode()
            + b"DATA\r\nhi\r\n.\r\n"
        )
        assert [text(reply) for reply in client.replies(5)] == [
            "250 OK",
            "250 OK",
            "250 OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 OK",
        ]
    (envelope,) = handler.envelopes
    assert envelope.mail_from.encode() == NFD.encode()
    assert [address.encode() for address in envelope.rcpt_tos] == [NFC.encode(), NFD.encode()]
    assert envelope.smtp_utf8 is True
