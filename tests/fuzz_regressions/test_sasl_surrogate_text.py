"""Fuzz finding (target ``sasl``), fixed: SASL decoders given text that holds a
lone surrogate raised UnicodeEncodeError instead of SASLDecodeError.

Such text is what the server hands them: under SMTPUTF8 the gate decodes a
command's octets with ``surrogateescape`` (server_rules.decode_text), and the
server's AUTH passes ``AUTH PLAIN <initial-response>``'s second word to
``b64decode`` as a str (server/_auth.py ``_initial_response``), so a client that
sends a non-UTF-8 octet there gets an unexpected exception instead of
``501 5.5.2 Can't decode base64``.
"""

from __future__ import annotations

import pytest

from properties import check_sasl
from smtpwire.common.errors import SASLDecodeError
from smtpwire.common.sasl import b64decode
from smtpwire.server.handlers import Sink
from smtpwire.server.smtp import SMTP
from support.server import RawClient, serving

# The target's input: option octet 0x01 (decode the payload as the server would,
# UTF-8 with surrogateescape), then the payload: base64 text with one octet that
# is not UTF-8.
REPRODUCER = b"\x01QUJD\xff"


def test_reproducer_passes_the_sasl_properties() -> None:
    check_sasl(REPRODUCER)


def test_b64decode_refuses_surrogate_text_with_sasl_decode_error() -> None:
    with pytest.raises(SASLDecodeError):
        b64decode("QUJD\udcff")


def test_a_non_utf8_octet_in_auth_plain_gets_the_base64_error() -> None:
    """Over the wire, with SMTPUTF8 on: 501, not a 500 naming UnicodeEncodeError."""
    with (
        serving(lambda: SMTP(Sink(), enable_SMTPUTF8=True, auth_require_tls=False)) as server,
        RawClient(server.port) as client,
    ):
        assert client.reply().code == 220
        assert client.command("EHLO c.example").code == 250
        client.send(b"AUTH PLAIN QUJD\xff\r\n")
        reply = client.reply()
    assert (reply.code, reply.lines[-1]) == (501, "5.5.2 Can't decode base64")
