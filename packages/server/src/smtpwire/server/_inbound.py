"""Received bytes waiting for the session: command lines, or a message being read.

The protocol's ``data_received`` feeds everything here; the session task takes
lines out one at a time.  While a message is being read the bytes go straight
into a :class:`~smtpwire.common.data.DataDecoder` without waking the task for
every chunk, and whatever follows the end of the message (pipelined commands)
goes back to the line reader.  Memory stays bounded: a partial command line is
capped by the line reader, complete lines by the caller pausing the transport
(see :attr:`Inbound.buffered`), and a message by the decoder's size limit.
"""

from __future__ import annotations

from smtpwire.common.data import DataDecoder
from smtpwire.common.lines import LineReader, LineTooLong

__all__ = ["Inbound"]


class Inbound:
    __slots__ = ("_chunks", "_decoder", "_lines", "closed")

    def __init__(self, max_line_length: int) -> None:
        self._lines = LineReader(max_line_length)
        self._decoder: DataDecoder | None = None
        self._chunks: list[bytes] = []
        self.closed = False  # end of input: EOF or connection lost

    @property
    def buffered(self) -> int:
        """Command-phase octets not yet taken (a message's content is not counted)."""
        return self._lines.buffered

    @property
    def max_line_length(self) -> int:
        return self._lines.max_length

    @max_line_length.setter
    def max_line_length(self, value: int) -> None:
        self._lines.max_length = value

    @property
    def reading_message(self) -> bool:
        return self._decoder is not None

    def feed(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            self._lines.feed(data)
            return
        content = decoder.feed(data)
        if decoder.violation is not None:
            # The message is refused: keep nothing of it, only look for its end.
            self._chunks.clear()
        elif content:
            self._chunks.append(content)
        if decoder.done:
            self._decoder = None
            if decoder.remainder:
                self._lines.feed(decoder.remainder)

    def next_line(self) -> bytes | LineTooLong | None:
        return self._lines.next_line()

    def begin_message(self, decoder: DataDecoder) -> None:
        """Switch to reading a message; bytes already buffered are its start."""
        self._chunks = []
        self._decoder = decoder
        rest = self._lines.take_buffered()
        if rest:
            self.feed(rest)

    def take_message(self) -> list[bytes]:
        """The content chunks of the message just read (empty if it was refused)."""
        chunks, self._chunks = self._chunks, []
        return chunks

    def abandon_message(self) -> None:
        self._decoder = None
        self._chunks = []

    def discard(self) -> None:
        """Forget unprocessed input (after STARTTLS, plaintext must never be executed)."""
        self._lines.clear()
