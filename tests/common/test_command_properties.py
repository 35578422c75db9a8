"""Property tests for the command grammar: what the client formats, the server parses
back unchanged; nothing the client formats ever holds a second line."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpwire.common.charsets import find_unsafe
from smtpwire.common.commands import (
    PathArgument,
    format_command,
    format_mail_from,
    format_rcpt_to,
    parse_mail_from,
    parse_rcpt_to,
    split_command,
)
from smtpwire.common.errors import (
    AddressSyntaxError,
    CommandSyntaxError,
    NonASCIIError,
    ParameterSyntaxError,
    ProtocolError,
    UnsafeCharacterError,
)
from smtpwire.common.parameters import Parameter

ParametersArg = Mapping[str, str | None] | Iterable[str | Parameter | tuple[str, str | None]]
FORMAT_ERRORS = (UnsafeCharacterError, AddressSyntaxError, NonASCIIError, ParameterSyntaxError)

# --- grammar strategies (RFC 5321 section 4.1.2) -------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
QTEXT = "".join(chr(code) for code in [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])
VCHAR_SP = "".join(chr(code) for code in range(0x20, 0x7F))
DCONTENT = "".join(chr(code) for code in [*range(0x21, 0x5B), *range(0x5E, 0x7F)])
ESMTP_VALUE = "".join(chr(code) for code in [*range(0x21, 0x3D), *range(0x3E, 0x7F)])
# A few non-ASCII characters RFC 6531 allows in atext, qtext and U-labels.
UTF8_LETTERS = "éüßøñçжλ用户例子广告ąğ€"

LDH_LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
DOMAIN_NAME = st.lists(LDH_LABEL, min_size=1, max_size=4).map(".".join)
IPV4_LITERAL = st.ip_addresses(v=4).map(lambda address: f"[{address}]")
IPV6_LITERAL = st.ip_addresses(v=6).map(lambda address: f"[IPv6:{address}]")
GENERAL_LITERAL = st.tuples(
    LDH_LABEL.filter(lambda tag: tag.upper() != "IPV6"),
    st.text(alphabet=DCONTENT, min_size=1, max_size=15),
).map(lambda parts: f"[{parts[0]}:{parts[1]}]")
DOMAIN = st.one_of(DOMAIN_NAME, IPV4_LITERAL, IPV6_LITERAL, GENERAL_LITERAL)


def _dot_string(alphabet: str) -> st.SearchStrategy[str]:
    atom = st.text(alphabet=alphabet, min_size=1, max_size=10)
    return st.lists(atom, min_size=1, max_size=4).map(".".join)


def _quoted_string(alphabet: str) -> st.SearchStrategy[str]:
    pieces = st.one_of(
        st.sampled_from(alphabet),
        st.sampled_from(VCHAR_SP).map(lambda char: "\\" + char),
    )
    return st.lists(pieces, max_size=12).map(lambda parts: '"' + "".join(parts) + '"')


ASCII_LOCAL_PART = st.one_of(_dot_string(ATEXT), _quoted_string(QTEXT))
UTF8_LOCAL_PART = st.one_of(_dot_string(ATEXT + UTF8_LETTERS), _quoted_string(QTEXT + UTF8_LETTERS))
U_LABEL = st.text(
    alphabet=string.ascii_letters + string.digits + UTF8_LETTERS, min_size=1, max_size=10
)
UTF8_DOMAIN = st.one_of(DOMAIN, st.lists(U_LABEL, min_size=1, max_size=3).map(".".join))

ASCII_MAILBOX = st.tuples(ASCII_LOCAL_PART, DOMAIN).map("@".join)
UTF8_MAILBOX = st.tuples(UTF8_LOCAL_PART, UTF8_DOMAIN).map("@".join)

KEYWORD = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,10}", fullmatch=True)


def _hides_no_control(value: str) -> bool:
    """Round trips need values the formatter takes: one whose ``+XX`` escapes decode
    to a control character (``+00``, ``+0D``) is refused, as test_commands.py shows."""
    decoded = re.sub(r"\+([0-9A-Fa-f]{2})", lambda match: chr(int(match[1], 16)), value)
    return find_unsafe(decoded) is None


ASCII_VALUE = st.text(alphabet=ESMTP_VALUE, min_size=1, max_size=20).filter(_hides_no_control)
UTF8_VALUE = st.text(alphabet=ESMTP_VALUE + UTF8_LETTERS, min_size=1, max_size=20).filter(
    _hides_no_control
)


def _parameter_lists(value: st.SearchStrategy[str]) -> st.SearchStrategy[list[Parameter]]:
    return st.lists(
        st.builds(Parameter, KEYWORD, st.none() | value),
        max_size=5,
        unique_by=lambda parameter: parameter.keyword.upper(),
    )


@st.composite
def _addresses_and_parameters(
    draw: st.DrawFn,
) -> tuple[str, list[Parameter], bool]:
    utf8 = draw(st.booleans())
    address = draw(UTF8_MAILBOX if utf8 else ASCII_MAILBOX)
    parameters = draw(_parameter_lists(UTF8_VALUE if utf8 else ASCII_VALUE))
    return address, parameters, utf8


def _as_form(parameters: list[Parameter], form: str) -> ParametersArg:
    """The same parameters as a mapping, as tuples, or as ``KEY=VALUE`` strings."""
    if form == "mapping":
        return {parameter.keyword: parameter.value for parameter in parameters}
    if form == "tuples":
        return [(parameter.keyword, parameter.value) for parameter in parameters]
    if form == "strings":
        return [str(parameter) for parameter in parameters]
    return list(parameters)


FORMS = st.sampled_from(["mapping", "tuples", "strings", "parameters"])


def _expected(parameters: list[Parameter]) -> tuple[Parameter, ...]:
    return tuple(Parameter(parameter.keyword.upper(), parameter.value) for parameter in parameters)


def _assert_single_line(line: bytes) -> None:
    assert line.endswith(b"\r\n")
    body = line[:-2]
    assert b"\r" not in body
    assert b"\n" not in body
    assert b"\x00" not in body
    text = body.decode("utf-8")  # never anything but UTF-8 on the wire
    assert find_unsafe(text) is None


def _split(line: bytes, verb: str, *, utf8: bool) -> str:
    _assert_single_line(line)
    got_verb, argument = split_command(line[:-2], max_length=None, utf8=utf8)
    assert got_verb == verb
    return argument


# --- round trips ------------------------------------------------------------------------------


@given(_addresses_and_parameters(), FORMS, st.booleans())
def test_mail_from_round_trip(
    case: tuple[str, list[Parameter], bool], form: str, strict: bool
) -> None:
    address, parameters, utf8 = case
    line = format_mail_from(address, _as_form(parameters, form), utf8=utf8)
    argument = _split(line, "MAIL", utf8=utf8)
    parsed = parse_mail_from(argument, utf8=utf8, strict=strict)
    assert parsed == PathArgument(address, _expected(parameters))


@given(_addresses_and_parameters(), FORMS, st.booleans())
def test_rcpt_to_round_trip(
    case: tuple[str, list[Parameter], bool], form: str, strict: bool
) -> None:
    address, parameters, utf8 = case
    line = format_rcpt_to(address, _as_form(parameters, form), utf8=utf8)
    argument = _split(line, "RCPT", utf8=utf8)
    parsed = parse_rcpt_to(argument, utf8=utf8, strict=strict)
    assert parsed == PathArgument(address, _expected(parameters))


@given(_parameter_lists(ASCII_VALUE), FORMS)
def test_null_sender_round_trip(parameters: list[Parameter], form: str) -> None:
    line = format_mail_from("", _as_form(parameters, form))
    argument = _split(line, "MAIL", utf8=False)
    parsed = parse_mail_from(argument, strict=True)
    assert parsed.is_null
    assert parsed.parameters == _expected(parameters)


@given(_addresses_and_parameters())
def test_parsed_parameters_are_case_insensitive(case: tuple[str, list[Parameter], bool]) -> None:
    address, parameters, utf8 = case
    parsed = parse_mail_from(
        _split(format_mail_from(address, parameters, utf8=utf8), "MAIL", utf8=utf8), utf8=utf8
    )
    for parameter in parameters:
        assert parsed.has_parameter(parameter.keyword.lower())
        assert parsed.has_parameter(parameter.keyword.upper())
        assert parsed.parameter(parameter.keyword.swapcase()) == parameter.value


# --- arbitrary input never yields a second line ----------------------------------------------

# Text biased towards the characters that matter, mixed with anything at all.
INTERESTING = st.sampled_from(
    list('aZ09.@"\\<>[]: =+-\r\n\t\x00\x7f\x85\u2028\u2029\u200b\ufeffé用')
)
ARBITRARY_TEXT = st.one_of(st.text(), st.text(alphabet=INTERESTING, max_size=30))

Formatter = Callable[..., bytes]
FORMATTERS = st.sampled_from([format_mail_from, format_rcpt_to])


@given(FORMATTERS, ARBITRARY_TEXT, st.booleans())
def test_arbitrary_address_is_refused_or_one_line(
    formatter: Formatter, address: str, utf8: bool
) -> None:
    try:
        line = formatter(address, utf8=utf8)
    except FORMAT_ERRORS:
        return
    _assert_single_line(line)
    # What the client agreed to send, the server reads back as the same address.
    verb = "MAIL" if formatter is format_mail_from else "RCPT"
    argument = _split(line, verb, utf8=True)
    parse = parse_mail_from if verb == "MAIL" else parse_rcpt_to
    parsed = parse(argument, utf8=True)
    assert parsed.address == address
    assert parsed.parameters == ()


@given(
    FORMATTERS,
    st.lists(st.tuples(ARBITRARY_TEXT, st.none() | ARBITRARY_TEXT), max_size=4),
    st.sampled_from(["mapping", "tuples", "strings"]),
    st.booleans(),
)
def test_arbitrary_parameters_are_refused_or_one_line(
    formatter: Formatter,
    pairs: list[tuple[str, str | None]],
    form: str,
    utf8: bool,
) -> None:
    parameters: ParametersArg
    if form == "mapping":
        parameters = dict(pairs)
    elif form == "tuples":
        parameters = pairs
    else:
        parameters = [key if value is None else f"{key}={value}" for key, value in pairs]
    try:
        line = formatter("user@example.com", parameters, utf8=utf8)
    except FORMAT_ERRORS:
        return
    _assert_single_line(line)
    # Exactly the parameters given: none split in two, none added, none lost.
    given_items: list[tuple[str, str | None]]
    if isinstance(parameters, dict):
        given_items = list(parameters.items())
    elif form == "tuples":
        given_items = pairs
    else:
        given_items = []
        for item in parameters:
            assert isinstance(item, str)
            keyword, equals, value = item.partition("=")
            given_items.append((keyword, value if equals else None))
    body = line[:-2].decode()
    assert body.count(" ") == 1 + len(given_items)
    if len({keyword.upper() for keyword, _ in given_items}) == len(given_items):
        verb = "MAIL" if formatter is format_mail_from else "RCPT"
        parse = parse_mail_from if verb == "MAIL" else parse_rcpt_to
        parsed = parse(_split(line, verb, utf8=True), utf8=True, strict=True)
        assert parsed.address == "user@example.com"
        assert parsed.parameters == tuple(
            Parameter(keyword.upper(), value) for keyword, value in given_items
        )


@given(FORMATTERS, ARBITRARY_TEXT, st.text(alphabet=INTERESTING, max_size=20), st.booleans())
def test_arbitrary_text_after_xtext_looking_value(
    formatter: Formatter, tail: str, address_tail: str, utf8: bool
) -> None:
    try:
        line = formatter("user@example.com" + address_tail, {"ENVID": "QQ+2B314" + tail}, utf8=utf8)
    except FORMAT_ERRORS:
        return
    _assert_single_line(line)


COMMAND_ARGUMENT = st.one_of(ARBITRARY_TEXT, st.binary(max_size=30))


@given(
    st.one_of(st.text(max_size=10), st.binary(max_size=10), st.sampled_from(["MAIL", b"NOOP"])),
    st.lists(COMMAND_ARGUMENT, max_size=4),
)
def test_format_command_is_refused_or_one_line(
    verb: str | bytes, arguments: list[str | bytes]
) -> None:
    try:
        line = format_command(verb, *arguments)
    except UnsafeCharacterError:
        return
    _assert_single_line(line)
    got_verb, argument = split_command(line[:-2], max_length=None, utf8=True)
    expected_verb = verb if isinstance(verb, str) else verb.decode()
    assert got_verb == expected_verb.upper()
    joined = b" ".join(a if isinstance(a, bytes) else a.encode() for a in arguments)
    assert argument == joined.decode().strip(" ")


@given(st.lists(st.text(alphabet=INTERESTING, max_size=12), max_size=4))
def test_format_command_with_safe_verb_and_interesting_text(arguments: list[str]) -> None:
    try:
        line = format_command("VRFY", *arguments)
    except UnsafeCharacterError:
        assert any(find_unsafe(argument) for argument in arguments)
        return
    _assert_single_line(line)
    assert line == ("VRFY" + "".join(" " + a for a in arguments) + "\r\n").encode()


# --- the server side on arbitrary input -------------------------------------------------------


@given(st.binary(max_size=600), st.booleans())
def test_split_command_is_refused_or_well_formed(line: bytes, utf8: bool) -> None:
    try:
        verb, argument = split_command(line, utf8=utf8)
    except CommandSyntaxError:
        return
    assert len(line) + 2 <= 512
    assert verb == verb.upper()
    assert verb.isascii()
    assert verb[:1].isalpha()
    assert argument == argument.strip(" ")
    if not utf8:
        assert argument.isascii()


PATH_TEXT = st.text(
    alphabet=st.one_of(INTERESTING, st.sampled_from(list('<>@[]:,"\\ .=-+ab1'))), max_size=40
)


@pytest.mark.parametrize(("prefix", "parse"), [("FROM:", parse_mail_from), ("TO:", parse_rcpt_to)])
@given(tail=st.one_of(PATH_TEXT, st.text()), strict=st.booleans())
def test_whatever_the_server_accepts_the_client_can_forward(
    prefix: str, parse: Callable[..., PathArgument], tail: str, strict: bool
) -> None:
    try:
        parsed = parse(prefix + tail, utf8=True, strict=strict)
    except CommandSyntaxError:
        return
    assert find_unsafe(parsed.address) is None
    formatter = format_mail_from if prefix == "FROM:" else format_rcpt_to
    try:
        line = formatter(parsed.address, parsed.parameters, utf8=True)
    except ProtocolError as error:  # pragma: no cover - a failure is the finding
        raise AssertionError(f"accepted {tail!r} but cannot format {parsed!r}: {error}") from None
    reparsed = parse(_split(line, "MAIL" if prefix == "FROM:" else "RCPT", utf8=True), utf8=True)
    assert reparsed == parsed
