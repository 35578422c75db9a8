"""Property tests for the DATA encoder and decoder (hypothesis)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common.data import (
    BareNewlinePolicy,
    DataDecoder,
    DataEncoder,
    DataViolation,
    encode_data,
    iter_encode_data,
    normalize_line_endings,
)

TERMINATOR = b"\r\n.\r\n"
ANY_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
BARE_LF = re.compile(rb"(?<!\r)\n")
BARE_CR = re.compile(rb"\r(?!\n)")

# Pieces that make the interesting cases likely: line endings of every kind, dots,
# parts of the terminator, NUL, and lines long enough for small line limits.
PIECES = [b"\r\n", b"\r", b"\n", b".", b"..", b"x", b"abc", b"\x00", b"\r\n.", b"\r\n.\r"]
CLEAN_PIECES = [b"\r\n", b".", b"..", b"x", b"abcd", b"\x00", b"\r\n.", b"yyyyyyyyyyyy"]

octets = st.one_of(
    st.lists(st.sampled_from([*PIECES, b"yyyyyyyyyyyy"]), max_size=40).map(b"".join),
    st.binary(max_size=120),
)
# wire data without any bare CR or bare LF
clean_octets = st.lists(st.sampled_from(CLEAN_PIECES), max_size=40).map(b"".join)
policies = st.sampled_from(list(BareNewlinePolicy))

PROPERTY = settings(max_examples=300, deadline=None)


def split(data: bytes, draw: st.DataObject) -> list[bytes]:
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=12).map(sorted), label="cuts")
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def canonical(content: bytes) -> bytes:
    """What the receiver gets for ``content``: normalised line endings, a final
    CRLF added when missing, and one empty line for an empty message."""
    normal = normalize_line_endings(content)
    return normal if normal.endswith(b"\r\n") else normal + b"\r\n"


def decode(chunks: Sequence[bytes], **options: Any) -> tuple[bytes, DataDecoder, bytes]:
    """Feed until the end of data as a server would; returns the content, the decoder
    and the pipelined bytes (the remainder plus whatever was not fed)."""
    decoder = DataDecoder(**options)
    output = []
    for index, chunk in enumerate(chunks):
        output.append(decoder.feed(chunk))
        if decoder.done:
            return b"".join(output), decoder, decoder.remainder + b"".join(chunks[index + 1 :])
    return b"".join(output), decoder, b""


def observable(chunks: Sequence[bytes], **options: Any) -> tuple[object, ...]:
    output, decoder, after = decode(chunks, **options)
    clean = decoder.violation is None
    return (
        decoder.violation,
        decoder.bare_lf,
        decoder.bare_cr,
        decoder.done,
        after,
        decoder.wire_size,
        output if clean else None,  # the caller discards content after a violation
        decoder.size if clean else None,
    )


def reference_keep(wire: bytes) -> tuple[bytes, bytes, bool, bool] | None:
    """Straight from the spec: the first CRLF.CRLF (the message starts at a line
    start), unstuffing after CRLF, and the bare CR/LF of the consumed octets."""
    stream = b"\r\n" + wire
    end = stream.find(TERMINATOR)
    if end < 0:
        return None
    content = stream[: end + 2].replace(b"\r\n.", b"\r\n")[2:]
    consumed = stream[: end + 5]
    return (
        content,
        stream[end + 5 :],
        bool(BARE_LF.search(consumed)),
        bool(BARE_CR.search(consumed)),
    )


# --- encoder -------------------------------------------------------------------------------


@PROPERTY
@given(content=octets, draw=st.data())
def test_decoding_encoded_content_gives_canonical_content(
    content: bytes, draw: st.DataObject
) -> None:
    wire = encode_data(content)
    chunks = split(wire, draw)
    policy = draw.draw(policies, label="policy")
    output, decoder, after = decode(chunks, max_line_length=None, bare_newline=policy)
    assert decoder.done
    assert after == b""
    assert decoder.violation is None
    assert not decoder.bare_lf
    assert not decoder.bare_cr
    assert output == canonical(content)
    assert decoder.size == len(output)
    assert decoder.wire_size == len(wire)


def test_canonical_form_examples() -> None:
    assert canonical(b"") == b"\r\n"
    assert canonical(b"a") == b"a\r\n"
    assert canonical(b"a\r") == b"a\r\n"
    assert canonical(b"a\n") == b"a\r\n"
    assert canonical(b"a\n\r") == b"a\r\n\r\n"


@PROPERTY
@given(content=octets)
def test_encoded_data_has_one_end_and_no_bare_newline(content: bytes) -> None:
    wire = encode_data(content)
    assert wire.endswith(TERMINATOR)
    assert wire.find(TERMINATOR) == len(wire) - len(TERMINATOR)
    assert not BARE_LF.search(wire)
    assert not BARE_CR.search(wire)
    body = wire[: -len(b".\r\n")]
    # no line is a lone dot, whatever a receiver takes for a line ending
    for ending in (ANY_LINE_ENDING, re.compile(rb"\r"), re.compile(rb"\n")):
        assert b"." not in ending.split(body)
    # every line start dot is a stuffing dot: unstuffing gives the content back
    assert (b"\r\n" + body).replace(b"\r\n.", b"\r\n")[2:] == canonical(content)


@PROPERTY
@given(content=octets, draw=st.data())
def test_encoder_chunking_equals_encode_data(content: bytes, draw: st.DataObject) -> None:
    chunks = split(content, draw)
    encoder = DataEncoder()
    pieces = [encoder.feed(chunk) for chunk in chunks]
    pieces.append(encoder.finish())
    wire = b"".join(pieces)
    assert wire == encode_data(content)
    assert encoder.octets == len(canonical(content))
    assert b"".join(iter_encode_data(chunks)) == wire


@PROPERTY
@given(content=octets)
def test_normalize_line_endings(content: bytes) -> None:
    normal = normalize_line_endings(content)
    assert not BARE_LF.search(normal)
    assert not BARE_CR.search(normal)
    assert normalize_line_endings(normal) == normal
    # the same lines, only their endings changed
    assert normal.split(b"\r\n") == ANY_LINE_ENDING.split(content)


# --- decoder -------------------------------------------------------------------------------


@PROPERTY
@given(
    body=octets,
    pipelined=octets,
    options=st.fixed_dictionaries(
        {
            "bare_newline": policies,
            "max_line_length": st.sampled_from([None, 3, 5, 10, 1000]),
            "max_size": st.sampled_from([None, 0, 5, 20, 50]),
        }
    ),
    draw=st.data(),
)
def test_decoder_result_independent_of_chunking(
    body: bytes, pipelined: bytes, options: dict[str, Any], draw: st.DataObject
) -> None:
    wire = body + TERMINATOR + pipelined
    reference = observable([wire], **options)
    assert observable(split(wire, draw), **options) == reference
    assert observable([wire[i : i + 1] for i in range(len(wire))], **options) == reference


@PROPERTY
@given(body=octets, pipelined=octets, draw=st.data())
def test_keep_decoder_matches_the_reference(
    body: bytes, pipelined: bytes, draw: st.DataObject
) -> None:
    wire = body + TERMINATOR + pipelined
    expected = reference_keep(wire)
    assert expected is not None
    content, remainder, bare_lf, bare_cr = expected
    output, decoder, after = decode(split(wire, draw), max_line_length=None)
    assert decoder.done
    assert decoder.violation is None
    assert output == content
    assert after == remainder
    assert (decoder.bare_lf, decoder.bare_cr) == (bare_lf, bare_cr)
    assert decoder.size == len(content)
    assert decoder.wire_size == len(wire) - len(remainder)


@PROPERTY
@given(wire=octets, draw=st.data())
def test_done_exactly_when_crlf_dot_crlf_was_seen(wire: bytes, draw: st.DataObject) -> None:
    chunks = split(wire, draw)
    decoder = DataDecoder(max_line_length=None)
    fed = b""
    for chunk in chunks:
        decoder.feed(chunk)
        fed += chunk
        assert decoder.done == (TERMINATOR in b"\r\n" + fed)
        if decoder.done:
            break


@PROPERTY
@given(body=octets, draw=st.data())
def test_normalize_treats_bare_line_endings_as_crlf(body: bytes, draw: st.DataObject) -> None:
    # NORMALIZE reads the data as if every bare CR and LF had been CRLF on the wire
    # (so a dot after one is a stuffing dot), but still ends only at a real CRLF.CRLF.
    wire = body + TERMINATOR
    _, keep, _ = decode([wire], max_line_length=None)
    normal, normalize, _ = decode(
        split(wire, draw), max_line_length=None, bare_newline=BareNewlinePolicy.NORMALIZE
    )
    region = (b"\r\n" + wire)[: (b"\r\n" + wire).find(TERMINATOR) + 2]
    assert normalize.violation is None
    assert normal == normalize_line_endings(region).replace(b"\r\n.", b"\r\n")[2:]
    assert normalize.size == len(normal)
    assert (normalize.bare_lf, normalize.bare_cr) == (keep.bare_lf, keep.bare_cr)


@PROPERTY
@given(body=octets, draw=st.data())
def test_reject_refuses_exactly_the_messages_with_bare_newlines(
    body: bytes, draw: st.DataObject
) -> None:
    wire = body + TERMINATOR
    _, keep, _ = decode([wire], max_line_length=None)
    output, reject, _ = decode(
        split(wire, draw), max_line_length=None, bare_newline=BareNewlinePolicy.REJECT
    )
    assert reject.done
    if keep.bare_lf or keep.bare_cr:
        assert reject.violation in (DataViolation.BARE_LF, DataViolation.BARE_CR)
    else:
        assert reject.violation is None
        assert output == decode([wire], max_line_length=None)[0]


@PROPERTY
@given(body=octets)
def test_reject_reports_the_first_bare_newline(body: bytes) -> None:
    wire = body + TERMINATOR
    consumed = (b"\r\n" + wire)[: (b"\r\n" + wire).find(TERMINATOR) + 5]
    lf, cr = BARE_LF.search(consumed), BARE_CR.search(consumed)
    if lf is None and cr is None:
        expected = None
    elif cr is None or (lf is not None and lf.start() < cr.start()):
        expected = DataViolation.BARE_LF
    else:
        expected = DataViolation.BARE_CR
    _, reject, _ = decode([wire], max_line_length=None, bare_newline=BareNewlinePolicy.REJECT)
    assert reject.violation is expected


@PROPERTY
@given(body=octets, max_size=st.integers(0, 60), draw=st.data())
def test_max_size_is_the_content_size(body: bytes, max_size: int, draw: st.DataObject) -> None:
    wire = body + TERMINATOR
    expected = reference_keep(wire)
    assert expected is not None
    output, decoder, _ = decode(split(wire, draw), max_line_length=None, max_size=max_size)
    assert decoder.done
    if len(expected[0]) > max_size:
        assert decoder.violation is DataViolation.TOO_LARGE
    else:
        assert decoder.violation is None
        assert output == expected[0]


@PROPERTY
@given(body=clean_octets, limit=st.integers(3, 20), draw=st.data())
def test_line_limit_is_the_content_line_length(
    body: bytes, limit: int, draw: st.DataObject
) -> None:
    """Without bare newlines lines are unambiguous: content lines (after unstuffing),
    each with its CRLF, must fit in the limit."""
    wire = body + TERMINATOR
    expected = reference_keep(wire)
    assert expected is not None
    longest = max(map(len, expected[0].splitlines(keepends=True)), default=0)
    output, decoder, _ = decode(split(wire, draw), max_line_length=limit)
    assert decoder.done
    if longest > limit:
        assert decoder.violation is DataViolation.LINE_TOO_LONG
    else:
        assert decoder.violation is None
        assert output == expected[0]
