"""LineReader: splitting the command stream into lines in bounded memory."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common.lines import LINE_TOO_LONG, LineReader, LineTooLong


def _drain(reader: LineReader) -> list[bytes | LineTooLong]:
    lines: list[bytes | LineTooLong] = []
    while (line := reader.next_line()) is not None:
        lines.append(line)
    return lines


def test_crlf_lines() -> None:
    reader = LineReader()
    reader.feed(b"EHLO a.example\r\nNOOP\r\n")
    assert reader.next_line() == b"EHLO a.example"
    assert reader.last_line_bare_lf is False
    assert reader.next_line() == b"NOOP"
    assert reader.last_line_bare_lf is False
    assert reader.next_line() is None
    assert reader.buffered == 0


def test_bare_lf_lines() -> None:
    reader = LineReader()
    reader.feed(b"NOOP\nRSET\r\n\n")
    assert reader.next_line() == b"NOOP"
    assert reader.last_line_bare_lf is True
    assert reader.next_line() == b"RSET"
    assert reader.last_line_bare_lf is False
    assert reader.next_line() == b""
    assert reader.last_line_bare_lf is True
    assert reader.next_line() is None


def test_empty_crlf_line() -> None:
    reader = LineReader()
    reader.feed(b"\r\n")
    assert reader.next_line() == b""
    assert reader.last_line_bare_lf is False


def test_bare_cr_is_not_a_line_ending() -> None:
    reader = LineReader()
    reader.feed(b"NOOP\rRSET\r\n")
    assert reader.next_line() == b"NOOP\rRSET"
    assert reader.next_line() is None


def test_partial_lines_across_feeds() -> None:
    reader = LineReader()
    reader.feed(b"MAIL FR")
    assert reader.next_line() is None
    assert reader.buffered == 7
    reader.feed(b"OM:<a@b.example>\r")
    assert reader.next_line() is None
    reader.feed(b"\nRCPT")
    assert reader.next_line() == b"MAIL FROM:<a@b.example>"
    assert reader.last_line_bare_lf is False
    assert reader.next_line() is None
    assert reader.buffered == 4
    reader.feed(b" TO:<c@d.example>\r\n")
    assert reader.next_line() == b"RCPT TO:<c@d.example>"
    assert reader.next_line() is None


def test_one_byte_at_a_time() -> None:
    stream = b"EHLO x\r\nMAIL FROM:<>\nDATA\r\n"
    reader = LineReader()
    lines: list[bytes | LineTooLong] = []
    for byte in stream:
        reader.feed(bytes([byte]))
        lines.extend(_drain(reader))
    assert lines == [b"EHLO x", b"MAIL FROM:<>", b"DATA"]


@pytest.mark.parametrize("max_length", [3, 10, 512, 1000])
def test_exact_limit_counts_crlf(max_length: int) -> None:
    reader = LineReader(max_length)
    fits = b"x" * (max_length - 2)
    reader.feed(fits + b"\r\n" + fits + b"y\r\n" + fits + b"\n" + fits + b"y\n")
    assert reader.next_line() == fits
    assert reader.next_line() is LINE_TOO_LONG
    assert reader.next_line() == fits  # a bare LF counts as if it were CRLF
    assert reader.next_line() is LINE_TOO_LONG
    assert reader.next_line() is None


def test_default_limit_is_512() -> None:
    reader = LineReader()
    assert reader.max_length == 512
    reader.feed(b"N" * 510 + b"\r\n" + b"N" * 511 + b"\r\n")
    assert reader.next_line() == b"N" * 510
    assert reader.next_line() is LINE_TOO_LONG


@pytest.mark.parametrize("max_length", [0, 1, 2, -5])
def test_max_length_must_leave_room(max_length: int) -> None:
    with pytest.raises(ValueError, match="max_length"):
        LineReader(max_length)


def test_overlong_line_then_next_line_parses() -> None:
    reader = LineReader(512)
    reader.feed(b"A" * 1000 + b"\r\nNOOP\r\n")
    assert reader.next_line() is LINE_TOO_LONG
    assert reader.next_line() == b"NOOP"
    assert reader.last_line_bare_lf is False
    assert reader.next_line() is None


def test_overlong_line_split_across_feeds_then_next_line_parses() -> None:
    reader = LineReader(100)
    reader.feed(b"B" * 150)
    assert reader.next_line() is None
    assert reader.buffered <= 100
    reader.feed(b"B" * 30)
    assert reader.next_line() is None
    reader.feed(b"B\r\nQUIT\r\n")
    assert _drain(reader) == [LINE_TOO_LONG, b"QUIT"]


def test_overlong_line_ends_in_the_same_feed_as_the_next_command() -> None:
    reader = LineReader(64)
    reader.feed(b"C" * 65)
    assert reader.next_line() is None
    reader.feed(b"C\nRSET\r\nNOOP")
    assert _drain(reader) == [LINE_TOO_LONG, b"RSET"]
    reader.feed(b"\r\n")
    assert _drain(reader) == [b"NOOP"]


def test_multi_megabyte_line_stays_bounded() -> None:
    max_length = 512
    piece = 64 * 1024
    reader = LineReader(max_length)
    results: list[bytes | LineTooLong] = []
    high_water = 0
    for _ in range(4 * 1024 * 1024 // piece):
        reader.feed(b"x" * piece)
        high_water = max(high_water, reader.buffered)
        assert reader.buffered <= max_length + piece
        results.extend(_drain(reader))
        assert reader.buffered <= max_length
    assert results == []
    reader.feed(b"x" * 100 + b"\r\nNOOP\r\n")
    assert reader.buffered <= max_length + piece
    results.extend(_drain(reader))
    assert results == [LINE_TOO_LONG, b"NOOP"]
    assert reader.buffered == 0
    assert high_water <= max_length + piece


def test_multi_megabyte_line_in_odd_pieces() -> None:
    reader = LineReader(1000)
    piece = b"y" * 65_537
    results: list[bytes | LineTooLong] = []
    for _ in range(40):
        reader.feed(piece)
        assert reader.buffered <= 1000 + len(piece)
        results.extend(_drain(reader))
    reader.feed(b"\nEHLO x\n")
    results.extend(_drain(reader))
    assert results == [LINE_TOO_LONG, b"EHLO x"]
    assert reader.last_line_bare_lf is True


def test_take_buffered_returns_rest_after_last_line() -> None:
    reader = LineReader()
    reader.feed(b"DATA\r\nSubject: hi\r\n\r\nbody")
    assert reader.next_line() == b"DATA"
    assert reader.take_buffered() == b"Subject: hi\r\n\r\nbody"
    assert reader.buffered == 0
    assert reader.next_line() is None
    assert reader.take_buffered() == b""
    reader.feed(b"NOOP\r\n")
    assert reader.next_line() == b"NOOP"


def test_take_buffered_forgets_partly_discarded_line() -> None:
    reader = LineReader(16)
    reader.feed(b"z" * 40)
    assert reader.next_line() is None
    assert reader.take_buffered() == b""
    reader.feed(b"NOOP\r\n")
    assert reader.next_line() == b"NOOP"


def test_clear_discards_everything() -> None:
    reader = LineReader()
    reader.feed(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<x@y.example>\r\npart")
    assert reader.next_line() == b"STARTTLS"
    reader.clear()
    assert reader.buffered == 0
    assert reader.next_line() is None
    reader.feed(b"EHLO after.tls\r\n")
    assert reader.next_line() == b"EHLO after.tls"
    assert reader.next_line() is None


def test_clear_forgets_discard_state() -> None:
    reader = LineReader(16)
    reader.feed(b"z" * 40)
    assert reader.next_line() is None
    reader.clear()
    reader.feed(b"NOOP\r\n")
    assert reader.next_line() == b"NOOP"


def test_many_pipelined_lines_in_one_feed_come_out_in_order() -> None:
    commands = [f"RCPT TO:<user{index}@example.com>".encode() for index in range(5000)]
    reader = LineReader()
    reader.feed(b"".join(command + b"\r\n" for command in commands))
    assert _drain(reader) == commands
    assert reader.buffered == 0


def test_pipelined_lines_interleaved_with_feeds() -> None:
    reader = LineReader()
    out: list[bytes | LineTooLong] = []
    expected: list[bytes] = []
    for index in range(3000):
        line = f"NOOP {index}".encode()
        expected.append(line)
        reader.feed(line + b"\r\n")
        if index % 7 == 0:
            out.append(reader.next_line() or b"<none>")
    out.extend(_drain(reader))
    assert out == expected


def test_buffered_counts_unreturned_octets() -> None:
    reader = LineReader()
    reader.feed(b"NOOP\r\nRS")
    assert reader.buffered == 8
    assert reader.next_line() == b"NOOP"
    assert reader.buffered == 2


def test_line_too_long_marker() -> None:
    assert repr(LINE_TOO_LONG) == "LINE_TOO_LONG"
    assert isinstance(LINE_TOO_LONG, LineTooLong)
    assert not isinstance(LINE_TOO_LONG, bytes)


def test_feed_accepts_bytearray_and_memoryview() -> None:
    reader = LineReader()
    reader.feed(bytearray(b"NO"))
    reader.feed(memoryview(b"OP\r\n"))
    assert reader.next_line() == b"NOOP"


def _reference_lines(data: bytes, max_length: int) -> list[bytes | object]:
    """Every complete line of ``data``, as LineReader documents it, in one pass."""
    out: list[bytes | object] = []
    for raw in data.split(b"\n")[:-1]:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        out.append(LINE_TOO_LONG if len(line) + 2 > max_length else line)
    return out


@settings(max_examples=500, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"MAIL", b" ", b"x" * 9]), max_size=80
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    max_length=st.integers(min_value=3, max_value=16),
)
def test_any_chunking_gives_the_lines_of_the_whole_input(
    pieces: list[bytes], cuts: list[int], max_length: int
) -> None:
    data = b"".join(pieces)
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    reader = LineReader(max_length)
    lines: list[bytes | object] = []
    for start, stop in itertools.pairwise(points):
        reader.feed(data[start:stop])
        while (line := reader.next_line()) is not None:
            lines.append(line)
        assert reader.buffered <= max(max_length, 0) + (stop - start)
    assert lines == _reference_lines(data, max_length)
