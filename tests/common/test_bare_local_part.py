"""A bare local part (no angle brackets, no domain) in MAIL FROM and RCPT TO: the
lenient parsers take it as aiosmtpd 1.4.6 does (``MAIL FROM:root``), the strict
ones keep to RFC 5321 (only Postmaster goes without a domain), and the client's
address checks are unchanged."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpwire.common.addresses import check_mailbox, format_path
from smtpwire.common.commands import (
    PathArgument,
    format_mail_from,
    format_rcpt_to,
    parse_mail_from,
    parse_rcpt_to,
)
from smtpwire.common.errors import (
    AddressSyntaxError,
    ParameterSyntaxError,
    ProtocolError,
    UnsafeCharacterError,
)
from smtpwire.common.parameters import Parameter
from smtpwire.common.server_commands import MALFORMED_ADDRESS, ParsedPath, read_path

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
ATOM = st.text(alphabet=ATEXT, min_size=1, max_size=12)
DOT_STRING = st.lists(ATOM, min_size=1, max_size=4).map(".".join)
QUOTED = st.text(alphabet=string.ascii_letters + string.digits + " .,@<>", max_size=12).map(
    lambda inner: f'"{inner}"'
)
LOCAL_PART = st.one_of(DOT_STRING, QUOTED)


@pytest.mark.parametrize(
    "local_part", ["postmaster", "Postmaster", "root", "a" * 500, "first.last+tag", '"john doe"']
)
def test_lenient_parsers_take_a_bare_local_part(local_part: str) -> None:
    assert parse_mail_from(f"FROM:{local_part}") == PathArgument(local_part, ())
    assert parse_mail_from(f"FROM: {local_part}") == PathArgument(local_part, ())
    assert parse_rcpt_to(f"TO:{local_part}") == PathArgument(local_part, ())


@given(LOCAL_PART)
def test_bare_and_bracketed_local_parts_parse_alike(local_part: str) -> None:
    bare = parse_mail_from(f"FROM:{local_part}")
    assert bare == parse_mail_from(f"FROM:<{local_part}>") == PathArgument(local_part, ())
    assert parse_rcpt_to(f"TO:{local_part}") == parse_rcpt_to(f"TO:<{local_part}>")


@given(LOCAL_PART, st.sampled_from(["SIZE=100", "BODY=8BITMIME", "SIZE=1 BODY=7BIT", "SMTPUTF8"]))
def test_parameters_after_a_bare_local_part_are_parameters(
    local_part: str, parameters: str
) -> None:
    """Not folded into the address (aiosmtpd's header parser reads "anne SIZE=100"
    as one obsolete local part and drops the parameters)."""
    parsed = parse_mail_from(f"FROM:{local_part} {parameters}")
    assert parsed.address == local_part
    assert parsed == parse_mail_from(f"FROM:<{local_part}> {parameters}")
    assert [str(parameter) for parameter in parsed.parameters] == parameters.split()


def test_bare_local_part_then_parameters_keeps_their_values() -> None:
    assert parse_mail_from("FROM:anne SIZE=100 BODY=8bitmime") == PathArgument(
        "anne", (Parameter("SIZE", "100"), Parameter("BODY", "8bitmime"))
    )
    assert parse_rcpt_to("TO:anne NOTIFY=NEVER") == PathArgument(
        "anne", (Parameter("NOTIFY", "NEVER"),)
    )
    # RFC 5322's obsolete local part of words ("anne bart") is not taken: the
    # second word is a (valueless) parameter, which the server then refuses.
    assert parse_mail_from("FROM:anne bart") == PathArgument("anne", (Parameter("BART"),))


@given(LOCAL_PART.filter(lambda local_part: local_part.lower() != "postmaster"))
def test_strict_parsers_still_want_a_domain(local_part: str) -> None:
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(f"FROM:<{local_part}>", strict=True)
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_to(f"TO:<{local_part}>", strict=True)


def test_strict_parsers_take_a_bracketed_postmaster_only() -> None:
    assert parse_rcpt_to("TO:<Postmaster>", strict=True).address == "Postmaster"
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_to("TO:Postmaster", strict=True)  # no angle brackets


@pytest.mark.parametrize(
    ("argument", "error"),
    [
        ("FROM:anne(comment)", AddressSyntaxError),  # RFC 5322 comment
        ("FROM:(comment)anne", AddressSyntaxError),
        ("FROM:anne (comment)", ParameterSyntaxError),  # a comment is no parameter
        ("FROM:anne\\b", AddressSyntaxError),  # obsolete quoted-pair outside quotes
        ("FROM:anne@[IPv6::1]", AddressSyntaxError),
        ("FROM:anne>", AddressSyntaxError),
        ("FROM:anne,bart", AddressSyntaxError),
        ("FROM:anne;bart", AddressSyntaxError),
        ("FROM:.anne", AddressSyntaxError),
        ("FROM:anne.", AddressSyntaxError),
        ("FROM:anne..bart", AddressSyntaxError),
        ("FROM:anne\rbart", AddressSyntaxError),  # injection: a line break
        ("FROM:anne\nRCPT TO:bart", AddressSyntaxError),
        ("FROM:anne\x00", AddressSyntaxError),
        ('FROM:"anne', AddressSyntaxError),
    ],
)
def test_bare_local_parts_still_refused(argument: str, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        parse_mail_from(argument)
    with pytest.raises(error):
        parse_rcpt_to("TO:" + argument[len("FROM:") :])


def test_read_path_gives_the_bare_local_part_to_the_server() -> None:
    syntax = "501 Syntax: MAIL FROM: <address>"
    read = read_path(
        "FROM:postmaster", "FROM:", syntax, utf8=False, max_local_part=None, extended=False
    )
    assert read == ParsedPath("postmaster", [], {})
    read = read_path(
        "FROM:anne size=100", "FROM:", syntax, utf8=False, max_local_part=None, extended=True
    )
    assert read == ParsedPath("anne", ["SIZE=100"], {"SIZE": "100"})
    # After HELO there are no parameters: a syntax error, as for any path.
    assert (
        read_path("FROM:anne SIZE=1", "FROM:", syntax, utf8=False, max_local_part=None,
                  extended=False)
        == syntax
    )  # fmt: skip
    # The server's local_part_limit still counts a bare local part.
    assert (
        read_path("FROM:" + "a" * 65, "FROM:", syntax, utf8=False, max_local_part=64,
                  extended=True)
        == MALFORMED_ADDRESS
    )  # fmt: skip


def test_client_side_checks_are_unchanged() -> None:
    """The client formats and checks addresses with its own rules: a domainless
    address is still refused where a domain is required, and always bracketed."""
    with pytest.raises(AddressSyntaxError):
        check_mailbox("anne")
    assert check_mailbox("anne", require_domain=False) == "anne"
    assert format_path("anne") == "<anne>"
    assert format_mail_from("anne") == b"MAIL FROM:<anne>\r\n"
    assert format_rcpt_to("postmaster") == b"RCPT TO:<postmaster>\r\n"
    with pytest.raises(UnsafeCharacterError):
        format_mail_from("anne SIZE=1")
