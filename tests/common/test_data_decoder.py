"""DataDecoder: the server's incremental DATA decoder.

The docstrings of ``smtpwire.common.data`` are the specification: the message ends
only at CRLF.CRLF, stuffing dots are removed after CRLF, the limits and the bare
newline policies report the *first* violation, and nothing depends on where the
wire bytes were split into chunks.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from smtpwire.common.data import BareNewlinePolicy, DataDecoder, DataViolation

TERMINATOR = b"\r\n.\r\n"
KEEP = BareNewlinePolicy.KEEP
NORMALIZE = BareNewlinePolicy.NORMALIZE
REJECT = BareNewlinePolicy.REJECT
ALL_POLICIES = (KEEP, NORMALIZE, REJECT)


@dataclass(frozen=True)
class Outcome:
    """Everything a caller can observe once it has fed all the chunks."""

    output: bytes
    violation: DataViolation | None
    bare_lf: bool
    bare_cr: bool
    done: bool
    remainder: bytes
    size: int
    wire_size: int

    def comparable(self) -> tuple[object, ...]:
        """What must not depend on the chunking.  After a violation the caller must
        discard the content, so output and size only count for clean messages."""
        clean = self.violation is None
        return (
            self.violation,
            self.bare_lf,
            self.bare_cr,
            self.done,
            self.remainder,
            self.wire_size,
            self.output if clean else None,
            self.size if clean else None,
        )


def decode(chunks: Sequence[bytes], **options: Any) -> Outcome:
    """Feed ``chunks`` as a server would: stop at the end of data and keep the bytes
    after the terminator, those of the last fed chunk and the unfed chunks alike."""
    decoder = DataDecoder(**options)
    pieces = []
    unfed: Sequence[bytes] = ()
    for index, chunk in enumerate(chunks):
        pieces.append(decoder.feed(chunk))
        if decoder.done:
            unfed = chunks[index + 1 :]
            break
    return Outcome(
        output=b"".join(pieces),
        violation=decoder.violation,
        bare_lf=decoder.bare_lf,
        bare_cr=decoder.bare_cr,
        done=decoder.done,
        remainder=decoder.remainder + b"".join(unfed),
        size=decoder.size,
        wire_size=decoder.wire_size,
    )


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunkings(data: bytes, count: int, seed: int) -> Iterator[list[bytes]]:
    rng = random.Random(seed)
    for _ in range(count):
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(1, 8))))
        edges = [0, *cuts, len(data)]
        yield [data[a:b] for a, b in itertools.pairwise(edges)]


def all_chunkings(data: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, every 2-way split (empty pieces included), random splits."""
    yield [data]
    yield bytewise(data)
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]
    yield from random_chunkings(data, 30, seed=len(data))


# --- basic decoding ----------------------------------------------------------------------


def test_empty_message() -> None:
    decoder = DataDecoder()
    assert decoder.feed(b".\r\n") == b""
    assert decoder.done
    assert decoder.remainder == b""
    assert decoder.size == 0
    assert decoder.wire_size == 3
    assert decoder.violation is None


def test_empty_message_fed_byte_by_byte() -> None:
    outcome = decode(bytewise(b".\r\n"))
    assert outcome == Outcome(b"", None, False, False, True, b"", 0, 3)


def test_one_empty_line() -> None:
    outcome = decode([b"\r\n.\r\n"])
    assert outcome.output == b"\r\n"
    assert outcome.done
    assert outcome.size == 2


def test_one_line() -> None:
    decoder = DataDecoder()
    assert decoder.feed(b"Hello\r\n.\r\n") == b"Hello\r\n"
    assert decoder.done
    assert decoder.remainder == b""


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"a\r\nb\r\n.\r\n", b"a\r\nb\r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\rb\r\n.\r\n", b"a\rb\r\n"),
    ],
)
def test_content_ends_with_the_terminators_crlf(wire: bytes, content: bytes) -> None:
    outcome = decode([wire])
    assert outcome.done
    assert outcome.output == content
    assert outcome.output.endswith(b"\r\n")


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"..x\r\n.\r\n", b".x\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n"),
        (b"a\r\n..x\r\nb\r\n.\r\n", b"a\r\n.x\r\nb\r\n"),
        (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n"),
        (b"a\r\n..\r\n..\r\n..\r\n.\r\n", b"a\r\n.\r\n.\r\n.\r\n"),
        (b"\r\n..\r\n.\r\n", b"\r\n.\r\n"),
    ],
)
def test_stuffing_dots_removed_at_line_starts(wire: bytes, content: bytes) -> None:
    for chunks in ([wire], bytewise(wire)):
        outcome = decode(chunks)
        assert outcome.output == content
        assert outcome.done
        assert outcome.remainder == b""


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"a.b\r\n.\r\n", b"a.b\r\n"),
        (b"a..b\r\n.\r\n", b"a..b\r\n"),
        (b"x.\r\n.\r\n", b"x.\r\n"),
        (b" .\r\n.\r\n", b" .\r\n"),
        (b"a\r\n x..\r\n.\r\n", b"a\r\n x..\r\n"),
        # only CRLF starts a line for unstuffing: a dot after a bare CR or LF is content
        (b"a\n..b\r\n.\r\n", b"a\n..b\r\n"),
        (b"a\r..b\r\n.\r\n", b"a\r..b\r\n"),
    ],
)
def test_dot_not_at_line_start_is_kept(wire: bytes, content: bytes) -> None:
    for chunks in ([wire], bytewise(wire)):
        assert decode(chunks).output == content


@pytest.mark.parametrize(
    "pipelined",
    [
        b"QUIT\r\n",
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nnext message\r\n.\r\n",
        b"\r\n.\r\n",
        b".\r\n",
        b"..",
        b"\r",
        b"\n",
        b"partial comm",
    ],
)
def test_remainder_holds_pipelined_bytes_exactly(pipelined: bytes) -> None:
    wire = b"Subject: x\r\n\r\nbody\r\n.\r\n" + pipelined
    for chunks in all_chunkings(wire):
        outcome = decode(chunks)
        assert outcome.done
        assert outcome.output == b"Subject: x\r\n\r\nbody\r\n"
        assert outcome.remainder == pipelined
        assert outcome.wire_size == len(wire) - len(pipelined)


def test_remainder_when_the_terminator_is_split_over_chunks() -> None:
    decoder = DataDecoder()
    output = decoder.feed(b"abc\r\n.")
    assert not decoder.done
    output += decoder.feed(b"\r")
    assert not decoder.done
    output += decoder.feed(b"\nQUIT\r\n")
    assert decoder.done
    assert output == b"abc\r\n"
    assert decoder.remainder == b"QUIT\r\n"
    assert decoder.wire_size == len(b"abc\r\n.\r\n")


def test_done_only_after_the_terminator() -> None:
    wire = b"line one\r\nline two\r\n.\r\n"
    decoder = DataDecoder()
    for index in range(len(wire)):
        assert not decoder.done
        decoder.feed(wire[index : index + 1])
    assert decoder.done


def test_not_done_without_terminator() -> None:
    decoder = DataDecoder()
    output = decoder.feed(b"abc\r\ndef\r\n.")
    assert not decoder.done
    assert decoder.remainder == b""
    # What is returned so far is a prefix of the content, never more.
    assert b"abc\r\ndef\r\n".startswith(output)
    assert b"abc\r\n" in output + b"\r\n"


@pytest.mark.parametrize("late", [b"", b"x", b".\r\n", b"\r\n.\r\n"])
def test_feed_after_done_raises(late: bytes) -> None:
    decoder = DataDecoder()
    decoder.feed(b"a\r\n.\r\n")
    with pytest.raises(RuntimeError):
        decoder.feed(late)
    assert decoder.remainder == b""


def test_feed_empty_chunk_changes_nothing() -> None:
    decoder = DataDecoder()
    assert decoder.feed(b"") == b""
    assert not decoder.done
    assert decoder.wire_size == 0
    assert decoder.size == 0
    assert decoder.feed(b"a\r\n.\r\n") == b"a\r\n"


@pytest.mark.parametrize(
    ("wire", "size", "wire_size"),
    [
        (b".\r\n", 0, 3),
        (b"\r\n.\r\n", 2, 5),
        (b"abc\r\n.\r\n", 5, 8),
        (b"..abc\r\n.\r\n", 6, 10),
        (b"a\r\n..\r\n.\r\nNOOP\r\n", 6, 10),
        (b"x" * 500 + b"\r\n.\r\nQUIT\r\n", 502, 505),
    ],
)
def test_size_and_wire_size(wire: bytes, size: int, wire_size: int) -> None:
    for chunks in ([wire], bytewise(wire), [wire[:4], wire[4:]]):
        outcome = decode(chunks)
        assert outcome.size == size
        assert len(outcome.output) == size
        assert outcome.wire_size == wire_size


def test_wire_size_counts_while_in_progress() -> None:
    decoder = DataDecoder()
    decoder.feed(b"abc\r")
    assert decoder.wire_size == 4
    decoder.feed(b"\n.")
    assert decoder.wire_size == 6


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bytes_like_input(wrap: Any) -> None:
    decoder = DataDecoder()
    output = decoder.feed(wrap(b"..a\r\nb\r\n."))
    output += decoder.feed(wrap(b"\r\nQUIT\r\n"))
    assert output == b".a\r\nb\r\n"
    assert isinstance(output, bytes)
    assert decoder.done
    assert decoder.remainder == b"QUIT\r\n"
    assert isinstance(decoder.remainder, bytes)


def test_bytearray_mutated_after_feed_does_not_change_state() -> None:
    buffer = bytearray(b"abc\r\n.")
    decoder = DataDecoder()
    output = decoder.feed(buffer)
    buffer[:] = b"XXXXXX"
    output += decoder.feed(b"\r\n")
    assert output == b"abc\r\n"
    assert decoder.done


# --- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"abc\r\n", b"\r\n", b"a\r\nb\r\n", b".\r\n"])
def test_max_size_exactly_at_the_limit_passes(content: bytes) -> None:
    wire = content.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    wire += b".\r\n"
    for chunks in all_chunkings(wire):
        outcome = decode(chunks, max_size=len(content))
        assert outcome.violation is None
        assert outcome.output == content
        assert outcome.size == len(content)
        assert outcome.done


@pytest.mark.parametrize("content", [b"abc\r\n", b"\r\n", b"a\r\nb\r\n", b".\r\n"])
def test_max_size_one_octet_over_is_too_large(content: bytes) -> None:
    wire = content.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    wire += b".\r\nQUIT\r\n"
    for chunks in all_chunkings(wire):
        outcome = decode(chunks, max_size=len(content) - 1)
        assert outcome.violation is DataViolation.TOO_LARGE
        assert outcome.done
        assert outcome.remainder == b"QUIT\r\n"


def test_max_size_zero_allows_only_the_empty_message() -> None:
    assert decode([b".\r\n"], max_size=0).violation is None
    assert decode([b"\r\n.\r\n"], max_size=0).violation is DataViolation.TOO_LARGE


def test_output_after_size_violation_is_empty_but_terminator_found() -> None:
    decoder = DataDecoder(max_size=10)
    first = decoder.feed(b"12345\r\n")
    assert decoder.violation is None
    assert b"12345".startswith(first)
    decoder.feed(b"67890\r\n")
    assert decoder.violation is DataViolation.TOO_LARGE
    assert decoder.feed(b"more\r\nand more\r\n") == b""
    assert decoder.feed(b"..dots\r\n") == b""
    assert not decoder.done
    assert decoder.feed(b".\r\nRSET\r\n") == b""
    assert decoder.done
    assert decoder.remainder == b"RSET\r\n"
    assert decoder.violation is DataViolation.TOO_LARGE


def test_size_violation_on_huge_message_keeps_looking_for_terminator() -> None:
    decoder = DataDecoder(max_size=100)
    chunk = b"x" * 70 + b"\r\n"
    outputs = [decoder.feed(chunk) for _ in range(100)]
    assert decoder.violation is DataViolation.TOO_LARGE
    assert not any(outputs[3:])
    assert decoder.feed(b".\r\nQUIT\r\n") == b""
    assert decoder.done
    assert decoder.remainder == b"QUIT\r\n"
    assert decoder.wire_size == 100 * len(chunk) + 3


def _line(length: int, fill: bytes = b"x") -> bytes:
    """A content line of ``length`` octets including its CRLF."""
    return fill * (length - 2) + b"\r\n"


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_default_line_limit_is_1000_octets_including_crlf(position: str) -> None:
    def message(line: bytes) -> bytes:
        lines = {"first": [line, b"b\r\n"], "middle": [b"a\r\n", line, b"b\r\n"]}
        return b"".join(lines.get(position, [b"a\r\n", line])) + b".\r\n"

    ok = decode([message(_line(1000))])
    assert ok.violation is None
    assert _line(1000) in ok.output
    too_long = decode([message(_line(1001))])
    assert too_long.violation is DataViolation.LINE_TOO_LONG
    assert too_long.done


def test_stuffing_dot_not_counted_in_line_length() -> None:
    # wire line: stuffing dot + 998 octets + CRLF -> content line of 1000 octets
    wire_line = b"." + b"y" * 998 + b"\r\n"
    for prefix in (b"", b"a\r\n"):
        wire = prefix + wire_line + b".\r\n"
        for chunks in ([wire], bytewise(wire), *random_chunkings(wire, 10, seed=1)):
            outcome = decode(chunks)
            assert outcome.violation is None
            assert outcome.output == prefix + b"y" * 998 + b"\r\n"


def test_stuffed_dot_line_at_the_limit_keeps_its_content_dot() -> None:
    wire = b".." + b"z" * 997 + b"\r\n.\r\n"
    outcome = decode([wire])
    assert outcome.violation is None
    assert outcome.output == b"." + b"z" * 997 + b"\r\n"


def test_999_octets_plus_crlf_is_too_long_with_or_without_dot() -> None:
    for wire_line in (b"y" * 999 + b"\r\n", b"." + b"y" * 999 + b"\r\n"):
        for prefix in (b"", b"a\r\n"):
            wire = prefix + wire_line + b".\r\n"
            for chunks in ([wire], bytewise(wire), *random_chunkings(wire, 10, seed=2)):
                assert decode(chunks).violation is DataViolation.LINE_TOO_LONG


def test_dot_after_bare_lf_is_content_and_counts_toward_line_length() -> None:
    # The decoder removes a dot only after CRLF (see test_dot_not_at_line_start_is_kept),
    # so this dot is delivered and the line between the LFs is 1001 octets long.
    wire = b"a\n." + b"y" * 998 + b"\r\n.\r\n"
    assert decode([wire], max_line_length=None).output == wire[:-3]
    assert decode([wire]).violation is DataViolation.LINE_TOO_LONG


def test_line_limit_small_value() -> None:
    assert decode([b"12345678\r\n.\r\n"], max_line_length=10).violation is None
    assert (
        decode([b"123456789\r\n.\r\n"], max_line_length=10).violation is DataViolation.LINE_TOO_LONG
    )
    assert decode([b".12345678\r\n.\r\n"], max_line_length=10).violation is None


def test_minimum_line_limit_of_three() -> None:
    assert decode([b"a\r\n\r\nb\r\n.\r\n"], max_line_length=3).output == b"a\r\n\r\nb\r\n"
    assert decode([b".\r\n"], max_line_length=3).violation is None
    assert decode([b"ab\r\n.\r\n"], max_line_length=3).violation is DataViolation.LINE_TOO_LONG


@pytest.mark.parametrize("limit", [2, 1, 0, -1, -1000])
def test_line_limit_below_three_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="max_line_length"):
        DataDecoder(max_line_length=limit)


def test_line_limit_none_disables_the_check() -> None:
    line = b"q" * 100_000 + b"\r\n"
    wire = line + b"." + line + b".\r\n"
    for chunks in ([wire], [wire[i : i + 333] for i in range(0, len(wire), 333)]):
        outcome = decode(chunks, max_line_length=None)
        assert outcome.violation is None
        assert outcome.output == line + line


def test_line_limit_counts_between_lfs_so_bare_cr_does_not_end_a_line() -> None:
    wire = b"12345\r6789\r\n.\r\n"
    assert decode([wire], max_line_length=10).violation is DataViolation.LINE_TOO_LONG
    assert decode([wire], max_line_length=12).violation is None


def test_line_limit_bare_lf_ends_a_line() -> None:
    wire = b"1234567\n1234567\r\n.\r\n"
    assert decode([wire], max_line_length=9).violation is None
    assert decode([wire], max_line_length=8).violation is DataViolation.LINE_TOO_LONG


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 999, 1000, 1001])
def test_long_line_split_over_tiny_chunks_is_detected(chunk_size: int) -> None:
    wire = b"a\r\n" + b"L" * 1200 + b"\r\nb\r\n.\r\nQUIT\r\n"
    chunks = [wire[i : i + chunk_size] for i in range(0, len(wire), chunk_size)]
    outcome = decode(chunks)
    assert outcome.violation is DataViolation.LINE_TOO_LONG
    assert outcome.done
    assert outcome.remainder == b"QUIT\r\n"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 999, 1000, 1001])
def test_lines_at_the_limit_over_tiny_chunks_pass(chunk_size: int) -> None:
    content = _line(1000) + b"." + _line(999, b"d") + _line(1000, b"e") + b"\r\n"
    wire = b"".join(
        b"." + line if line.startswith(b".") else line for line in content.splitlines(keepends=True)
    )
    wire += b".\r\n"
    chunks = [wire[i : i + chunk_size] for i in range(0, len(wire), chunk_size)]
    outcome = decode(chunks)
    assert outcome.violation is None
    assert outcome.output == content


def test_output_after_line_violation_is_empty() -> None:
    decoder = DataDecoder(max_line_length=10)
    decoder.feed(b"short\r\n")
    decoder.feed(b"this line is too long\r\n")
    assert decoder.violation is DataViolation.LINE_TOO_LONG
    assert decoder.feed(b"ok\r\n") == b""
    assert decoder.feed(b".\r\nQUIT\r\n") == b""
    assert decoder.done
    assert decoder.remainder == b"QUIT\r\n"


# --- the first violation wins, whatever the chunking --------------------------------------


def _first_violation_cases() -> list[Any]:
    long_line = b"x" * 20 + b"\r\n"
    return [
        pytest.param(
            long_line + b"short\r\n" * 20 + b".\r\n",
            {"max_size": 50, "max_line_length": 10},
            DataViolation.LINE_TOO_LONG,
            id="long-line-then-size",
        ),
        pytest.param(
            b"short\r\n" * 20 + long_line + b".\r\n",
            {"max_size": 50, "max_line_length": 10},
            DataViolation.TOO_LARGE,
            id="size-then-long-line",
        ),
        pytest.param(
            b"a\rb\nc\r\n.\r\n",
            {"bare_newline": REJECT},
            DataViolation.BARE_CR,
            id="bare-cr-then-bare-lf",
        ),
        pytest.param(
            b"a\nb\rc\r\n.\r\n",
            {"bare_newline": REJECT},
            DataViolation.BARE_LF,
            id="bare-lf-then-bare-cr",
        ),
        pytest.param(
            long_line + b"a\nb\r\n.\r\n",
            {"bare_newline": REJECT, "max_line_length": 10},
            DataViolation.LINE_TOO_LONG,
            id="long-line-then-bare-lf",
        ),
        pytest.param(
            b"a\nb\r\n" + long_line + b".\r\n",
            {"bare_newline": REJECT, "max_line_length": 10},
            DataViolation.BARE_LF,
            id="bare-lf-then-long-line",
        ),
        pytest.param(
            b"short\r\n" * 20 + b"a\rb\r\n.\r\n",
            {"bare_newline": REJECT, "max_size": 50},
            DataViolation.TOO_LARGE,
            id="size-then-bare-cr",
        ),
        pytest.param(
            b"a\rb\r\n" + b"short\r\n" * 20 + b".\r\n",
            {"bare_newline": REJECT, "max_size": 50},
            DataViolation.BARE_CR,
            id="bare-cr-then-size",
        ),
    ]


@pytest.mark.parametrize(("wire", "options", "expected"), _first_violation_cases())
def test_first_violation_wins_in_any_chunking(
    wire: bytes, options: dict[str, Any], expected: DataViolation
) -> None:
    wire += b"QUIT\r\n"
    seen = {}
    for chunks in all_chunkings(wire):
        outcome = decode(chunks, **options)
        assert outcome.done
        assert outcome.remainder == b"QUIT\r\n"
        seen.setdefault(outcome.violation, [len(chunk) for chunk in chunks])
    assert set(seen) == {expected}, f"violation: chunk lengths giving it {seen}"


# --- bare newline policies -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "content", "bare_lf", "bare_cr"),
    [
        (b"a\nb\r\n.\r\n", b"a\nb\r\n", True, False),
        (b"a\rb\r\n.\r\n", b"a\rb\r\n", False, True),
        (b"a\n\rb\r\n.\r\n", b"a\n\rb\r\n", True, True),
        (b"\nstart\r\n.\r\n", b"\nstart\r\n", True, False),
        (b"end\r\r\n.\r\n", b"end\r\r\n", False, True),
        (b"end\r\n\n.\r\n\r\n.\r\n", b"end\r\n\n.\r\n\r\n", True, False),
        (b"clean\r\n\r\n.\r\n", b"clean\r\n\r\n", False, False),
    ],
)
def test_keep_policy_delivers_bare_newlines_and_flags_them(
    wire: bytes, content: bytes, bare_lf: bool, bare_cr: bool
) -> None:
    for chunks in all_chunkings(wire):
        outcome = decode(chunks, bare_newline=KEEP)
        assert outcome.output == content
        assert (outcome.bare_lf, outcome.bare_cr) == (bare_lf, bare_cr)
        assert outcome.violation is None
        assert outcome.done


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"a\nb\r\n.\r\n", b"a\r\nb\r\n"),
        (b"a\rb\r\n.\r\n", b"a\r\nb\r\n"),
        (b"a\n\rb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\r\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\r\n\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"\nstart\r\n.\r\n", b"\r\nstart\r\n"),
        (b"\rstart\r\n.\r\n", b"\r\nstart\r\n"),
        (b"end\n\r\n.\r\n", b"end\r\n\r\n"),
    ],
)
def test_normalize_policy_delivers_crlf(wire: bytes, content: bytes) -> None:
    for chunks in all_chunkings(wire):
        outcome = decode(chunks, bare_newline=NORMALIZE)
        assert outcome.output == content
        assert outcome.size == len(content)
        assert outcome.violation is None
        assert outcome.bare_lf or outcome.bare_cr
        assert outcome.done


def test_normalize_policy_counts_normalised_octets_against_max_size() -> None:
    wire = b"a\nb\n\r\n.\r\n"  # 6 content octets on the wire, 8 after normalising
    assert decode([wire], bare_newline=NORMALIZE).output == b"a\r\nb\r\n\r\n"
    assert decode([wire], bare_newline=NORMALIZE, max_size=8).violation is None
    too_large = decode([wire], bare_newline=NORMALIZE, max_size=7)
    assert too_large.violation is DataViolation.TOO_LARGE


@pytest.mark.parametrize(
    ("wire", "violation"),
    [
        (b"a\nb\r\n.\r\n", DataViolation.BARE_LF),
        (b"a\rb\r\n.\r\n", DataViolation.BARE_CR),
        (b"\nstart\r\n.\r\n", DataViolation.BARE_LF),
        (b"end\r\r\n.\r\n", DataViolation.BARE_CR),
        (b"a\r\n" * 100 + b"x\ny\r\n" + b"b\r\n" * 100 + b".\r\n", DataViolation.BARE_LF),
    ],
)
def test_reject_policy_reports_and_discards(wire: bytes, violation: DataViolation) -> None:
    for chunks in all_chunkings(wire + b"NOOP\r\n"):
        outcome = decode(chunks, bare_newline=REJECT)
        assert outcome.violation is violation
        assert outcome.done
        assert outcome.remainder == b"NOOP\r\n"


def test_reject_policy_output_after_violation_is_empty() -> None:
    decoder = DataDecoder(bare_newline=REJECT)
    decoder.feed(b"fine\r\n")
    decoder.feed(b"bare\nline\r\n")
    assert decoder.violation is DataViolation.BARE_LF
    assert decoder.feed(b"more\r\n") == b""
    assert decoder.feed(b".\r\n") == b""
    assert decoder.done


def test_reject_policy_accepts_clean_message() -> None:
    outcome = decode([b"a\r\n..b\r\n.\r\n"], bare_newline=REJECT)
    assert outcome.violation is None
    assert outcome.output == b"a\r\n.b\r\n"


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize(
    ("wire", "bare_lf", "bare_cr"),
    [
        (b"a\nb\r\n.\r\n", True, False),
        (b"a\rb\r\n.\r\n", False, True),
        (b"a\rb\nc\r\n.\r\n", True, True),
        (b"a\r\nb\r\n.\r\n", False, False),
    ],
)
def test_flags_are_set_under_every_policy(
    policy: BareNewlinePolicy, wire: bytes, bare_lf: bool, bare_cr: bool
) -> None:
    for chunks in all_chunkings(wire):
        outcome = decode(chunks, bare_newline=policy)
        assert (outcome.bare_lf, outcome.bare_cr) == (bare_lf, bare_cr)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_flags_still_set_after_another_violation(policy: BareNewlinePolicy) -> None:
    decoder = DataDecoder(bare_newline=policy, max_size=3)
    decoder.feed(b"toolong\r\n")
    assert decoder.violation is DataViolation.TOO_LARGE
    decoder.feed(b"a\nb\rc\r\n.\r\n")
    assert decoder.done
    assert decoder.bare_lf
    assert decoder.bare_cr
    assert decoder.violation is DataViolation.TOO_LARGE


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("fake", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\n", b"\r\n.\r"])
def test_no_policy_ends_the_message_at_a_bare_newline_terminator(
    policy: BareNewlinePolicy, fake: bytes
) -> None:
    wire = b"a" + fake + b"b\r\n.\r\nQUIT\r\n"
    end = len(wire) - len(b"QUIT\r\n")
    for chunks in all_chunkings(wire):
        decoder = DataDecoder(bare_newline=policy)
        consumed = 0
        for chunk in chunks:
            decoder.feed(chunk)
            consumed += len(chunk)
            assert decoder.done == (consumed >= end)
            if decoder.done:
                break
        assert decoder.done
        assert decoder.remainder + wire[consumed:] == b"QUIT\r\n"


# --- chunk independence --------------------------------------------------------------------

TRICKY_INPUTS = [
    b".\r\n",
    b"\r\n.\r\n",
    b"\r\n\r\n.\r\n",
    b"..\r\n.\r\n",
    b"...\r\n.\r\n",
    b".\r\n.\r\n",
    b"a\r\n.\r\n",
    b"a\r\n.\r\nb\r\n.\r\n",
    b"a\r\n..\r\n.\r\n",
    b"a\r\n.a\r\n.\r\n",
    b"a\r\n.\r.\r\n.\r\n",
    b"a\r\n.\rx\r\n.\r\n",
    b"a\r\n.\n.\r\n",
    b"a\r\r\r\n.\r\n",
    b"\r\r\n\r\n.\r\n",
    b"\r\r\r\r\r\n.\r\n",
    b"\n\n\r\n.\r\n",
    b"\r\n\r\r\n.\r\n",
    b"a\r\n\r\n.\r\n\r\n",
    b"a\r\n.\r\n.\r\n",
    b"x\r\n..\r\n..\r\n...\r\n.\r\n",
    b"a\n.\r\nb\r\n.\r\n",
    b"\n.\r\n\r\n.\r\n",
    b"a\r.\r\nb\r\n.\r\n",
    b"a\r\n.\x00\r\n.\r\n",
    b"a\r\n\x00.\r\n\r\n.\r\n",
    b"1234567\r\n.1234567\r\n.\r\n",
    b"12345678\r\n.12345678\r\n.\r\n",
    b"123456789\r\n.\r\n",
    b".123456789\r\n.\r\n",
    b"abcdefgh\r\n" * 6 + b".\r\n",
    b"\r\n.\r\nMAIL FROM:<a@b>\r\n",
    b"a\r\n.\r\n.\r\n\r\n.\r\n",
    b"a\r\n.\r\n\r\n.\r",
]

CONFIGURATIONS = [
    pytest.param({}, id="default"),
    pytest.param({"bare_newline": NORMALIZE}, id="normalize"),
    pytest.param({"bare_newline": REJECT}, id="reject"),
    pytest.param({"max_line_length": 10}, id="line10"),
    pytest.param({"max_size": 20}, id="size20"),
    pytest.param({"max_line_length": 10, "max_size": 40}, id="line10-size40"),
    pytest.param({"bare_newline": NORMALIZE, "max_size": 12}, id="normalize-size12"),
]


@pytest.mark.parametrize("options", CONFIGURATIONS)
@pytest.mark.parametrize("wire", TRICKY_INPUTS)
def test_result_independent_of_chunking(wire: bytes, options: dict[str, Any]) -> None:
    reference = decode([wire], **options)
    for chunks in all_chunkings(wire):
        assert decode(chunks, **options).comparable() == reference.comparable(), chunks


@pytest.mark.parametrize("wire", TRICKY_INPUTS)
def test_every_three_way_split_matches(wire: bytes) -> None:
    reference = decode([wire]).comparable()
    for first in range(len(wire) + 1):
        for second in range(first, len(wire) + 1):
            chunks = [wire[:first], wire[first:second], wire[second:]]
            assert decode(chunks).comparable() == reference, chunks


def test_cr_at_every_chunk_end() -> None:
    wire = b"a\r\nb\r\r\n..c\r\n\r\n.\r\n"
    reference = decode([wire])
    chunks = []
    start = 0
    for index, octet in enumerate(wire):
        if octet == 0x0D:
            chunks.append(wire[start : index + 1])
            start = index + 1
    chunks.append(wire[start:])
    assert all(chunk.endswith(b"\r") for chunk in chunks[:-1])
    assert decode(chunks) == reference
    assert reference.output == b"a\r\nb\r\r\n.c\r\n\r\n"
