"""The server's input framing (smtpwire.common.server_input), in memory: command
lines and message octets never mix, whatever the chunking; a BDAT chunk is
exactly its size; the bare-LF policy holds across chunks that split a CRLF."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpwire.common.data import BareNewlinePolicy, DataDecoder
from smtpwire.common.lines import LineTooLong
from smtpwire.common.server_input import ChunkLineEndings, ExactBytes, Inbound

MAX_LINE = 1001


def feed_in_pieces(inbound: Inbound, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            inbound.feed(data[start:cut])
            start = cut
    inbound.feed(data[start:])


def lines_of(inbound: Inbound) -> list[bytes | LineTooLong]:
    found: list[bytes | LineTooLong] = []
    while (line := inbound.next_line()) is not None:
        found.append(line)
    return found


def test_lines_come_out_one_at_a_time_without_their_ending() -> None:
    inbound = Inbound(MAX_LINE)
    inbound.feed(b"EHLO a\r\nNOOP\r\npartial")
    assert lines_of(inbound) == [b"EHLO a", b"NOOP"]
    assert inbound.buffered == len(b"partial")


def test_bytes_already_buffered_are_the_start_of_the_message() -> None:
    inbound = Inbound(MAX_LINE)
    inbound.feed(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert inbound.next_line() == b"DATA"
    decoder = DataDecoder()
    inbound.begin_message(decoder)
    assert not inbound.reading_message  # it ended within what was buffered
    assert b"".join(inbound.take_content()) == b"Subject: x\r\n\r\nbody\r\n"
    assert lines_of(inbound) == [b"QUIT"]


@given(
    content=st.lists(st.sampled_from([b"line", b"RCPT TO:<x@y>", b".dot", b"", b"\r", b"\n"])),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_no_message_octet_is_ever_a_command_line(content: list[bytes], cuts: list[int]) -> None:
    """Whatever the message holds and however it arrives, the only lines after it are
    the commands sent after its terminator (CRLF.CRLF, nothing else)."""
    body = b"\r\n".join(content) + b"\r\n"
    wire = body.replace(b"\r\n.", b"\r\n..") + b".\r\nNOOP\r\nQUIT\r\n"
    inbound = Inbound(MAX_LINE)
    inbound.begin_message(DataDecoder())
    feed_in_pieces(inbound, wire, cuts)
    assert not inbound.reading_message
    assert lines_of(inbound) == [b"NOOP", b"QUIT"]


@given(size=st.integers(min_value=0, max_value=64), cuts=st.lists(st.integers(0, 80), max_size=6))
def test_a_bdat_chunk_is_exactly_its_size(size: int, cuts: list[int]) -> None:
    chunk = (b"BDAT 5 LAST\r\nRSET\r\n" * 4)[:size]  # command-like octets, all content
    inbound = Inbound(MAX_LINE)
    inbound.begin_message(ExactBytes(size))
    feed_in_pieces(inbound, chunk + b"QUIT\r\n", cuts)
    assert b"".join(inbound.take_content()) == chunk
    assert lines_of(inbound) == [b"QUIT"]


def test_a_refused_bdat_chunk_is_read_and_dropped() -> None:
    inbound = Inbound(MAX_LINE)
    inbound.begin_message(ExactBytes(9, keep=False))
    inbound.feed(b"MAIL FROM:<evil@example.com>\r\n")
    assert inbound.take_content() == []
    # The nine octets "MAIL FROM" were the chunk: what follows is a line, not a command
    # the chunk could smuggle in whole.
    assert lines_of(inbound) == [b":<evil@example.com>"]


def test_end_of_input_mid_message_is_abandoned() -> None:
    inbound = Inbound(MAX_LINE)
    inbound.begin_message(DataDecoder())
    inbound.feed(b"half a message")
    inbound.abandon_message()
    assert not inbound.reading_message
    assert inbound.take_content() == []


@pytest.mark.parametrize(
    ("policy", "pieces", "expected", "refused"),
    [
        (BareNewlinePolicy.KEEP, [b"a\n", b"b\r"], b"a\nb\r", False),
        (BareNewlinePolicy.NORMALIZE, [b"a\r", b"\nb\n"], b"a\r\nb\r\n", False),
        (BareNewlinePolicy.NORMALIZE, [b"a\r", b"b"], b"a\r\nb", False),
        (BareNewlinePolicy.REJECT, [b"a\r", b"\nb\r\n"], b"a\r\nb\r\n", False),
        # What came before the bare CR is out already: ``refused`` tells the server
        # to abort the message, which is never delivered.
        (BareNewlinePolicy.REJECT, [b"a\r", b"b"], b"a", True),
        (BareNewlinePolicy.REJECT, [b"ok\r\n", b"a\r"], b"ok\r\na", True),
    ],
)
def test_bare_line_endings_across_chunks(
    policy: BareNewlinePolicy, pieces: list[bytes], expected: bytes, refused: bool
) -> None:
    """A CR ending one chunk waits for the next to show whether an LF follows."""
    endings = ChunkLineEndings(policy)
    out = b"".join(endings.feed(piece) for piece in pieces) + endings.flush()
    assert out == expected
    assert endings.refused is refused


@given(st.binary(max_size=60), st.integers(min_value=0, max_value=60))
def test_normalizing_does_not_depend_on_where_a_chunk_ends(data: bytes, cut: int) -> None:
    whole = ChunkLineEndings(BareNewlinePolicy.NORMALIZE)
    split = ChunkLineEndings(BareNewlinePolicy.NORMALIZE)
    one = whole.feed(data) + whole.flush()
    two = split.feed(data[:cut]) + split.feed(data[cut:]) + split.flush()
    assert one == two
