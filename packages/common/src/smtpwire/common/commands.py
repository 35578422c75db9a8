"""Command lines: split a received line, parse MAIL/RCPT, format commands to send.

The server side is :func:`split_command` followed by :func:`parse_mail_from` or
:func:`parse_rcpt_to`; the client side is :func:`format_command`,
:func:`format_mail_from` and :func:`format_rcpt_to`, which refuse any argument that
could end the line early or add a parameter, so a formatted command always holds
exactly one CRLF: its last two octets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from .addresses import (
    SOURCE_ROUTE,
    check_matched_mailbox,
    format_path,
    is_postmaster,
    match_mailbox,
)
from .charsets import check_text, find_unsafe
from .errors import (
    AddressSyntaxError,
    CommandSyntaxError,
    CommandTooLongError,
    NonASCIIError,
    UnsafeCharacterError,
)
from .limits import COMMAND_LINE_MAX
from .parameters import Parameter, format_parameters, parse_parameters

__all__ = [
    "PathArgument",
    "format_command",
    "format_mail_from",
    "format_rcpt_to",
    "parse_mail_from",
    "parse_rcpt_to",
    "split_command",
]

_VERB: Final = re.compile(rb"[A-Za-z][A-Za-z0-9_-]*\Z")
_BYTES_UNSAFE: Final = re.compile(rb"[\x00-\x1f\x7f]")


def split_command(
    line: bytes, *, max_length: int | None = COMMAND_LINE_MAX, utf8: bool = False
) -> tuple[str, str]:
    """Split a command line (without its line ending) into an upper-cased verb and
    its argument (stripped of surrounding spaces).

    ``max_length`` counts the line with its CRLF (RFC 5321: 512).  Without
    ``utf8`` a non-ASCII argument raises :class:`NonASCIIError`; with it the
    argument is decoded as UTF-8, invalid octets kept as surrogate escapes (so an
    address parser refuses them rather than this function hiding them).
    """
    if max_length is not None and len(line) + 2 > max_length:
        raise CommandTooLongError(f"command line longer than {max_length} octets", limit=max_length)
    verb, _, argument = line.strip(b" ").partition(b" ")
    if not _VERB.match(verb):
        raise CommandSyntaxError(f"malformed command verb: {verb[:40]!r}")
    argument = argument.strip(b" ")
    if not argument.isascii():
        if not utf8:
            raise NonASCIIError("non-ASCII octets in command argument")
        return verb.decode("ascii").upper(), argument.decode("utf-8", "surrogateescape")
    return verb.decode("ascii").upper(), argument.decode("ascii")


@dataclass(frozen=True)
class PathArgument:
    """The argument of MAIL FROM or RCPT TO, parsed.

    ``address`` is the mailbox as sent (quoted local part kept quoted), ``""`` for
    the null reverse-path ``<>``; a source route is dropped.  ``parameters`` keep
    their order, keywords upper-cased.
    """

    address: str
    parameters: tuple[Parameter, ...] = ()

    @property
    def is_null(self) -> bool:
        return self.address == ""

    def parameter(self, keyword: str) -> str | None:
        """The value of ``keyword`` (None if absent or valueless)."""
        keyword = keyword.upper()
        for parameter in self.parameters:
            if parameter.keyword == keyword:
                return parameter.value
        return None

    def has_parameter(self, keyword: str) -> bool:
        keyword = keyword.upper()
        return any(parameter.keyword == keyword for parameter in self.parameters)


def _parse_path_argument(
    argument: str,
    prefix: str,
    *,
    utf8: bool,
    strict: bool,
    allow_null: bool,
    max_local_part: int | None,
) -> PathArgument:
    if argument[: len(prefix)].upper() != prefix:
        raise CommandSyntaxError(f"expected {prefix!r}: {argument[:40]!r}")
    check_text(argument, utf8=utf8, what="path", unsafe_error=AddressSyntaxError)
    position = len(prefix)
    if not strict:
        while argument[position : position + 1] == " ":
            position += 1
    bracketed = argument[position : position + 1] == "<"
    if bracketed:
        position += 1
        if argument[position : position + 1] == ">":
            if not allow_null:
                raise AddressSyntaxError("the null path <> is not a valid recipient")
            return PathArgument("", _parameters_after(argument, position + 1, utf8=utf8))
        route = SOURCE_ROUTE.match(argument, position)
        if route is not None:
            position = route.end()
    elif strict:
        raise AddressSyntaxError("path must be enclosed in angle brackets")
    mailbox = match_mailbox(argument, position, utf8=utf8)
    if mailbox is None or mailbox.end() == position:
        raise AddressSyntaxError(f"malformed address: {argument[position : position + 60]!r}")
    check_matched_mailbox(mailbox, max_local_part=max_local_part)
    address = mailbox.group()
    position = mailbox.end()
    if bracketed:
        if argument[position : position + 1] != ">":
            raise AddressSyntaxError(f"malformed address: {argument[len(prefix) :][:60]!r}")
        position += 1
    # RFC 5321 lets only <Postmaster> go without a domain.  Leniently, any local
    # part may, bracketed or bare (MAIL FROM:root), as aiosmtpd takes it: local
    # submission agents send such senders.
    if mailbox["domain"] is None and strict and not is_postmaster(address):
        raise AddressSyntaxError(f"address has no domain: {address!r}")
    return PathArgument(address, _parameters_after(argument, position, utf8=utf8))


def _parameters_after(argument: str, position: int, *, utf8: bool) -> tuple[Parameter, ...]:
    rest = argument[position:]
    if not rest:
        return ()
    if rest[0] != " ":
        raise AddressSyntaxError(f"unexpected text after path: {rest[:40]!r}")
    return parse_parameters(rest, utf8=utf8)


def parse_mail_from(
    argument: str,
    *,
    utf8: bool = False,
    strict: bool = False,
    max_local_part: int | None = None,
) -> PathArgument:
    """Parse ``FROM:<reverse-path> [parameters]`` (the argument of MAIL).

    Lenient by default, as deployed servers are: a space after the colon,
    a path without angle brackets, and a domainless ``<user>`` or ``user`` are
    accepted (parameters after a bare ``user`` are parameters, not part of it).
    ``strict=True`` keeps to RFC 5321's grammar.  Raises
    :class:`CommandSyntaxError` when ``FROM:`` is missing,
    :class:`AddressSyntaxError` for a bad path and
    :class:`ParameterSyntaxError` for a bad parameter.
    """
    return _parse_path_argument(
        argument, "FROM:", utf8=utf8, strict=strict, allow_null=True,
        max_local_part=max_local_part,
    )  # fmt: skip


def parse_rcpt_to(
    argument: str,
    *,
    utf8: bool = False,
    strict: bool = False,
    max_local_part: int | None = None,
) -> PathArgument:
    """Parse ``TO:<forward-path> [parameters]`` (the argument of RCPT); see
    :func:`parse_mail_from`.  ``<Postmaster>`` needs no domain."""
    return _parse_path_argument(
        argument, "TO:", utf8=utf8, strict=strict, allow_null=False,
        max_local_part=max_local_part,
    )  # fmt: skip


def _argument_bytes(argument: str | bytes) -> bytes:
    if isinstance(argument, str):
        unsafe = find_unsafe(argument)
        if unsafe is not None:
            raise UnsafeCharacterError(f"command argument holds {unsafe!r}: {argument!r}")
        return argument.encode("utf-8")  # find_unsafe refused lone surrogates
    bad = _BYTES_UNSAFE.search(argument)
    if bad is not None:
        raise UnsafeCharacterError(f"command argument holds {bad.group()!r}: {argument!r}")
    if not argument.isascii():
        try:
            _argument_bytes(argument.decode("utf-8"))
        except UnicodeDecodeError:
            raise UnsafeCharacterError(f"command argument is not UTF-8: {argument!r}") from None
    return argument


def format_command(
    verb: str | bytes, *arguments: str | bytes, max_length: int | None = None
) -> bytes:
    """``VERB arg1 arg2\\r\\n`` for the wire.

    Every argument is refused with :class:`UnsafeCharacterError` if it holds CR,
    LF, NUL or another control character (or a C1 control, a Unicode line
    separator or an invisible format character), so no argument can start a
    second command.  ``max_length`` (with CRLF) raises :class:`CommandTooLongError`.
    """
    parts = [_argument_bytes(verb)]
    if not _VERB.match(parts[0]):
        raise UnsafeCharacterError(f"malformed command verb: {verb!r}")
    parts.extend(_argument_bytes(argument) for argument in arguments)
    line = b" ".join(parts) + b"\r\n"
    if max_length is not None and len(line) > max_length:
        raise CommandTooLongError(f"command longer than {max_length} octets", limit=max_length)
    return line


_Parameters = Mapping[str, str | None] | Iterable[str | Parameter | tuple[str, str | None]]


def format_mail_from(address: str, parameters: _Parameters = (), *, utf8: bool = False) -> bytes:
    """``MAIL FROM:<address> params\\r\\n``; ``""`` gives the null path ``<>``."""
    path = format_path(address, utf8=utf8)
    return f"MAIL FROM:{path}{format_parameters(parameters, utf8=utf8)}\r\n".encode()


def format_rcpt_to(address: str, parameters: _Parameters = (), *, utf8: bool = False) -> bytes:
    """``RCPT TO:<address> params\\r\\n``."""
    if address == "":
        raise AddressSyntaxError("the null path <> is not a valid recipient")
    path = format_path(address, utf8=utf8)
    return f"RCPT TO:{path}{format_parameters(parameters, utf8=utf8)}\r\n".encode()
