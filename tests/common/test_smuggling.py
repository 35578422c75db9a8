"""SMTP smuggling (SEC Consult, 2023): only CRLF.CRLF ends message data.

A sender hides a second transaction behind a non-standard end-of-data sequence;
a receiver that accepts it as the end would run the hidden commands.  The decoder
must keep such sequences as content, under every bare newline policy and however
the bytes are chunked, and the encoder must never emit anything another receiver
could take for an end of data.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from smtpwire.common.data import (
    BareNewlinePolicy,
    DataDecoder,
    DataEncoder,
    DataViolation,
    encode_data,
    normalize_line_endings,
)

TERMINATOR = b"\r\n.\r\n"
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@x>\r\nDATA\r\nsmuggled\r\n"

# variant -> the violation REJECT reports: the first bare newline in it, if any
VARIANTS: dict[bytes, DataViolation | None] = {
    b"\n.\n": DataViolation.BARE_LF,
    b"\n.\r\n": DataViolation.BARE_LF,
    b"\r.\r": DataViolation.BARE_CR,
    b"\r\n.\r": DataViolation.BARE_CR,
    b"\r.\n": DataViolation.BARE_CR,
    b"\r\n.\n": DataViolation.BARE_LF,
    b"\r\n\x00.\r\n": None,
    b"\r\n.\x00\r\n": None,
}
VARIANT_PARAMS = [pytest.param(variant, id=repr(variant)[2:-1]) for variant in VARIANTS]

BARE_LF = re.compile(rb"(?<!\r)\n")
BARE_CR = re.compile(rb"\r(?!\n)")


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_after_variant(data: bytes) -> list[bytes]:
    """Cut right after ``Hello`` + the fake terminator's first octet, the spot a
    decoder that looks for the end only in one chunk could get wrong."""
    return [data[:6], data[6:9], data[9:]]


CHUNKINGS = [
    pytest.param(whole, id="whole"),
    pytest.param(byte_by_byte, id="bytewise"),
    pytest.param(split_after_variant, id="split"),
]


def attack(variant: bytes) -> tuple[bytes, int]:
    """The wire data and the offset just past the real terminator."""
    wire = b"Hello" + variant + SMUGGLED + TERMINATOR
    return wire, len(wire)


def feed_all(decoder: DataDecoder, chunks: list[bytes]) -> bytes:
    """Feed chunk by chunk; the decoder must be done after the last one only."""
    output = []
    for index, chunk in enumerate(chunks):
        assert not decoder.done, f"data ended early, before chunk {index}"
        output.append(decoder.feed(chunk))
    assert decoder.done, "the real terminator was not recognised"
    assert decoder.remainder == b""
    return b"".join(output)


def has_bare_newline(data: bytes) -> bool:
    return bool(BARE_LF.search(data) or BARE_CR.search(data))


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_keep_ends_only_at_the_real_terminator(variant: bytes, chunking: Any) -> None:
    wire, end = attack(variant)
    decoder = DataDecoder(bare_newline=BareNewlinePolicy.KEEP)
    content = feed_all(decoder, chunking(wire))
    assert decoder.violation is None
    assert decoder.wire_size == end
    assert SMUGGLED in content
    # everything up to the real end is content, only unstuffed after CRLF
    assert content == (b"Hello" + variant + SMUGGLED + b"\r\n").replace(b"\r\n.", b"\r\n")
    assert decoder.bare_lf == bool(BARE_LF.search(variant + b"M"))
    assert decoder.bare_cr == bool(BARE_CR.search(variant + b"M"))


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_normalize_ends_only_at_the_real_terminator(variant: bytes, chunking: Any) -> None:
    wire, end = attack(variant)
    decoder = DataDecoder(bare_newline=BareNewlinePolicy.NORMALIZE)
    content = feed_all(decoder, chunking(wire))
    assert decoder.violation is None
    assert decoder.wire_size == end
    assert SMUGGLED in content
    assert not has_bare_newline(content)
    # Bare CR and LF end lines under NORMALIZE, so a dot after them is a stuffing dot.
    assert content == normalize_line_endings(b"Hello" + variant + SMUGGLED + b"\r\n").replace(
        b"\r\n.", b"\r\n"
    )


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_reject_ends_only_at_the_real_terminator(variant: bytes, chunking: Any) -> None:
    wire, end = attack(variant)
    decoder = DataDecoder(bare_newline=BareNewlinePolicy.REJECT)
    content = feed_all(decoder, chunking(wire))
    assert decoder.wire_size == end
    assert decoder.violation is VARIANTS[variant]
    if decoder.violation is None:
        assert SMUGGLED in content
    else:
        assert SMUGGLED not in content


@pytest.mark.parametrize("policy", list(BareNewlinePolicy))
@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_pipelined_commands_after_real_end_are_the_remainder(
    variant: bytes, policy: BareNewlinePolicy
) -> None:
    wire = b"Hello" + variant + SMUGGLED + TERMINATOR + b"QUIT\r\n"
    decoder = DataDecoder(bare_newline=policy)
    content = decoder.feed(wire)
    assert decoder.done
    assert decoder.remainder == b"QUIT\r\n"
    assert b"QUIT" not in content


@pytest.mark.parametrize("policy", list(BareNewlinePolicy))
@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_fake_terminator_at_message_start_is_not_an_end(
    variant: bytes, policy: BareNewlinePolicy
) -> None:
    wire = variant + SMUGGLED + TERMINATOR
    decoder = DataDecoder(bare_newline=policy)
    chunks = byte_by_byte(wire)
    for chunk in chunks[:-1]:
        decoder.feed(chunk)
        assert not decoder.done
    decoder.feed(chunks[-1])
    assert decoder.done
    assert decoder.remainder == b""


# --- the encoder never emits an end of data early ------------------------------------------


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_encoded_variant_is_one_message_with_the_smuggled_text(variant: bytes) -> None:
    content = b"Hello" + variant + SMUGGLED
    wire = encode_data(content)
    assert wire.find(TERMINATOR) == len(wire) - len(TERMINATOR)
    for chunks in (whole(wire), byte_by_byte(wire)):
        decoder = DataDecoder(bare_newline=BareNewlinePolicy.REJECT)
        decoded = feed_all(decoder, chunks)
        assert decoder.violation is None
        assert not decoder.bare_lf
        assert not decoder.bare_cr
        assert SMUGGLED in decoded
        assert decoded == normalize_line_endings(content)


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_encoded_variant_has_no_bare_cr_or_lf(variant: bytes) -> None:
    wire = encode_data(b"Hello" + variant + SMUGGLED)
    assert not has_bare_newline(wire)
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_encoded_variant_has_no_lone_dot_line_for_any_line_ending(variant: bytes) -> None:
    """Whatever a receiver takes for a line ending (CR, LF or CRLF), no line of the
    encoded data but the last is a lone dot."""
    wire = encode_data(b"Hello" + variant + SMUGGLED)
    body = wire[: -len(b".\r\n")]
    for ending in (rb"\r\n|\r|\n", rb"\r", rb"\n"):
        assert b"." not in re.split(ending, body)


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_chunked_encoder_splits_variant_safely(variant: bytes) -> None:
    content = b"Hello" + variant + SMUGGLED
    expected = encode_data(content)
    for cut in range(len(content) + 1):
        encoder = DataEncoder()
        wire = encoder.feed(content[:cut]) + encoder.feed(content[cut:]) + encoder.finish()
        assert wire == expected
        assert not has_bare_newline(wire)
