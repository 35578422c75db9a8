"""Command lines: split_command, parse_mail_from / parse_rcpt_to, and the formatters.

The server side must refuse anything RFC 5321 section 4.1.2 does not allow (and be
lenient only where the docstrings say so); the client side must never write a line
that holds a second command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pytest

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
    CommandTooLongError,
    LineTooLongError,
    NonASCIIError,
    ParameterSyntaxError,
    ProtocolError,
    UnsafeCharacterError,
)
from smtpwire.common.parameters import Parameter
from support.domains import domain_of_length

ParametersArg = Mapping[str, str | None] | Iterable[str | Parameter | tuple[str, str | None]]


# --- split_command -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"mail FROM:<a@example.com>", ("MAIL", "FROM:<a@example.com>")),
        (b"Ehlo client.example", ("EHLO", "client.example")),
        (b"NOOP", ("NOOP", "")),
        (b"  rset  ", ("RSET", "")),
        (b"MAIL   FROM:<a@b.example>   ", ("MAIL", "FROM:<a@b.example>")),
        (b"RCPT TO:<a@b.example>  NOTIFY=NEVER", ("RCPT", "TO:<a@b.example>  NOTIFY=NEVER")),
        (b"x-custom_verb2 Some Arg", ("X-CUSTOM_VERB2", "Some Arg")),
        (b"vrfy MixedCase", ("VRFY", "MixedCase")),
    ],
)
def test_split_command_upper_cases_verb_and_strips_argument(
    line: bytes, expected: tuple[str, str]
) -> None:
    assert split_command(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"   ",
        b"1MAIL FROM:<a@b.example>",
        b"-NOOP",
        b"_NOOP",
        b"MA.IL x",
        b"MAIL:FROM:<a@b.example>",
        b"MAIL\tFROM:<a@b.example>",
        b"M\xc3\x84IL FROM:<a@b.example>",
        b"\xffNOOP",
        b"NO\x00OP",
        b"\tNOOP",
    ],
)
def test_split_command_refuses_malformed_verb(line: bytes) -> None:
    with pytest.raises(CommandSyntaxError):
        split_command(line, utf8=True)


def test_split_command_accepts_510_octets() -> None:
    line = b"NOOP " + b"x" * 505
    assert len(line) == 510
    assert split_command(line) == ("NOOP", "x" * 505)


def test_split_command_refuses_511_octets() -> None:
    line = b"NOOP " + b"x" * 506
    assert len(line) == 511
    with pytest.raises(CommandTooLongError) as excinfo:
        split_command(line)
    assert excinfo.value.limit == 512
    assert isinstance(excinfo.value, LineTooLongError)
    assert isinstance(excinfo.value, CommandSyntaxError)


def test_split_command_counts_octets_not_characters() -> None:
    argument = "é" * 252 + "x"  # 505 octets, 253 characters
    line = b"NOOP " + argument.encode()
    assert len(line) == 510
    assert split_command(line, utf8=True) == ("NOOP", argument)
    with pytest.raises(CommandTooLongError):
        split_command(line + b"x", utf8=True)


@pytest.mark.parametrize("max_length", [10, 20, 100])
def test_split_command_custom_max_length(max_length: int) -> None:
    fits = b"NOOP " + b"y" * (max_length - 7)
    assert len(fits) + 2 == max_length
    assert split_command(fits, max_length=max_length) == ("NOOP", "y" * (max_length - 7))
    with pytest.raises(CommandTooLongError) as excinfo:
        split_command(fits + b"y", max_length=max_length)
    assert excinfo.value.limit == max_length


def test_split_command_without_limit() -> None:
    line = b"NOOP " + b"z" * 100_000
    assert split_command(line, max_length=None) == ("NOOP", "z" * 100_000)


def test_split_command_refuses_non_ascii_argument_without_utf8() -> None:
    with pytest.raises(NonASCIIError):
        split_command("MAIL FROM:<jörg@example.com>".encode())


def test_split_command_decodes_utf8_argument() -> None:
    line = "MAIL FROM:<jörg@bücher.example> SMTPUTF8".encode()
    assert split_command(line, utf8=True) == ("MAIL", "FROM:<jörg@bücher.example> SMTPUTF8")


def test_split_command_keeps_invalid_utf8_as_surrogate_escapes() -> None:
    verb, argument = split_command(b"MAIL FROM:<\xff\xc3@example.com>", utf8=True)
    assert verb == "MAIL"
    assert argument == "FROM:<\udcff\udcc3@example.com>"
    # ... so that the address parser refuses them instead of them vanishing.
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(argument, utf8=True)


def test_split_command_invalid_utf8_refused_without_utf8() -> None:
    with pytest.raises(NonASCIIError):
        split_command(b"MAIL FROM:<\xff@example.com>")


# --- parse_mail_from / parse_rcpt_to: accepted paths ----------------------------------


@pytest.mark.parametrize(
    ("argument", "address"),
    [
        ("FROM:<user@example.com>", "user@example.com"),
        ("from:<user@example.com>", "user@example.com"),
        ("From:<User@EXAMPLE.com>", "User@EXAMPLE.com"),
        ("FROM:<first.last+tag@sub.example.com>", "first.last+tag@sub.example.com"),
        ("FROM:<!#$%&'*+-/=?^_`{|}~@example.com>", "!#$%&'*+-/=?^_`{|}~@example.com"),
        ('FROM:<"john doe"@example.com>', '"john doe"@example.com'),
        ('FROM:<"a\\"b"@example.com>', '"a\\"b"@example.com'),
        ('FROM:<"a\\\\b"@example.com>', '"a\\\\b"@example.com'),
        ('FROM:<"  lots of  spaces "@example.com>', '"  lots of  spaces "@example.com'),
        ('FROM:<"a@b"@example.com>', '"a@b"@example.com'),
        ('FROM:<"<x> y"@example.com>', '"<x> y"@example.com'),
        ('FROM:<""@example.com>', '""@example.com'),
        ("FROM:<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        ("FROM:<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        ("FROM:<user@[ipv6:2001:DB8::1]>", "user@[ipv6:2001:DB8::1]"),
        ("FROM:<user@[IPv6:::ffff:192.0.2.1]>", "user@[IPv6:::ffff:192.0.2.1]"),
        ("FROM:<user@[x-tag:some-content]>", "user@[x-tag:some-content]"),
        ("FROM:<@relay.example:user@example.com>", "user@example.com"),
        ("FROM:<@a,@b:u@d>", "u@d"),
        ("FROM:<@a.example,@[192.0.2.1]:user@example.com>", "user@example.com"),
        ("FROM:<a@" + domain_of_length(255) + ">", "a@" + domain_of_length(255)),
        ("FROM:<a@" + "b" * 63 + ".example>", "a@" + "b" * 63 + ".example"),
    ],
)
def test_parse_mail_from_accepts(argument: str, address: str) -> None:
    for strict in (False, True):
        path = parse_mail_from(argument, strict=strict)
        assert path == PathArgument(address, ())
        assert not path.is_null


@pytest.mark.parametrize(
    ("argument", "address"),
    [
        ("TO:<user@example.com>", "user@example.com"),
        ("to:<user@example.com>", "user@example.com"),
        ('TO:<"john doe"@example.com>', '"john doe"@example.com'),
        ("TO:<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        ("TO:<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        ("TO:<@a,@b:u@d>", "u@d"),
        ("TO:<Postmaster>", "Postmaster"),
        ("TO:<postmaster>", "postmaster"),
        ("TO:<POSTMASTER>", "POSTMASTER"),
    ],
)
def test_parse_rcpt_to_accepts(argument: str, address: str) -> None:
    for strict in (False, True):
        assert parse_rcpt_to(argument, strict=strict) == PathArgument(address, ())


def test_parse_mail_from_null_path() -> None:
    path = parse_mail_from("FROM:<>")
    assert path.address == ""
    assert path.is_null
    assert path.parameters == ()


def test_parse_mail_from_null_path_with_parameters() -> None:
    path = parse_mail_from("FROM:<> SIZE=0 BODY=8BITMIME", strict=True)
    assert path.is_null
    assert path.parameters == (Parameter("SIZE", "0"), Parameter("BODY", "8BITMIME"))


@pytest.mark.parametrize("argument", ["TO:<>", "TO:<> NOTIFY=NEVER", "to:<>"])
def test_parse_rcpt_to_refuses_null_path(argument: str) -> None:
    for strict in (False, True):
        with pytest.raises(AddressSyntaxError):
            parse_rcpt_to(argument, strict=strict)


# --- address literals --------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [
        "[192.0.2.256]",
        "[192.0.2]",
        "[192.0.2.1.5]",
        "[1.2.3.-4]",
        "[example.com]",
        "[192.0.2.1 ]",
        "[]",
        "[IPv6:2001:db8::g]",
        "[IPv6:1:2:3:4:5:6:7:8:9]",
        "[IPv6:2001:db8:::1]",
        "[IPv6:]",
        "[IPv6:192.0.2.1]",
        "[IPv6:fe80::1%eth0]",  # RFC 5321 IPv6-addr has no zone identifier
        "[IPv6:fe80::1%1]",
        "[tag:]",
        "[ta_g:x]",
        "[:content]",
        "[192.0.2.1",
        "192.0.2.1]",
        "[a[b]",
    ],
)
def test_parse_refuses_invalid_address_literal(literal: str) -> None:
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(f"FROM:<user@{literal}>")
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_to(f"TO:<user@{literal}>")


# --- UTF-8 (RFC 6531) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "jörg@example.com",
        "用户@例子.广告",
        "user@bücher.example",
        '"jörg müller"@example.com',
        "δοκιμή@παράδειγμα.δοκιμή",
    ],
)
def test_utf8_address_needs_utf8(address: str) -> None:
    with pytest.raises(NonASCIIError):
        parse_mail_from(f"FROM:<{address}>")
    with pytest.raises(NonASCIIError):
        parse_rcpt_to(f"TO:<{address}>")
    assert parse_mail_from(f"FROM:<{address}> SMTPUTF8", utf8=True, strict=True) == (
        PathArgument(address, (Parameter("SMTPUTF8"),))
    )
    assert parse_rcpt_to(f"TO:<{address}>", utf8=True, strict=True).address == address


# --- parameters ---------------------------------------------------------------------------


def test_parse_parameters_upper_cases_keywords_and_keeps_values() -> None:
    path = parse_mail_from("FROM:<a@b.example> size=100 body=8bitmime Ret=HDRS envid=QQ+2B314")
    assert path.parameters == (
        Parameter("SIZE", "100"),
        Parameter("BODY", "8bitmime"),
        Parameter("RET", "HDRS"),
        Parameter("ENVID", "QQ+2B314"),
    )


def test_parse_rcpt_parameters() -> None:
    path = parse_rcpt_to(
        "TO:<user@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user@example.com"
    )
    assert path.address == "user@example.com"
    assert path.parameters == (
        Parameter("NOTIFY", "SUCCESS,FAILURE"),
        Parameter("ORCPT", "rfc822;user@example.com"),
    )


def test_parse_valueless_parameter() -> None:
    path = parse_mail_from("FROM:<a@b.example> SMTPUTF8 BODY=8BITMIME", utf8=True)
    assert path.parameters == (Parameter("SMTPUTF8", None), Parameter("BODY", "8BITMIME"))


@pytest.mark.parametrize(
    "parameters",
    ["SIZE=1 SIZE=2", "SIZE=1 size=2", "SMTPUTF8 smtputf8", "BODY=7BIT SIZE=1 Body=8BITMIME"],
)
def test_parse_refuses_duplicate_keyword(parameters: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_mail_from(f"FROM:<a@b.example> {parameters}")
    with pytest.raises(ParameterSyntaxError):
        parse_rcpt_to(f"TO:<a@b.example> {parameters}")


@pytest.mark.parametrize(
    "parameters",
    [
        "-SIZE=1",
        "SI_ZE=1",
        "=1",
        "SIZE.X=1",
        "SIZE=",
        "SIZE=a=b",
        "KEY==",
        "SIZE=1 =2",
        "<c@d.example>",
        "SIZE=1 BODY=",
    ],
)
def test_parse_refuses_malformed_parameter(parameters: str) -> None:
    with pytest.raises(ParameterSyntaxError):
        parse_mail_from(f"FROM:<a@b.example> {parameters}")
    with pytest.raises(ParameterSyntaxError):
        parse_rcpt_to(f"TO:<a@b.example> {parameters}")


def test_parse_tolerates_runs_of_spaces_between_parameters() -> None:
    path = parse_mail_from("FROM:<a@b.example>   SIZE=1    BODY=7BIT")
    assert path.parameters == (Parameter("SIZE", "1"), Parameter("BODY", "7BIT"))


# --- lenient vs strict ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "address", "parameters"),
    [
        ("FROM: <a@b.example>", "a@b.example", ()),
        ("FROM:    <a@b.example> SIZE=5", "a@b.example", (Parameter("SIZE", "5"),)),
        ("FROM:a@b.example", "a@b.example", ()),
        ("FROM: a@b.example", "a@b.example", ()),
        ("FROM:a@b.example SIZE=10", "a@b.example", (Parameter("SIZE", "10"),)),
        ("FROM:<user>", "user", ()),
        ('FROM:<"john doe">', '"john doe"', ()),
        ("FROM: <>", "", ()),
    ],
)
def test_mail_lenient_only(argument: str, address: str, parameters: tuple[Parameter, ...]) -> None:
    assert parse_mail_from(argument) == PathArgument(address, parameters)
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(argument, strict=True)


@pytest.mark.parametrize(
    ("argument", "address"),
    [
        ("TO: <a@b.example>", "a@b.example"),
        ("TO:a@b.example", "a@b.example"),
        ("TO:<user>", "user"),
    ],
)
def test_rcpt_lenient_only(argument: str, address: str) -> None:
    assert parse_rcpt_to(argument).address == address
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_to(argument, strict=True)


# --- missing prefix, junk -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "argument"),
    [
        (parse_mail_from, "<a@b.example>"),
        (parse_mail_from, "FROM <a@b.example>"),
        (parse_mail_from, "FRM:<a@b.example>"),
        (parse_mail_from, "TO:<a@b.example>"),
        (parse_mail_from, ""),
        (parse_mail_from, " FROM:<a@b.example>"),
        (parse_rcpt_to, "<a@b.example>"),
        (parse_rcpt_to, "TO <a@b.example>"),
        (parse_rcpt_to, "FROM:<a@b.example>"),
        (parse_rcpt_to, ""),
    ],
)
def test_missing_prefix_is_a_command_syntax_error(
    parse: Callable[[str], PathArgument], argument: str
) -> None:
    with pytest.raises(CommandSyntaxError) as excinfo:
        parse(argument)
    # Not a bad path or parameter: the command itself is malformed (501, not 553).
    assert excinfo.type is CommandSyntaxError


@pytest.mark.parametrize(
    "argument",
    [
        "FROM:<a@b.example>x",
        "FROM:<a@b.example>>",
        "FROM:<a@b.example",
        "FROM:<<a@b.example>>",
        "FROM:<a@b.example>,<c@d.example>",
        "FROM:<a@b.example>SIZE=1",
        "FROM:<a b@example.com>",
        "FROM:<a@b.example c>",
        "FROM:<a@b.example.>",
        "FROM:<a@-b.example>",
        "FROM:<a@b-.example>",
        "FROM:<a@b..example>",
        "FROM:<a@b_c.example>",
        "FROM:<a..b@example.com>",
        "FROM:<.a@example.com>",
        "FROM:<a.@example.com>",
        "FROM:<a@>",
        "FROM:<@example.com>",
        "FROM:<a@@example.com>",
        'FROM:<"a"b@example.com>',
        'FROM:<"unterminated@example.com>',
        'FROM:<a"b"@example.com>',
        "FROM:<@relay.example,user@example.com>",
        "FROM:<@:user@example.com>",
        "FROM:",
        "FROM:<",
        "FROM:>",
    ],
)
def test_parse_refuses_malformed_path(argument: str) -> None:
    for strict in (False, True):
        with pytest.raises(AddressSyntaxError):
            parse_mail_from(argument, strict=strict)
        with pytest.raises(AddressSyntaxError):
            parse_rcpt_to("TO:" + argument[len("FROM:") :], strict=strict)


def test_parse_refuses_another_path_after_the_first() -> None:
    with pytest.raises(CommandSyntaxError):
        parse_mail_from("FROM:<a@b.example> <c@d.example>")
    with pytest.raises(CommandSyntaxError):
        parse_rcpt_to("TO:<a@b.example> <c@d.example>")


CONTROL_CHARACTERS = ["\x00", "\r", "\n", "\t", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=repr)
@pytest.mark.parametrize(
    "template",
    [
        "<us{}er@example.com>",
        "<user@exa{}mple.com>",
        '<"us{}er"@example.com>',
        '<"us\\{}er"@example.com>',
        "<user@example.com>{}",
        "<user@example.com> SIZE=1{}",
        "<user@example.com> ENVID=a{}b",
        "<user@example.com>{}RSET",
        "{}<user@example.com>",
        "<user@[192.0.2.1{}]>",
    ],
)
@pytest.mark.parametrize("utf8", [False, True])
def test_parse_refuses_control_characters(char: str, template: str, utf8: bool) -> None:
    path = template.format(char)
    with pytest.raises(CommandSyntaxError):
        parse_mail_from("FROM:" + path, utf8=utf8)
    with pytest.raises(CommandSyntaxError):
        parse_rcpt_to("TO:" + path, utf8=utf8)


# --- lengths ---------------------------------------------------------------------------------


def test_max_local_part() -> None:
    assert parse_mail_from(f"FROM:<{'a' * 64}@example.com>", max_local_part=64).address
    assert parse_rcpt_to(f"TO:<{'a' * 64}@example.com>", max_local_part=64).address
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(f"FROM:<{'a' * 65}@example.com>", max_local_part=64)
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_to(f"TO:<{'a' * 65}@example.com>", max_local_part=64)
    with pytest.raises(AddressSyntaxError):
        parse_mail_from("FROM:<abcdef@example.com>", max_local_part=5)


def test_local_part_unlimited_by_default() -> None:
    local = "a" * 200
    assert parse_mail_from(f"FROM:<{local}@example.com>").address == f"{local}@example.com"


def test_max_local_part_counts_octets() -> None:
    local = "é" * 32 + "a"  # 33 characters, 65 octets
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(f"FROM:<{local}@example.com>", utf8=True, max_local_part=64)
    assert parse_mail_from(f"FROM:<{local[:-1]}@example.com>", utf8=True, max_local_part=64)


def test_domain_over_255_octets_refused() -> None:
    domain = domain_of_length(256)
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(f"FROM:<a@{domain}>")
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_to(f"TO:<a@{domain}>")


def test_domain_label_over_63_octets_refused() -> None:
    domain = "b" * 64 + ".example"
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(f"FROM:<a@{domain}>")
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_to(f"TO:<a@{domain}>")


# --- PathArgument -------------------------------------------------------------------------------


def test_path_argument_parameter_lookup_is_case_insensitive() -> None:
    path = parse_mail_from("FROM:<a@b.example> SIZE=100 smtputf8 Body=8BITMIME", utf8=True)
    assert path.parameter("size") == "100"
    assert path.parameter("SIZE") == "100"
    assert path.parameter("Size") == "100"
    assert path.parameter("body") == "8BITMIME"
    assert path.parameter("SMTPUTF8") is None
    assert path.has_parameter("smtputf8")
    assert path.has_parameter("SmtpUtf8")
    assert path.has_parameter("size")
    assert path.parameter("RET") is None
    assert not path.has_parameter("ret")
    assert not path.has_parameter("SIZ")


def test_path_argument_defaults() -> None:
    path = PathArgument("a@b.example")
    assert path.parameters == ()
    assert not path.is_null
    assert PathArgument("").is_null
    assert not path.has_parameter("SIZE")


# --- format_command -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "arguments", "expected"),
    [
        ("NOOP", (), b"NOOP\r\n"),
        ("EHLO", ("client.example",), b"EHLO client.example\r\n"),
        (b"MAIL", (b"FROM:<a@b.example>", "SIZE=1"), b"MAIL FROM:<a@b.example> SIZE=1\r\n"),
        ("AUTH", ("PLAIN", "AGFAYg=="), b"AUTH PLAIN AGFAYg==\r\n"),
        ("VRFY", ("jörg",), "VRFY jörg\r\n".encode()),
        ("VRFY", ("jörg".encode(),), "VRFY jörg\r\n".encode()),
        ("X-Custom_1", (), b"X-Custom_1\r\n"),
    ],
)
def test_format_command(
    verb: str | bytes, arguments: tuple[str | bytes, ...], expected: bytes
) -> None:
    assert format_command(verb, *arguments) == expected


C0_AND_DEL = [chr(code) for code in range(0x20)] + ["\x7f"]


@pytest.mark.parametrize("char", C0_AND_DEL, ids=repr)
def test_format_command_refuses_c0_and_del(char: str) -> None:
    raw = char.encode()
    cases: list[tuple[str | bytes, tuple[str | bytes, ...]]] = [
        (f"NO{char}OP", ()),
        (b"NO" + raw + b"OP", ()),
        (f"NOOP{char}", ()),
        ("VRFY", (f"us{char}er",)),
        ("VRFY", (b"us" + raw + b"er",)),
        ("MAIL", ("FROM:<a@b.example>", f"SIZE=1{char}RSET")),
        ("MAIL", ("FROM:<a@b.example>", b"SIZE=1" + raw)),
        ("VRFY", (char,)),
        ("VRFY", (raw,)),
        ("VRFY", ("jörg" + char,)),
        ("VRFY", ("jörg".encode() + raw,)),
    ]
    for verb, arguments in cases:
        with pytest.raises(UnsafeCharacterError):
            format_command(verb, *arguments)


UNSAFE_NON_ASCII = [
    "\x80",
    "\x85",
    "\x9f",
    "\u200b",
    "\u200d",
    "\u200e",
    "\u202e",
    "\u2028",
    "\u2029",
    "\u2060",
    "\ufeff",
]


@pytest.mark.parametrize("char", UNSAFE_NON_ASCII, ids=repr)
def test_format_command_refuses_unsafe_unicode(char: str) -> None:
    for argument in (f"a{char}b", char, f"jörg{char}"):
        with pytest.raises(UnsafeCharacterError):
            format_command("VRFY", argument)
        with pytest.raises(UnsafeCharacterError):
            format_command("VRFY", argument.encode())
        with pytest.raises(UnsafeCharacterError):
            format_command("MAIL", "FROM:<a@b.example>", argument.encode())


@pytest.mark.parametrize(
    "argument",
    [
        b"\xff",
        b"\xc3",
        b"a\xc3(",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xe2\x80",
        b"\xf8\x88\x80\x80\x80",
    ],
    ids=repr,
)
def test_format_command_refuses_invalid_utf8_bytes(argument: bytes) -> None:
    with pytest.raises(UnsafeCharacterError):
        format_command("VRFY", argument)
    with pytest.raises(UnsafeCharacterError):
        format_command("MAIL", b"FROM:<a@b.example>", argument)


def test_format_command_refuses_lone_surrogate_str() -> None:
    # A str argument that cannot be encoded must be refused like invalid UTF-8
    # bytes are, inside the ProtocolError family the I/O layers catch.
    with pytest.raises(UnsafeCharacterError):
        format_command("VRFY", "a\ud800b")


@pytest.mark.parametrize("verb", ["", "1NOOP", "MAIL FROM:", "MÄIL", b"M\xc3\x84IL", "-X", " NOOP"])
def test_format_command_refuses_malformed_verb(verb: str | bytes) -> None:
    with pytest.raises(UnsafeCharacterError):
        format_command(verb)


def test_format_command_max_length() -> None:
    assert format_command("NOOP", "x" * 10, max_length=17) == b"NOOP " + b"x" * 10 + b"\r\n"
    with pytest.raises(CommandTooLongError) as excinfo:
        format_command("NOOP", "x" * 10, max_length=16)
    assert excinfo.value.limit == 16
    # Octets, not characters.
    with pytest.raises(CommandTooLongError):
        format_command("VRFY", "é" * 6, max_length=18)
    assert format_command("VRFY", "é" * 6, max_length=19)


def test_format_command_no_limit_by_default() -> None:
    assert len(format_command("NOOP", "x" * 10_000)) == 10_007


def test_unsafe_character_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="argument"):
        format_command("VRFY", "a\r\nRSET")
    assert issubclass(UnsafeCharacterError, ValueError)
    assert issubclass(UnsafeCharacterError, ProtocolError)


# --- format_mail_from / format_rcpt_to --------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "parameters", "utf8", "expected"),
    [
        ("user@example.com", (), False, b"MAIL FROM:<user@example.com>\r\n"),
        ("", (), False, b"MAIL FROM:<>\r\n"),
        ("", {"SIZE": "100"}, False, b"MAIL FROM:<> SIZE=100\r\n"),
        (
            "a@b.example",
            {"SIZE": "100", "SMTPUTF8": None},
            True,
            b"MAIL FROM:<a@b.example> SIZE=100 SMTPUTF8\r\n",
        ),
        (
            "a@b.example",
            [Parameter("BODY", "8BITMIME"), ("SIZE", "1"), Parameter("SMTPUTF8")],
            True,
            b"MAIL FROM:<a@b.example> BODY=8BITMIME SIZE=1 SMTPUTF8\r\n",
        ),
        (
            "a@b.example",
            ["SIZE=100", "BODY=8BITMIME", "SMTPUTF8"],
            False,
            b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n",
        ),
        ("a@b.example", ["size=100"], False, b"MAIL FROM:<a@b.example> SIZE=100\r\n"),
        (
            "a@b.example",
            {"ENVID": "QQ+2B314"},
            False,
            b"MAIL FROM:<a@b.example> ENVID=QQ+2B314\r\n",
        ),
        ('"john doe"@example.com', (), False, b'MAIL FROM:<"john doe"@example.com>\r\n'),
        ('"a\\"b <c>"@example.com', (), False, b'MAIL FROM:<"a\\"b <c>"@example.com>\r\n'),
        ("user@[192.0.2.1]", (), False, b"MAIL FROM:<user@[192.0.2.1]>\r\n"),
        ("user@[IPv6:2001:db8::1]", (), False, b"MAIL FROM:<user@[IPv6:2001:db8::1]>\r\n"),
        ("root", (), False, b"MAIL FROM:<root>\r\n"),
        (
            "jörg@bücher.example",
            ["SMTPUTF8"],
            True,
            "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n".encode(),
        ),
    ],
)
def test_format_mail_from(
    address: str, parameters: ParametersArg, utf8: bool, expected: bytes
) -> None:
    assert format_mail_from(address, parameters, utf8=utf8) == expected


@pytest.mark.parametrize(
    ("address", "parameters", "expected"),
    [
        ("user@example.com", (), b"RCPT TO:<user@example.com>\r\n"),
        ("Postmaster", (), b"RCPT TO:<Postmaster>\r\n"),
        (
            "user@example.com",
            {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;user@example.com"},
            b"RCPT TO:<user@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user@example.com\r\n",
        ),
        (
            "u@[IPv6:2001:db8::1]",
            ["NOTIFY=NEVER"],
            b"RCPT TO:<u@[IPv6:2001:db8::1]> NOTIFY=NEVER\r\n",
        ),
    ],
)
def test_format_rcpt_to(address: str, parameters: ParametersArg, expected: bytes) -> None:
    assert format_rcpt_to(address, parameters) == expected


def test_format_rcpt_to_refuses_null_path() -> None:
    with pytest.raises(AddressSyntaxError):
        format_rcpt_to("")
    with pytest.raises(AddressSyntaxError):
        format_rcpt_to("", {"NOTIFY": "NEVER"})


@pytest.mark.parametrize(
    "address",
    [
        "a b@example.com",
        "user@example.com SIZE=1",
        "user@example.com> SIZE=100",
        "<user@example.com>",
        "user@example.com>",
        "user@example.com<",
        "<user@example.com",
        " user@example.com",
        "user@example.com ",
        "user @example.com",
        "user@exa mple.com",
        "a@b.example> <c@d.example",
        "a@b.example>,<c@d.example",
    ],
)
def test_format_refuses_space_and_angle_brackets_outside_quotes(address: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(UnsafeCharacterError):
            format_mail_from(address, utf8=utf8)
        with pytest.raises(UnsafeCharacterError):
            format_rcpt_to(address, utf8=utf8)


@pytest.mark.parametrize("address", ['a"b@example.com', 'user@example.com"', '"a"b"@example.com'])
def test_format_refuses_quote_outside_quoted_local_part_as_unsafe(address: str) -> None:
    # check_mailbox's docstring: quotes outside a quoted local part are unsafe, like
    # spaces and angle brackets.
    with pytest.raises(UnsafeCharacterError):
        format_mail_from(address)
    with pytest.raises(UnsafeCharacterError):
        format_rcpt_to(address)


@pytest.mark.parametrize(
    "address",
    [
        "user@",
        "@example.com",
        "user@@example.com",
        "user..x@example.com",
        ".user@example.com",
        "user@-example.com",
        "user@example..com",
        "user@example.com.",
        "user@[300.0.0.1]",
        "user@[IPv6:2001:db8::g]",
        "user@" + domain_of_length(256),
        "user@" + "b" * 64 + ".example",
    ],
)
def test_format_refuses_malformed_address(address: str) -> None:
    with pytest.raises(AddressSyntaxError):
        format_mail_from(address)
    with pytest.raises(AddressSyntaxError):
        format_rcpt_to(address)


@pytest.mark.parametrize("char", [*CONTROL_CHARACTERS, "\u200b", "\ufeff"], ids=repr)
@pytest.mark.parametrize(
    "template",
    [
        "us{}er@example.com",
        "user@exa{}mple.com",
        "user@example.com{}",
        '"us{}er"@example.com',
        '"us\\{}er"@example.com',
        "user@example.com>{}RSET",
        "user@[192.0.2.1{}]",
    ],
)
@pytest.mark.parametrize("utf8", [False, True])
def test_format_refuses_control_characters_in_address(char: str, template: str, utf8: bool) -> None:
    address = template.format(char)
    with pytest.raises(UnsafeCharacterError):
        format_mail_from(address, utf8=utf8)
    with pytest.raises(UnsafeCharacterError):
        format_rcpt_to(address, utf8=utf8)


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=repr)
@pytest.mark.parametrize("utf8", [False, True])
def test_format_refuses_control_characters_in_parameters(char: str, utf8: bool) -> None:
    cases: list[ParametersArg] = [
        {"ENVID": f"abc{char}RSET"},
        {"ENVID": f"a+0D{char}"},
        {"ENVID": f"QQ+2B314{char}"},
        {f"SIZE{char}": "1"},
        {f"SMTPUTF8{char}": None},
        [f"SIZE=1{char}RSET"],
        [f"SMTPUTF8{char}"],
        [("ENVID", f"a+0D+0A{char}")],
        [Parameter("ORCPT", f"rfc822;a@b{char}")],
        ["SIZE=1", f"BODY=8BITMIME{char}"],
    ]
    for parameters in cases:
        with pytest.raises(UnsafeCharacterError):
            format_mail_from("a@b.example", parameters, utf8=utf8)
        with pytest.raises(UnsafeCharacterError):
            format_rcpt_to("a@b.example", parameters, utf8=utf8)


@pytest.mark.parametrize(
    "parameters",
    [
        {"SIZE": "1 BODY=8BITMIME"},
        {"SIZE": "a=b"},
        {"SIZE": ""},
        {"SI ZE": "1"},
        {"": "1"},
        {"-SIZE": "1"},
        {"SI_ZE": "1"},
        {"<x@y>": None},
        ["SIZE=1 RSET"],
        ["=1"],
        [""],
        [" SIZE=1"],
        [("SIZE", "1 <c@d.example>")],
    ],
)
def test_format_refuses_parameters_that_would_add_a_parameter(parameters: ParametersArg) -> None:
    with pytest.raises(UnsafeCharacterError):
        format_mail_from("a@b.example", parameters)
    with pytest.raises(UnsafeCharacterError):
        format_rcpt_to("a@b.example", parameters)


@pytest.mark.parametrize(
    "address", ["jörg@example.com", "user@bücher.example", '"jörg"@example.com', "用户@例子.广告"]
)
def test_format_non_ascii_address_needs_utf8(address: str) -> None:
    with pytest.raises(NonASCIIError):
        format_mail_from(address)
    with pytest.raises(NonASCIIError):
        format_rcpt_to(address)
    assert format_mail_from(address, utf8=True) == f"MAIL FROM:<{address}>\r\n".encode()
    assert format_rcpt_to(address, utf8=True) == f"RCPT TO:<{address}>\r\n".encode()


def test_format_non_ascii_parameter_value_needs_utf8() -> None:
    with pytest.raises(NonASCIIError):
        format_mail_from("a@b.example", {"ENVID": "jörg"})
    with pytest.raises(NonASCIIError):
        format_rcpt_to("a@b.example", ["ORCPT=utf-8;jörg@example.com"])
    assert format_mail_from("a@b.example", {"ENVID": "jörg"}, utf8=True) == (
        "MAIL FROM:<a@b.example> ENVID=jörg\r\n".encode()
    )
