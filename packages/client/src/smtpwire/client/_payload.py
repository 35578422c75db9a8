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

from smtpwire.common.data import DataEncoder, encode_data

__all__ = ["MessageSource", "Payload"]

_READ_SIZE: Final = 256 * 1024


@runtime_checkable
class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


MessageSource: TypeAlias = str | bytes | bytearray | memoryview | _Readable | AsyncIterable[bytes]


class Payload:
    """``encoded`` is set for an in-memory message; a stream has ``encoded`` None."""

    __slots__ = ("_source", "encoded")

    def __init__(self, source: MessageSource | Iterable[bytes]) -> None:
        self._source = source
        self.encoded: bytes | None = None
        if isinstance(source, str):
            self.encoded = encode_data(source.encode("ascii"))
        elif isinstance(source, bytes | bytearray | memoryview):
            self.encoded = encode_data(bytes(source))

    @property
    def size(self) -> int | None:
        """The message size for SIZE= (octets before stuffing), when known."""
        return None if self.encoded is None else max(len(self.encoded) - 3, 0)

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
