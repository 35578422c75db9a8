"""smtpwire.client.email: envelope from headers, address safety, DATA bytes.

The header rules are smtplib's and aiosmtplib's (same recipients for the same
message); the address checks must hold whatever :func:`email.utils.parseaddr`
does on this Python patch level, so they are also run with stand-ins for the
strict (3.13+) and the truncating (older) parser.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.header import Header
from email.message import EmailMessage, Message
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtpwire.client.email as email_module
from smtpwire.client.email import (
    extract_recipients,
    extract_sender,
    flatten_message,
    message_needs_smtputf8,
    parse_address,
    prepare_message,
    quote_address,
)
from smtpwire.client.errors import SMTPNotSupported
from smtpwire.common.charsets import find_unsafe
from smtpwire.common.commands import format_command, parse_mail_from, parse_rcpt_to
from smtpwire.common.errors import AddressSyntaxError

PROPERTY = settings(max_examples=200, deadline=None)
BARE_NEWLINE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
RESENT_DATE = "Mon, 01 Jan 2024 00:00:00 +0000"
NOT_SUPPORTED = (
    "An address containing non-ASCII characters was provided, but SMTPUTF8 is not "
    "supported by this server"
)


# --- parse_address: what is accepted ------------------------------------------------------

ACCEPTED = [
    ("a@b.c", "a@b.c"),
    ("  a@b.c  ", "a@b.c"),
    ("Name <a@b.c>", "a@b.c"),
    ("<a@b.c>", "a@b.c"),
    ('"Doe, John" <a@b.c>', "a@b.c"),
    ('"x<y> z" <a@b.c>', "a@b.c"),
    ("=?utf-8?q?J=C3=B6s=C3=A9?= <jose@example.com>", "jose@example.com"),
    ("Jösé <jose@example.com>", "jose@example.com"),
    ("a@b.c (Legacy Name)", "a@b.c"),
    ("José@exämple.com", "José@exämple.com"),
    ("用户@例子.广告", "用户@例子.广告"),
    ('"a b"@example.com', '"a b"@example.com'),
    ('"a\\" b"@example.com', '"a\\" b"@example.com'),
    ('"<x> y"@example.com', '"<x> y"@example.com'),
    ('Name <"a b"@example.com>', '"a b"@example.com'),
    ("user@[192.0.2.1]", "user@[192.0.2.1]"),
    ("user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]"),
    ("root", "root"),
    ("postmaster", "postmaster"),
    ("first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
]


@pytest.mark.parametrize(("address", "expected"), ACCEPTED)
def test_accepted_addresses(address: str, expected: str) -> None:
    assert parse_address(address) == expected
    assert quote_address(address) == f"<{expected}>"


@pytest.mark.parametrize("address", ["", "   "])
def test_empty_is_the_null_path(address: str) -> None:
    assert parse_address(address) == ""
    assert quote_address(address) == "<>"


# --- parse_address: what is refused -------------------------------------------------------

INJECTIONS = [
    "a@b.c>\r\nRCPT TO:<x@y",
    "a@b.c\r\nRSET",
    "a@b.c\nDATA",
    "a@b.c\rDATA",
    "a@b.c> AUTH=<x@y>",
    "a@b.c> SIZE=1",
    "Name <a@b.c> AUTH=<x@y>",
    "AUTH=<x@y> <a@b.c>",
    "x@y> <a@b.c>",
    "a@b.c>",
    "<a@b.c",
    "<<a@b.c>>",
    "a\x00@b.c",
    "a@b.c\x00",
    "a\u2028@b.c",
    "a\u2029@b.c",
    "a@b.c\u0085RSET",
    "a\x7f@b.c",
    "a@b.c\t",
    "a\u200b@b.c",
    "a\u202e@b.c",
    "a\ufeff@b.c",
    "a\udcff@b.c",
    "a b@c.d",
    "a@b c.d",
    "a\u00a0b@c.d",
    "a\u3000b@c.d",
    'a"b@c.d',
    '"unterminated@c.d',
    'a@"b"',
    'a@b.c" AUTH=<x@y>',
    'x"@y> AUTH=<z"@w',
    "a@[x:>]",
    "a@[x:<]",
    "<>",
    "Name <>",
]


@pytest.mark.parametrize("address", INJECTIONS)
def test_injection_attempts_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(address)
    with pytest.raises(ValueError, match="invalid address"):
        quote_address(address)


AMBIGUOUS = [
    "a@b.c,d@e.f",
    "a@b.c, d@e.f",
    "Name <a@b.c>, x@y.z",
    "a@b.c <d@e.f>",
    "Doe, John <a@b.c>",
    "Name <a@b c>",
    "Name <a@b.c>x",
]


@pytest.mark.parametrize("address", AMBIGUOUS)
def test_text_that_is_not_exactly_one_address_is_refused(address: str) -> None:
    """Older parseaddr returns the first of a list, or glues ``a@b c`` together:
    sending to a shortened address silently would lose recipients."""
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(address)


MALFORMED = [
    "@",
    "@@",
    "a@",
    "@b.c",
    "a..b@c.d",
    ".a@b.c",
    "a.@b.c",
    "a@b..c",
    "a@-b.c",
    "a@[1.2.3]",
]


@pytest.mark.parametrize("address", MALFORMED)
def test_malformed_addresses_go_to_the_server(address: str) -> None:
    """Malformed but unable to inject: sent as given, as aiosmtplib does, so the
    server's refusal reaches the caller (issue 15)."""
    assert parse_address(address) == address
    assert quote_address(address) == f"<{address}>"
    assert parse_address(f"Name <{address}>") == address


@pytest.mark.parametrize("address", ["a\\@b.c", "a@b\\", "\\", "<a,b@c.d>", "a,b"])
def test_malformed_addresses_with_a_list_or_an_escape_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(address)


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("a@b.c>\r\nRCPT TO:<x@y", r"'\\r'"),
        ("a\x00@b.c", r"'\\x00'"),
        ("a\u2028@b.c", r"'\\u2028'"),
        ("a@b.c> AUTH=<x@y>", "'>'"),
        ("a b@c.d", "' '"),
        ('a"b@c.d', "'\"'"),
    ],
)
def test_the_error_names_the_offending_character(address: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_address(address)


def _never_parses(_text: str) -> tuple[str, str]:
    return ("", "")


def _truncating(text: str) -> tuple[str, str]:
    """The worst lenient parser: the first address-looking run, whatever follows."""
    match = re.search(r"[^\s<>,]+@[^\s<>,]+", text)
    return ("", match.group() if match else "")


@pytest.fixture(params=["installed", "strict", "truncating"])
def address_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Stand-ins for email.utils on other patch levels: strict 3.13+ gives up on
    anything odd, old ones return a prefix and claim it was the only address."""
    if request.param != "installed":
        parse = _never_parses if request.param == "strict" else _truncating
        monkeypatch.setattr(email_module, "parseaddr", parse)
        monkeypatch.setattr(email_module, "getaddresses", lambda texts: [parse(texts[0])])
    return str(request.param)


@pytest.mark.parametrize("address", INJECTIONS + AMBIGUOUS)
def test_refusals_do_not_depend_on_parseaddr(address_parser: str, address: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(address)


@pytest.mark.parametrize(("address", "expected"), [case for case in ACCEPTED if case[0] == case[1]])
def test_bare_addresses_do_not_depend_on_parseaddr(
    address_parser: str, address: str, expected: str
) -> None:
    assert parse_address(address) == expected


# --- parse_address: properties ------------------------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
QTEXT = "".join(chr(code) for code in [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])
UTF8_LETTERS = "éüßøñжλ用户例"
LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
DOMAIN = st.lists(LABEL, min_size=1, max_size=3).map(".".join)
DOT_STRING = st.lists(
    st.text(alphabet=ATEXT + UTF8_LETTERS, min_size=1, max_size=8), min_size=1, max_size=3
).map(".".join)
QUOTED = st.text(alphabet=QTEXT, max_size=10).map(lambda text: f'"{text}"')
LOCAL_PART = st.one_of(DOT_STRING, QUOTED)
MAILBOX = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL_PART, DOMAIN)
PHRASE = st.text(alphabet=string.ascii_letters + " .", max_size=12)

# Address-shaped text salted with everything that has been used to smuggle.
HOSTILE_PIECES = [
    *'ab.@ \t<>"\\,()[]:=\r\n\x00\x7f\x85\u2028\u00a0é',
    "x.org",
    "\r\n",
    "AUTH=",
    "RCPT TO:",
]
HOSTILE = st.lists(st.sampled_from(HOSTILE_PIECES), max_size=12).map("".join)


def _outside_leading_quotes(address: str) -> str:
    match = re.match(r'"(?:[^"\\]|\\.)*"', address)
    return address[match.end() :] if match else address


@PROPERTY
@given(st.one_of(HOSTILE, MAILBOX, st.builds(lambda p, m: f"{p} <{m}>", PHRASE, MAILBOX)))
def test_anything_accepted_quotes_into_one_safe_path(text: str) -> None:
    try:
        bare = parse_address(text)
    except ValueError:
        return
    path = quote_address(text)
    assert path == f"<{bare}>"
    assert find_unsafe(path) is None
    assert "\r" not in path
    assert "\n" not in path
    assert not re.search(r'[\s<>"]', _outside_leading_quotes(bare))
    line = format_command("MAIL", f"FROM:{path}")
    assert line.count(b"\r\n") == 1
    assert line.endswith(b"\r\n")
    assert parse_address(bare) == bare
    # The server's own parser reads exactly this address back, with no parameter,
    # or (a malformed address, sent as aiosmtplib sends it) refuses it as malformed.
    try:
        argument = parse_mail_from(f"FROM:{path}", utf8=True)
    except AddressSyntaxError:
        assert bare
        return
    assert argument.address == bare
    assert argument.parameters == ()
    if bare:
        assert parse_rcpt_to(f"TO:{path}", utf8=True).parameters == ()


@PROPERTY
@given(MAILBOX, PHRASE)
def test_valid_mailboxes_pass_unchanged_with_or_without_a_name(mailbox: str, name: str) -> None:
    assert parse_address(mailbox) == mailbox
    assert parse_address(f"{name} <{mailbox}>") == mailbox
    assert parse_address(f'"{name}" <{mailbox}>') == mailbox


@PROPERTY
@given(
    MAILBOX,
    st.sampled_from(["\r\n", "\n", "\r", "\x00", "\u2028", "> AUTH=<x@y>", " SIZE=1", "\t"]),
    st.text(alphabet="RCPT TO:<x@y>", max_size=8),
)
def test_appended_commands_or_parameters_are_always_refused(
    mailbox: str, separator: str, tail: str
) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(f"{mailbox}{separator}{tail}")


# --- extract_sender / extract_recipients --------------------------------------------------


def modern(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def legacy(raw: bytes) -> Message:
    return message_from_bytes(raw)


PARSERS = [pytest.param(modern, id="EmailMessage"), pytest.param(legacy, id="compat32")]
Parse = Callable[[bytes], Message]


@pytest.mark.parametrize("parse", PARSERS)
def test_from_and_every_to_cc_bcc_occurrence(parse: Parse) -> None:
    message = parse(
        b"From: Author <author@x.org>\r\n"
        b"To: B <b@x.org>, c@x.org\r\n"
        b"Cc: d@x.org\r\n"
        b"To: e@x.org\r\n"
        b"Bcc: Hidden <f@x.org>\r\n"
        b"Cc: g@x.org\r\n\r\nbody\r\n"
    )
    assert extract_sender(message) == "author@x.org"
    assert extract_recipients(message) == [
        "b@x.org", "c@x.org", "e@x.org", "d@x.org", "g@x.org", "f@x.org",
    ]  # fmt: skip


@pytest.mark.parametrize("parse", PARSERS)
def test_sender_header_wins_over_from(parse: Parse) -> None:
    message = parse(b"From: a@x.org\r\nSender: Sec <s@x.org>\r\nTo: t@x.org\r\n\r\n")
    assert extract_sender(message) == "s@x.org"


@pytest.mark.parametrize("parse", PARSERS)
def test_a_present_but_empty_sender_header_is_not_skipped(parse: Parse) -> None:
    """smtplib's rule is presence, not content: From is not consulted."""
    message = parse(b"From: a@x.org\r\nSender: \r\nTo: t@x.org\r\n\r\n")
    assert extract_sender(message) is None


@pytest.mark.parametrize("parse", PARSERS)
def test_no_headers_no_envelope(parse: Parse) -> None:
    message = parse(b"Subject: nothing\r\n\r\n")
    assert extract_sender(message) is None
    assert extract_recipients(message) == []


@pytest.mark.parametrize("parse", PARSERS)
def test_one_resent_block_replaces_the_original_headers(parse: Parse) -> None:
    message = parse(
        b"From: a@x.org\r\nTo: t@x.org\r\nCc: c@x.org\r\nBcc: b@x.org\r\n"
        b"Resent-Date: " + RESENT_DATE.encode() + b"\r\n"
        b"Resent-From: Resender <rf@x.org>\r\n"
        b"Resent-To: rt@x.org, Two <rt2@x.org>\r\n"
        b"Resent-Cc: rc@x.org\r\n"
        b"Resent-Bcc: rb@x.org\r\n\r\n"
    )
    assert extract_sender(message) == "rf@x.org"
    assert extract_recipients(message) == ["rt@x.org", "rt2@x.org", "rc@x.org", "rb@x.org"]


@pytest.mark.parametrize("parse", PARSERS)
def test_resent_sender_wins_over_resent_from(parse: Parse) -> None:
    message = parse(
        b"From: a@x.org\r\nSender: s@x.org\r\nTo: t@x.org\r\n"
        b"Resent-Date: " + RESENT_DATE.encode() + b"\r\n"
        b"Resent-From: rf@x.org\r\nResent-Sender: rs@x.org\r\nResent-To: rt@x.org\r\n\r\n"
    )
    assert extract_sender(message) == "rs@x.org"


@pytest.mark.parametrize("parse", PARSERS)
def test_a_resent_date_alone_does_not_fall_back_to_the_original(parse: Parse) -> None:
    message = parse(
        b"From: a@x.org\r\nTo: t@x.org\r\nResent-Date: " + RESENT_DATE.encode() + b"\r\n\r\n"
    )
    assert extract_sender(message) is None
    assert extract_recipients(message) == []


@pytest.mark.parametrize("parse", PARSERS)
def test_resent_headers_without_resent_date_are_ignored(parse: Parse) -> None:
    message = parse(b"From: a@x.org\r\nTo: t@x.org\r\nResent-From: rf@x.org\r\n\r\n")
    assert extract_sender(message) == "a@x.org"
    assert extract_recipients(message) == ["t@x.org"]


@pytest.mark.parametrize("parse", PARSERS)
def test_two_resent_blocks_are_refused(parse: Parse) -> None:
    date = b"Resent-Date: " + RESENT_DATE.encode() + b"\r\n"
    message = parse(
        b"From: a@x.org\r\nTo: t@x.org\r\n"
        + date
        + b"Resent-From: r1@x.org\r\nResent-To: t1@x.org\r\n"
        + date
        + b"Resent-From: r2@x.org\r\nResent-To: t2@x.org\r\n\r\n"
    )
    expected = "Message has more than one 'Resent-' header block"
    with pytest.raises(ValueError, match=re.escape(expected)):
        extract_sender(message)
    with pytest.raises(ValueError, match=re.escape(expected)):
        extract_recipients(message)


@pytest.mark.parametrize("parse", PARSERS)
def test_an_empty_angle_address_is_no_address(parse: Parse) -> None:
    """``<>`` in a header is not a mailbox; policy.default spells it as addr_spec "<>"."""
    message = parse(b"From: <>\r\nTo: <>, t@x.org\r\n\r\n")
    assert extract_sender(message) is None
    assert extract_recipients(message) == ["t@x.org"]


@pytest.mark.parametrize("parse", PARSERS)
def test_groups_give_their_members(parse: Parse) -> None:
    message = parse(
        b"From: a@x.org\r\nTo: undisclosed-recipients:;\r\n"
        b"Cc: Team: m1@x.org, M2 <m2@x.org>;\r\n\r\n"
    )
    assert extract_recipients(message) == ["m1@x.org", "m2@x.org"]


@pytest.mark.parametrize("parse", PARSERS)
def test_an_encoded_word_never_adds_an_address(parse: Parse) -> None:
    """The display name ``<evil@x.org>`` hidden in RFC 2047 must stay a name."""
    message = parse(
        b"From: =?utf-8?q?=3Cspoof=40x.org=3E?= <real-from@x.org>\r\n"
        b"To: =?utf-8?q?=3Cevil=40x.org=3E?= <real@x.org>\r\n\r\n"
    )
    assert extract_sender(message) == "real-from@x.org"
    assert extract_recipients(message) == ["real@x.org"]


def test_email_message_built_in_code() -> None:
    message = EmailMessage()
    message["From"] = "Jösé <josé@exämple.org>"
    message["To"] = "Tö <tö@exämple.org>, plain@x.org"
    message["Bcc"] = "hidden@x.org"
    assert extract_sender(message) == "josé@exämple.org"
    assert extract_recipients(message) == ["tö@exämple.org", "plain@x.org", "hidden@x.org"]


def test_compat32_header_objects_are_decoded() -> None:
    message: Message[str | Header, str | Header] = Message()
    message["From"] = Header("Jösé <jose@x.org>", "utf-8")
    to = Header("Tö", "utf-8")
    to.append(" <t@x.org>, other@x.org", "us-ascii")
    message["To"] = to
    message["Cc"] = Header("=?utf-8?q?C=C3=A9?= <c@x.org>")
    message["Cc"] = "=?utf-8?q?D=C3=A9?= <d@x.org>"
    assert extract_sender(message) == "jose@x.org"
    assert extract_recipients(message) == ["t@x.org", "other@x.org", "c@x.org", "d@x.org"]


def test_compat32_folded_headers() -> None:
    message = message_from_bytes(b"From: a@x.org\nTo: b@x.org,\n c@x.org,\n\tD <d@x.org>\n\nhi\n")
    assert extract_recipients(message) == ["b@x.org", "c@x.org", "d@x.org"]


# --- flatten_message ----------------------------------------------------------------------


def simple_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Jösé <jose@x.org>"
    message["To"] = "t@x.org"
    message["Bcc"] = "hidden@x.org"
    message["Resent-Bcc"] = "resent-hidden@x.org"
    message["Subject"] = "héllo"
    message.set_content("héllo wörld\nFrom the start\n.\nend\n")
    return message


def legacy_message() -> Message:
    message = Message()
    message["From"] = "a@x.org"
    message["To"] = "t@x.org"
    message["Bcc"] = "hidden@x.org"
    message["Resent-Bcc"] = "resent-hidden@x.org"
    message.set_payload("line one\nFrom the start\rbare cr\r\nend\n")
    return message


MESSAGES = [
    pytest.param(simple_message, id="EmailMessage"),
    pytest.param(legacy_message, id="compat32"),
]


@pytest.mark.parametrize("make", MESSAGES)
@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("cte_type", ["7bit", "8bit"])
def test_bcc_is_stripped_from_the_output_only(
    make: Callable[[], Message], utf8: bool, cte_type: str
) -> None:
    message = make()
    before = [(name, str(value)) for name, value in message.items()]
    data = flatten_message(message, utf8=utf8, cte_type=cte_type)
    assert b"hidden@x.org" not in data
    assert b"Bcc" not in data
    assert [(name, str(value)) for name, value in message.items()] == before
    assert message["Bcc"] == "hidden@x.org"
    assert message["Resent-Bcc"] == "resent-hidden@x.org"
    assert b"To: t@x.org\r\n" in data


@pytest.mark.parametrize("make", MESSAGES)
@pytest.mark.parametrize("cte_type", ["7bit", "8bit"])
def test_output_has_crlf_line_endings_only(make: Callable[[], Message], cte_type: str) -> None:
    data = flatten_message(make(), cte_type=cte_type)
    assert data.endswith(b"\r\n")
    assert BARE_NEWLINE.search(data) is None


@pytest.mark.parametrize("make", MESSAGES)
def test_from_lines_in_the_body_are_not_mangled(make: Callable[[], Message]) -> None:
    data = flatten_message(make())
    assert b"\r\nFrom the start" in data
    assert b">From" not in data


def test_parsed_compat32_message_with_lf_and_folding_gets_crlf() -> None:
    message = message_from_bytes(
        b"From: a@x.org\nTo: b@x.org,\n c@x.org\nSubject: a\n  b\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nh\xc3\xa9\n"
    )
    data = flatten_message(message)
    assert BARE_NEWLINE.search(data) is None
    assert b"h\xc3\xa9\r\n" in data
    assert message_from_bytes(data)["To"].replace("\r\n", "\n") == "b@x.org,\n c@x.org"


def test_without_utf8_headers_are_rfc2047_encoded() -> None:
    data = flatten_message(simple_message())
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"From: =?utf-8?" in head
    assert b"<jose@x.org>" in head


def test_with_utf8_headers_stay_utf8() -> None:
    data = flatten_message(simple_message(), utf8=True)
    assert "From: Jösé <jose@x.org>\r\n".encode() in data
    assert "Subject: héllo\r\n".encode() in data


def test_8bit_keeps_the_body_raw() -> None:
    data = flatten_message(simple_message(), cte_type="8bit")
    assert b"Content-Transfer-Encoding: 8bit" in data
    assert "héllo wörld".encode() in data


def test_7bit_output_is_ascii() -> None:
    data = flatten_message(simple_message(), cte_type="7bit")
    assert data.isascii()
    body = message_from_bytes(data, policy=policy.default)
    assert isinstance(body, EmailMessage)
    assert body.get_content().replace("\r\n", "\n") == "héllo wörld\nFrom the start\n.\nend\n"


def test_7bit_reencodes_an_8bit_compat32_message() -> None:
    raw = (
        b"From: a@x.org\r\nTo: b@x.org\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nh\xc3\xa9llo\r\n"
    )
    assert b"h\xc3\xa9llo" in flatten_message(message_from_bytes(raw), cte_type="8bit")
    seven = flatten_message(message_from_bytes(raw), cte_type="7bit")
    assert seven.isascii()
    payload = message_from_bytes(seven).get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.startswith(b"h\xc3\xa9llo")


def test_a_message_with_the_default_policy_is_flattened_like_an_email_message() -> None:
    message = Message(policy=policy.default)
    message["From"] = "a@x.org"
    message["Subject"] = "x" * 100
    message.set_payload("body\n")
    data = flatten_message(message)
    assert BARE_NEWLINE.search(data) is None


def test_multipart_keeps_the_parts_and_drops_bcc() -> None:
    message = simple_message()
    message.add_attachment(b"\x00\x01\x02", maintype="application", subtype="octet-stream")
    data = flatten_message(message)
    assert b"hidden@x.org" not in data
    assert BARE_NEWLINE.search(data) is None
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    attachments = list(parsed.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_content() == b"\x00\x01\x02"
    assert message["Bcc"] == "hidden@x.org"


@pytest.mark.parametrize("cte_type", ["base64", "7BIT", "", "binary"])
def test_unknown_cte_type_is_refused(cte_type: str) -> None:
    with pytest.raises(ValueError, match="cte_type"):
        flatten_message(simple_message(), cte_type=cte_type)


# --- message_needs_smtputf8 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "recipients", "needed"),
    [
        ("a@x.org", ["b@x.org"], False),
        ("", ["b@x.org"], False),
        (None, ["b@x.org"], False),
        ("Jösé <jose@x.org>", ["Tö <t@x.org>"], False),
        ("josé@x.org", ["b@x.org"], True),
        ("a@x.org", ["b@x.org", "c@exämple.org"], True),
        ("a@x.org", ["用户@例子.广告"], True),
    ],
)
def test_message_needs_smtputf8(sender: str | None, recipients: list[str], needed: bool) -> None:
    assert message_needs_smtputf8(sender, recipients) is needed


# --- prepare_message ----------------------------------------------------------------------


def prepare(
    message: Message,
    *,
    smtputf8: bool = True,
    eightbitmime: bool = True,
    sender: str | None = None,
    recipients: str | list[str] | tuple[str, ...] | None = None,
) -> tuple[str, list[str], list[str], bytes]:
    return prepare_message(
        message,
        sender=sender,
        recipients=recipients,
        server_supports_smtputf8=smtputf8,
        server_supports_8bitmime=eightbitmime,
    )


def test_envelope_from_headers_and_bcc_only_in_the_envelope() -> None:
    message = simple_message()
    sender, recipients, options, data = prepare(message)
    assert sender == "jose@x.org"
    assert recipients == ["t@x.org", "hidden@x.org"]
    assert options == ["BODY=8BITMIME"]
    assert b"hidden@x.org" not in data
    assert message["Bcc"] == "hidden@x.org"


def test_given_sender_and_recipients_override_the_headers() -> None:
    message = simple_message()
    sender, recipients, _, data = prepare(
        message, sender="Other <other@x.org>", recipients=("R1 <r1@x.org>", "r2@x.org")
    )
    # Returned as given, so refusals are keyed by the caller's own strings.
    assert sender == "Other <other@x.org>"
    assert recipients == ["R1 <r1@x.org>", "r2@x.org"]
    assert b"hidden@x.org" not in data


def test_a_recipient_string_becomes_a_list() -> None:
    _, recipients, _, _ = prepare(simple_message(), recipients="only@x.org")
    assert recipients == ["only@x.org"]


def test_a_string_of_several_recipients_is_refused_not_shortened() -> None:
    with pytest.raises(ValueError, match="invalid address"):
        prepare(simple_message(), recipients="a@x.org, b@x.org")


def test_null_sender_is_allowed() -> None:
    sender, _, _, _ = prepare(simple_message(), sender="")
    assert sender == ""


def test_no_from_header() -> None:
    message = EmailMessage()
    message["To"] = "t@x.org"
    with pytest.raises(ValueError, match=r"^No From header provided in message$"):
        prepare(message)


@pytest.mark.parametrize("recipients", [None, []])
def test_no_recipients(recipients: list[str] | None) -> None:
    message = EmailMessage()
    message["From"] = "a@x.org"
    with pytest.raises(ValueError, match=r"^No recipient headers provided in message$"):
        prepare(message, recipients=recipients)


def test_an_empty_recipient_list_is_not_replaced_by_the_headers() -> None:
    """aiosmtplib: only ``None`` means "take them from the headers"."""
    with pytest.raises(ValueError, match=r"^No recipient headers provided in message$"):
        prepare(simple_message(), recipients=[])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", "a@b.c> AUTH=<x@y>"),
        ("sender", "a@b.c>\r\nRCPT TO:<x@y"),
        ("recipients", "a@b.c>\r\nRCPT TO:<x@y"),
        ("recipients", "a@b.c> NOTIFY=NEVER"),
        ("recipients", "x\u2028@y.org"),
        ("recipients", "x\x00@y.org"),
    ],
)
def test_every_address_is_checked(field: str, value: str) -> None:
    arguments: dict[str, Any] = (
        {"sender": value} if field == "sender" else {"recipients": ["ok@x.org", value]}
    )
    with pytest.raises(ValueError, match="invalid address"):
        prepare(simple_message(), **arguments)


def test_header_addresses_are_checked_too() -> None:
    message = Message()
    message["From"] = "a@x.org"
    message["To"] = "t\x00@x.org"
    with pytest.raises(ValueError, match="invalid address"):
        prepare(message)


def test_resent_block_drives_the_envelope() -> None:
    message = simple_message()
    message["Resent-Date"] = RESENT_DATE
    message["Resent-From"] = "rf@x.org"
    message["Resent-To"] = "rt@x.org"
    sender, recipients, _, data = prepare(message)
    assert (sender, recipients) == ("rf@x.org", ["rt@x.org", "resent-hidden@x.org"])
    assert b"resent-hidden@x.org" not in data


@pytest.mark.parametrize(
    ("smtputf8", "eightbitmime", "options"),
    [
        (True, True, ["SMTPUTF8", "BODY=8BITMIME"]),
        (True, False, ["SMTPUTF8"]),
    ],
)
def test_non_ascii_address_needs_smtputf8(
    smtputf8: bool, eightbitmime: bool, options: list[str]
) -> None:
    message = simple_message()
    message.replace_header("To", "Tö <tö@exämple.org>")
    _, recipients, extra, data = prepare(message, smtputf8=smtputf8, eightbitmime=eightbitmime)
    assert recipients == ["tö@exämple.org", "hidden@x.org"]
    assert extra == options
    assert "To: Tö <tö@exämple.org>\r\n".encode() in data


@pytest.mark.parametrize("eightbitmime", [True, False])
def test_smtputf8_missing_is_refused(eightbitmime: bool) -> None:
    with pytest.raises(SMTPNotSupported) as caught:
        prepare(simple_message(), sender="josé@x.org", smtputf8=False, eightbitmime=eightbitmime)
    assert caught.value.message == NOT_SUPPORTED


def test_non_ascii_display_names_alone_need_no_smtputf8() -> None:
    message = simple_message()
    _, _, extra, data = prepare(message, smtputf8=False)
    assert extra == ["BODY=8BITMIME"]
    assert data.split(b"\r\n\r\n", 1)[0].isascii()


def test_smtputf8_server_still_gets_encoded_headers_when_not_needed() -> None:
    _, _, extra, data = prepare(simple_message(), smtputf8=True)
    assert "SMTPUTF8" not in extra
    assert data.split(b"\r\n\r\n", 1)[0].isascii()


def test_without_8bitmime_the_body_goes_7bit() -> None:
    _, _, extra, data = prepare(simple_message(), eightbitmime=False)
    assert extra == []
    assert data.isascii()


def test_with_8bitmime_the_body_goes_8bit() -> None:
    _, _, extra, data = prepare(simple_message(), eightbitmime=True)
    assert extra == ["BODY=8BITMIME"]
    assert "héllo wörld".encode() in data


def test_legacy_message_through_prepare() -> None:
    message = legacy_message()
    sender, recipients, extra, data = prepare(message, eightbitmime=False)
    assert (sender, recipients, extra) == ("a@x.org", ["t@x.org", "hidden@x.org"], [])
    assert BARE_NEWLINE.search(data) is None
    assert message["Bcc"] == "hidden@x.org"


@pytest.fixture
def unchanged_message() -> Iterator[EmailMessage]:
    message = simple_message()
    before = message.as_bytes()
    yield message
    assert message.as_bytes() == before


def test_prepare_leaves_the_callers_message_alone(unchanged_message: EmailMessage) -> None:
    prepare(unchanged_message, eightbitmime=False)
    prepare(unchanged_message, eightbitmime=True)
