"""Mailbox and path grammar (RFC 5321 section 4.1.2, RFC 6531 for SMTPUTF8).

One set of compiled patterns serves both sides: the server parses what a client
sent, the client checks what it is about to send.  Quoted local parts, address
literals (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) and UTF-8 addresses are
understood; source routes (``<@relay:user@host>``) are accepted and dropped, as
RFC 5321 section 4.1.1.3 tells receivers to.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final

from .charsets import UTF8_NON_ASCII, check_text
from .errors import AddressSyntaxError, UnsafeCharacterError
from .limits import DOMAIN_MAX, LOCAL_PART_MAX

__all__ = [
    "check_domain",
    "check_mailbox",
    "format_path",
    "is_postmaster",
    "match_mailbox",
    "split_mailbox",
]

_ATEXT: Final = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_QTEXT: Final = r"\x20\x21\x23-\x5b\x5d-\x7e"
_LDH_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_U_LABEL: Final = (
    rf"[A-Za-z0-9{UTF8_NON_ASCII}](?:[A-Za-z0-9{UTF8_NON_ASCII}-]*[A-Za-z0-9{UTF8_NON_ASCII}])?"
)
_LITERAL: Final = r"\[[\x21-\x5a\x5e-\x7e]+\]"


def _mailbox_pattern(utf8: bool) -> str:
    extra = UTF8_NON_ASCII if utf8 else ""
    atom = f"[{_ATEXT}{extra}]+"
    dot_string = rf"{atom}(?:\.{atom})*"
    quoted = rf'"(?:[{_QTEXT}{extra}]|\\[\x20-\x7e])*"'
    label = _U_LABEL if utf8 else _LDH_LABEL
    domain = rf"{label}(?:\.{label})*"
    return rf"(?P<local>{dot_string}|{quoted})(?:@(?P<domain>{domain}|{_LITERAL}))?"


def _compile(utf8: bool) -> re.Pattern[str]:
    return re.compile(_mailbox_pattern(utf8))


_MAILBOX: Final = {False: _compile(False), True: _compile(True)}
_DOMAIN: Final = {
    False: re.compile(rf"{_LDH_LABEL}(?:\.{_LDH_LABEL})*\Z"),
    True: re.compile(rf"{_U_LABEL}(?:\.{_U_LABEL})*\Z"),
}
_LABEL_MAX: Final = 63  # RFC 1035 section 2.3.4
_GENERAL_LITERAL_TAG: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
SOURCE_ROUTE: Final = re.compile(
    rf"@(?:{_LDH_LABEL}(?:\.{_LDH_LABEL})*|{_LITERAL})"
    rf"(?:,@(?:{_LDH_LABEL}(?:\.{_LDH_LABEL})*|{_LITERAL}))*:"
)


def _check_literal(literal: str) -> None:
    body = literal[1:-1]
    if body[:5].upper() == "IPV6:":
        if "%" in body:  # ipaddress accepts a zone id; RFC 5321's IPv6-addr has none
            raise AddressSyntaxError(f"invalid IPv6 address literal: {literal}")
        try:
            ipaddress.IPv6Address(body[5:])
        except ValueError:
            raise AddressSyntaxError(f"invalid IPv6 address literal: {literal}") from None
        return
    tag, colon, content = body.partition(":")
    if colon:
        if not _GENERAL_LITERAL_TAG.match(tag) or not content:
            raise AddressSyntaxError(f"invalid address literal: {literal}")
        return
    try:
        ipaddress.IPv4Address(body)
    except ValueError:
        raise AddressSyntaxError(f"invalid IPv4 address literal: {literal}") from None


def match_mailbox(text: str, position: int, *, utf8: bool) -> re.Match[str] | None:
    """Match a mailbox (``local@domain``, or a bare local part) at ``position``."""
    return _MAILBOX[utf8].match(text, position)


def check_matched_mailbox(match: re.Match[str], *, max_local_part: int | None) -> None:
    """Check what the grammar alone cannot: literal contents and length limits."""
    domain = match["domain"]
    if domain is not None:
        if domain.startswith("["):
            _check_literal(domain)
        else:
            _check_domain_lengths(domain)
    if max_local_part is not None and len(match["local"].encode()) > max_local_part:
        raise AddressSyntaxError(f"local part longer than {max_local_part} octets")


def _check_domain_lengths(domain: str) -> None:
    if len(domain) <= _LABEL_MAX and domain.isascii():
        return  # the usual case: no label, nor the whole, can be too long
    if len(domain.encode()) > DOMAIN_MAX:
        raise AddressSyntaxError(f"domain longer than {DOMAIN_MAX} octets")
    if any(len(label.encode()) > _LABEL_MAX for label in domain.split(".")):
        raise AddressSyntaxError(f"domain label longer than {_LABEL_MAX} octets")


def check_mailbox(
    address: str,
    *,
    utf8: bool = False,
    require_domain: bool = True,
    max_local_part: int | None = LOCAL_PART_MAX,
) -> str:
    """Check that ``address`` is a single RFC 5321 mailbox and return it.

    Raises :class:`UnsafeCharacterError` for control characters (and for spaces,
    angle brackets or quotes outside a quoted local part, which would smuggle a
    parameter or a second path), :class:`NonASCIIError` for UTF-8 without
    ``utf8``, and :class:`AddressSyntaxError` for anything else malformed.
    """
    check_text(address, utf8=utf8, what="address")
    match = match_mailbox(address, 0, utf8=utf8)
    if match is None or match.end() != len(address):
        # A quote after a valid start is stray; one that opens an unterminated
        # quoted string is merely malformed.
        rest, strays = (
            (address, r"[\s<>]") if match is None else (address[match.end() :], r'[\s<>"]')
        )
        stray = re.search(strays, rest)
        if stray is not None:
            raise UnsafeCharacterError(f"address holds {stray.group()!r}: {address!r}")
        raise AddressSyntaxError(f"malformed address: {address!r}")
    if require_domain and match["domain"] is None:
        raise AddressSyntaxError(f"address has no domain: {address!r}")
    check_matched_mailbox(match, max_local_part=max_local_part)
    return address


def check_domain(name: str, *, utf8: bool = False) -> str:
    """Check an EHLO/HELO argument: a domain name or an address literal."""
    check_text(name, utf8=utf8, what="domain")
    if name.startswith("[") and name.endswith("]") and re.fullmatch(_LITERAL, name):
        _check_literal(name)
        return name
    if not _DOMAIN[utf8].match(name):
        raise AddressSyntaxError(f"malformed domain: {name!r}")
    _check_domain_lengths(name)
    return name


@functools.lru_cache(maxsize=4096)
def format_path(address: str, *, utf8: bool = False, require_domain: bool = False) -> str:
    """``<address>`` for MAIL/RCPT, ``<>`` for the null path, after :func:`check_mailbox`.

    A domainless local part (``<root>``) is allowed unless ``require_domain``: local
    MTAs accept it and RFC 5321 itself has ``<Postmaster>``.  The result depends on
    the arguments alone, so it is cached: a sender used for every message is checked
    once, not per message (a refused address raises and is never cached).
    """
    if address == "":
        return "<>"
    check_mailbox(address, utf8=utf8, require_domain=require_domain, max_local_part=None)
    return f"<{address}>"


def split_mailbox(address: str) -> tuple[str, str]:
    """Split at the ``@`` that separates local part and domain (not one inside quotes)."""
    match = match_mailbox(address, 0, utf8=True)
    if match is not None and match.end() == len(address):
        return match["local"], match["domain"] or ""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def is_postmaster(address: str) -> bool:
    """RFC 5321 section 4.5.1: ``<Postmaster>`` needs no domain, any case."""
    return address.lower() == "postmaster"
