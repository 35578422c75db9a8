"""A message on its way to the wire: bytes encoded at once, or a stream encoded
chunk by chunk so that a large file never sits in memory whole.

Either way the encoding is smtpwire.common's: bare CR and LF become CRLF, lines
starting with a dot are stuffed, and the terminator is added, so no content can
end the DATA section early.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Final, Protocol, TypeAlias, runtime_checkable

from smtpwire.common.data import DataEncoder, encode_crlf_data, normalize_line_endings

__all__ = ["MessageSource", "Payload"]

_READ_SIZE: Final = 256 * 1024
_IN_MEMORY: Final = (str, bytes, bytearray, memoryview)


@runtime_checkable
class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


MessageSource: TypeAlias = str | bytes | bytearray | memoryview | _Readable | AsyncIterable[bytes]


class Payload:
    """``content`` (CRLF line endings, not stuffed: what BDAT sends) is set for an
    in-memory message; a stream has ``content`` None."""

    __slots__ = ("_encoded", "_source", "binary", "content")

    def __init__(self, source: MessageSource | Iterable[bytes], *, binary: bool = False) -> None:
        """``binary`` (BODY=BINARYMIME, RFC 3030): the bytes travel exactly as given,
        line endings untouched, and only ever by BDAT."""
        self._source = source
        self._encoded: bytes | None = None
        self.content: bytes | None = None
        self.binary = binary
        if isinstance(source, _IN_MEMORY):
            raw = source.encode("ascii") if isinstance(source, str) else bytes(source)
            if binary:
                self.content = raw
                return
            content = normalize_line_endings(raw)
            if content and not content.endswith(b"\r\n"):
                content += b"\r\n"
            self.content = content
        elif not isinstance(source, _Readable | AsyncIterable | Iterable):
            # Refused now, before any command of the transaction is written.
            raise TypeError(f"cannot send a message of type {type(source).__name__}")

    @property
    def size(self) -> int | None:
        """The size for SIZE= (RFC 1870: CRLF line endings, stuffing dots not
        counted), known for an in-memory message only."""
        return None if self.content is None else len(self.content)

    @property
    def encoded(self) -> bytes | None:
        """The DATA form (stuffed and terminated) of an in-memory message."""
        if self._encoded is None and self.content is not None:
            self._encoded = encode_crlf_data(self.content)  # normalised in __init__
        return self._encoded

    async def binary_chunks(self) -> AsyncIterator[bytes]:
        """A BINARYMIME message's chunks exactly as read, for BDAT (no stuffing,
        no terminator, line endings untouched)."""
        if self.content is not None:
            yield self.content
            return
        async for chunk in _raw_chunks(self._source):
            if chunk:
                yield chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.encoded is not None:
            yield self.encoded
            return
        encoder = DataEncoder()
        async for chunk in _raw_chunks(self._source):
            encoded = encoder.feed(chunk)
            if encoded:
                yield encoded
        yield encoder.finish()


async def _raw_chunks(source: object) -> AsyncIterator[bytes]:
    if isinstance(source, _Readable):
        while True:
            # A file read may block (a network file system); keep it off the loop.
            chunk = await asyncio.to_thread(source.read, _READ_SIZE)
            if not chunk:
                return
            yield bytes(chunk)
    elif isinstance(source, AsyncIterable):
        async for chunk in source:
            yield bytes(chunk)
    elif isinstance(source, Iterable):
        for chunk in source:
            yield bytes(chunk)
    else:
        raise TypeError(f"cannot send a message of type {type(source).__name__}")
