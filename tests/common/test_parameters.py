"""ESMTP parameters and xtext (RFC 5321 section 4.1.2 esmtp-param, RFC 3461 section 4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from smtpwire.common.commands import format_mail_from
from smtpwire.common.errors import (
    NonASCIIError,
    ParameterSyntaxError,
    UnsafeCharacterError,
)
from smtpwire.common.parameters import (
    Parameter,
    decode_xtext,
    encode_xtext,
    format_parameters,
    parameters_to_dict,
    parse_parameters,
)

ParametersArg = Mapping[str, str | None] | Iterable[str | Parameter | tuple[str, str | None]]

# --- Parameter --------------------------------------------------------------------------------


def test_parameter_str() -> None:
    assert str(Parameter("SIZE", "100")) == "SIZE=100"
    assert str(Parameter("SMTPUTF8")) == "SMTPUTF8"
    assert Parameter("SMTPUTF8").value is None
    assert Parameter("SIZE", "1") == ("SIZE", "1")


# --- parse_parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("   ", ()),
        ("SIZE=100", (Parameter("SIZE", "100"),)),
        (" SIZE=100", (Parameter("SIZE", "100"),)),
        (
            "size=100 body=8bitmime smtputf8",
            (Parameter("SIZE", "100"), Parameter("BODY", "8bitmime"), Parameter("SMTPUTF8")),
        ),
        ("SIZE=1    BODY=7BIT  ", (Parameter("SIZE", "1"), Parameter("BODY", "7BIT"))),
        ("ENVID=QQ+2B314", (Parameter("ENVID", "QQ+2B314"),)),
        ("X-Custom-1=a", (Parameter("X-CUSTOM-1", "a"),)),
        ("9X=!~", (Parameter("9X", "!~"),)),
        ("ORCPT=rfc822;a@b.example", (Parameter("ORCPT", "rfc822;a@b.example"),)),
    ],
)
def test_parse_parameters(text: str, expected: tuple[Parameter, ...]) -> None:
    assert parse_parameters(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "-SIZE=1",
        "SI_ZE=1",
        "=1",
        "=",
        "SIZE.X=1",
        "SIZE=",
        "SIZE=a=b",
        "KEY==",
        "SIZE=1\tBODY=7BIT",
        "SIZE=1\x00",
        "SIZE=1\r\nRSET",
        "SIZE=\x7f",
        "<a@b.example>",
        "SIZE=1 SIZE=2",
        "SIZE=1 size=1",
        "SMTPUTF8 SmtpUtf8",
    ],
)
def test_parse_parameters_refuses(text: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(ParameterSyntaxError):
            parse_parameters(text, utf8=utf8)


def test_parse_parameters_non_ascii_value() -> None:
    with pytest.raises(NonASCIIError):
        parse_parameters("ENVID=jörg")
    assert parse_parameters("ENVID=jörg", utf8=True) == (Parameter("ENVID", "jörg"),)


@pytest.mark.parametrize("value", ["a\x85b", "a\u2028b", "a\u200bb", "a\udcffb", "a\ufeffb"])
def test_parse_parameters_refuses_unsafe_non_ascii_value(value: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_parameters(f"ENVID={value}", utf8=True)


def test_parse_parameters_refuses_non_ascii_keyword() -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_parameters("SÍZE=1", utf8=True)


def test_parameters_to_dict() -> None:
    parameters = parse_parameters("size=1 SMTPUTF8 body=7BIT")
    assert parameters_to_dict(parameters) == {"SIZE": "1", "SMTPUTF8": None, "BODY": "7BIT"}


# --- format_parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ((), ""),
        ({}, ""),
        ([], ""),
        ({"SIZE": "100"}, " SIZE=100"),
        ({"SIZE": "100", "SMTPUTF8": None}, " SIZE=100 SMTPUTF8"),
        ([Parameter("BODY", "8BITMIME"), Parameter("SMTPUTF8")], " BODY=8BITMIME SMTPUTF8"),
        ([("SIZE", "1"), ("RET", None)], " SIZE=1 RET"),
        (["SIZE=100", "BODY=8BITMIME", "SMTPUTF8"], " SIZE=100 BODY=8BITMIME SMTPUTF8"),
        (["size=100", ("body", "7bit")], " SIZE=100 BODY=7bit"),
        ({"ENVID": "QQ+2B314"}, " ENVID=QQ+2B314"),
    ],
)
def test_format_parameters(parameters: ParametersArg, expected: str) -> None:
    assert format_parameters(parameters) == expected


def test_format_parameters_round_trips_through_parse() -> None:
    text = format_parameters({"size": "100", "BODY": "8BITMIME", "SmtpUtf8": None})
    assert parse_parameters(text) == (
        Parameter("SIZE", "100"),
        Parameter("BODY", "8BITMIME"),
        Parameter("SMTPUTF8"),
    )


@pytest.mark.parametrize(
    "parameters",
    [
        {"SIZE": "1 BODY=8BITMIME"},
        {"SIZE": "a=b"},
        {"SIZE": ""},
        {"SI ZE": "1"},
        {"": "1"},
        {"-SIZE": "1"},
        {"<x@y>": None},
        ["SIZE=1 RSET"],
        ["=1"],
        [""],
        [("SIZE", "1 <c@d.example>")],
        {"SIZE": "1\r\nRSET"},
        {"SIZE\n": "1"},
        {"ENVID": "a+0D+0A\r\n"},
        {"ENVID": "x\x00"},
        {"ENVID": "x\x7f"},
        {"ENVID": "x\x85"},
        {"ENVID": "x\u2028"},
        {"ENVID": "x\u200b"},
        ["ENVID=x\u2029"],
    ],
)
def test_format_parameters_refuses_unsafe(parameters: ParametersArg) -> None:
    for utf8 in (False, True):
        with pytest.raises(UnsafeCharacterError):
            format_parameters(parameters, utf8=utf8)


def test_format_parameters_non_ascii() -> None:
    with pytest.raises(NonASCIIError):
        format_parameters({"ENVID": "jörg"})
    assert format_parameters({"ENVID": "jörg"}, utf8=True) == " ENVID=jörg"
    with pytest.raises(UnsafeCharacterError):
        format_parameters({"SÍZE": "1"}, utf8=True)


# --- xtext ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", ""),
        ("abc", "abc"),
        ("QQ314", "QQ314"),
        ("a+b", "a+2Bb"),
        ("a=b", "a+3Db"),
        ("a b", "a+20b"),
        ("+=", "+2B+3D"),
        ("é", "+C3+A9"),
        ("用", "+E7+94+A8"),
        ("\r\n", "+0D+0A"),
        ("\x00", "+00"),
        ("\x7f", "+7F"),
        ("!~<>;@", "!~<>;@"),
    ],
)
def test_encode_xtext(text: str, encoded: str) -> None:
    assert encode_xtext(text) == encoded


@pytest.mark.parametrize(
    "text", ["", "abc", "a+b", "a=b", "a b", "+=+=", "jörg müller", "用户", "<id@host>", "100%"]
)
def test_xtext_round_trip(text: str) -> None:
    encoded = encode_xtext(text)
    assert all(0x21 <= ord(char) <= 0x7E and char != "=" for char in encoded)
    assert decode_xtext(encoded) == text


@pytest.mark.parametrize(
    ("value", "decoded"),
    [("QQ+2B314", "QQ+314"), ("+41+42", "AB"), ("a+20b", "a b"), ("+C3+A9", "é"), ("", "")],
)
def test_decode_xtext(value: str, decoded: str) -> None:
    assert decode_xtext(value) == decoded


@pytest.mark.parametrize(
    "value",
    [
        "+4a",
        "+2b",
        "+g0",
        "+G0",
        "+4",
        "+",
        "a+",
        "a+4",
        "++41",
        "a b",
        "a=b",
        "é",
        "a\x00",
        "+ 41",
    ],
)
def test_decode_xtext_refuses_malformed(value: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        decode_xtext(value)


@pytest.mark.parametrize(
    "value",
    [
        "a+0D+0Ab",
        "+0D",
        "+0A",
        "+00",
        "+09",
        "+1B",
        "+7F",
        "+C2+85",  # U+0085 NEL
        "+E2+80+A8",  # U+2028 LINE SEPARATOR
        "+E2+80+8B",  # U+200B ZERO WIDTH SPACE
    ],
)
def test_decode_xtext_refuses_control_characters(value: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        decode_xtext(value)


@pytest.mark.parametrize("value", ["+FF", "+C3", "+C3+28", "+ED+A0+80", "+C0+AF"])
def test_decode_xtext_refuses_invalid_utf8(value: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        decode_xtext(value)


def test_decode_xtext_allow_utf8() -> None:
    assert decode_xtext("+C3+A9") == "é"
    with pytest.raises(ParameterSyntaxError):
        decode_xtext("+C3+A9", allow_utf8=False)
    assert decode_xtext("+41", allow_utf8=False) == "A"


@pytest.mark.parametrize(
    "value",
    ["a+0D+0Ab", "+00", "x+7F", "+0A", "+C2+85", "+E2+80+A8", "a+09b"],
)
def test_format_refuses_controls_hidden_in_xtext(value: str) -> None:
    # Each decodes (RFC 3461 xtext) to a control character or line separator.
    with pytest.raises(UnsafeCharacterError):
        format_parameters({"ENVID": value})
    with pytest.raises(UnsafeCharacterError):
        format_mail_from("a@example.org", [("ENVID", value)])


@pytest.mark.parametrize("value", ["a+2Bb", "+3D", "abc", "a+20b", "+C3+A9", "a+0"])
def test_format_allows_harmless_xtext(value: str) -> None:
    assert format_parameters({"ENVID": value}) == f" ENVID={value}"
