"""Received bytes waiting for a server session (sans-I/O): command lines, or a
message being read, and the framing rules that keep the two apart.

The protocol feeds everything it receives here; the session takes lines out one
at a time.  While a message is read the bytes go straight into its decoder (the
DATA decoder of :mod:`smtpwire.common.data`, an :class:`ExactBytes` BDAT chunk, a
PROXY header collector); the decoded content waits in :attr:`Inbound.pending`
until the session takes it (at the end of the message, or each time ``wake_at``
octets are pending), and whatever follows the end of the message (pipelined
commands) goes back to the line reader, so no byte of a message is ever read as
a command, nor a command as message content.  :class:`ChunkLineEndings` applies
the bare-LF policy across BDAT chunks that may split a CRLF.

Memory stays bounded: a partial command line is capped by the line reader,
complete lines and pending content by the caller pausing its input (see
:attr:`Inbound.buffered` and :attr:`Inbound.pending`), and a message by the
decoder's size limit.
"""

from __future__ import annotations

from typing import Protocol

from .data import BareNewlinePolicy, normalize_line_endings
from .lines import LineReader, LineTooLong

__all__ = ["ChunkLineEndings", "ExactBytes", "Inbound"]


class _Decoder(Protocol):
    done: bool
    remainder: bytes

    @property
    def violation(self) -> object | None: ...

    def feed(self, data: bytes) -> bytes: ...


class ExactBytes:
    """A BDAT chunk (RFC 3030): exactly ``size`` octets, taken as they are.  With
    ``keep`` False they are read and dropped (a refused chunk must still be consumed,
    or its bytes would be read as commands)."""

    __slots__ = ("_left", "done", "keep", "remainder")

    def __init__(self, size: int, *, keep: bool = True) -> None:
        self._left = size
        self.keep = keep
        self.done = size == 0
        self.remainder = b""

    @property
    def violation(self) -> object | None:
        return None if self.keep else "discarded"

    def feed(self, data: bytes) -> bytes:
        taken = data[: self._left]
        self._left -= len(taken)
        if self._left == 0:
            self.done = True
            self.remainder = data[len(taken) :]
        return taken if self.keep else b""


class Inbound:
    __slots__ = ("_chunks", "_decoder", "_lines", "closed", "pending", "wake_at")

    def __init__(self, max_line_length: int) -> None:
        self._lines = LineReader(max_line_length)
        self._decoder: _Decoder | None = None
        self._chunks: list[bytes] = []
        self.pending = 0  # octets of message content not yet taken
        self.wake_at = 0  # pending octets worth waking the session for (0: at the end)
        self.closed = False  # end of input: EOF or connection lost

    @property
    def buffered(self) -> int:
        """Command-phase octets not yet taken (a message's content is not counted)."""
        return self._lines.buffered

    @property
    def last_line_bare_lf(self) -> bool:
        """Whether the line last taken ended with a bare LF instead of CRLF."""
        return self._lines.last_line_bare_lf

    @property
    def max_line_length(self) -> int:
        return self._lines.max_length

    @max_line_length.setter
    def max_line_length(self, value: int) -> None:
        self._lines.max_length = value

    @property
    def reading_message(self) -> bool:
        return self._decoder is not None

    def feed(self, data: bytes) -> bool:
        """Take received bytes; whether a message is (still) being read after them."""
        decoder = self._decoder
        if decoder is None:
            self._lines.feed(data)
            return False
        content = decoder.feed(data)
        if decoder.violation is not None:
            # The message is refused: keep nothing of it, only look for its end.
            self._chunks.clear()
            self.pending = 0
        elif content:
            self._chunks.append(content)
            self.pending += len(content)
        if not decoder.done:
            return True
        self._decoder = None
        if decoder.remainder:
            self._lines.feed(decoder.remainder)
        return False

    def next_line(self) -> bytes | LineTooLong | None:
        return self._lines.next_line()

    @property
    def worth_taking(self) -> bool:
        """Whether the session should take the pending content now."""
        return self.wake_at > 0 and self.pending >= self.wake_at

    def begin_message(self, decoder: _Decoder, wake_at: int = 0) -> None:
        """Switch to reading a message; bytes already buffered are its start."""
        self._chunks = []
        self.pending = 0
        self.wake_at = wake_at
        self._decoder = decoder
        rest = self._lines.take_buffered()
        if rest:
            self.feed(rest)

    def take_content(self) -> list[bytes]:
        """The message content decoded since last taken (none once it is refused)."""
        chunks, self._chunks = self._chunks, []
        self.pending = 0
        return chunks

    def abandon_message(self) -> None:
        self._decoder = None
        self._chunks = []
        self.pending = 0

    def discard(self) -> None:
        """Forget unprocessed input (after STARTTLS, plaintext must never be executed)."""
        self._lines.clear()

    def take_buffered(self) -> bytes:
        """The unprocessed input as received, taken out (what followed a PROXY
        header sent before a TLS handshake: the handshake's first bytes)."""
        return self._lines.take_buffered()


class ChunkLineEndings:
    """The ``bare_lf`` policy over a BDAT message whose chunks may split a CRLF:
    a CR ending one piece is held until the next shows whether an LF follows."""

    __slots__ = ("_held", "_policy", "refused")

    def __init__(self, policy: BareNewlinePolicy) -> None:
        self._policy = policy
        self._held = b""
        self.refused = False

    def feed(self, data: bytes) -> bytes:
        if self._policy is BareNewlinePolicy.KEEP or self.refused:
            return b"" if self.refused else data
        data = self._held + data
        self._held = b""
        if data.endswith(b"\r"):
            self._held, data = b"\r", data[:-1]
        return self._apply(data)

    def flush(self) -> bytes:
        """At the end of the message: a CR still held is a bare CR."""
        held, self._held = self._held, b""
        return self._apply(held) if held and not self.refused else b""

    def _apply(self, data: bytes) -> bytes:
        if self._policy is BareNewlinePolicy.NORMALIZE:
            return normalize_line_endings(data)
        crlf = data.count(b"\r\n")
        if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
            self.refused = True
            return b""
        return data
