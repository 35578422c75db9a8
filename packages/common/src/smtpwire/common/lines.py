"""Splitting a byte stream into command lines, in bounded memory.

A server reads commands as lines; a hostile client may send megabytes without a
line feed.  :class:`LineReader` never holds more than ``max_length`` octets of one
line: past that it drops what it has, skips to the next line feed and reports the
line as too long, so the server can answer ``500`` and stay in step.
"""

from __future__ import annotations

from typing import Final

from .limits import COMMAND_LINE_MAX

__all__ = ["LINE_TOO_LONG", "LineReader", "LineTooLong"]


class LineTooLong:
    """Marker returned by :meth:`LineReader.next_line` in place of an overlong line."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LINE_TOO_LONG"


LINE_TOO_LONG: Final = LineTooLong()

_COMPACT_AT: Final = 64 * 1024


class LineReader:
    """Incremental line splitter for the command phase.

    Lines end at CRLF or, leniently, at a bare LF (as aiosmtpd and most MTAs accept
    for commands; DATA is stricter, see :mod:`smtpwire.common.data`).
    :attr:`last_line_bare_lf` says which it was.  ``max_length`` counts the line
    with a CRLF ending, so the RFC 5321 default of 512 allows 510 octets of command.
    """

    __slots__ = ("_buffer", "_discarding", "_position", "last_line_bare_lf", "max_length")

    def __init__(self, max_length: int = COMMAND_LINE_MAX) -> None:
        if max_length < 3:
            raise ValueError("max_length must leave room for a command and CRLF")
        self.max_length = max_length
        self._buffer = bytearray()
        self._position = 0
        self._discarding = False
        self.last_line_bare_lf = False

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned (lets the I/O layer pause reading)."""
        return len(self._buffer) - self._position

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes.  Call :meth:`next_line` until it returns None."""
        if self._position >= _COMPACT_AT or self._position == len(self._buffer):
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data

    def next_line(self) -> bytes | LineTooLong | None:
        """The next complete line without its ending, :data:`LINE_TOO_LONG`, or None
        when no complete line is buffered yet."""
        buffer = self._buffer
        start = self._position
        end = buffer.find(b"\n", start)
        if end < 0:
            if len(buffer) - start > self.max_length:
                # Drop the partial line now so memory stays bounded; report it when it ends.
                self._discarding = True
                del buffer[:]
                self._position = 0
            return None
        self._position = end + 1
        if self._discarding:
            self._discarding = False
            return LINE_TOO_LONG
        bare = end == start or buffer[end - 1] != 0x0D
        self.last_line_bare_lf = bare
        stop = end if bare else end - 1
        if stop - start + 2 > self.max_length:
            return LINE_TOO_LONG
        return bytes(buffer[start:stop])

    def take_buffered(self) -> bytes:
        """Remove and return everything buffered after the last returned line, e.g.
        the first bytes of a message when the session switches to DATA.  A partly
        discarded overlong line is forgotten."""
        rest = bytes(self._buffer[self._position :])
        del self._buffer[:]
        self._position = 0
        self._discarding = False
        return rest

    def clear(self) -> None:
        """Forget everything buffered: after ``STARTTLS``, plaintext that arrived
        before the handshake must never be executed (CVE-2011-0411, CVE-2024-34083)."""
        self.take_buffered()
