"""The client's DATA encoder: normalise bare CR/LF to CRLF, dot-stuff, terminate."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from smtpwire.common.data import (
    DataEncoder,
    encode_data,
    iter_encode_data,
    normalize_line_endings,
)


def encode_in_chunks(chunks: list[bytes]) -> tuple[bytes, int]:
    encoder = DataEncoder()
    wire = b"".join(encoder.feed(chunk) for chunk in chunks) + encoder.finish()
    return wire, encoder.octets


def canonical(content: bytes) -> bytes:
    """The content a receiver gets: normalised, ending in CRLF (empty: one empty line)."""
    normal = normalize_line_endings(content)
    if not normal.endswith(b"\r\n"):
        normal += b"\r\n"
    return normal


def two_way_splits(data: bytes) -> Iterator[list[bytes]]:
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]


# --- normalize_line_endings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "normal"),
    [
        (b"", b""),
        (b"abc", b"abc"),
        (b"a\r\nb", b"a\r\nb"),
        (b"a\nb", b"a\r\nb"),
        (b"a\rb", b"a\r\nb"),
        (b"\r", b"\r\n"),
        (b"\n", b"\r\n"),
        (b"\r\r", b"\r\n\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"\n\r", b"\r\n\r\n"),
        (b"\r\r\n", b"\r\n\r\n"),
        (b"\r\n\n", b"\r\n\r\n"),
        (b"\r\n\r", b"\r\n\r\n"),
        (b"a\r\n\rb\n\r\nc\r", b"a\r\n\r\nb\r\n\r\nc\r\n"),
    ],
)
def test_normalize_line_endings(data: bytes, normal: bytes) -> None:
    assert normalize_line_endings(data) == normal


@pytest.mark.parametrize("data", [b"", b"abc", b"a\r\nb\r\n", b"\r\n\r\n"])
def test_normalize_returns_clean_data_itself(data: bytes) -> None:
    assert normalize_line_endings(data) is data


# --- encode_data -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        # an empty message is one empty line
        (b"", b"\r\n.\r\n"),
        (b"\r\n", b"\r\n.\r\n"),
        (b"\n", b"\r\n.\r\n"),
        (b"\r", b"\r\n.\r\n"),
        # a final CRLF is added only when missing
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
        (b"a\r\n\r\n", b"a\r\n\r\n.\r\n"),
        # bare CR and bare LF become CRLF
        (b"a\nb", b"a\r\nb\r\n.\r\n"),
        (b"a\rb", b"a\r\nb\r\n.\r\n"),
        (b"a\n", b"a\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),
        (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        # leading dots are doubled, on the first line and after every line ending
        (b".", b"..\r\n.\r\n"),
        (b".a", b"..a\r\n.\r\n"),
        (b"..", b"...\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
        (b"a\r\n.b\r\n.c\r\n", b"a\r\n..b\r\n..c\r\n.\r\n"),
        (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
        (b".\r\n.\r\n.", b"..\r\n..\r\n..\r\n.\r\n"),
        # normalisation happens before stuffing
        (b"a\n.b", b"a\r\n..b\r\n.\r\n"),
        (b"a\r.b", b"a\r\n..b\r\n.\r\n"),
        (b"a\n.\n", b"a\r\n..\r\n.\r\n"),
        (b"a\r.\r", b"a\r\n..\r\n.\r\n"),
        (b"\n.", b"\r\n..\r\n.\r\n"),
        # other dots are left alone
        (b"a.b", b"a.b\r\n.\r\n"),
        (b"a\r\n a.", b"a\r\n a.\r\n.\r\n"),
        (b"a\r\n\x00.", b"a\r\n\x00.\r\n.\r\n"),
    ],
)
def test_encode_data(content: bytes, wire: bytes) -> None:
    assert encode_data(content) == wire
    assert encode_in_chunks([content])[0] == wire
    assert b"".join(iter_encode_data([content])) == wire


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_encode_data_accepts_bytes_like(wrap: Any) -> None:
    wire = encode_data(wrap(b".a\nb"))
    assert wire == b"..a\r\nb\r\n.\r\n"
    assert isinstance(wire, bytes)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_encoder_feed_accepts_bytes_like(wrap: Any) -> None:
    encoder = DataEncoder()
    wire = encoder.feed(wrap(b".a\r")) + encoder.feed(wrap(b"\n.b")) + encoder.finish()
    assert wire == b"..a\r\n..b\r\n.\r\n"


def test_content_ending_in_crlf_only_gets_dot_crlf() -> None:
    content = b"Subject: hi\r\n\r\nbody\r\n"
    assert encode_data(content) == content + b".\r\n"


def test_large_clean_message() -> None:
    content = b"".join(b"line %d\r\n.dot %d\r\n" % (i, i) for i in range(10_000))
    wire = encode_data(content)
    assert wire == content.replace(b"\r\n.", b"\r\n..") + b".\r\n"


# --- DataEncoder chunk by chunk ------------------------------------------------------------


def test_cr_at_chunk_end_and_lf_at_next_chunk_start_give_one_crlf() -> None:
    encoder = DataEncoder()
    assert encoder.feed(b"a\r") == b"a"  # the CR is held back
    assert encoder.feed(b"\nb") == b"\r\nb"
    assert encoder.finish() == b"\r\n.\r\n"
    assert encoder.octets == len(b"a\r\nb\r\n")


def test_held_cr_followed_by_other_octet_is_a_line_ending() -> None:
    encoder = DataEncoder()
    assert encoder.feed(b"a\r") == b"a"
    assert encoder.feed(b"b") == b"\r\nb"
    assert encoder.finish() == b"\r\n.\r\n"


def test_held_cr_followed_by_dot_is_stuffed() -> None:
    wire, _ = encode_in_chunks([b"a\r", b".b"])
    assert wire == b"a\r\n..b\r\n.\r\n"


def test_held_cr_at_the_end() -> None:
    encoder = DataEncoder()
    assert encoder.feed(b"a\r") == b"a"
    assert encoder.finish() == b"\r\n.\r\n"
    assert encoder.octets == 3


def test_held_cr_survives_empty_chunks() -> None:
    wire, octets = encode_in_chunks([b"a\r", b"", b"", b"\n", b"b"])
    assert wire == b"a\r\nb\r\n.\r\n"
    assert octets == 6


def test_cr_only_chunks() -> None:
    wire, octets = encode_in_chunks([b"\r", b"\r", b"\n"])
    assert wire == b"\r\n\r\n.\r\n"
    assert octets == 4


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([b"a\r\n", b".b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\n", b".b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\n", b".b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a", b".b"], b"a.b\r\n.\r\n"),
        ([b".", b"."], b"...\r\n.\r\n"),
        ([b"", b".a"], b"..a\r\n.\r\n"),
        ([b"a", b"\r\n", b".", b"\r\n"], b"a\r\n..\r\n.\r\n"),
        ([b"a\r\n", b""], b"a\r\n.\r\n"),
        ([b"a", b"\r\n"], b"a\r\n.\r\n"),
        ([b"a", b"\n"], b"a\r\n.\r\n"),
    ],
)
def test_chunked_stuffing_and_termination(chunks: list[bytes], wire: bytes) -> None:
    assert encode_in_chunks(chunks)[0] == wire


def test_feed_returns_stuffed_wire_bytes() -> None:
    encoder = DataEncoder()
    assert encoder.feed(b".a\r\n") == b"..a\r\n"
    assert encoder.feed(b".b\n") == b"..b\r\n"
    assert encoder.feed(b"c") == b"c"
    assert encoder.feed(b".d") == b".d"
    assert encoder.finish() == b"\r\n.\r\n"


@pytest.mark.parametrize(
    ("chunks", "octets"),
    [
        ([], 2),
        ([b""], 2),
        ([b"\r\n"], 2),
        ([b"a"], 3),
        ([b"a\r\n"], 3),
        ([b"a\n"], 3),
        ([b"a\r"], 3),
        ([b"a\r", b"\n"], 3),
        ([b".a\nb"], 7),
        ([b"a\n\rb"], 8),
        ([b"x" * 1000, b"\n" * 10], 1020),
    ],
)
def test_octets_is_the_normalised_content_size(chunks: list[bytes], octets: int) -> None:
    wire, counted = encode_in_chunks(chunks)
    content = b"".join(chunks)
    assert counted == octets
    assert counted == len(canonical(content))
    assert wire == encode_data(content)


def test_octets_is_zero_before_anything_is_fed() -> None:
    assert DataEncoder().octets == 0


def test_feed_after_finish_raises() -> None:
    encoder = DataEncoder()
    encoder.feed(b"a")
    encoder.finish()
    with pytest.raises(RuntimeError):
        encoder.feed(b"b")
    with pytest.raises(RuntimeError):
        encoder.feed(b"")


def test_finish_twice_raises() -> None:
    encoder = DataEncoder()
    assert encoder.finish() == b"\r\n.\r\n"
    with pytest.raises(RuntimeError):
        encoder.finish()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"a",
        b".",
        b"\r",
        b"\n",
        b"a\r\n.\r\nb",
        b".\r.\n.\r\n.",
        b"\r\r\n\n\r.\r",
        b"Subject: x\n\n..body\r.end\n",
    ],
)
def test_every_two_and_three_way_split_equals_encode_data(content: bytes) -> None:
    expected = encode_data(content)
    for chunks in two_way_splits(content):
        assert encode_in_chunks(chunks) == (expected, len(canonical(content))), chunks
    for first, second in itertools.combinations_with_replacement(range(len(content) + 1), 2):
        chunks = [content[:first], content[first:second], content[second:]]
        assert encode_in_chunks(chunks)[0] == expected, chunks
    bytewise = [content[i : i + 1] for i in range(len(content))]
    assert encode_in_chunks(bytewise)[0] == expected


# --- iter_encode_data ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [
        [],
        [b""],
        [b"a\r", b"\n.b"],
        [b".", b"\r", b"\r", b".", b"\n"],
        [b"Subject: x\r\n", b"\r\n", b".hidden\r\n", b"end"],
    ],
)
def test_iter_encode_data_equals_encode_data(chunks: list[bytes]) -> None:
    pieces = list(iter_encode_data(chunks))
    assert b"".join(pieces) == encode_data(b"".join(chunks))
    assert all(pieces), "no empty wire chunks are yielded"
    assert pieces[-1].endswith(b".\r\n")


def test_iter_encode_data_is_lazy() -> None:
    consumed = []

    def source() -> Iterator[bytes]:
        for chunk in (b"a\r\n", b".b\r\n", b"c"):
            consumed.append(chunk)
            yield chunk

    stream = iter_encode_data(source())
    assert consumed == []
    assert next(stream) == b"a\r\n"
    assert consumed == [b"a\r\n"]
    assert b"".join(stream) == b"..b\r\nc\r\n.\r\n"
