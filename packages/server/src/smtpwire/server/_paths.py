"""MAIL/RCPT/VRFY arguments as aiosmtpd presents them to handlers.

The parsing is smtpwire.common's; this module maps its results onto aiosmtpd's
conventions: the null sender is the string ``"<>"``, parameters are a list of
upper-cased ``KEY=VALUE`` strings, and errors split into "syntax" (``501``) and
"malformed address" (``553``).
"""

from __future__ import annotations

from typing import NamedTuple

from smtpwire.common.commands import parse_mail_from, parse_rcpt_to
from smtpwire.common.errors import CommandSyntaxError, ParameterSyntaxError

__all__ = ["ParsedPath", "PathError", "parse_path", "parse_verify_argument"]


class ParsedPath(NamedTuple):
    """``options`` upper-cased as aiosmtpd gives them to hooks; ``parameters`` with
    values as sent (ENVID and ORCPT are case-sensitive)."""

    address: str
    options: list[str]
    parameters: dict[str, str | None]


class PathError(Exception):
    """The argument is unusable; ``malformed`` means the address itself is bad."""

    def __init__(self, message: str, *, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


def parse_path(
    arg: str | None,
    keyword: str,
    *,
    utf8: bool,
    max_local_part: int | None,
    allow_null: bool,
) -> ParsedPath:
    """Parse the argument of MAIL (``keyword="FROM:"``) or RCPT (``"TO:"``)."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        raise PathError(f"expected {keyword}", malformed=False)
    rest = arg[len(keyword) :].strip()
    if not rest:
        raise PathError("no address", malformed=False)
    parser = parse_mail_from if allow_null else parse_rcpt_to
    try:
        parsed = parser(keyword + rest, utf8=utf8, strict=False, max_local_part=max_local_part)
    except ParameterSyntaxError as error:
        raise PathError(str(error), malformed=False) from error
    except CommandSyntaxError as error:
        # aiosmtpd reads a leading word as the address and the rest as parameters,
        # so "Anne <anne@example.com>" is a syntax error there, not a bad address.
        word_then_more = not rest.startswith("<") and " " in rest
        raise PathError(str(error), malformed=not word_then_more) from error
    return ParsedPath(
        parsed.address or "<>",
        [str(parameter).upper() for parameter in parsed.parameters],
        {parameter.keyword.upper(): parameter.value for parameter in parsed.parameters},
    )


def parse_verify_argument(arg: str, *, utf8: bool) -> str | None:
    """The mailbox a VRFY asks about, or None if there is none to read.

    As lenient as aiosmtpd: a path in angle brackets or a leading word (a bare
    user name is fine), whatever follows it.
    """
    text = arg.strip()
    if text.startswith("<"):
        end = text.find(">")
        candidate = text[: end + 1] if end >= 0 else text
    else:
        candidate = f"<{text.split(' ', 1)[0]}>"
    try:
        parsed = parse_mail_from("FROM:" + candidate, utf8=utf8)
    except CommandSyntaxError:
        return None
    return parsed.address or None
