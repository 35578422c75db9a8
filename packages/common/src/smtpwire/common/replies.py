"""SMTP replies: the value, an incremental parser and a formatter (RFC 5321 section 4.2).

The parser is fed whatever bytes the transport delivers and hands back complete
replies.  It caps both a single line and a whole multi-line reply, so a hostile
server cannot make a client buffer without bound, and it refuses a continuation
line whose code differs from the first line's, which would otherwise shift every
later command/reply pair by one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from .errors import MalformedReplyError, ProtocolError, ReplyTooLongError, UnsafeCharacterError
from .limits import REPLY_CAP, REPLY_LINE_CAP
from .status import EnhancedStatusCode

__all__ = ["ReplyParser", "SMTPReply", "format_reply", "parse_reply", "split_reply_text"]

_ENHANCED_PREFIX: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |\Z)", re.ASCII)
_LINE_BREAK: Final = re.compile(r"\r\n|\n")
_UNSAFE_IN_LINE: Final = re.compile(r"[\r\n\x00]")
# A reply line without its LF: code, separator (absent for a bare "250") and text,
# which may end with the CR of CRLF but hold no other CR and no NUL.
_REPLY_LINE: Final = re.compile(rb"([2-5][0-9][0-9])(?:([ -])([^\r\x00]*))?\r?\Z")
# The same for a whole one-line reply with its line ending (the parser's fast path).
_SINGLE_LINE_REPLY: Final = re.compile(rb"([2-5][0-9][0-9])(?: ([^\r\x00\n]*))?\r?\n\Z")
# Several one-line replies back to back, each with its line ending (a pipelined
# group's replies arriving together): the whole of them, then each one.
_SINGLE_LINE_REPLIES: Final = re.compile(rb"(?:[2-5][0-9][0-9](?: [^\r\x00\n]*)?\r?\n)+")
_SINGLE_LINE_REPLY_PARTS: Final = re.compile(rb"([2-5][0-9][0-9])(?: ([^\r\x00\n]*))?\r?\n")
_new_reply: Final = object.__new__
_ENCODING: Final = "utf-8"
_ERRORS: Final = "surrogateescape"  # any octet a peer sent survives a parse/format round trip


class SMTPReply:
    """One complete reply: a code and one or more lines of text.

    ``lines`` hold the text exactly as it travels after ``NNN-``/``NNN ``, including
    an enhanced status code if the sender put one there; :attr:`enhanced_code`
    reads it back.  Instances are immutable and compare by value.
    """

    # Private slots behind read-only properties: the parser builds a reply with two
    # plain slot stores, and code and lines can be neither set nor deleted.
    __slots__ = ("_code", "_lines")

    def __init__(self, code: int, lines: str | Iterable[str] = ("",)) -> None:
        _check_code(code)
        self._lines = split_reply_text(lines)
        self._code = code

    @property
    def code(self) -> int:
        return self._code

    @property
    def lines(self) -> tuple[str, ...]:
        return self._lines

    @classmethod
    def build(
        cls, code: int, text: str | Iterable[str] = "", *, enhanced: str | None = None
    ) -> SMTPReply:
        """Make a reply, prefixing every line with ``enhanced`` (RFC 2034 asks for
        the code on each line) after checking that its class matches ``code``."""
        lines = split_reply_text(text)
        if enhanced is not None:
            status = EnhancedStatusCode.parse(enhanced)
            if status.klass != code // 100:
                raise ValueError(f"enhanced status {enhanced} does not match reply code {code}")
            lines = tuple(f"{status} {line}" if line else str(status) for line in lines)
        return cls(code, lines)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SMTPReply):
            return NotImplemented
        return self._code == other._code and self._lines == other._lines

    def __hash__(self) -> int:
        return hash((self._code, self._lines))

    def __repr__(self) -> str:
        return f"SMTPReply(code={self.code}, lines={self.lines!r})"

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    @property
    def message(self) -> str:
        """The text of all lines joined with ``\\n`` (what aiosmtplib calls ``message``)."""
        return "\n".join(self.lines)

    @property
    def enhanced_code(self) -> EnhancedStatusCode | None:
        """The RFC 3463 code at the start of the first line, if its class matches."""
        match = _ENHANCED_PREFIX.match(self.lines[0])
        if match is None or int(match[1]) != self.code // 100:
            return None
        return EnhancedStatusCode(int(match[1]), int(match[2]), int(match[3]))

    @property
    def is_positive(self) -> bool:
        """2yz: the command succeeded."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """3yz: the server waits for more (354 for DATA, 334 for AUTH)."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4yz: failed now, may succeed if tried again."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5yz: failed, and will fail again."""
        return 500 <= self.code < 600

    def to_bytes(self) -> bytes:
        """The reply as it goes on the wire, CRLF-terminated."""
        return _format_lines(self.code, self.lines)


def _check_code(code: int) -> None:
    if not isinstance(code, int) or isinstance(code, bool) or not 200 <= code <= 599:
        raise ValueError(f"reply code must be an int from 200 to 599, not {code!r}")


def split_reply_text(text: str | Iterable[str]) -> tuple[str, ...]:
    """Turn reply text into lines: a string is split at ``\\n`` (or CRLF); an
    iterable gives the lines directly.  Raises :class:`UnsafeCharacterError` for CR,
    LF or NUL left inside a line: written raw they would forge another reply line."""
    lines = tuple(_LINE_BREAK.split(text)) if isinstance(text, str) else tuple(text)
    if not lines:
        raise ValueError("a reply has at least one line")
    for line in lines:
        if not isinstance(line, str):
            raise TypeError(f"reply lines must be str, not {type(line).__name__}")
        bad = _UNSAFE_IN_LINE.search(line)
        if bad is not None:
            raise UnsafeCharacterError(f"reply line holds {bad.group()!r}: {line!r}")
    return lines


def _format_lines(code: int, lines: tuple[str, ...]) -> bytes:
    last = len(lines) - 1
    out = []
    for index, line in enumerate(lines):
        separator = " " if index == last else "-"
        out.append(f"{code}{separator}{line}\r\n" if line else f"{code}{separator}\r\n")
    return "".join(out).encode(_ENCODING, _ERRORS)


def format_reply(
    code: int, text: str | Iterable[str] = "", *, enhanced: str | None = None
) -> bytes:
    """Format a reply for the wire: ``NNN-`` on every line but the last.

    Multi-line text (a string with line breaks, or an iterable of lines) becomes
    continuation lines; CR, LF or NUL inside a line raise
    :class:`UnsafeCharacterError`.  ``enhanced`` (``"x.y.z"``) is put on every line.
    """
    return SMTPReply.build(code, text, enhanced=enhanced).to_bytes()


class ReplyParser:
    """Incremental reply parser: :meth:`feed` bytes in any chunks, get replies out.

    A line is at most ``max_line_length`` octets including its line ending, and
    all the lines of one reply at most ``max_reply_length``; over either, feed raises
    :class:`ReplyTooLongError` as soon as the excess is buffered.  Lines end at
    CRLF, or at a bare LF (lenient, as smtplib and aiosmtplib are).  Once it has
    raised, the parser is out of step with the peer and raises the same error again.
    """

    __slots__ = (
        "_buffer",
        "_code",
        "_failed",
        "_lines",
        "_reply_size",
        "max_line_length",
        "max_reply_length",
    )

    def __init__(
        self, *, max_line_length: int = REPLY_LINE_CAP, max_reply_length: int = REPLY_CAP
    ) -> None:
        self.max_line_length = max_line_length
        self.max_reply_length = max_reply_length
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code = 0
        self._reply_size = 0
        self._failed: MalformedReplyError | ReplyTooLongError | None = None

    @property
    def has_partial(self) -> bool:
        """True while part of a reply is buffered (an unfinished line or continuation)."""
        return bool(self._buffer or self._lines)

    def reset(self) -> None:
        """Forget everything buffered, e.g. before a TLS handshake (RFC 3207: plaintext
        received after ``220 Ready to start TLS`` must never be read as a TLS reply)."""
        self._buffer.clear()
        self._lines.clear()
        self._code = 0
        self._reply_size = 0
        self._failed = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[SMTPReply]:
        """Add received bytes; return the replies they completed, oldest first."""
        if self._failed is not None:
            raise self._failed
        buffer = self._buffer
        if buffer:
            buffer += data
            text = bytes(buffer)
            buffer.clear()
        else:
            text = bytes(data)
            # Fast path: a lock-step client mostly receives exactly one one-line reply.
            if (
                not self._lines
                and text.find(b"\n") == len(text) - 1
                and len(text) <= self.max_line_length
                and len(text) <= self.max_reply_length
                and (single := _SINGLE_LINE_REPLY.match(text)) is not None
            ):
                # Inlined _one_line_reply: this is the lock-step client's every reply.
                reply = _new_reply(SMTPReply)
                reply._code = int(single[1])
                line = single[2]
                reply._lines = (line.decode(_ENCODING, _ERRORS) if line else "",)
                return [reply]
            # Fast path: a pipelined group's one-line replies, all in one read.  The
            # whole text within one line's cap keeps every line and reply within theirs.
            if (
                not self._lines
                and len(text) <= self.max_line_length
                and len(text) <= self.max_reply_length
                and _SINGLE_LINE_REPLIES.fullmatch(text) is not None
            ):
                return [
                    _one_line_reply(code, line)
                    for code, line in _SINGLE_LINE_REPLY_PARTS.findall(text)
                ]
        replies: list[SMTPReply] = []
        lines = self._lines
        max_line = self.max_line_length
        max_reply = self.max_reply_length
        reply_size = self._reply_size
        find = text.find
        start = 0
        while (end := find(b"\n", start)) >= 0:
            reply_size += end + 1 - start
            if end + 1 - start > max_line:
                raise self._fail(self._too_long("line", max_line))
            if reply_size > max_reply:
                raise self._fail(self._too_long("reply", max_reply))
            match = _REPLY_LINE.match(text, start, end)
            if match is None:
                error = MalformedReplyError(f"malformed reply line: {text[start:end][:80]!r}")
                raise self._fail(error)
            start = end + 1
            digits, separator, line = match.groups()
            code = int(digits)
            if lines and code != self._code:
                error = MalformedReplyError(
                    f"continuation line code {code} differs from {self._code}: {match[0][:80]!r}"
                )
                raise self._fail(error)
            self._code = code
            lines.append(line.decode(_ENCODING, _ERRORS) if line else "")
            if separator != b"-":
                reply = _new_reply(SMTPReply)  # checked already: skip __init__
                reply._code = code
                reply._lines = tuple(lines)
                replies.append(reply)
                lines.clear()
                reply_size = 0
        self._reply_size = reply_size
        if start < len(text):
            buffer += text[start:]
            if len(buffer) > max_line:
                raise self._fail(self._too_long("line", max_line))
            if reply_size + len(buffer) > max_reply:
                raise self._fail(self._too_long("reply", max_reply))
        return replies

    def _fail(self, error: MalformedReplyError | ReplyTooLongError) -> ProtocolError:
        self._failed = error
        return error

    def _too_long(self, scope: str, limit: int) -> ReplyTooLongError:
        return ReplyTooLongError(
            f"reply {scope} longer than {limit} octets", limit=limit, scope=scope
        )


def _one_line_reply(code: bytes, line: bytes | None) -> SMTPReply:
    reply = _new_reply(SMTPReply)  # checked already by the pattern: skip __init__
    reply._code = int(code)
    reply._lines = (line.decode(_ENCODING, _ERRORS) if line else "",)
    return reply


def parse_reply(data: bytes) -> SMTPReply:
    """Parse bytes holding exactly one complete reply (a convenience for tests and tools)."""
    parser = ReplyParser()
    replies = parser.feed(data)
    if len(replies) != 1 or parser.has_partial:
        raise MalformedReplyError(f"expected exactly one complete reply: {data[:80]!r}")
    return replies[0]
