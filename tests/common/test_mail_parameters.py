"""Typed values of SIZE, BODY, RET, ENVID, NOTIFY, ORCPT, AUTH= and the BDAT/AUTH arguments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common.errors import ParameterSyntaxError, ProtocolError, UnsafeCharacterError
from smtpwire.common.mail_parameters import (
    AuthCommand,
    BdatCommand,
    OriginalRecipient,
    format_notify,
    format_orcpt,
    parse_auth_command,
    parse_auth_parameter,
    parse_bdat,
    parse_body,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
    parse_size,
)
from smtpwire.common.parameters import parse_parameters


@pytest.mark.parametrize(("value", "size"), [("0", 0), ("1024", 1024), ("9" * 20, 10**20 - 1)])
def test_size(value: str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", [None, "", "-1", "+5", "1e3", "١٢", "9" * 21, " 5", "0x10"])
def test_size_refuses(value: str | None) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "body"), [("7bit", "7BIT"), ("8BITMIME", "8BITMIME"), ("BinaryMIME", "BINARYMIME")]
)
def test_body(value: str, body: str) -> None:
    assert parse_body(value) == body


@pytest.mark.parametrize("value", [None, "", "8BIT", "BINARY", "7BIT "])
def test_body_refuses(value: str | None) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_body(value)


@pytest.mark.parametrize(("value", "ret"), [("full", "FULL"), ("HDRS", "HDRS")])
def test_ret(value: str, ret: str) -> None:
    assert parse_ret(value) == ret


@pytest.mark.parametrize("value", [None, "", "HEADERS", "FULL,HDRS"])
def test_ret_refuses(value: str | None) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_ret(value)


def test_envid_is_decoded_xtext() -> None:
    assert parse_envid("QQ314159+2Bx+3D1") == "QQ314159+x=1"
    assert parse_envid("a" * 100) == "a" * 100


@pytest.mark.parametrize("value", [None, "", "a" * 101, "a+0D+0Ab", "+00", "a+4", "a+2b"])
def test_envid_refuses(value: str | None) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_envid(value)


@pytest.mark.parametrize(
    ("value", "conditions"),
    [
        ("NEVER", frozenset()),
        ("never", frozenset()),
        ("SUCCESS", {"SUCCESS"}),
        ("success,FAILURE,Delay", {"SUCCESS", "FAILURE", "DELAY"}),
    ],
)
def test_notify(value: str, conditions: set[str]) -> None:
    assert parse_notify(value) == conditions


@pytest.mark.parametrize(
    "value", [None, "", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "SUCCESS,", "ALWAYS", "SUCCESS FAILURE"]
)
def test_notify_refuses(value: str | None) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_notify(value)


def test_format_notify() -> None:
    assert format_notify([]) == "NEVER"
    assert format_notify(["failure", "SUCCESS"]) == "FAILURE,SUCCESS"
    assert parse_notify(format_notify({"DELAY", "FAILURE"})) == {"DELAY", "FAILURE"}
    with pytest.raises(ValueError, match="NOTIFY"):
        format_notify(["NEVER"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rfc822;alice@example.org", OriginalRecipient("rfc822", "alice@example.org")),
        ("RFC822;a+2Bb@example.org", OriginalRecipient("rfc822", "a+b@example.org")),
        ("utf-8;j\\x{F6}rg@example.org", OriginalRecipient("utf-8", "jörg@example.org")),
        ("UTF-8;jörg@bücher.example", OriginalRecipient("utf-8", "jörg@bücher.example")),
        ("utf-8;a\\x{2B}b\\x{3D}c\\x{5C}d@x", OriginalRecipient("utf-8", "a+b=c\\d@x")),
        ("x-local;user+40host", OriginalRecipient("x-local", "user@host")),
    ],
)
def test_orcpt(value: str, expected: OriginalRecipient) -> None:
    assert parse_orcpt(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "alice@example.org",  # no address type
        ";alice@example.org",
        "rfc822;",
        "rfc 822;a@b",
        "rfc822;a+0D+0Ab@x",  # CR LF hidden in xtext
        "rfc822;a+C2+85b@x",  # NEL (a C1 control) hidden in UTF-8 xtext
        "utf-8;a\\x{41}b@x",  # plain ASCII must not be escaped
        "utf-8;a\\x{D800}@x",  # a surrogate
        "utf-8;a\\x{110000}@x",
        "utf-8;a\\x{85}b@x",  # C1 control
        "utf-8;a\\x{2028}b@x",  # line separator
        "utf-8;a+b@x",  # "+" must be escaped in utf-8-addr-xtext
        "utf-8;a\\b@x",
        "rfc822;" + "a" * 500,
    ],
)
def test_orcpt_refuses(value: str | None) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_orcpt(value)


@settings(max_examples=300, deadline=None)
@given(
    address=st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf")),
        min_size=1,
        max_size=40,  # at most 12 characters an escape: within ORCPT's 500
    ),
    address_type=st.sampled_from(["rfc822", "utf-8"]),
)
def test_orcpt_round_trip(address: str, address_type: str) -> None:
    value = format_orcpt(address, address_type)
    assert value.isascii()
    assert " " not in value
    assert parse_orcpt(value) == OriginalRecipient(address_type, address)


@pytest.mark.parametrize("address", ["", "a\r\nb", "a\x00", "a\u2028b"])
def test_format_orcpt_refuses_unsafe(address: str) -> None:
    with pytest.raises(UnsafeCharacterError):
        format_orcpt(address)


def test_orcpt_from_a_parsed_rcpt_line() -> None:
    [notify, orcpt] = parse_parameters("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.org")
    assert parse_notify(notify.value) == {"SUCCESS", "FAILURE"}
    assert parse_orcpt(orcpt.value).address == "b+x@example.org"


def test_auth_parameter() -> None:
    assert parse_auth_parameter("<>") is None
    assert parse_auth_parameter("e+3Dmc2@example.com") == "e=mc2@example.com"
    for bad in (None, "", "a+0Ab"):
        with pytest.raises(ParameterSyntaxError):
            parse_auth_parameter(bad)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("0 LAST", BdatCommand(0, True)),
        ("1000", BdatCommand(1000, False)),
        ("1000 last", BdatCommand(1000, True)),
        ("  42   LAST ", BdatCommand(42, True)),
    ],
)
def test_bdat(argument: str, expected: BdatCommand) -> None:
    assert parse_bdat(argument) == expected


@pytest.mark.parametrize(
    "argument", ["", "LAST", "-1", "10 FIRST", "10 LAST x", "1.5", "9" * 21, "0x10 LAST"]
)
def test_bdat_refuses(argument: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_bdat(argument)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("PLAIN", AuthCommand("PLAIN", None)),
        ("plain AGFsaWNlAHNlY3JldA==", AuthCommand("PLAIN", "AGFsaWNlAHNlY3JldA==")),
        ("login =", AuthCommand("LOGIN", "=")),
        ("CRAM-MD5", AuthCommand("CRAM-MD5", None)),
        ("x_oauth-2", AuthCommand("X_OAUTH-2", None)),
    ],
)
def test_auth_command(argument: str, expected: AuthCommand) -> None:
    assert parse_auth_command(argument) == expected


@pytest.mark.parametrize("argument", ["", "PLAIN a b", "PL@IN", "A" * 21, "PLAIN\x00", "Ünicode"])
def test_auth_command_refuses(argument: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_auth_command(argument)


def test_every_refusal_is_a_protocol_error() -> None:
    assert issubclass(ParameterSyntaxError, ProtocolError)


def test_format_orcpt_refuses_an_over_long_value() -> None:
    assert len(format_orcpt("a" * 493)) == 500
    with pytest.raises(ValueError, match="500"):
        format_orcpt("a" * 494)
    with pytest.raises(ValueError, match="500"):
        format_orcpt("é" * 83, "utf-8")  # 6 + 83 * 6 = 504
