"""What a server answers to each command before, or instead of, the application's
hook: the decisions of HELO/EHLO, HELP, VRFY, STARTTLS, MAIL, RCPT, DATA and BDAT,
and the refusal of a message at its end, without I/O.

Each function takes the session's facts as plain values (greeted, EHLO or HELO,
the transaction so far, the server's settings) and returns the reply to send, or
a value to go on with (None, or what the command carries).  The checks run in
aiosmtpd 1.4.6's order and the texts are its own, byte for byte, so a migrated
test suite that asserts on them keeps passing.  The server's asyncio adapter
keeps the hooks, the session and envelope changes, and the writing.

The per-line gate that runs before any of these (length, bare LF, unknown verbs,
call limits) and MAIL's and RCPT's parameter rules are in :mod:`.server_rules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from .commands import parse_mail_from, parse_rcpt_to
from .data import DataViolation
from .errors import CommandSyntaxError, ParameterSyntaxError, ProtocolError
from .mail_parameters import BdatCommand, parse_bdat
from .server_rules import (
    MailDSN,
    RcptDSN,
    check_mail_parameters,
    parse_mail_dsn,
    parse_rcpt_parameters,
    printable,
)

__all__ = [
    "BARE_NEWLINE_IN_DATA",
    "MALFORMED_ADDRESS",
    "TOO_MUCH_DATA",
    "CommandSyntax",
    "EhloOffer",
    "ParsedPath",
    "VerifyRequest",
    "argument_refusal",
    "bdat_refusal",
    "check_mail",
    "check_rcpt",
    "data_refusal",
    "ehlo_offer",
    "help_reply",
    "message_refusal",
    "path_syntax_error",
    "rcpt_sequence_refusal",
    "read_bdat",
    "read_path",
    "read_vrfy",
    "starttls_refusal",
]

TOO_MUCH_DATA: Final = "552 Error: Too much mail data"
BARE_NEWLINE_IN_DATA: Final = "550 5.5.2 Error: bare <CR> or <LF> in message data"
MALFORMED_ADDRESS: Final = "553 5.1.3 Error: malformed address"
_LINE_TOO_LONG: Final = "500 Line too long (see RFC5321 4.5.3.1.6)"
_NEED_RCPT: Final = "503 Error: need RCPT command"
_BDAT_SYNTAX: Final = "501 5.5.4 Syntax: BDAT <size> [LAST]"

# The syntax "501 Syntax: ..." shows for a command that needs an argument; the
# commands in _NO_ARGUMENT refuse one.
_ARGUMENT_NEEDED: Final = {
    "HELO": "HELO hostname",
    "EHLO": "EHLO hostname",
    "LHLO": "LHLO hostname",
    "VRFY": "VRFY <address>",
}
_NO_ARGUMENT: Final = frozenset({"QUIT", "RSET", "DATA", "STARTTLS"})

# What SIZE= and SMTPUTF8 add to the longest MAIL line (aiosmtpd's figures).
_SIZE_PARAMETER_LENGTH: Final = 26
_SMTPUTF8_PARAMETER_LENGTH: Final = 10


# -- arguments ------------------------------------------------------------------------------


def argument_refusal(verb: str, argument: str | None) -> str | None:
    """The ``501 Syntax`` reply when ``argument`` is missing (HELO, EHLO, LHLO,
    VRFY) or present where none is taken (QUIT, RSET, DATA, STARTTLS)."""
    needed = _ARGUMENT_NEEDED.get(verb)
    if needed is not None:
        return None if argument else f"501 Syntax: {needed}"
    return f"501 Syntax: {verb}" if argument and verb in _NO_ARGUMENT else None


def starttls_refusal(argument: str | None, *, available: bool) -> str | None:
    """Why STARTTLS cannot start now, if it cannot: ``available`` is false without
    a TLS context or once the connection is encrypted."""
    return argument_refusal("STARTTLS", argument) or (
        None if available else "454 TLS not available"
    )


# -- EHLO and HELP --------------------------------------------------------------------------


class EhloOffer(NamedTuple):
    """EHLO's reply lines before the last one, and the longest MAIL command line
    the server takes after it (SIZE= and SMTPUTF8 make room for themselves)."""

    lines: list[str]
    mail_length: int


def ehlo_offer(
    hostname: str,
    *,
    command_length: int,
    data_size_limit: int | None,
    eight_bit_mime: bool,
    smtputf8: bool,
    starttls: bool,
    auth_line: str | None,
    keywords: Iterable[str],
) -> EhloOffer:
    """aiosmtpd's keywords in its order (SIZE, 8BITMIME, SMTPUTF8, STARTTLS, the
    ``auth_line`` when AUTH is on offer), then the further ``keywords``."""
    lines = [f"250-{hostname}"]
    mail_length = command_length
    if data_size_limit:
        lines.append(f"250-SIZE {data_size_limit}")
        mail_length += _SIZE_PARAMETER_LENGTH
    if eight_bit_mime:
        lines.append("250-8BITMIME")
    if smtputf8:
        lines.append("250-SMTPUTF8")
        mail_length += _SMTPUTF8_PARAMETER_LENGTH
    if starttls:
        lines.append("250-STARTTLS")
    if auth_line is not None:
        lines.append(auth_line)
    lines.extend(f"250-{keyword}" for keyword in keywords)
    return EhloOffer(lines, mail_length)


class CommandSyntax(NamedTuple):
    """A command's syntax for HELP, and what EHLO adds to it."""

    text: str
    extended: str | None = None


def help_reply(
    topic: str | None, documented: Mapping[str, CommandSyntax], *, extended: bool
) -> str:
    """HELP's reply: the syntax of the ``topic`` command, or the sorted list of the
    ``documented`` verbs (with 501 when the topic is not one of them)."""
    code = 250
    if topic:
        syntax = documented.get(topic.upper())
        if syntax is not None:
            text = syntax.text + syntax.extended if extended and syntax.extended else syntax.text
            return f"250 Syntax: {text}"
        code = 501
    return f"{code} Supported commands: {' '.join(sorted(documented))}"


# -- paths: MAIL, RCPT and VRFY ---------------------------------------------------------------


class ParsedPath(NamedTuple):
    """MAIL's or RCPT's argument as aiosmtpd gives it to hooks: the null sender is
    ``"<>"``, ``options`` the parameters as upper-cased ``KEY=VALUE`` strings;
    ``parameters`` keeps the values as sent (ENVID and ORCPT are case-sensitive)."""

    address: str
    options: list[str]
    parameters: dict[str, str | None]


def path_syntax_error(command: str, *, extended: bool) -> str:
    """The 501 reply for ``"MAIL FROM:"`` or ``"RCPT TO:"``; after EHLO it names
    the parameters too."""
    text = f"501 Syntax: {command} <address>"
    return text + " [SP <mail-parameters>]" if extended else text


def read_path(
    argument: str | None,
    keyword: str,
    syntax_error: str,
    *,
    utf8: bool,
    max_local_part: int | None,
    extended: bool,
) -> ParsedPath | str:
    """MAIL's (``keyword="FROM:"``) or RCPT's (``"TO:"``) argument, or the refusal:
    ``syntax_error``, or 553 when the address itself is malformed.  Parameters are
    taken only after EHLO (``extended``)."""
    if argument is None or argument[: len(keyword)].upper() != keyword:
        return syntax_error
    rest = argument[len(keyword) :].strip()
    if not rest:
        return syntax_error
    parser = parse_mail_from if keyword == "FROM:" else parse_rcpt_to
    try:
        parsed = parser(keyword + rest, utf8=utf8, strict=False, max_local_part=max_local_part)
    except ParameterSyntaxError:
        return syntax_error
    except CommandSyntaxError:
        # aiosmtpd reads a leading word as the address and the rest as parameters,
        # so "Anne <anne@example.com>" is a syntax error there, not a bad address.
        word_then_more = not rest.startswith("<") and " " in rest
        return syntax_error if word_then_more else MALFORMED_ADDRESS
    if parsed.parameters and not extended:
        return syntax_error
    return ParsedPath(
        parsed.address or "<>",
        [str(parameter).upper() for parameter in parsed.parameters],
        {parameter.keyword.upper(): parameter.value for parameter in parsed.parameters},
    )


class VerifyRequest(NamedTuple):
    """The mailbox a VRFY asks about."""

    address: str


def read_vrfy(argument: str | None, *, utf8: bool) -> VerifyRequest | str:
    """VRFY's mailbox, or the refusal.  As lenient as aiosmtpd: a path in angle
    brackets or a leading word (a bare user name is fine), whatever follows it."""
    if not argument:
        return f"501 Syntax: {_ARGUMENT_NEEDED['VRFY']}"
    text = argument.strip()
    if text.startswith("<"):
        end = text.find(">")
        candidate = text[: end + 1] if end >= 0 else text
    else:
        candidate = f"<{text.split(' ', 1)[0]}>"
    try:
        address = parse_mail_from("FROM:" + candidate, utf8=utf8).address
    except CommandSyntaxError:
        address = None
    return VerifyRequest(address) if address else f"502 Could not VRFY {printable(argument)}"


# -- the transaction: MAIL, RCPT, DATA, BDAT -----------------------------------------------


def check_mail(
    path: ParsedPath,
    syntax_error: str,
    *,
    mail_from: str | None,
    size_limit: int | None,
    smtputf8: bool,
    decode_data: bool,
    chunking: bool,
    dsn: bool,
) -> MailDSN | str | None:
    """MAIL after its path was read: the refusal (a transaction already begun,
    then the parameters, see :func:`.check_mail_parameters`), else its DSN request
    when DSN is on (None when off).  ``mail_from`` is the transaction's sender."""
    if mail_from:
        return "503 Error: nested MAIL command"
    error = check_mail_parameters(
        path.options,
        syntax_error,
        size_limit=size_limit,
        smtputf8=smtputf8,
        decode_data=decode_data,
        chunking=chunking,
        dsn=dsn,
    )
    if error is not None:
        return error
    return parse_mail_dsn(path.parameters) if dsn else None


def rcpt_sequence_refusal(mail_from: str | None) -> str | None:
    """RCPT needs a sender first."""
    return None if mail_from else "503 Error: need MAIL command"


def check_rcpt(
    path: ParsedPath, *, recipients: int, rcpt_limit: int, dsn: bool
) -> RcptDSN | str | None:
    """RCPT after its path was read: the refusal (its parameters, then the cap on
    ``recipients`` so far), else its DSN request (None without one)."""
    request = parse_rcpt_parameters(path.parameters, dsn=dsn)
    if isinstance(request, str):
        return request
    if recipients >= rcpt_limit:
        # RFC 5321 4.5.3.1.10 and RFC 9422's RCPTMAX: temporary, so the client
        # sends the rest in another transaction.
        return "452 4.5.3 Error: too many recipients"
    return request


def data_refusal(
    argument: str | None, *, has_recipients: bool, body_type: str | None, bdat_started: bool
) -> str | None:
    """Why DATA cannot start, if it cannot (after the HELO and AUTH checks)."""
    if not has_recipients:
        return _NEED_RCPT
    refusal = argument_refusal("DATA", argument)
    if refusal is not None:
        return refusal
    if body_type == "BINARYMIME":
        return "503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA"
    if bdat_started:
        # RFC 3030 section 2: a transaction begun with BDAT ends with BDAT LAST.
        return "503 5.5.1 Error: DATA after BDAT in the same transaction"
    return None


def read_bdat(argument: str | None) -> BdatCommand | str:
    """BDAT's size and LAST, or the 501 after which the connection must close:
    without a size the chunk's end is unknown, so its octets could be read as
    commands."""
    try:
        return parse_bdat(argument or "")
    except ProtocolError:
        return _BDAT_SYNTAX


def bdat_refusal(
    size: int,
    *,
    greeted: bool,
    auth_needed: bool,
    has_recipients: bool,
    received: int,
    size_limit: int | None,
) -> str | None:
    """Why a chunk of ``size`` octets cannot be taken, if it cannot; ``received``
    is the size of the message's chunks so far.  The chunk is read all the same."""
    if not greeted:
        return "503 Error: send HELO first"
    if auth_needed:
        return "530 5.7.0 Authentication required"
    if not has_recipients:
        return _NEED_RCPT
    if size_limit and received + size > size_limit:
        return TOO_MUCH_DATA
    return None


def message_refusal(violation: DataViolation) -> str:
    """The reply to a message that broke a limit or the bare-LF policy."""
    if violation is DataViolation.TOO_LARGE:
        return TOO_MUCH_DATA
    if violation is DataViolation.LINE_TOO_LONG:
        return _LINE_TOO_LONG
    return BARE_NEWLINE_IN_DATA
