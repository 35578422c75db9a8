"""``smtpwire.client.auth`` and ``smtpwire.client.esmtp``: aiosmtplib's public
helpers under the same names, signatures and return values (issue 15), so
``from aiosmtplib.auth import ...`` / ``from aiosmtplib.esmtp import ...`` become a
rename.  Expected values are computed here with the standard library."""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.client.auth import (
    auth_crammd5_verify,
    auth_login_encode,
    auth_plain_encode,
    auth_xoauth2_encode,
)
from smtpwire.client.esmtp import parse_esmtp_extensions
from support.fake_smtp import FakeSMTPServer, client_for

PROPERTY = settings(max_examples=100, deadline=None)
# Credentials as aiosmtplib's helpers take them (the exchanges refuse NUL in PLAIN/LOGIN).
CREDENTIAL = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def test_signatures_are_positional_only() -> None:
    for function, names in [
        (auth_plain_encode, ["username", "password"]),
        (auth_login_encode, ["username", "password"]),
        (auth_crammd5_verify, ["username", "password", "challenge"]),
        (auth_xoauth2_encode, ["username", "access_token"]),
        (parse_esmtp_extensions, ["message"]),
    ]:
        parameters = inspect.signature(function).parameters
        assert list(parameters) == names
        if function is not parse_esmtp_extensions:
            assert all(p.kind is p.POSITIONAL_ONLY for p in parameters.values())


def test_auth_plain_encode() -> None:
    assert auth_plain_encode("anne", "secret") == b64(b"\0anne\0secret")
    assert auth_plain_encode(b"anne", b"secret") == b64(b"\0anne\0secret")
    assert auth_plain_encode("", "") == b"AAA="
    assert auth_plain_encode("j\u00f6", "p\u00e4ss") == b64("\0j\u00f6\0p\u00e4ss".encode())


def test_auth_login_encode() -> None:
    assert auth_login_encode("anne", "secret") == (b64(b"anne"), b64(b"secret"))
    assert auth_login_encode(b"anne", b"") == (b64(b"anne"), b"")


def test_auth_crammd5_verify() -> None:
    challenge = b"<12345.1234567890@mail.example.com>"
    expected_digest = hmac.new(b"secret", challenge, "md5").hexdigest()
    answer = auth_crammd5_verify("anne", "secret", b64(challenge))
    assert answer == b64(b"anne " + expected_digest.encode())
    assert auth_crammd5_verify(b"anne", b"secret", b64(challenge).decode()) == answer


def test_auth_crammd5_verify_refuses_a_challenge_that_is_not_base64() -> None:
    with pytest.raises(binascii.Error):
        auth_crammd5_verify("anne", "secret", "not base64!")


def test_auth_xoauth2_encode() -> None:
    expected = b64(b"user=anne@example.com\x01auth=Bearer ya29.token\x01\x01")
    assert auth_xoauth2_encode("anne@example.com", "ya29.token") == expected
    assert auth_xoauth2_encode(b"anne@example.com", b"ya29.token") == expected


@PROPERTY
@given(CREDENTIAL, CREDENTIAL)
def test_encodings_match_the_stdlib(username: str, password: str) -> None:
    user, secret = username.encode(), password.encode()
    assert auth_plain_encode(username, password) == b64(b"\0" + user + b"\0" + secret)
    assert auth_login_encode(username, password) == (b64(user), b64(secret))


EHLO_TEXT = "\n".join(
    [
        "size.does.matter.af.MIL offers FIFTEEN extensions:",
        "8BITMIME",
        "PIPELINING",
        "DSN",
        "SIZE 51200000",
        "AUTH PLAIN LOGIN CRAM-MD5",
        "STARTTLS",
    ]
)


def test_parse_esmtp_extensions() -> None:
    extensions, auth_methods = parse_esmtp_extensions(EHLO_TEXT)
    assert extensions == {
        "8bitmime": "",
        "pipelining": "",
        "dsn": "",
        "size": "51200000",
        "auth": "PLAIN LOGIN CRAM-MD5",
        "starttls": "",
    }
    assert auth_methods == ["plain", "login", "cram-md5"]


def test_parse_esmtp_extensions_reads_old_style_auth() -> None:
    _, auth_methods = parse_esmtp_extensions("mail.example.com\nAUTH=LOGIN\nAUTH LOGIN PLAIN")
    assert set(auth_methods) == {"login", "plain"}


def test_parse_esmtp_extensions_of_a_bare_greeting() -> None:
    assert parse_esmtp_extensions("mail.example.com Hello") == ({}, [])


async def test_parse_esmtp_extensions_agrees_with_the_client() -> None:
    extensions = ["SIZE 1000", "PIPELINING", "AUTH PLAIN XOAUTH2", "SMTPUTF8"]
    async with FakeSMTPServer(extensions=extensions) as server:
        client = client_for(server)
        async with client:
            response = await client.ehlo()
            assert parse_esmtp_extensions(response.message) == (
                client.esmtp_extensions,
                client.server_auth_methods,
            )
            assert client.server_auth_methods == ["plain", "xoauth2"]
