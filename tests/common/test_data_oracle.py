"""The DATA decoder against a reference model written for clarity, not speed.

The model reads the whole message at once, line by line and byte by byte, exactly
as the decoder's docstrings describe it; hypothesis then feeds the real decoder
the same wire bytes in random chunks and compares everything it reports.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common.data import BareNewlinePolicy, DataDecoder, DataViolation

TERMINATOR = b"\r\n.\r\n"


@dataclass
class Outcome:
    done: bool
    violation: DataViolation | None
    content: bytes | None  # None when there was a violation (content is discarded)
    remainder: bytes
    bare_lf: bool
    bare_cr: bool
    wire_size: int


def _normalize(data: bytes) -> bytes:
    out = bytearray()
    index = 0
    while index < len(data):
        octet = data[index : index + 1]
        if octet == b"\r" and data[index + 1 : index + 2] == b"\n":
            out += b"\r\n"
            index += 2
        elif octet in (b"\r", b"\n"):
            out += b"\r\n"
            index += 1
        else:
            out += octet
            index += 1
    return bytes(out)


def _unstuff(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    return b"\r\n".join([lines[0]] + [line[1:] if line[:1] == b"." else line for line in lines[1:]])


def _decoded(virtual_wire: bytes, normalize: bool) -> bytes:
    """Content of wire octets that start with the virtual CRLF."""
    data = _normalize(virtual_wire) if normalize else virtual_wire
    return _unstuff(data)[2:]


def _first_bare(data: bytes) -> tuple[int, DataViolation] | None:
    for index, octet in enumerate(data):
        if octet == 0x0D and data[index + 1 : index + 2] != b"\n":
            return index, DataViolation.BARE_CR
        if octet == 0x0A and (index == 0 or data[index - 1] != 0x0D):
            return index, DataViolation.BARE_LF
    return None


def _first_long_line(data: bytes, limit: int, normalize: bool) -> int | None:
    start = 0
    while start <= len(data):
        end = data.find(b"\n", start)
        stop = len(data) if end < 0 else end
        after_crlf = start >= 2 and data[start - 2 : start] == b"\r\n"
        after_lf = start >= 1 and data[start - 1] == 0x0A
        dot = data[start : start + 1] == b"." and (after_crlf or (normalize and after_lf))
        if stop - start >= limit + dot:
            return start + limit + dot - 1
        if end < 0:
            return None
        start = end + 1
    return None


def reference(
    wire: bytes, *, max_size: int | None, max_line_length: int | None, policy: BareNewlinePolicy
) -> Outcome:
    virtual = b"\r\n" + wire
    end = virtual.find(TERMINATOR)
    if end < 0:
        raise ValueError("the model needs a complete message")
    region = virtual[: end + 2]  # from the virtual CRLF to the CRLF before the dot
    remainder = virtual[end + 5 :]
    bare = _first_bare(region)
    has_bare_lf = any(
        octet == 0x0A and (i == 0 or region[i - 1] != 0x0D) for i, octet in enumerate(region)
    )
    has_bare_cr = any(
        octet == 0x0D and region[i + 1 : i + 2] != b"\n" for i, octet in enumerate(region)
    )
    normalize = policy is BareNewlinePolicy.NORMALIZE
    candidates: list[tuple[int, DataViolation]] = []
    if policy is BareNewlinePolicy.REJECT and bare is not None:
        candidates.append(bare)
    if max_line_length is not None:
        position = _first_long_line(region, max_line_length, normalize)
        if position is not None:
            candidates.append((position, DataViolation.LINE_TOO_LONG))
    violation: DataViolation | None = None
    if candidates:
        position, violation = min(candidates, key=lambda candidate: candidate[0])
        # The content made by the octets before the break decides the order.
        if max_size is not None and len(_decoded(region[:position], normalize)) > max_size:
            violation = DataViolation.TOO_LARGE
    content = _decoded(region, normalize)
    if violation is None and max_size is not None and len(content) > max_size:
        violation = DataViolation.TOO_LARGE
    return Outcome(
        done=True,
        violation=violation,
        content=None if violation else content,
        remainder=remainder,
        bare_lf=has_bare_lf,
        bare_cr=has_bare_cr,
        wire_size=len(wire) - len(remainder),
    )


def run_decoder(chunks: list[bytes], **options: object) -> Outcome:
    decoder = DataDecoder(**options)  # type: ignore[arg-type]
    content = b""
    unread = b""  # what a server would hand back to its command reader
    for index, chunk in enumerate(chunks):
        content += decoder.feed(chunk)
        if decoder.done:
            unread = b"".join(chunks[index + 1 :])
            break
    return Outcome(
        done=decoder.done,
        violation=decoder.violation,
        content=None if decoder.violation else content,
        remainder=decoder.remainder + unread,
        bare_lf=decoder.bare_lf,
        bare_cr=decoder.bare_cr,
        wire_size=decoder.wire_size,
    )


# Few distinct octets, so that terminators, stuffing and bare endings occur often.
wire_octets = st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"a", b"\x00", b"\r\n", b"\r\n."]), max_size=60
).map(b"".join)


decoder_options = st.fixed_dictionaries(
    {
        "bare_newline": st.sampled_from(list(BareNewlinePolicy)),
        "max_size": st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
        "max_line_length": st.one_of(st.none(), st.integers(min_value=3, max_value=12)),
    }
)


@settings(max_examples=1500, deadline=None)
@given(
    body=wire_octets,
    tail=wire_octets,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    options=decoder_options,
)
def test_decoder_matches_the_reference_model(
    body: bytes, tail: bytes, cuts: list[int], options: dict[str, object]
) -> None:
    wire = body + TERMINATOR + tail
    expected = reference(
        wire,
        max_size=options["max_size"],  # type: ignore[arg-type]
        max_line_length=options["max_line_length"],  # type: ignore[arg-type]
        policy=options["bare_newline"],  # type: ignore[arg-type]
    )
    points = sorted({min(cut, len(wire)) for cut in cuts} | {0, len(wire)})
    chunks = [wire[start:stop] for start, stop in itertools.pairwise(points)]
    assert run_decoder(chunks, **options) == expected
    assert run_decoder([bytes([octet]) for octet in wire], **options) == expected
