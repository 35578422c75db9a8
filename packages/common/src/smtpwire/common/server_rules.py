"""The rules a server applies to each command it receives, without I/O.

:class:`CommandGate` decides, for one received command line, whether it may run
(its verb and decoded argument) or is refused (the reply, whether the connection
must then close, and what to log).  It keeps the per-session counters: the calls
left per verb and the unrecognised commands left.  :func:`check_mail_parameters`,
:func:`parse_mail_dsn` and :func:`parse_rcpt_parameters` are the MAIL and RCPT
parameter rules; :func:`decode_text` is how the client's octets become text.
Reply texts are aiosmtpd 1.4.6's, byte for byte, so a migrated test suite that
asserts on them keeps passing.  Each command's own rules, past this gate, are in
:mod:`.server_commands`.

The server's asyncio adapter keeps the logging, the writing and the closing: these
return facts, so tests drive every rule in memory with no event loop.
"""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from .data import BareNewlinePolicy
from .errors import ProtocolError
from .lines import LineTooLong
from .mail_parameters import OriginalRecipient, parse_envid, parse_notify, parse_orcpt, parse_ret

__all__ = [
    "ALLOWED_BEFORE_STARTTLS",
    "BOGUS_LIMIT",
    "CALL_LIMIT_DEFAULT",
    "STRICT_ASCII",
    "CommandGate",
    "CommandRefusal",
    "MailDSN",
    "RcptDSN",
    "ReceivedCommand",
    "check_mail_parameters",
    "decode_text",
    "parse_mail_dsn",
    "parse_rcpt_parameters",
    "printable",
]

# aiosmtpd's names and values: a session ends after this many unrecognised commands,
# and with call limits on, a verb not given its own limit may be sent this often.
BOGUS_LIMIT: Final = 5
CALL_LIMIT_DEFAULT: Final = 20
ALLOWED_BEFORE_STARTTLS: Final = frozenset({"NOOP", "EHLO", "LHLO", "STARTTLS", "QUIT"})

_CONTROL: Final = re.compile(rb"[\x00-\x1f\x7f]")
# C0 and C1 controls, DEL, and the lone surrogates that stand for octets that were
# not UTF-8 (SMTPUTF8 decodes with surrogateescape): none may be echoed in a reply.
_UNECHOABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_HTTP_METHODS: Final = frozenset(
    {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}
)
_HTTP_REQUEST: Final = re.compile(rb" HTTP/\d(?:\.\d)?\s*$")
_BDAT: Final = (b"BDAT", b"BDAT ")


class ReceivedCommand(NamedTuple):
    """A command line that passed the gate: the upper-cased verb and its argument
    (stripped; None when the line has no argument)."""

    verb: str
    argument: str | None


@dataclass(frozen=True, slots=True)
class CommandRefusal:
    """A command line the gate refused.

    ``reply`` is the single reply line to send (no CRLF); ``close`` says the
    connection ends after it; ``log_reason`` is set when the refusal is worth a
    warning in the server's log; ``verb`` is the verb as far as it was read (``""``
    when the line was refused before its verb was trusted), for replies that depend
    on the command (enhanced status codes).
    """

    reply: str
    close: bool = False
    log_reason: str | None = None
    verb: str = ""


STRICT_ASCII: Final = "500 Error: strict ASCII mode"
_LINE_TOO_LONG: Final = CommandRefusal("500 Command line too long")
_BAD_SYNTAX: Final = CommandRefusal("500 Error: bad syntax")
_BARE_NEWLINE: Final = "500 5.5.2 Error: bare <CR> or <LF> received"
_BARE_NEWLINE_REFUSAL: Final = CommandRefusal(_BARE_NEWLINE)
# BDAT's chunk follows its line: its octets must never be read as commands.
_BARE_NEWLINE_BDAT_REFUSAL: Final = CommandRefusal(_BARE_NEWLINE, close=True)


class CommandGate:
    """The checks every received command line passes before its verb runs, in
    aiosmtpd's order, and the session's counters they use.

    ``verbs`` are the commands the server implements (any container, e.g. the
    server's table of command methods).  ``command_call_limit`` is aiosmtpd's: None
    for no limit, an int for every verb, or ``{"VERB": n, "*": default}``.
    ``bare_newline`` is the session's policy: REJECT refuses a command line that
    ended with a bare LF or holds a CR (Postfix's ``smtpd_forbid_bare_newline``).
    One gate serves one session.
    """

    __slots__ = (
        "_enforce_call_limit",
        "_reject_bare_newlines",
        "_verbs",
        "bogus_left",
        "calls_left",
    )

    def __init__(
        self,
        verbs: Container[str],
        *,
        command_call_limit: int | Mapping[str, int] | None = None,
        bogus_limit: int = BOGUS_LIMIT,
        bare_newline: BareNewlinePolicy = BareNewlinePolicy.KEEP,
    ) -> None:
        self._verbs = verbs
        self._reject_bare_newlines = bare_newline is BareNewlinePolicy.REJECT
        self._enforce_call_limit = command_call_limit is not None
        default, limits = _call_limits(command_call_limit)
        #: Calls left per verb; counted only when a call limit is set.
        self.calls_left: collections.defaultdict[str, int] = collections.defaultdict(
            itertools.repeat(default).__next__, limits
        )
        #: Unrecognised commands left before the session is ended.
        self.bogus_left = bogus_limit

    def screen(
        self,
        line: bytes | LineTooLong,
        *,
        max_length: int,
        max_lengths: Mapping[str, int] | None = None,
        bare_lf: bool = False,
        utf8: bool = False,
        handshake_refused: bool = False,
        starttls_required: bool = False,
    ) -> ReceivedCommand | CommandRefusal:
        """Check one received line (without its LF) and count it.

        ``max_length`` is the longest command line allowed (without its line
        ending), ``max_lengths`` the per-verb limits that replace it (after EHLO);
        ``bare_lf`` says the line ended with a bare LF; ``utf8`` allows a non-ASCII
        argument (SMTPUTF8); ``handshake_refused`` means the TLS handshake was
        refused, so only QUIT may run; ``starttls_required`` means the session must
        start TLS before anything but the commands that lead there.
        """
        if isinstance(line, LineTooLong):
            return _LINE_TOO_LONG
        if self._reject_bare_newlines and (bare_lf or b"\r" in line):
            # A line must end with CRLF and hold no other CR or LF, so no peer can
            # disagree about where it ends.
            if line[:5].upper() in _BDAT:
                return _BARE_NEWLINE_BDAT_REFUSAL
            return _BARE_NEWLINE_REFUSAL
        line = line.rstrip(b"\r")
        if not line:
            return _BAD_SYNTAX
        verb_bytes, _, argument_bytes = line.partition(b" ")
        if not verb_bytes.isalpha() and (not verb_bytes.isascii() or _CONTROL.search(verb_bytes)):
            # Never echo a control character back in "command not recognized".
            return _BAD_SYNTAX
        verb = verb_bytes.upper().decode("ascii")
        if verb in _HTTP_METHODS and _HTTP_REQUEST.search(line):
            # A browser or an HTTP proxy tunnel pointed at the SMTP port (a
            # cross-protocol attack): nothing useful can follow.
            return CommandRefusal(
                "421 4.7.0 Error: HTTP request refused, this is an SMTP server",
                close=True,
                log_reason="sent an HTTP request",
                verb=verb,
            )
        argument: str | None = None
        if argument_bytes:
            argument = decode_text(argument_bytes.strip(), utf8=utf8)
            if argument is None:
                return CommandRefusal(STRICT_ASCII, verb=verb)
        limit = max_length if max_lengths is None else max_lengths.get(verb, max_length)
        if len(line) > limit:
            return CommandRefusal("500 Command line too long", verb=verb)
        if handshake_refused and verb != "QUIT":
            return CommandRefusal("554 Command refused due to lack of security", verb=verb)
        if starttls_required and verb not in ALLOWED_BEFORE_STARTTLS:
            return CommandRefusal("530 Must issue a STARTTLS command first", verb=verb)
        if self._enforce_call_limit:
            calls_left = self.calls_left
            budget = calls_left[verb]
            if budget < 1:
                return CommandRefusal(
                    f"421 4.7.0 {verb} sent too many times",
                    close=True,
                    log_reason=f"over limit for {verb}",
                    verb=verb,
                )
            calls_left[verb] = budget - 1
        if verb not in self._verbs:
            self.bogus_left -= 1
            if self.bogus_left < 1:
                return CommandRefusal(
                    "502 5.5.1 Too many unrecognized commands, goodbye.",
                    close=True,
                    log_reason=f"unrecognised: {verb}; too many bogus commands",
                    verb=verb,
                )
            return CommandRefusal(
                f'500 Error: command "{verb}" not recognized',
                log_reason=f"unrecognised: {verb}",
                verb=verb,
            )
        return ReceivedCommand(verb, argument)


def _call_limits(limit: int | Mapping[str, int] | None) -> tuple[int, dict[str, int]]:
    """aiosmtpd's ``command_call_limit``, checked: the default and the per-verb limits."""
    if limit is None:
        return CALL_LIMIT_DEFAULT, {}
    if isinstance(limit, bool) or not isinstance(limit, int | Mapping):
        raise TypeError("command_call_limit must be int or Dict[str, int]")
    if isinstance(limit, int):
        return limit, {}
    if not all(isinstance(value, int) for value in limit.values()):
        raise TypeError("All command_call_limit values must be int")
    limits = {key.upper(): value for key, value in limit.items()}
    return limits.pop("*", CALL_LIMIT_DEFAULT), limits


def decode_text(data: bytes, *, utf8: bool) -> str | None:
    """The client's octets (a command's argument, a message the server decodes) as
    text: UTF-8 under SMTPUTF8, undecodable octets kept as surrogate escapes for the
    parsers to refuse; otherwise ASCII only, and None for anything else (the reply
    is :data:`STRICT_ASCII`)."""
    if utf8:
        return data.decode("utf-8", "surrogateescape")
    return data.decode("ascii") if data.isascii() else None


def printable(text: str) -> str:
    """Client text made safe to echo in a reply: control characters, and octets that
    were not UTF-8, become '?' (a fuzzing and probing find: a lone surrogate made the
    reply impossible to encode, and C1 controls went out raw)."""
    return _UNECHOABLE.sub("?", text)


# -- MAIL and RCPT parameters ------------------------------------------------------------


class MailDSN(NamedTuple):
    """MAIL's DSN parameters (RFC 3461): RET and ENVID, each None if absent."""

    ret: str | None
    envid: str | None


class RcptDSN(NamedTuple):
    """RCPT's DSN parameters (RFC 3461): NOTIFY's conditions and ORCPT, each None if absent."""

    notify: frozenset[str] | None
    orcpt: OriginalRecipient | None


def check_mail_parameters(
    options: Sequence[str],
    syntax_error: str,
    *,
    size_limit: int | None,
    smtputf8: bool,
    decode_data: bool,
    chunking: bool,
    dsn: bool,
) -> str | None:
    """The error reply for MAIL parameters (``KEY=VALUE`` strings, upper-cased) the
    server does not take, if any; ``syntax_error`` is the reply for a bad SIZE.

    ``size_limit`` is the SIZE the server announces (None or 0: none); ``smtputf8``,
    ``chunking`` and ``dsn`` say whether those extensions are on.  A server that
    decodes messages to text (``decode_data``) offers no 8BITMIME, so BODY is a
    parameter it does not take (aiosmtpd's 555).
    """
    if not options:
        return None  # BODY defaults to 7BIT, which every server takes
    params: dict[str, str | None] = {}
    for option in options:
        keyword, equals, value = option.partition("=")
        params[keyword] = value if equals else None
    bodies = ("7BIT", "8BITMIME", "BINARYMIME") if chunking else ("7BIT", "8BITMIME")
    if not decode_data and params.pop("BODY", "7BIT") not in bodies:
        return f"501 Error: BODY can only be one of {', '.join(bodies)}"
    if "SMTPUTF8" in params:
        if params.pop("SMTPUTF8") is not None:
            return "501 Error: SMTPUTF8 takes no arguments"
        if not smtputf8:
            return "501 Error: SMTPUTF8 disabled"
    if "SIZE" in params:
        size = params.pop("SIZE")
        if size is None or not (size.isascii() and size.isdigit()):
            return syntax_error
        if size_limit and int(size) > size_limit:
            return "552 Error: message size exceeds fixed maximum message size"
    if dsn:
        params.pop("RET", None)
        params.pop("ENVID", None)
    if params:
        return "555 MAIL FROM parameters not recognized or not implemented"
    return None


def parse_mail_dsn(parameters: Mapping[str, str | None]) -> MailDSN | str:
    """MAIL's DSN parameters from its parameters (keywords upper-cased, values as
    sent), or the error reply if one is malformed."""
    try:
        ret = None if "RET" not in parameters else parse_ret(parameters["RET"])
        envid = None if "ENVID" not in parameters else parse_envid(parameters["ENVID"])
    except ProtocolError as error:
        return f"501 5.5.4 Error: {printable(str(error))}"
    return MailDSN(ret, envid)


def parse_rcpt_parameters(
    parameters: Mapping[str, str | None], *, dsn: bool
) -> RcptDSN | str | None:
    """RCPT's parameters: NOTIFY and ORCPT when DSN is on, nothing else.  The DSN
    request, the error reply, or None when there are no parameters."""
    if not parameters:
        return None
    unknown = set(parameters) - ({"NOTIFY", "ORCPT"} if dsn else set())
    if unknown:
        return "555 RCPT TO parameters not recognized or not implemented"
    try:
        notify = None if "NOTIFY" not in parameters else parse_notify(parameters["NOTIFY"])
        orcpt = None if "ORCPT" not in parameters else parse_orcpt(parameters["ORCPT"])
    except ProtocolError as error:
        return f"501 5.5.4 Error: {printable(str(error))}"
    return RcptDSN(notify, orcpt)
