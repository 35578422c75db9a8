"""Message data on the wire: the client's dot-stuffing encoder and the server's
incremental decoder (RFC 5321 sections 4.1.1.4 and 4.5.2).

Both work on whole chunks with ``bytes`` methods (``find``, ``count``,
``translate``, ``split``/``join``, ``replace``), never a Python loop per line, and
both give the same output however the input is split into chunks.

Smuggling safety (SEC Consult, 2023): the decoder ends a message only at
``CRLF.CRLF``.  ``LF.LF``, ``LF.CRLF``, ``CR.CR``, ``CRLF.CR``, ``CR.LF``,
``CRLF.LF`` and terminators with a NUL inside are message content.  The encoder
turns every bare CR and bare LF into CRLF *before* stuffing dots, so no line the
receiver could read as a lone ``.`` can leave it, whatever the receiver's idea of
a line ending.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = [
    "BareNewlinePolicy",
    "DataDecoder",
    "DataEncoder",
    "DataViolation",
    "encode_crlf_data",
    "encode_data",
    "iter_encode_data",
    "normalize_line_endings",
]

_TERMINATOR: Final = b"\r\n.\r\n"
# Proper prefixes of the terminator, longest first: a chunk may end inside one.
_TERMINATOR_PREFIXES: Final = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


# bytes.translate with this table keeps only the CR and LF octets.
_ALL_BUT_CR_LF: Final = bytes(octet for octet in range(256) if octet not in (0x0A, 0x0D))


def _bare_newlines(data: bytes) -> tuple[bool, bool]:
    """(has a bare LF, has a bare CR) in data that does not end inside a CRLF.

    Clean data has exactly two CR/LF octets per CRLF; two C passes (a count and a
    translate) decide that, and the short translated string answers which kind of
    bare line ending there is, in the rare case there is one.
    """
    crlf = data.count(b"\r\n")
    endings = data.translate(None, _ALL_BUT_CR_LF)
    if len(endings) == 2 * crlf:
        return False, False
    return endings.count(b"\n") != crlf, endings.count(b"\r") != crlf


def normalize_line_endings(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF; CRLF stays.  Returns ``data`` itself
    when there is nothing to change (the usual case, checked in one C pass)."""
    if not any(_bare_newlines(data)):
        return data
    return _to_crlf(data)


def _to_crlf(data: bytes) -> bytes:
    # Three C passes whatever the density of line endings (a regex substitution
    # pays per match: 64 KiB of bare LFs took 10 ms).
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _stuff(data: bytes, *, at_line_start: bool, tail: bytes = b"") -> bytes:
    """Double every dot that starts a line of CRLF-normalised ``data`` and append
    ``tail``, copying the message once (split/join beats ``bytes.replace`` here)."""
    if b"\n." not in data and not (at_line_start and data[:1] == b"."):
        return data + tail if tail else data
    parts = data.split(b"\n.")
    if at_line_start and parts[0][:1] == b".":
        parts[0] = b"." + parts[0]
    if tail:
        parts[-1] += tail
    return b"\n..".join(parts)


# --- client side -----------------------------------------------------------------------


class DataEncoder:
    """Encode message content for DATA, chunk by chunk.

    :meth:`feed` returns wire bytes for what it can already decide; a trailing CR is
    held back until the next chunk shows whether an LF follows.  :meth:`finish`
    returns the rest: a final CRLF if the content lacks one (an empty message is
    sent as one empty line, as smtplib and aiosmtplib do) and ``.CRLF``.
    """

    __slots__ = ("_at_line_start", "_finished", "_held_cr", "octets")

    def __init__(self) -> None:
        self._held_cr = False
        self._at_line_start = True
        self._finished = False
        self.octets = 0  # content octets after normalisation, i.e. RFC 1870's message size

    def feed(self, chunk: bytes | bytearray | memoryview) -> bytes:
        if self._finished:
            raise RuntimeError("DataEncoder.feed() after finish()")
        data = bytes(chunk)
        if self._held_cr:
            data = b"\r" + data
        self._held_cr = data.endswith(b"\r")
        if self._held_cr:
            data = data[:-1]
        if not data:
            return b""
        data = normalize_line_endings(data)
        self.octets += len(data)
        stuffed = _stuff(data, at_line_start=self._at_line_start)
        self._at_line_start = stuffed.endswith(b"\n")
        return stuffed

    def finish(self) -> bytes:
        """The end of the data: pending CR as CRLF, a final CRLF if needed, ``.CRLF``."""
        if self._finished:
            raise RuntimeError("DataEncoder.finish() called twice")
        self._finished = True
        tail = self._tail()
        self.octets += len(tail) - 3
        return tail

    def _tail(self) -> bytes:
        if not self._held_cr and self._at_line_start and self.octets:
            return b".\r\n"
        return b"\r\n.\r\n"


def encode_data(content: bytes | bytearray | memoryview) -> bytes:
    """Encode a whole message for DATA (normalise, stuff, terminate) in one call,
    copying it only once when its line endings are already CRLF."""
    return encode_crlf_data(normalize_line_endings(bytes(content)))


def encode_crlf_data(data: bytes) -> bytes:
    """:func:`encode_data` for content already normalised to CRLF line endings
    (:func:`normalize_line_endings`' result): stuff and terminate, without checking
    the line endings a second time (a client that measured the message for SIZE
    has normalised it already)."""
    if not data:
        return b"\r\n.\r\n"
    tail = b".\r\n" if data.endswith(b"\n") else b"\r\n.\r\n"
    return _stuff(data, at_line_start=True, tail=tail)


def iter_encode_data(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Encode a message given as an iterable of chunks, yielding wire chunks."""
    encoder = DataEncoder()
    for chunk in chunks:
        encoded = encoder.feed(chunk)
        if encoded:
            yield encoded
    yield encoder.finish()


# --- server side -----------------------------------------------------------------------


class BareNewlinePolicy(enum.Enum):
    """What the decoder does with a bare LF or bare CR inside message data.

    None of them ever ends a message early; the policy only decides the content.
    """

    REJECT = "reject"  # refuse the message (report DataViolation.BARE_LF / BARE_CR)
    NORMALIZE = "normalize"  # bare CR and LF end lines and are delivered as CRLF (as Postfix)
    KEEP = "keep"  # deliver them as sent, and flag them (aiosmtpd's behaviour)


class DataViolation(enum.Enum):
    """The first limit or rule a message broke; the rest of it was discarded."""

    LINE_TOO_LONG = "line too long"
    TOO_LARGE = "message too large"
    BARE_LF = "bare LF"
    BARE_CR = "bare CR"


_BARE_NEWLINE: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class DataDecoder:
    """Incremental DATA decoder for a server.

    Feed it the bytes that follow ``354``; each :meth:`feed` returns the content
    those bytes completed (dot-unstuffed), and once it has seen ``CRLF.CRLF``,
    :attr:`done` is true and :attr:`remainder` holds the bytes after the terminator
    (pipelined commands).  The initial CRLF of the terminator belongs to the content,
    which therefore ends with CRLF unless it is empty.

    Limits: ``max_size`` (content octets) and ``max_line_length`` (octets per line
    including CRLF, a stuffing dot not counted; lines are measured between LFs).
    :attr:`violation` is the first limit or rule the message broke, in the order
    of the data (the same however it was split into chunks).  From there on all
    content is discarded while the decoder still looks for the terminator, so the
    session stays in step; the caller replies with an error after the end and must
    discard what it received of this message.

    A dot is a stuffing dot (removed) at the start of a line that follows CRLF;
    under ``NORMALIZE`` also after a bare LF or CR, since those end lines there.
    :attr:`bare_lf` / :attr:`bare_cr` tell whether the wire data held a bare LF or
    CR, whatever the ``bare_newline`` policy.
    """

    __slots__ = (
        "_line_dot",
        "_line_length",
        "_normalize",
        "_pending",
        "_virtual",
        "bare_cr",
        "bare_lf",
        "bare_newline",
        "done",
        "max_line_length",
        "max_size",
        "remainder",
        "size",
        "violation",
        "wire_size",
    )

    def __init__(
        self,
        *,
        max_size: int | None = None,
        max_line_length: int | None = 1000,
        bare_newline: BareNewlinePolicy = BareNewlinePolicy.KEEP,
    ) -> None:
        if max_line_length is not None and max_line_length < 3:
            raise ValueError("max_line_length must be at least 3 (one octet and CRLF)")
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.bare_newline = bare_newline
        self._normalize = bare_newline is BareNewlinePolicy.NORMALIZE
        # The message starts at a line start: a virtual CRLF (never output) lets the
        # terminator and unstuffing patterns match the first line like any other.
        self._pending = b"\r\n"
        self._virtual = 2
        self._line_length = 0
        self._line_dot = False
        self.done = False
        self.remainder = b""
        self.size = 0  # content octets produced (the message size, until a violation)
        self.wire_size = 0  # octets consumed from the wire, terminator included
        self.violation: DataViolation | None = None
        self.bare_lf = False
        self.bare_cr = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Consume ``chunk``; return the content it completed (possibly ``b""``)."""
        if self.done:
            raise RuntimeError("DataDecoder.feed() after the end of data")
        data = bytes(chunk)
        wire = self._pending + data if self._pending else data
        # Every terminator and every stuffed dot starts with CRLF-dot; most mail has
        # no line starting with a dot, and then one early-exiting find saves both
        # the terminator search and the unstuffing pass.
        first_dot_line = wire.find(b"\r\n.")
        end = -1 if first_dot_line < 0 else wire.find(_TERMINATOR, first_dot_line)
        if end >= 0:
            segment = wire[: end + 2]
            self.remainder = wire[end + 5 :]
            self._pending = b""
            self.done = True
            self.wire_size += len(data) - len(self.remainder)
        else:
            keep = self._undecided_tail(wire)
            segment = wire[: len(wire) - keep]
            self._pending = wire[len(wire) - keep :]
            self.wire_size += len(data)
        return self._decode_segment(segment, dot_lines=first_dot_line >= 0)

    def _undecided_tail(self, wire: bytes) -> int:
        """How many final octets must wait for the next chunk: a possible start of
        the terminator, and under NORMALIZE a bare LF (and dot) that the next
        chunk's first octet turns into a line end (and stuffing dot)."""
        for prefix in _TERMINATOR_PREFIXES:
            if wire.endswith(prefix):
                return len(prefix)
        if self._normalize:
            if wire.endswith(b"\n."):
                return 2
            if wire.endswith(b"\n"):
                return 1
        return 0

    def _decode_segment(self, segment: bytes, *, dot_lines: bool) -> bytes:
        """Check and decode wire octets that hold no part of an undecided terminator.

        A segment never ends with CR, CRLF or CRLF-dot (those stay pending), so no
        CRLF pair and no stuffed dot is split between two segments.
        """
        if not segment:
            return b""
        virtual = self._virtual
        self._virtual = 0
        has_bare_lf, has_bare_cr = _bare_newlines(segment)
        self.bare_lf = self.bare_lf or has_bare_lf
        self.bare_cr = self.bare_cr or has_bare_cr
        if self.violation is not None:
            return b""
        normalize = self._normalize and (has_bare_lf or has_bare_cr)
        # Where in this segment a rule is first broken; the earliest one wins.
        broken_at = len(segment)
        broken: DataViolation | None = None
        if self.bare_newline is BareNewlinePolicy.REJECT and (has_bare_lf or has_bare_cr):
            match = _BARE_NEWLINE.search(segment)
            assert match is not None  # noqa: S101 -- _bare_newlines found one
            broken_at = match.start()
            broken = DataViolation.BARE_LF if match.group() == b"\n" else DataViolation.BARE_CR
        if self.max_line_length is not None:
            too_long_at = self._long_line_at(segment, self.max_line_length)
            if 0 <= too_long_at < broken_at:
                broken_at, broken = too_long_at, DataViolation.LINE_TOO_LONG
        if broken is not None:
            # The content before the break decides whether the size limit came first.
            # (The octet at the break is never the LF of a CRLF, so a CR just before it
            # is a bare CR and the prefix decodes the same in any chunking.)
            before = segment[:broken_at]
            self.size += len(
                self._content(before, virtual, normalize=normalize, dot_lines=dot_lines)
            )
            if self.max_size is not None and self.size > self.max_size:
                broken = DataViolation.TOO_LARGE
            self.violation = broken
            return b""
        content = self._content(segment, virtual, normalize=normalize, dot_lines=dot_lines)
        self.size += len(content)
        if self.max_size is not None and self.size > self.max_size:
            self.violation = DataViolation.TOO_LARGE
            return b""
        return content

    @staticmethod
    def _content(segment: bytes, virtual: int, *, normalize: bool, dot_lines: bool) -> bytes:
        if normalize:
            segment = _to_crlf(segment)
            dot_lines = True  # normalising may have made new line starts
        # split/join unstuffs at twice the speed of bytes.replace for this pattern.
        content = b"\r\n".join(segment.split(b"\r\n.")) if dot_lines else segment
        return content[virtual:] if virtual else content

    def _stuffed_line_at(self, segment: bytes, start: int) -> bool:
        """Whether the line that starts at ``start`` begins with a stuffing dot.

        A line that starts inside the segment follows an LF; its dot is a stuffing
        dot after CRLF, or after any LF under NORMALIZE.  A line carried over from
        earlier segments (``start < 0``) keeps what was found then; one that starts
        the segment follows a bare LF (a CRLF never ends a segment).
        """
        if start < 0:
            return self._line_dot
        if start >= len(segment) or segment[start] != 0x2E:
            return False
        return self._normalize or (start >= 2 and segment[start - 2] == 0x0D)

    def _long_line_at(self, segment: bytes, limit: int) -> int:
        """Index of the first octet that makes a line too long, or -1.

        A line may hold ``limit - 1`` octets before its LF (``limit`` after a
        stuffing dot).  The line carried over from earlier segments continues here.

        Rather than visit every line, each step looks for the last LF within
        ``limit`` octets of the current line's start with ``bytes.rfind`` (which
        reads backwards from the window's end, so it touches about one line): every
        line in that window is short enough, so the scan advances nearly ``limit``
        octets per step, a Python step per kilobyte rather than per line.
        """
        size = len(segment)
        rfind = segment.rfind
        start = -self._line_length  # where the current line began, relative to segment
        floor = 0  # where to look for the next LF
        while True:
            window_end = start + limit
            if window_end > size:
                last = rfind(b"\n", floor)
                if last >= 0:
                    start = last + 1
                self._line_dot = self._stuffed_line_at(segment, start)
                self._line_length = size - start
                return -1
            last = rfind(b"\n", floor, window_end)
            if last >= 0:
                start = floor = last + 1
                continue
            # No LF in the first ``limit`` octets: only a dot line may end right here.
            if not self._stuffed_line_at(segment, start):
                return window_end - 1
            if window_end == size:
                self._line_dot = True
                self._line_length = size - start
                return -1
            if segment[window_end] != 0x0A:
                return window_end
            start = floor = window_end + 1
