"""Mailbox and domain grammar: check_mailbox, check_domain, format_path, split_mailbox,
is_postmaster (RFC 5321 section 4.1.2, RFC 6531)."""

from __future__ import annotations

import pytest

from smtpwire.common.addresses import (
    check_domain,
    check_mailbox,
    format_path,
    is_postmaster,
    split_mailbox,
)
from smtpwire.common.errors import (
    AddressSyntaxError,
    NonASCIIError,
    UnsafeCharacterError,
)
from support.domains import domain_of_length

# --- check_mailbox ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com",
        "User.Name+tag@Sub.Example.COM",
        "!#$%&'*+-/=?^_`{|}~@example.com",
        "a@b",
        "a@b-c.example",
        "1@2.3",
        '"john doe"@example.com',
        '"a\\"b"@example.com',
        '"a\\\\b"@example.com',
        '"a@b"@example.com',
        '"<x>"@example.com',
        '""@example.com',
        "user@[192.0.2.1]",
        "user@[IPv6:2001:db8::1]",
        "user@[IPv6:::1]",
        "user@[IPv6:::ffff:192.0.2.1]",
        "user@[x-tag:content]",
        "user@" + domain_of_length(255),
        "user@" + "b" * 63 + ".example",
        "a" * 64 + "@example.com",
    ],
)
def test_check_mailbox_accepts(address: str) -> None:
    assert check_mailbox(address) == address
    assert check_mailbox(address, utf8=True) == address


@pytest.mark.parametrize(
    "address",
    [
        "jörg@example.com",
        "user@bücher.example",
        '"jörg müller"@example.com',
        "用户@例子.广告",
        "δοκιμή@παράδειγμα.δοκιμή",
    ],
)
def test_check_mailbox_utf8(address: str) -> None:
    with pytest.raises(NonASCIIError):
        check_mailbox(address)
    assert check_mailbox(address, utf8=True) == address


@pytest.mark.parametrize(
    "address",
    [
        "",
        "user@",
        "@example.com",
        "user@@example.com",
        "user..x@example.com",
        ".user@example.com",
        "user.@example.com",
        "user@-example.com",
        "user@example-.com",
        "user@example..com",
        "user@.example.com",
        "user@example.com.",
        "user@exa_mple.com",
        '"unterminated@example.com',
        '"a"b@example.com',
        "user@[192.0.2.256]",
        "user@[192.0.2]",
        "user@[example.com]",
        "user@[IPv6:2001:db8::g]",
        "user@[IPv6:1:2:3:4:5:6:7:8:9]",
        "user@[IPv6:fe80::1%eth0]",  # RFC 5321 IPv6-addr has no zone identifier
        "user@[tag:]",
        "user@[]",
        "user@" + domain_of_length(256),
        "user@" + "b" * 64 + ".example",
        "a" * 65 + "@example.com",
    ],
)
def test_check_mailbox_refuses_malformed(address: str) -> None:
    with pytest.raises(AddressSyntaxError):
        check_mailbox(address)


@pytest.mark.parametrize(
    "address",
    [
        "a b@example.com",
        "user@example.com SIZE=1",
        "<user@example.com>",
        "user@example.com>",
        "user@example.com<",
        " user@example.com",
        "user@example.com ",
        "a@b.example> <c@d.example",
        'a"b@example.com',  # a quote outside a quoted local part (see the docstring)
        'user@example.com"',
    ],
)
def test_check_mailbox_refuses_smuggling_characters_as_unsafe(address: str) -> None:
    with pytest.raises(UnsafeCharacterError):
        check_mailbox(address)


@pytest.mark.parametrize(
    "char", ["\x00", "\r", "\n", "\t", "\x1f", "\x7f", "\x85", "\u2028", "\u200b"], ids=repr
)
@pytest.mark.parametrize("utf8", [False, True])
def test_check_mailbox_refuses_control_characters(char: str, utf8: bool) -> None:
    for address in (f"us{char}er@example.com", f'"us{char}er"@example.com', f"u@x.example{char}"):
        with pytest.raises(UnsafeCharacterError):
            check_mailbox(address, utf8=utf8)


def test_check_mailbox_require_domain() -> None:
    with pytest.raises(AddressSyntaxError):
        check_mailbox("user")
    assert check_mailbox("user", require_domain=False) == "user"
    assert check_mailbox('"john doe"', require_domain=False) == '"john doe"'


def test_check_mailbox_max_local_part() -> None:
    assert check_mailbox("abcde@example.com", max_local_part=5)
    with pytest.raises(AddressSyntaxError):
        check_mailbox("abcdef@example.com", max_local_part=5)
    long = "a" * 300 + "@example.com"
    with pytest.raises(AddressSyntaxError):
        check_mailbox(long)
    assert check_mailbox(long, max_local_part=None) == long


# --- check_domain ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "example.com",
        "mail.example.com",
        "localhost",
        "a",
        "1.example",
        "xn--bcher-kva.example",
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "[x-tag:content]",
        domain_of_length(255),
        "b" * 63 + ".example",
    ],
)
def test_check_domain_accepts(name: str) -> None:
    assert check_domain(name) == name


def test_check_domain_utf8() -> None:
    with pytest.raises(NonASCIIError):
        check_domain("bücher.example")
    assert check_domain("bücher.example", utf8=True) == "bücher.example"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-example.com",
        "example-.com",
        "exa_mple.com",
        "example..com",
        ".example.com",
        "example.com.",
        "exa mple.com",
        "user@example.com",
        "[192.0.2.256]",
        "[IPv6:zz]",
        "[IPv6:fe80::1%1]",  # RFC 5321 IPv6-addr has no zone identifier
        "[tag:]",
        "[192.0.2.1",
        domain_of_length(256),
        "b" * 64 + ".example",  # a DNS label is at most 63 octets (check_mailbox agrees)
    ],
)
def test_check_domain_refuses(name: str) -> None:
    with pytest.raises(AddressSyntaxError):
        check_domain(name)


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\t", "\x7f", "\x85", "\u2028"], ids=repr)
def test_check_domain_refuses_control_characters(char: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(UnsafeCharacterError):
            check_domain(f"example.com{char}", utf8=utf8)
        with pytest.raises(UnsafeCharacterError):
            check_domain(f"exa{char}mple.com", utf8=utf8)


# --- format_path ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("", "<>"),
        ("user@example.com", "<user@example.com>"),
        ('"john doe"@example.com', '<"john doe"@example.com>'),
        ("root", "<root>"),
        ("Postmaster", "<Postmaster>"),
        ("a" * 100 + "@example.com", "<" + "a" * 100 + "@example.com>"),
    ],
)
def test_format_path(address: str, expected: str) -> None:
    assert format_path(address) == expected


def test_format_path_require_domain() -> None:
    with pytest.raises(AddressSyntaxError):
        format_path("root", require_domain=True)
    assert format_path("root@example.com", require_domain=True) == "<root@example.com>"


def test_format_path_utf8() -> None:
    with pytest.raises(NonASCIIError):
        format_path("jörg@example.com")
    assert format_path("jörg@example.com", utf8=True) == "<jörg@example.com>"


@pytest.mark.parametrize("address", ["a b@example.com", "<a@b.example>", "a@b.example\r\nRSET"])
def test_format_path_refuses_unsafe(address: str) -> None:
    with pytest.raises(UnsafeCharacterError):
        format_path(address)


# --- split_mailbox / is_postmaster -----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@example.com", ("user", "example.com")),
        ("user", ("user", "")),
        ('"a@b"@example.com', ('"a@b"', "example.com")),
        ('"@"@example.com', ('"@"', "example.com")),
        ("user@[IPv6:2001:db8::1]", ("user", "[IPv6:2001:db8::1]")),
        ("jörg@bücher.example", ("jörg", "bücher.example")),
        ('"a@b"', ('"a@b"', "")),  # the @ is inside quotes: no domain
        ("user@[tag:a@b]", ("user", "[tag:a@b]")),  # dcontent includes "@"
        # Not a mailbox at all: split at the last "@", as a best effort.
        ("a b@c d", ("a b", "c d")),
        ("no mailbox here", ("no mailbox here", "")),
    ],
)
def test_split_mailbox(address: str, expected: tuple[str, str]) -> None:
    assert split_mailbox(address) == expected


@pytest.mark.parametrize("address", ["Postmaster", "postmaster", "POSTMASTER", "pOsTmAsTeR"])
def test_is_postmaster(address: str) -> None:
    assert is_postmaster(address)


@pytest.mark.parametrize(
    "address", ["", "postmasters", "post master", "postmaste", "abuse", "root"]
)
def test_is_not_postmaster(address: str) -> None:
    assert not is_postmaster(address)
