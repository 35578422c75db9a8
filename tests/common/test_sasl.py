"""SASL encodings for AUTH: base64 framing, PLAIN, LOGIN, CRAM-MD5, XOAUTH2."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpwire.common import sasl
from smtpwire.common.errors import SASLAbortedError, SASLDecodeError, SASLError
from smtpwire.common.sasl import (
    LOGIN_PASSWORD_CHALLENGE,
    LOGIN_USERNAME_CHALLENGE,
    PlainCredentials,
    b64decode,
    b64encode,
    cram_md5_challenge,
    cram_md5_response,
    cram_md5_verify,
    decode_client_response,
    decode_cram_md5,
    decode_login,
    decode_plain,
    decode_xoauth2,
    encode_login,
    encode_plain,
    encode_xoauth2,
    xoauth2_error,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- base64 framing ----------------------------------------------------------------


def test_empty_message_encodes_as_equals() -> None:
    assert b64encode("") == "="
    assert b64encode(b"") == "="


def test_equals_decodes_to_empty() -> None:
    assert b64decode("=") == b""
    assert b64decode(b"=") == b""
    assert b64decode(" =\r\n") == b""


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"a", "YQ=="),
        (b"ab", "YWI="),
        (b"abc", "YWJj"),
        ("héllo", "aMOpbGxv"),
        (b"\x00\xff", "AP8="),
    ],
)
def test_b64encode_known_values(data: str | bytes, text: str) -> None:
    assert b64encode(data) == text
    expected = data.encode() if isinstance(data, str) else data
    assert b64decode(text) == expected
    assert b64decode(text.encode()) == expected


def test_b64decode_strips_surrounding_whitespace() -> None:
    assert b64decode("  YWJj\r\n") == b"abc"


@pytest.mark.parametrize(
    "garbage",
    ["!!!!", "YW Jj", "YWJj!", "YQ", "Y", "YQ=", "==", "YWJj\x00", "é", "YW\nJj", "*", "Y===="],
)
def test_b64decode_is_strict(garbage: str) -> None:
    with pytest.raises(SASLDecodeError):
        b64decode(garbage)


@given(st.binary(max_size=200))
def test_b64_round_trip(data: bytes) -> None:
    assert b64decode(b64encode(data)) == data


@pytest.mark.parametrize("line", ["*", b"*", " *\r\n", "*\n"])
def test_client_star_aborts(line: str | bytes) -> None:
    with pytest.raises(SASLAbortedError):
        decode_client_response(line)


def test_sasl_errors_share_a_base() -> None:
    assert issubclass(SASLAbortedError, SASLError)
    assert issubclass(SASLDecodeError, SASLError)


def test_decode_client_response_decodes_base64() -> None:
    assert decode_client_response("dGVzdA==") == b"test"
    assert decode_client_response("=") == b""


@pytest.mark.parametrize("line", ["**", "*=", "not base64!"])
def test_decode_client_response_refuses_non_base64(line: str) -> None:
    with pytest.raises(SASLDecodeError):
        decode_client_response(line)


# --- PLAIN -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "raw"),
    [
        (("tim", "tanstaaftanstaaf"), b"\x00tim\x00tanstaaftanstaaf"),
        (("tim", "secret", "admin"), b"admin\x00tim\x00secret"),
        ((b"user", b"pass"), b"\x00user\x00pass"),
        (("üser", "pässword"), "\x00üser\x00pässword".encode()),
        (("", ""), b"\x00\x00"),
    ],
)
def test_encode_plain(args: tuple[str | bytes, ...], raw: bytes) -> None:
    assert encode_plain(*args) == b64(raw)


def test_encode_plain_rfc4616_example() -> None:
    # RFC 4616 section 4: authzid "Ursel", authcid "Kurt", password "xipj3plmq".
    assert encode_plain("Kurt", "xipj3plmq", "Ursel") == "VXJzZWwAS3VydAB4aXBqM3BsbXE="


@pytest.mark.parametrize(
    ("response", "credentials"),
    [
        (b64(b"\x00tim\x00secret"), (b"", b"tim", b"secret")),
        (b64(b"admin\x00tim\x00secret"), (b"admin", b"tim", b"secret")),
        (b64(b"\x00\x00"), (b"", b"", b"")),
        ("VXJzZWwAS3VydAB4aXBqM3BsbXE=", (b"Ursel", b"Kurt", b"xipj3plmq")),
    ],
)
def test_decode_plain(response: str, credentials: tuple[bytes, bytes, bytes]) -> None:
    decoded = decode_plain(response)
    assert isinstance(decoded, PlainCredentials)
    assert decoded == credentials
    assert (decoded.authzid, decoded.username, decoded.password) == credentials


@given(
    username=st.binary(max_size=30).filter(lambda b: b"\x00" not in b),
    password=st.binary(max_size=30).filter(lambda b: b"\x00" not in b),
    authzid=st.binary(max_size=30).filter(lambda b: b"\x00" not in b),
)
def test_plain_round_trip(username: bytes, password: bytes, authzid: bytes) -> None:
    assert decode_plain(encode_plain(username, password, authzid)) == (authzid, username, password)


@pytest.mark.parametrize(
    "raw",
    [b"", b"tim", b"tim\x00secret", b"a\x00b\x00c\x00d", b"\x00\x00\x00", b"\x00tim\x00s\x00"],
)
def test_decode_plain_wrong_nul_count(raw: bytes) -> None:
    with pytest.raises(SASLDecodeError):
        decode_plain(b64encode(raw))


def test_decode_plain_abort_and_garbage() -> None:
    with pytest.raises(SASLAbortedError):
        decode_plain("*")
    with pytest.raises(SASLDecodeError):
        decode_plain("@@@@")


@pytest.mark.parametrize(
    "args",
    [("ti\x00m", "secret"), ("tim", "sec\x00ret"), ("tim", "secret", "ad\x00min"), (b"\x00", b"")],
)
def test_encode_plain_refuses_nul(args: tuple[str | bytes, ...]) -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_plain(*args)


def test_plain_credentials_repr_hides_password() -> None:
    credentials = PlainCredentials(b"admin", b"tim", b"hunter2-very-secret")
    for text in (repr(credentials), str(credentials), f"{credentials}", f"{credentials!r}"):
        assert "hunter2-very-secret" not in text
        assert "b'tim'" in text
        assert "b'admin'" in text
    assert credentials.password == b"hunter2-very-secret"


def test_decoded_plain_repr_hides_password() -> None:
    assert "s3cr3t" not in repr(decode_plain(encode_plain("tim", "s3cr3t")))


# --- LOGIN -------------------------------------------------------------------------


def test_login_challenges_are_aiosmtpds() -> None:
    assert LOGIN_USERNAME_CHALLENGE == b"User Name\x00"
    assert LOGIN_PASSWORD_CHALLENGE == b"Password\x00"
    # What goes on the wire after "334 " (aiosmtpd 1.4.6).
    assert b64encode(LOGIN_USERNAME_CHALLENGE) == "VXNlciBOYW1lAA=="
    assert b64encode(LOGIN_PASSWORD_CHALLENGE) == "UGFzc3dvcmQA"


def test_login_answers_decode_with_decode_client_response() -> None:
    assert decode_client_response(b64encode("tim")) == b"tim"
    assert decode_client_response(b64encode("pässword")) == "pässword".encode()


@pytest.mark.parametrize("value", ["tim", "pässword", b"\xff\xfe", ""])
def test_login_round_trip(value: str | bytes) -> None:
    raw = value.encode() if isinstance(value, str) else value
    encoded = encode_login(value)
    assert encoded == (b64encode(raw) if raw else "=")
    assert decode_login(encoded) == raw


def test_login_refuses_nul_and_honours_cancel() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_login("a\x00b")
    with pytest.raises(SASLDecodeError):
        decode_login(b64encode(b"a\x00b"))
    with pytest.raises(SASLAbortedError):
        decode_login("*")
    with pytest.raises(SASLDecodeError):
        decode_login("not base64!")


# --- CRAM-MD5 ----------------------------------------------------------------------

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_CHALLENGE_B64 = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
RFC2195_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"
RFC2195_RESPONSE = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"


def test_rfc2195_challenge_encoding() -> None:
    assert b64encode(RFC2195_CHALLENGE) == RFC2195_CHALLENGE_B64


@pytest.mark.parametrize("challenge", [RFC2195_CHALLENGE_B64, RFC2195_CHALLENGE_B64.encode()])
def test_cram_md5_response_rfc2195(challenge: str | bytes) -> None:
    assert cram_md5_response("tim", "tanstaaftanstaaf", challenge) == RFC2195_RESPONSE
    assert cram_md5_response(b"tim", b"tanstaaftanstaaf", challenge) == RFC2195_RESPONSE


def test_decode_cram_md5_rfc2195() -> None:
    assert decode_cram_md5(RFC2195_RESPONSE) == (b"tim", RFC2195_DIGEST)


def test_cram_md5_verify_rfc2195() -> None:
    _, digest = decode_cram_md5(RFC2195_RESPONSE)
    assert cram_md5_verify(digest, RFC2195_CHALLENGE, "tanstaaftanstaaf") is True
    assert cram_md5_verify(digest, RFC2195_CHALLENGE, b"tanstaaftanstaaf") is True


def test_cram_md5_verify_accepts_upper_case_digest() -> None:
    assert cram_md5_verify(RFC2195_DIGEST.upper(), RFC2195_CHALLENGE, "tanstaaftanstaaf")
    upper = b64encode(b"tim " + RFC2195_DIGEST.upper().encode())
    assert decode_cram_md5(upper) == (b"tim", RFC2195_DIGEST)


@pytest.mark.parametrize(
    ("password", "challenge"),
    [
        ("tanstaaf", RFC2195_CHALLENGE),
        ("Tanstaaftanstaaf", RFC2195_CHALLENGE),
        ("", RFC2195_CHALLENGE),
        ("tanstaaftanstaaf", b"<1897.697170952@postoffice.reston.mci.net>"),
    ],
)
def test_cram_md5_verify_fails_for_wrong_password_or_challenge(
    password: str, challenge: bytes
) -> None:
    assert cram_md5_verify(RFC2195_DIGEST, challenge, password) is False


def test_cram_md5_username_with_spaces() -> None:
    response = cram_md5_response("tim smith", "pw", b64encode(RFC2195_CHALLENGE))
    username, digest = decode_cram_md5(response)
    assert username == b"tim smith"
    assert cram_md5_verify(digest, RFC2195_CHALLENGE, "pw")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"tim",
        b"timb913a602c7eda7a495b4e6e7334d3890",
        b" b913a602c7eda7a495b4e6e7334d3890",
        b"tim b913a602c7eda7a495b4e6e7334d389",
        b"tim b913a602c7eda7a495b4e6e7334d38900",
        b"tim ",
        b"tim \xff\xfe" + b"0" * 30,
        b"tim " + b"z" * 32,
        b"tim b913a602c7eda7a495b4e6e7334d389g",
        b"tim b913a602-7eda7a495b4e6e7334d3890",
    ],
)
def test_decode_cram_md5_refuses_malformed(raw: bytes) -> None:
    with pytest.raises(SASLDecodeError):
        decode_cram_md5(b64encode(raw))


def test_decode_cram_md5_abort_and_garbage() -> None:
    with pytest.raises(SASLAbortedError):
        decode_cram_md5("*")
    with pytest.raises(SASLDecodeError):
        decode_cram_md5("dGlt!")


def test_cram_md5_response_refuses_bad_challenge() -> None:
    with pytest.raises(SASLDecodeError):
        cram_md5_response("tim", "pw", "<not base64>")


def test_cram_md5_challenge_shape_and_hostname() -> None:
    challenge = cram_md5_challenge("mx.example.com")
    assert isinstance(challenge, bytes)
    assert re.fullmatch(rb"<\d+\.\d+@mx\.example\.com>", challenge), challenge


def test_cram_md5_challenges_are_unique() -> None:
    challenges = {cram_md5_challenge("mx.example.com") for _ in range(200)}
    assert len(challenges) == 200


@given(
    username=st.binary(min_size=1, max_size=30),
    password=st.binary(max_size=30),
)
def test_cram_md5_end_to_end(username: bytes, password: bytes) -> None:
    challenge = cram_md5_challenge("mx.example.com")
    response = cram_md5_response(username, password, b64encode(challenge))
    got_user, digest = decode_cram_md5(response)
    assert got_user == username
    assert cram_md5_verify(digest, challenge, password)
    assert not cram_md5_verify(digest, challenge, password + b"x")


# --- XOAUTH2 -----------------------------------------------------------------------

# Google's documented example (developers.google.com/gmail/imap/xoauth2-protocol).
GOOGLE_USER = "someuser@example.com"
GOOGLE_TOKEN = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"  # noqa: S105 - public example
GOOGLE_RESPONSE = (
    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNr"
    "QmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
)


def test_encode_xoauth2_known_example() -> None:
    assert encode_xoauth2(GOOGLE_USER, GOOGLE_TOKEN) == GOOGLE_RESPONSE
    assert b64decode(GOOGLE_RESPONSE) == (
        b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
        b"\x01\x01"
    )


def test_decode_xoauth2_known_example() -> None:
    assert decode_xoauth2(GOOGLE_RESPONSE) == (GOOGLE_USER, GOOGLE_TOKEN)
    assert decode_xoauth2(GOOGLE_RESPONSE.encode()) == (GOOGLE_USER, GOOGLE_TOKEN)


_XOAUTH2_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\x01\r\n", blacklist_categories=("Cs",)),
    max_size=60,
)


@given(username=_XOAUTH2_TEXT, token=_XOAUTH2_TEXT)
def test_xoauth2_round_trip(username: str, token: str) -> None:
    assert decode_xoauth2(encode_xoauth2(username, token)) == (username, token)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"user=u\x01auth=Bearer t",
        b"user=u\x01auth=Bearer t\x01",
        b"user=u\x01auth=Bearer t\x01\x01\x01",
        b"user=u\x01auth=Bearer t\x01x\x01",
        b"user=u\x01extra\x01auth=Bearer t\x01\x01",
        b"usr=u\x01auth=Bearer t\x01\x01",
        b"u\x01auth=Bearer t\x01\x01",
        b"user=u\x01auth=Basic t\x01\x01",
        b"user=u\x01auth=bearer t\x01\x01",
        b"user=u\x01auth=Bearert\x01\x01",
        b"auth=Bearer t\x01user=u\x01\x01",
        b"user=u\xff\x01auth=Bearer t\x01\x01",
        b"user=u\x01auth=Bearer t\xc3\x01\x01",
    ],
)
def test_decode_xoauth2_refuses_malformed(raw: bytes) -> None:
    with pytest.raises(SASLDecodeError):
        decode_xoauth2(b64encode(raw))


def test_decode_xoauth2_abort_and_garbage() -> None:
    with pytest.raises(SASLAbortedError):
        decode_xoauth2("*")
    with pytest.raises(SASLDecodeError):
        decode_xoauth2("not base64 at all")


@pytest.mark.parametrize(
    ("username", "token"),
    [
        ("us\x01er", "token"),
        ("user", "to\x01ken"),
        ("user\r", "token"),
        ("user", "token\n"),
        ("user\r\nAUTH", "token"),
        ("user", "tok\r\nen"),
    ],
)
def test_encode_xoauth2_refuses_separators(username: str, token: str) -> None:
    with pytest.raises(ValueError, match="XOAUTH2"):
        encode_xoauth2(username, token)


@pytest.mark.parametrize(
    ("args", "document"),
    [
        (("400",), {"status": "400", "schemes": "Bearer", "scope": ""}),
        (
            ("401", "Bearer", "https://mail.google.com/"),
            {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"},
        ),
        (("400", "Bearer MAC"), {"status": "400", "schemes": "Bearer MAC", "scope": ""}),
    ],
)
def test_xoauth2_error_decodes_to_json(args: tuple[str, ...], document: dict[str, str]) -> None:
    encoded = xoauth2_error(*args)
    assert isinstance(encoded, str)
    assert json.loads(b64decode(encoded)) == document
    assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", encoded)


# --- no credentials in errors ------------------------------------------------------

PASSWORD = "Pa55w0rd-TOPSECRET"  # noqa: S105 - a marker, not a credential
TOKEN = "ya29.TOPSECRET-bearer-token"  # noqa: S105 - a marker, not a credential


def _error_texts(error: BaseException) -> list[str]:
    """Every text a traceback of ``error`` would show: its own and chained messages."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts.extend([str(current), repr(current), *map(repr, current.args)])
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return texts


_SECRET_FAILURES: list[tuple[str, Callable[[], object], type[Exception]]] = [
    ("plain-nul-password", lambda: encode_plain("tim", PASSWORD + "\x00"), ValueError),
    ("plain-nul-authzid", lambda: encode_plain("tim", PASSWORD, "a\x00b"), ValueError),
    (
        "plain-extra-field",
        lambda: decode_plain(b64encode(f"\x00tim\x00{PASSWORD}\x00x")),
        SASLDecodeError,
    ),
    (
        "plain-missing-field",
        lambda: decode_plain(b64encode(f"tim\x00{PASSWORD}")),
        SASLDecodeError,
    ),
    ("b64-garbage", lambda: b64decode(PASSWORD + "!"), SASLDecodeError),
    ("b64-padding", lambda: b64decode(PASSWORD[:-1]), SASLDecodeError),
    ("xoauth2-cr-token", lambda: encode_xoauth2("tim", TOKEN + "\r"), ValueError),
    ("xoauth2-ctrl-a-user", lambda: encode_xoauth2("tim\x01", TOKEN), ValueError),
    (
        "xoauth2-not-utf8",
        lambda: decode_xoauth2(b64encode(f"user=tim\x01auth=Bearer {TOKEN}".encode() + b"\xff")),
        SASLDecodeError,
    ),
    (
        "xoauth2-shape",
        lambda: decode_xoauth2(b64encode(f"user=tim\x01auth=Bearer {TOKEN}")),
        SASLDecodeError,
    ),
    (
        "xoauth2-scheme",
        lambda: decode_xoauth2(b64encode(f"user=tim\x01auth=Basic {TOKEN}\x01\x01")),
        SASLDecodeError,
    ),
    (
        "cram-digest-not-ascii",
        lambda: decode_cram_md5(b64encode(PASSWORD.encode() + b" " + b"\xff" * 32)),
        SASLDecodeError,
    ),
    (
        "cram-bad-challenge",
        lambda: cram_md5_response("tim", PASSWORD, PASSWORD + "!"),
        SASLDecodeError,
    ),
]


@pytest.mark.parametrize(
    ("call", "error_type"),
    [pytest.param(call, error, id=name) for name, call, error in _SECRET_FAILURES],
)
def test_no_credential_in_exception_messages(
    call: Callable[[], object], error_type: type[Exception]
) -> None:
    with pytest.raises(error_type) as info:
        call()
    for text in _error_texts(info.value):
        assert "TOPSECRET" not in text
        assert base64.b64encode(b"TOPSECRET").decode() not in text


def test_module_exports() -> None:
    for name in sasl.__all__:
        assert hasattr(sasl, name), name
