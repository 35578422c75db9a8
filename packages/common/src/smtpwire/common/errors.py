"""One exception hierarchy for everything the wire core refuses.

Every error the sans-I/O layer raises derives from :class:`ProtocolError`, so an
I/O layer can catch the whole family in one place and turn it into a reply (server)
or a specific API exception (client).  The subclasses are fine-grained because the
reply differs: a line that is too long is a 500, a bad address a 553, a bad
parameter a 501/555.
"""

from __future__ import annotations

__all__ = [
    "AddressSyntaxError",
    "CommandSyntaxError",
    "CommandTooLongError",
    "LineTooLongError",
    "MalformedReplyError",
    "NonASCIIError",
    "ParameterSyntaxError",
    "ProtocolError",
    "ReplyError",
    "ReplyTooLongError",
    "SASLAbortedError",
    "SASLDecodeError",
    "SASLError",
    "UnsafeCharacterError",
]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`smtpwire.common`."""


class LineTooLongError(ProtocolError):
    """A line went over its octet limit; ``limit`` is that limit."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


# --- replies (what a client reads) -------------------------------------------------


class ReplyError(ProtocolError):
    """The peer's reply could not be parsed; the connection is out of step."""


class MalformedReplyError(ReplyError):
    """A reply line is not ``NNN[ -]text``, or codes disagree across continuation lines."""


class ReplyTooLongError(ReplyError, LineTooLongError):
    """A reply line or a whole multi-line reply went over its cap.

    ``scope`` is ``"line"`` or ``"reply"``.
    """

    def __init__(self, message: str, *, limit: int, scope: str) -> None:
        super().__init__(message, limit=limit)
        self.scope = scope


# --- commands (what a server reads, what a client writes) ---------------------------


class CommandSyntaxError(ProtocolError):
    """A command line or one of its arguments does not follow RFC 5321's grammar."""


class CommandTooLongError(CommandSyntaxError, LineTooLongError):
    """A command line is longer than the limit in force (512 octets incl. CRLF by default)."""


class NonASCIIError(CommandSyntaxError):
    """Non-ASCII octets where only ASCII is allowed (no SMTPUTF8 in force)."""


class AddressSyntaxError(CommandSyntaxError):
    """A reverse-path or forward-path is malformed."""


class ParameterSyntaxError(CommandSyntaxError):
    """An ESMTP parameter (``KEY[=VALUE]``) or its xtext value is malformed."""


class UnsafeCharacterError(ProtocolError, ValueError):
    """Text that would be written to the wire holds a character that could smuggle
    a second command or reply line (CR, LF, NUL, other control characters,
    Unicode line separators), or a space or angle bracket that would smuggle a parameter.

    It is also a :class:`ValueError` because callers pass the bad value in.
    """


# --- SASL ----------------------------------------------------------------------------


class SASLError(ProtocolError):
    """Base class of SASL encoding errors."""


class SASLDecodeError(SASLError):
    """A SASL response is not valid base64 or does not have the mechanism's shape."""


class SASLAbortedError(SASLError):
    """The client answered a challenge with ``*`` (RFC 4954 section 4)."""
