"""``smtpwire.client.auth`` and ``smtpwire.client.esmtp``: aiosmtplib's public
helpers under the same names, signatures and return values (issue 15), so
``from aiosmtplib.auth import ...`` / ``from aiosmtplib.esmtp import ...`` become a
rename.  Expected values are computed here with the standard library, or, where
aiosmtplib's own reading is the reference (stray characters in a CRAM-MD5
challenge, unusual EHLO replies), recorded from aiosmtplib 5.1.3 into the tables
below: aiosmtplib is not a test dependency."""

from __future__ import annotations

import base64
import hmac
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.client import SMTPAuthenticationError
from smtpwire.client.auth import (
    auth_crammd5_verify,
    auth_login_encode,
    auth_plain_encode,
    auth_xoauth2_encode,
)
from smtpwire.client.esmtp import parse_esmtp_extensions
from support.fake_smtp import FakeConnection, FakeSMTPServer, client_for

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


# Challenges aiosmtplib 5.1.3 cannot decode: SMTPAuthenticationError(334, text).
REFUSED_CHALLENGES = [
    "!!notb64",
    "not base64!",
    "YWJ",
    "YWJjZA",
    "YWJjZA=",
    "Y=Jj",
    "\xe9",
    "abc\xe9",
]


@pytest.mark.parametrize("challenge", REFUSED_CHALLENGES)
def test_auth_crammd5_verify_refuses_a_challenge_that_is_not_base64(challenge: str) -> None:
    with pytest.raises(SMTPAuthenticationError) as raised:
        auth_crammd5_verify("anne", "secret", challenge)
    text = f"Invalid CRAM-MD5 challenge from server: {challenge!r}"
    assert raised.value.args == (334, text)
    assert (raised.value.code, raised.value.message) == (334, text)


# Challenges aiosmtplib 5.1.3 decodes as base64.b64decode does (stray characters
# skipped, extra padding ignored), with its answers for anne/secret.
ANSWER_TO_EMPTY = b"YW5uZSA1YzhkYjAzZjA0Y2VjMGY0M2JjYjA2MDAyMzkxNDE5MA=="
ANSWER_TO_ABC = b"YW5uZSBkOWJmN2MzYTYzZWFlNzAzMWM0ZTZkN2M5Yjc4YmE5Mw=="
LENIENT_CHALLENGES: list[tuple[str | bytes, bytes]] = [
    ("", ANSWER_TO_EMPTY),
    ("=", ANSWER_TO_EMPTY),
    ("==", ANSWER_TO_EMPTY),
    ("*", ANSWER_TO_EMPTY),
    (b"\xff", ANSWER_TO_EMPTY),
    ("abcd!", b"YW5uZSBhMzlmMThmNmYxN2QyMGEzMmU5MWRkMDkzZDhhZDE0OA=="),
    ("YW Jj", ANSWER_TO_ABC),
    (" YWJj ", ANSWER_TO_ABC),
    ("YWJj\r\n", ANSWER_TO_ABC),
    (b"YWJj", ANSWER_TO_ABC),
    ("YWJjZA===", b"YW5uZSA2MDJlMDgxMmMxNjQ1MzY3YTFhMGE3OGJjY2NmNmJlMA=="),
    ("PDEy\nMzQ1QG14Pg==", b"YW5uZSA2NDMyNTJlNzgwNWRhOTYwYTZjMmY4NzgwN2I5ZmM1ZA=="),
]


@pytest.mark.parametrize(("challenge", "answer"), LENIENT_CHALLENGES)
def test_auth_crammd5_verify_reads_a_challenge_as_aiosmtplib_does(
    challenge: str | bytes, answer: bytes
) -> None:
    assert auth_crammd5_verify("anne", "secret", challenge) == answer


def cram_md5_server(challenge: bytes) -> FakeSMTPServer:
    """Offers CRAM-MD5 (and PLAIN), sends ``challenge`` after AUTH CRAM-MD5, answers
    the client's ``*`` with 501 and anything else after the challenge with 535."""
    pending: list[bool] = []

    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line.upper() == b"AUTH CRAM-MD5":
            pending.append(True)
            return b"334 " + challenge + b"\r\n"
        if pending:
            pending.clear()
            if line == b"*":
                return b"501 5.7.0 Authentication cancelled\r\n"
            return b"535 5.7.8 Authentication credentials invalid\r\n"
        if line.upper().startswith(b"AUTH PLAIN "):
            return b"235 2.7.0 Authentication successful\r\n"
        return connection.default(line)

    return FakeSMTPServer(extensions=["AUTH CRAM-MD5 PLAIN"], on_line=on_line)


async def test_auth_crammd5_refuses_a_challenge_that_is_not_base64_as_the_helper_does() -> None:
    async with cram_md5_server(b"!!notb64") as server:
        client = client_for(server)
        async with client:
            with pytest.raises(SMTPAuthenticationError) as raised:
                await client.auth_crammd5("anne", "secret")
            assert raised.value.args == (334, "Invalid CRAM-MD5 challenge from server: '!!notb64'")
            # Deliberately unlike aiosmtplib, which leaves the server waiting for an
            # answer: the exchange is cancelled, and the session stays usable.
            assert server.connection.lines[-1] == b"*"
            assert (await client.noop()).code == 250


async def test_auth_crammd5_reads_a_challenge_as_the_helper_does() -> None:
    async with cram_md5_server(b"YW Jj") as server:
        client = client_for(server)
        async with client:
            with pytest.raises(SMTPAuthenticationError) as raised:
                await client.auth_crammd5("anne", "secret")
            assert raised.value.code == 535
            assert server.connection.lines[-1] == ANSWER_TO_ABC


async def test_login_falls_back_after_a_challenge_that_is_not_base64() -> None:
    async with cram_md5_server(b"!!notb64") as server:
        client = client_for(server)
        async with client:
            assert (await client.login("anne", "secret")).code == 235
            lines = server.connection.lines
            assert lines[-3:-1] == [b"AUTH CRAM-MD5", b"*"]
            assert lines[-1].startswith(b"AUTH PLAIN ")


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


# parse_esmtp_extensions(message) as aiosmtplib 5.1.3 returns it, recorded from it:
# (message lines, extensions as (keyword, parameters) items in order, mechanisms).
# Repeated keywords keep the last value (in the first one's place), AUTH= and AUTH
# lines feed the mechanisms in order (duplicates kept), parameters are what
# follows the first space, and malformed keywords are kept.
AIOSMTPLIB_PARSES: list[tuple[list[str], list[tuple[str, str]], list[str]]] = [
    (
        [""],
        [],
        [],
    ),
    (
        ["mx.example"],
        [],
        [],
    ),
    (
        ["mx.example", ""],
        [],
        [],
    ),
    (
        ["mx.example", "SIZE 1", "PIPELINING", "SIZE 2"],
        [("size", "2"), ("pipelining", "")],
        [],
    ),
    (
        ["mx.example", "AUTH PLAIN LOGIN", "AUTH=CRAM-MD5"],
        [("auth", "CRAM-MD5")],
        ["plain", "login", "cram-md5"],
    ),
    (
        ["mx.example", "AUTH=CRAM-MD5", "AUTH PLAIN LOGIN"],
        [("auth", "PLAIN LOGIN")],
        ["cram-md5", "plain", "login"],
    ),
    (
        ["mx.example", "PIPELINING", "SIZE 1000", "AUTH PLAIN LOGIN", "AUTH=CRAM-MD5", "8BITMIME"],
        [("pipelining", ""), ("size", "1000"), ("auth", "CRAM-MD5"), ("8bitmime", "")],
        ["plain", "login", "cram-md5"],
    ),
    (
        ["mx.example", "SIZE  1000"],
        [("size", " 1000")],
        [],
    ),
    (
        ["mx.example", "X_BAD!KEY", "SIZE\t10"],
        [("x_bad!key", ""), ("size\t10", "")],
        [],
    ),
    (
        ["mx.example\r", "SIZE\r", "DSN"],
        [("size", ""), ("dsn", "")],
        [],
    ),
    (
        ["mx.example", "AUTH", "AUTH=", "1BAD"],
        [("auth", ""), ("1bad", "")],
        [],
    ),
    (
        ["mx.example", "auth=login plain", "AuTh= XOAUTH2"],
        [("auth", " XOAUTH2")],
        ["login", "plain", "xoauth2"],
    ),
    (
        ["mx.example", "AUTH PLAIN PLAIN", "AUTH LOGIN"],
        [("auth", "LOGIN")],
        ["plain", "plain", "login"],
    ),
    (
        ["mx.example", "AUTH = PLAIN"],
        [("auth", "= PLAIN")],
        ["=", "plain"],
    ),
    (
        ["mx.example", "AUTH=PLAIN=X"],
        [("auth", "PLAIN=X")],
        ["plain=x"],
    ),
    (
        ["mx.example", "   ", "\t", "STARTTLS"],
        [("starttls", "")],
        [],
    ),
    (
        ["mx.example", "  size 100  ", ""],
        [("size", "100")],
        [],
    ),
    (
        ["mx.example", "SIZE 100 200", "X-FOO bar  baz "],
        [("size", "100 200"), ("x-foo", "bar  baz")],
        [],
    ),
    (
        ["mx.example", "ENHANCEDSTATUSCODES", "\xa0SMTPUTF8\xa0", "CHUNKING\x0b"],
        [("enhancedstatuscodes", ""), ("smtputf8", ""), ("chunking", "")],
        [],
    ),
    (
        ["mx.example", "AUTH\tPLAIN LOGIN"],
        [("auth\tplain", "LOGIN")],
        [],
    ),
    (
        ["mx.example", "AUTH PLAIN\tLOGIN\u2003XOAUTH2"],
        [("auth", "PLAIN\tLOGIN\u2003XOAUTH2")],
        ["plain", "login", "xoauth2"],
    ),
    (
        ["mx.example", "LIMITS RCPTMAX=100 MAILMAX=5"],
        [("limits", "RCPTMAX=100 MAILMAX=5")],
        [],
    ),
    (
        ["mx.example", "STARTTLS\u2028PIPELINING"],
        [("starttls\u2028pipelining", "")],
        [],
    ),
    (
        ["mx.example", "AUTH=\u212aERBEROS_V4", "AUTH K\u0130"],
        [("auth", "K\u0130")],
        ["kerberos_v4", "ki\u0307"],
    ),
    (
        ["mx.example", "\u0130DENT x", "STRA\xdfE y"],
        [("i\u0307dent", "x"), ("stra\xdfe", "y")],
        [],
    ),
    (
        ["mx.example", "AUTH= ", "AUTH  "],
        [("auth", "")],
        [],
    ),
    (
        ["", "SIZE 5"],
        [("size", "5")],
        [],
    ),
    (
        ["SIZE 5"],
        [],
        [],
    ),
    (
        ["mx.example", "\x1cDSN\x1f", "\x85HELP"],
        [("dsn", ""), ("help", "")],
        [],
    ),
    (
        ["mx.example", "VRFY", "vrfy", "VrFy on"],
        [("vrfy", "on")],
        [],
    ),
    (
        ["mx.example", "8BITMIME\r", "\r", "DSN\r"],
        [("8bitmime", ""), ("dsn", "")],
        [],
    ),
    (
        ["mx.example", "-", "=", " \u3000"],
        [("-", ""), ("=", "")],
        [],
    ),
    (
        [
            "",
            "SIZE   1000",
            " \t 1000",
            "\tauth=a  b\t",
            " PIPELINING\tCRAM-MD5 ",
            " Auth\tplain\t",
        ],
        [
            ("size", "  1000"),
            ("1000", ""),
            ("auth", "a  b"),
            ("pipelining\tcram-md5", ""),
            ("auth\tplain", ""),
        ],
        ["a", "b"],
    ),
    (
        [
            "",
            "\rPIPELINING \tPLAIN LOGIN\r",
            "\xa08BITMIME1000\t",
            "\r8BITMIME\t\tq\r",
            "STARTTLS1000 ",
        ],
        [
            ("pipelining", "\tPLAIN LOGIN"),
            ("8bitmime1000", ""),
            ("8bitmime\t\tq", ""),
            ("starttls1000", ""),
        ],
        [],
    ),
    (
        [
            "mx.example",
            "\tAUTH \tq\xa0",
            "8BITMIME  1000\r",
            "\xa0SIZE1000\t",
            " PIPELINING  =x\xa0",
        ],
        [("auth", "\tq"), ("8bitmime", " 1000"), ("size1000", ""), ("pipelining", " =x")],
        ["q"],
    ),
    (
        ["", "\tsize\tPLAIN LOGIN ", "\rAuthplain\t"],
        [("size\tplain", "LOGIN"), ("authplain", "")],
        [],
    ),
    (
        [
            "mx.example Hello",
            " sizeCRAM-MD5",
            "\rDSNa  b",
            "\tAuth CRAM-MD5",
            "\tSIZE a  b ",
            "\rAuth \ta  b\r",
            "\rSIZE =x",
        ],
        [("sizecram-md5", ""), ("dsna", " b"), ("auth", "\ta  b"), ("size", "=x")],
        ["cram-md5", "a", "b"],
    ),
    (
        ["", "\tauth\tq", "\tX-FOO\r", "\xa0PIPELINING plain\t"],
        [("auth\tq", ""), ("x-foo", ""), ("pipelining", "plain")],
        [],
    ),
    (
        ["", "AUTH==x\r", "\t XOAUTH2 PLAIN\xa0", " PIPELINING =x\t"],
        [("auth", "=x"), ("xoauth2", "PLAIN"), ("pipelining", "=x")],
        ["=x"],
    ),
    (
        ["mx.example", " X_BAD!KEY\tplain\xa0", "\tauth=a  b", "\tX-FOO  plain"],
        [("x_bad!key\tplain", ""), ("auth", "a  b"), ("x-foo", " plain")],
        ["a", "b"],
    ),
    (
        [
            "mx.example",
            "\xa0Auth =x\r",
            "\tauth= 1000",
            "\rauth=plain\xa0",
            "\xa0X_BAD!KEY\tq",
            "PIPELINING \tq ",
        ],
        [("auth", "plain"), ("x_bad!key\tq", ""), ("pipelining", "\tq")],
        ["=x", "1000", "plain"],
    ),
    (
        [
            "",
            "\xa08BITMIME   1000\xa0",
            "\tX_BAD!KEY\t\tq\r",
            "auth \t=x\xa0",
            " SMTPUTF8 \ta  b\t",
            "\r8BITMIME \t\tq",
        ],
        [("8bitmime", "\t\tq"), ("x_bad!key\t\tq", ""), ("auth", "\t=x"), ("smtputf8", "\ta  b")],
        ["=x"],
    ),
    (
        ["mx.example Hello", " AUTH\tCRAM-MD5", "8BITMIME  \tq"],
        [("auth\tcram-md5", ""), ("8bitmime", " \tq")],
        [],
    ),
    (
        ["", "\xa0auth1000 ", " \tPLAIN LOGIN\xa0"],
        [("auth1000", ""), ("plain", "LOGIN")],
        [],
    ),
    (
        ["mx.example", " PIPELININGPLAIN LOGIN\t", "\xa0STARTTLS  \tq "],
        [("pipeliningplain", "LOGIN"), ("starttls", " \tq")],
        [],
    ),
    (
        ["mx.example Hello", "\xa0a  b ", "\tPIPELINING1000\r", "\rSMTPUTF8 PLAIN LOGIN\t"],
        [("a", " b"), ("pipelining1000", ""), ("smtputf8", "PLAIN LOGIN")],
        [],
    ),
    (
        [
            "mx.example Hello",
            "AUTH\xa0",
            "DSNa  b\t",
            "\t8BITMIME \ta  b\r",
            "\xa08BITMIMEa  b",
            "\rAUTHplain\t",
        ],
        [
            ("auth", ""),
            ("dsna", " b"),
            ("8bitmime", "\ta  b"),
            ("8bitmimea", " b"),
            ("authplain", ""),
        ],
        [],
    ),
    (
        ["", " 8BITMIME =x ", "\rAUTH \t=x", "\tSMTPUTF8\tXOAUTH2 PLAIN\r", "\tAUTH= 1000\r"],
        [("8bitmime", "=x"), ("auth", " 1000"), ("smtputf8\txoauth2", "PLAIN")],
        ["=x", "1000"],
    ),
    (
        ["mx.example", " \tPLAIN LOGIN\xa0", " AUTH=CRAM-MD5\r"],
        [("plain", "LOGIN"), ("auth", "CRAM-MD5")],
        ["cram-md5"],
    ),
    (
        ["", "\xa0auth 1000", "\rDSN  PLAIN LOGIN\r", "\rauth\t\tq\r", " DSNXOAUTH2 PLAIN\t"],
        [("auth", "1000"), ("dsn", " PLAIN LOGIN"), ("auth\t\tq", ""), ("dsnxoauth2", "PLAIN")],
        ["1000"],
    ),
    (
        ["mx.example Hello", "\tauth=XOAUTH2 PLAIN\t", " size 1000 "],
        [("auth", "XOAUTH2 PLAIN"), ("size", "1000")],
        ["xoauth2", "plain"],
    ),
    (
        [
            "",
            "\xa0Auth  1000\t",
            " AUTH=PLAIN LOGIN\r",
            " AUTH=a  b ",
            " Auth\ta  b\xa0",
            "\xa0DSN \tPLAIN LOGIN\xa0",
        ],
        [("auth", "a  b"), ("auth\ta", " b"), ("dsn", "\tPLAIN LOGIN")],
        ["1000", "plain", "login", "a", "b"],
    ),
    (
        [
            "",
            "SMTPUTF8 \tplain\xa0",
            " SIZE CRAM-MD5",
            "\tauth=XOAUTH2 PLAIN\xa0",
            "\xa0AUTH=\tq\t",
            "\rauth=plain\xa0",
            "\r XOAUTH2 PLAIN\xa0",
        ],
        [("smtputf8", "\tplain"), ("size", "CRAM-MD5"), ("auth", "plain"), ("xoauth2", "PLAIN")],
        ["xoauth2", "plain", "q", "plain"],
    ),
    (
        ["", "\rPIPELINING  1000 "],
        [("pipelining", " 1000")],
        [],
    ),
    (
        [
            "mx.example",
            "\rPIPELINING \t\tq\t",
            "\tAUTH \tPLAIN LOGIN",
            "\xa0AUTH\t",
            " \t=x\r",
            "X_BAD!KEY\xa0",
        ],
        [("pipelining", "\t\tq"), ("auth", ""), ("=x", ""), ("x_bad!key", "")],
        ["plain", "login"],
    ),
    (
        [
            "mx.example Hello",
            " 8BITMIME  PLAIN LOGIN\xa0",
            " X-FOO  XOAUTH2 PLAIN\r",
            "Authplain",
            "\rSTARTTLS  =x\xa0",
            "AUTH=plain\t",
            " AUTH =x\t",
        ],
        [
            ("8bitmime", " PLAIN LOGIN"),
            ("x-foo", " XOAUTH2 PLAIN"),
            ("authplain", ""),
            ("starttls", " =x"),
            ("auth", "=x"),
        ],
        ["plain", "=x"],
    ),
    (
        ["mx.example Hello", "STARTTLS\tXOAUTH2 PLAIN\xa0"],
        [("starttls\txoauth2", "PLAIN")],
        [],
    ),
    (
        ["", "\r PLAIN LOGIN\xa0", " auth= 1000 ", "\tsize\t1000 "],
        [("plain", "LOGIN"), ("auth", " 1000"), ("size\t1000", "")],
        ["1000"],
    ),
    (
        ["mx.example", "\r\t\tq "],
        [("q", "")],
        [],
    ),
]


@pytest.mark.parametrize(("lines", "items", "mechanisms"), AIOSMTPLIB_PARSES)
def test_parse_esmtp_extensions_returns_what_aiosmtplib_returns(
    lines: list[str], items: list[tuple[str, str]], mechanisms: list[str]
) -> None:
    extensions, auth_methods = parse_esmtp_extensions("\n".join(lines))
    assert list(extensions.items()) == items
    assert auth_methods == mechanisms


async def test_the_client_keeps_its_own_stricter_reading_of_ehlo() -> None:
    # The client decides what the server supports with smtpwire.common's parse:
    # malformed keywords dropped, parameters normalised, the first of a repeated
    # keyword kept.  Only the public helper reads a reply as aiosmtplib does.
    extensions = ["SIZE  1000", "X_BAD!KEY", "SIZE 2000", "AUTH=LOGIN", "AUTH PLAIN"]
    async with FakeSMTPServer(extensions=extensions) as server:
        client = client_for(server)
        async with client:
            response = await client.ehlo()
            assert client.esmtp_extensions == {"size": "1000", "auth": "PLAIN"}
            assert client.server_auth_methods == ["plain", "login"]
            assert parse_esmtp_extensions(response.message) == (
                {"size": "2000", "x_bad!key": "", "auth": "PLAIN"},
                ["login", "plain"],
            )


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
