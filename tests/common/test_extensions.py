"""EHLO replies: Extensions, parse_ehlo_reply and format_ehlo_reply."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common.errors import MalformedReplyError, UnsafeCharacterError
from smtpwire.common.extensions import Extensions, format_ehlo_reply, parse_ehlo_reply
from smtpwire.common.replies import SMTPReply, parse_reply

REALISTIC_EHLO = (
    b"250-mail.example.com Hello client.example.org [192.0.2.1]\r\n"
    b"250-SIZE 35882577\r\n"
    b"250-8BITMIME\r\n"
    b"250-PIPELINING\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-AUTH=CRAM-MD5\r\n"
    b"250-STARTTLS\r\n"
    b"250-enhancedstatuscodes\r\n"
    b"250-dsn\r\n"
    b"250 smtputf8\r\n"
)


@pytest.fixture
def realistic() -> Extensions:
    return parse_ehlo_reply(parse_reply(REALISTIC_EHLO))


def test_realistic_domain_and_greeting(realistic: Extensions) -> None:
    assert realistic.domain == "mail.example.com"
    assert realistic.greeting == "Hello client.example.org [192.0.2.1]"


def test_realistic_keywords_upper_case_in_advertised_order(realistic: Extensions) -> None:
    assert list(realistic) == [
        "SIZE",
        "8BITMIME",
        "PIPELINING",
        "AUTH",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "SMTPUTF8",
    ]
    assert len(realistic) == 8


def test_realistic_parameters(realistic: Extensions) -> None:
    assert realistic["SIZE"] == "35882577"
    assert realistic["8BITMIME"] == ""
    assert realistic["AUTH"] == "PLAIN LOGIN"
    assert realistic.size_limit == 35882577


def test_realistic_auth_mechanisms(realistic: Extensions) -> None:
    assert realistic.auth_mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")


def test_legacy_auth_line_is_not_a_keyword(realistic: Extensions) -> None:
    assert "AUTH=CRAM-MD5" not in realistic
    assert not any(keyword.startswith("AUTH=") for keyword in realistic)


@pytest.mark.parametrize(
    "keyword",
    ["SIZE", "size", "Size", "starttls", "StartTLS", "smtputf8", "SMTPUTF8", "pipelining"],
)
def test_lookup_is_case_insensitive(realistic: Extensions, keyword: str) -> None:
    assert keyword in realistic
    assert realistic[keyword] == realistic[keyword.upper()]
    assert realistic.get(keyword) == realistic[keyword.upper()]


@pytest.mark.parametrize("keyword", ["CHUNKING", "auth=cram-md5", "", "SIZE 35882577", 250, None])
def test_absent_keywords(realistic: Extensions, keyword: object) -> None:
    assert keyword not in realistic
    if isinstance(keyword, str):
        assert realistic.get(keyword) is None
        with pytest.raises(KeyError):
            realistic[keyword]


def test_extensions_is_a_read_only_mapping(realistic: Extensions) -> None:
    assert isinstance(realistic, Mapping)
    assert dict(realistic)["SMTPUTF8"] == ""
    with pytest.raises(TypeError):
        realistic["SIZE"] = "1"  # type: ignore[index]


def test_lines_reproduce_the_extension_lines(realistic: Extensions) -> None:
    assert realistic.lines() == [
        "SIZE 35882577",
        "8BITMIME",
        "PIPELINING",
        "AUTH PLAIN LOGIN",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "SMTPUTF8",
    ]


def test_repr_mentions_keywords_and_domain(realistic: Extensions) -> None:
    text = repr(realistic)
    assert text.startswith("Extensions(")
    assert "'SIZE': '35882577'" in text
    assert "domain='mail.example.com'" in text


# --- domain / greeting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "domain", "greeting"),
    [
        ("mx.example.com", "mx.example.com", ""),
        ("mx.example.com Hello", "mx.example.com", "Hello"),
        ("mx.example.com Hello there friend", "mx.example.com", "Hello there friend"),
        ("[192.0.2.1] hi", "[192.0.2.1]", "hi"),
        ("", "", ""),
    ],
)
def test_first_line_is_domain_and_greeting(first: str, domain: str, greeting: str) -> None:
    extensions = parse_ehlo_reply(SMTPReply(250, [first, "PIPELINING"]))
    assert extensions.domain == domain
    assert extensions.greeting == greeting
    assert list(extensions) == ["PIPELINING"]


def test_single_line_reply_has_no_extensions() -> None:
    extensions = parse_ehlo_reply(SMTPReply(250, "mx.example.com at your service"))
    assert extensions.domain == "mx.example.com"
    assert extensions.greeting == "at your service"
    assert len(extensions) == 0
    assert extensions.auth_mechanisms == ()
    assert extensions.size_limit is None


# --- AUTH mechanisms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "mechanisms"),
    [
        (["AUTH PLAIN LOGIN"], ("PLAIN", "LOGIN")),
        (["auth plain login"], ("PLAIN", "LOGIN")),
        (["AUTH PLAIN LOGIN", "AUTH=LOGIN PLAIN"], ("PLAIN", "LOGIN")),
        (["AUTH=LOGIN PLAIN", "AUTH CRAM-MD5 PLAIN"], ("CRAM-MD5", "PLAIN", "LOGIN")),
        (["AUTH LOGIN", "AUTH=CRAM-MD5 login"], ("LOGIN", "CRAM-MD5")),
        (["AUTH=LOGIN"], ("LOGIN",)),
        (["auth=login xoauth2"], ("LOGIN", "XOAUTH2")),
        (["AUTH PLAIN PLAIN plain"], ("PLAIN",)),
        (["AUTH"], ()),
        (["SIZE 10"], ()),
        (["AUTH   PLAIN\tLOGIN  "], ("PLAIN", "LOGIN")),
    ],
)
def test_auth_mechanisms(lines: list[str], mechanisms: tuple[str, ...]) -> None:
    extensions = parse_ehlo_reply(SMTPReply(250, ["mx", *lines]))
    assert extensions.auth_mechanisms == mechanisms


def test_auth_line_first_even_when_legacy_line_comes_first() -> None:
    reply = SMTPReply(250, ["mx", "AUTH=CRAM-MD5", "AUTH PLAIN"])
    assert parse_ehlo_reply(reply).auth_mechanisms == ("PLAIN", "CRAM-MD5")


def test_auth_parameters_are_normalised_to_single_spaces() -> None:
    extensions = parse_ehlo_reply(SMTPReply(250, ["mx", "AUTH  PLAIN   LOGIN "]))
    assert extensions["AUTH"] == "PLAIN LOGIN"


def test_extensions_constructor_merges_auth_mechanisms() -> None:
    extensions = Extensions(
        [("auth", "plain Login"), ("size", "10")],
        domain="mx",
        greeting="hi",
        auth_mechanisms=["cram-md5", "PLAIN"],
    )
    assert list(extensions) == ["AUTH", "SIZE"]
    assert extensions.auth_mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert extensions.domain == "mx"
    assert extensions.greeting == "hi"


def test_duplicate_keyword_keeps_the_first() -> None:
    extensions = parse_ehlo_reply(SMTPReply(250, ["mx", "SIZE 100", "size 200"]))
    assert extensions["SIZE"] == "100"
    assert len(extensions) == 1


# --- SIZE --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "limit"),
    [
        (["SIZE 35882577"], 35882577),
        (["size 1"], 1),
        (["SIZE 10485760"], 10485760),
        (["SIZE"], None),
        (["SIZE 0"], None),
        (["SIZE 000"], None),
        ([], None),
        (["PIPELINING"], None),
        (["SIZE abc"], None),
        (["SIZE -5"], None),
        (["SIZE 1.5"], None),
        (["SIZE 10 20"], None),
    ],
)
def test_size_limit(lines: list[str], limit: int | None) -> None:
    assert parse_ehlo_reply(SMTPReply(250, ["mx", *lines])).size_limit == limit


@pytest.mark.parametrize(
    "parameter",
    [
        "\u00b2",  # SUPERSCRIPT TWO: str.isdigit() is True, int() refuses it
        "1\u00b2",
        "\u0661\u0662",  # ARABIC-INDIC digits: not RFC 1870 DIGITs
    ],
)
def test_size_limit_with_non_ascii_digits_is_no_number(parameter: str) -> None:
    """RFC 1870 size-value is 1*20DIGIT (ASCII); anything else is "no number" -> None."""
    extensions = parse_ehlo_reply(SMTPReply(250, ["mx", f"SIZE {parameter}"]))
    assert extensions.size_limit is None


def test_size_limit_with_a_huge_number_does_not_raise() -> None:
    """A hostile server's 5000-digit SIZE must not crash the property (int() digit cap)."""
    extensions = parse_ehlo_reply(SMTPReply(250, ["mx", "SIZE " + "9" * 5000]))
    limit = extensions.size_limit
    assert limit is None or limit > 0


# --- malformed input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_line",
    [
        "",
        "   ",
        "-BAD",
        "BAD_KEYWORD",
        "K@Y value",
        "ÜTF8",
        "!!!",
        "SIZE= 10",
        ".DOT",
    ],
)
def test_malformed_keyword_lines_are_ignored(bad_line: str) -> None:
    reply = SMTPReply(250, ["mx", "PIPELINING", bad_line, "8BITMIME"])
    extensions = parse_ehlo_reply(reply)
    assert list(extensions) == ["PIPELINING", "8BITMIME"]


@pytest.mark.parametrize(
    "reply",
    [
        SMTPReply(500, "5.5.1 Command unrecognized"),
        SMTPReply(502, "EHLO not implemented"),
        SMTPReply(550, "go away"),
        SMTPReply(220, "mx ESMTP"),
        SMTPReply(251, ["mx", "SIZE 10"]),
        SMTPReply(421, "closing"),
    ],
)
def test_non_250_reply_is_refused(reply: SMTPReply) -> None:
    with pytest.raises(MalformedReplyError):
        parse_ehlo_reply(reply)


# --- format_ehlo_reply -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "wire"),
    [
        (
            ("mx.example.com", {"SIZE": "1000", "8BITMIME": "", "AUTH": "PLAIN LOGIN"}),
            {"greeting": "Hello client"},
            b"250-mx.example.com Hello client\r\n"
            b"250-SIZE 1000\r\n"
            b"250-8BITMIME\r\n"
            b"250 AUTH PLAIN LOGIN\r\n",
        ),
        (
            ("mx.example.com", ["SIZE 1000", "8BITMIME", "HELP"]),
            {},
            b"250-mx.example.com\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 HELP\r\n",
        ),
        (("mx.example.com", {}), {}, b"250 mx.example.com\r\n"),
        (("mx.example.com", []), {"greeting": "hi"}, b"250 mx.example.com hi\r\n"),
        (("[127.0.0.1]", ["STARTTLS"]), {}, b"250-[127.0.0.1]\r\n250 STARTTLS\r\n"),
        (
            ("mx", ["AUTH LOGIN PLAIN", "X-EXPS GSSAPI NTLM"]),
            {},
            b"250-mx\r\n250-AUTH LOGIN PLAIN\r\n250 X-EXPS GSSAPI NTLM\r\n",
        ),
    ],
)
def test_format_ehlo_reply_exact(
    args: tuple[str, object], kwargs: dict[str, str], wire: bytes
) -> None:
    assert format_ehlo_reply(*args, **kwargs) == wire  # type: ignore[arg-type]


def test_format_ehlo_reply_accepts_extensions_object(realistic: Extensions) -> None:
    wire = format_ehlo_reply(realistic.domain, realistic, greeting=realistic.greeting)
    again = parse_ehlo_reply(parse_reply(wire))
    assert dict(again) == dict(realistic)
    assert again.auth_mechanisms == ("PLAIN", "LOGIN")  # legacy AUTH= is not re-emitted


def test_format_then_parse_round_trip() -> None:
    advertised = {
        "SIZE": "52428800",
        "8BITMIME": "",
        "PIPELINING": "",
        "AUTH": "PLAIN LOGIN CRAM-MD5",
        "STARTTLS": "",
        "SMTPUTF8": "",
        "HELP": "",
    }
    wire = format_ehlo_reply("mx.example.com", advertised, greeting="Hi there")
    extensions = parse_ehlo_reply(parse_reply(wire))
    assert dict(extensions) == advertised
    assert list(extensions) == list(advertised)
    assert extensions.domain == "mx.example.com"
    assert extensions.greeting == "Hi there"
    assert extensions.size_limit == 52428800
    assert extensions.auth_mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")


@pytest.mark.parametrize(
    "extensions",
    [
        {"": ""},
        {"-X": ""},
        {"SI ZE": "10"},
        {"AUTH=LOGIN": ""},
        {"SIZE\r\n250 X": ""},
        {"SIZE\n": ""},
        {"ÜTF8": ""},
        {"X_Y": ""},
        ["-BAD"],
        [""],
        [" SIZE 10"],
        ["SIZE\r\n250 INJECTED"],
        ["NUL\x00"],
    ],
)
def test_malformed_keyword_is_refused(extensions: object) -> None:
    with pytest.raises(UnsafeCharacterError):
        format_ehlo_reply("mx.example.com", extensions)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain", "extensions", "greeting"),
    [
        ("mx.example.com", {"SIZE": "10\r\n250 INJECTED"}, ""),
        ("mx.example.com", {"AUTH": "PLAIN\nLOGIN"}, ""),
        ("mx.example.com", {"AUTH": "PLAIN\x00"}, ""),
        ("mx.example.com", ["SIZE 10\r\n250 X"], ""),
        ("mx.example.com\r\n250 forged", {}, ""),
        ("mx.example.com", {}, "hi\r\n250 forged"),
        ("mx.example.com", {}, "hi\x00"),
    ],
)
def test_unsafe_text_in_domain_greeting_or_parameters_is_refused(
    domain: str, extensions: object, greeting: str
) -> None:
    with pytest.raises(UnsafeCharacterError):
        format_ehlo_reply(domain, extensions, greeting=greeting)  # type: ignore[arg-type]


_KEYWORDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,15}", fullmatch=True)
_WORD = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10
)
_PARAMS = st.lists(_WORD, max_size=4).map(" ".join)


@settings(deadline=None)
@given(
    domain=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True),
    greeting=_PARAMS,
    items=st.lists(
        st.tuples(_KEYWORDS, _PARAMS), max_size=10, unique_by=lambda item: item[0].upper()
    ),
)
def test_format_parse_round_trip_property(
    domain: str, greeting: str, items: list[tuple[str, str]]
) -> None:
    wire = format_ehlo_reply(domain, dict(items), greeting=greeting)
    extensions = parse_ehlo_reply(parse_reply(wire))
    assert extensions.domain == domain
    assert extensions.greeting == greeting
    assert list(extensions.items()) == [(keyword.upper(), params) for keyword, params in items]
    for keyword, params in items:
        assert keyword.lower() in extensions
        assert extensions[keyword.swapcase()] == params
