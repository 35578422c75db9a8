"""Turning one fuzzer input into options, a payload and a way to split it.

Plain Python (no atheris), so the regression tests replay a reproducer through
exactly the code the fuzzer ran.  An input is a few option octets followed by
the payload, which stays literal: a seed file is readable, and a mutation of the
payload is a mutation of what the parser sees.  The chunking comes from a PRNG
seeded by an option octet, so the fuzzer explores splits by flipping one octet.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["FuzzInput", "PropertyViolation", "amplify", "check", "chunks"]

T = TypeVar("T")

#: The largest stream an amplified input becomes ("inputs up to a few MiB").
AMPLIFIED_MAX = 2 * 1024 * 1024


class PropertyViolation(AssertionError):
    """A property of a target does not hold (the fuzzer reports it as a crash)."""


def check(condition: object, message: str) -> None:
    """Like ``assert``, but never optimised away and explicit about why."""
    if not condition:
        raise PropertyViolation(message)


class FuzzInput:
    """Option octets from the front of the input; :meth:`rest` is the payload.
    Past the end every option reads as 0, so any input is a valid one."""

    __slots__ = ("_data", "_position")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def octet(self) -> int:
        position = self._position
        self._position += 1
        return self._data[position] if position < len(self._data) else 0

    def integer(self, low: int, high: int) -> int:
        """An int in ``[low, high]`` from two octets."""
        value = self.octet() << 8 | self.octet()
        return low + value % (high - low + 1)

    def flag(self) -> bool:
        return bool(self.octet() & 1)

    def pick(self, choices: Sequence[T]) -> T:
        return choices[self.octet() % len(choices)]

    def take(self, count: int) -> bytes:
        """The next ``count`` octets (fewer at the end)."""
        piece = self._data[self._position : self._position + count]
        self._position += count
        return piece

    def rest(self) -> bytes:
        piece = self._data[self._position :]
        self._position = len(self._data)
        return piece


def amplify(payload: bytes, power: int) -> bytes:
    """``payload`` repeated ``2 ** power`` times, at most :data:`AMPLIFIED_MAX`
    octets: small inputs that become the megabytes the memory bounds are about."""
    if power <= 0 or not payload:
        return payload
    times = min(1 << power, max(1, AMPLIFIED_MAX // len(payload)))
    return payload * times


def chunks(data: bytes, seed: int, *, largest: int = 0) -> Iterator[bytes]:
    """``data`` split at points drawn from ``seed``: seed 0 gives one chunk, seed 1
    single octets (for short data), others random sizes up to ``largest`` (by default
    a size that makes some dozens of chunks)."""
    if seed == 0 or not data:
        yield data
        return
    if seed == 1 and len(data) <= 4096:
        for index in range(len(data)):
            yield data[index : index + 1]
        return
    rng = random.Random(seed)  # noqa: S311 - a split point, not a secret
    biggest = largest or max(8, len(data) // 24)
    small = seed & 2  # half the seeds prefer very short chunks
    start = 0
    while start < len(data):
        size = rng.randint(1, 8 if small and rng.random() < 0.7 else biggest)
        yield data[start : start + size]
        start += size
