"""The incremental reply parser, parse_reply, and format/parse properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common import limits
from smtpwire.common.errors import (
    LineTooLongError,
    MalformedReplyError,
    ReplyError,
    ReplyTooLongError,
)
from smtpwire.common.replies import ReplyParser, SMTPReply, format_reply, parse_reply


def feed_bytewise(parser: ReplyParser, data: bytes) -> list[SMTPReply]:
    replies: list[SMTPReply] = []
    for index in range(len(data)):
        replies.extend(parser.feed(data[index : index + 1]))
    return replies


# --- complete replies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"250 OK\r\n", SMTPReply(250, "OK")),
        (b"220 mx.example.com ESMTP ready\r\n", SMTPReply(220, "mx.example.com ESMTP ready")),
        (b"250-a\r\n250-b\r\n250 c\r\n", SMTPReply(250, ["a", "b", "c"])),
        (b"250\r\n", SMTPReply(250, "")),
        (b"250 \r\n", SMTPReply(250, "")),
        (b"250-\r\n250 \r\n", SMTPReply(250, ["", ""])),
        (b"250-\r\n250\r\n", SMTPReply(250, ["", ""])),
        (b"250 OK\n", SMTPReply(250, "OK")),
        (b"250-a\n250 b\n", SMTPReply(250, ["a", "b"])),
        (b"250-a\r\n250 b\n", SMTPReply(250, ["a", "b"])),
        (b"250  two spaces \r\n", SMTPReply(250, " two spaces ")),
        (b"550 5.1.1 no such user\r\n", SMTPReply(550, "5.1.1 no such user")),
        ("250 héllo ✓\r\n".encode(), SMTPReply(250, "héllo ✓")),
        (b"599 top\r\n", SMTPReply(599, "top")),
        (b"200 bottom\r\n", SMTPReply(200, "bottom")),
        (b"354 go ahead\r\n", SMTPReply(354, "go ahead")),
        (b"421 bye\r\n", SMTPReply(421, "bye")),
    ],
)
def test_feed_whole_reply(wire: bytes, expected: SMTPReply) -> None:
    parser = ReplyParser()
    assert parser.feed(wire) == [expected]
    assert not parser.has_partial
    assert parse_reply(wire) == expected


def test_parsed_reply_is_an_smtpreply_with_working_properties() -> None:
    reply = parse_reply(b"250-2.1.0 Sender\r\n250 2.1.0 OK\r\n")
    assert isinstance(reply, SMTPReply)
    assert reply.lines == ("2.1.0 Sender", "2.1.0 OK")
    assert reply.message == "2.1.0 Sender\n2.1.0 OK"
    assert str(reply.enhanced_code) == "2.1.0"
    assert reply.is_positive


def test_multiline_reply_fed_byte_by_byte() -> None:
    wire = b"250-mx.example.com Hello\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 HELP\r\n"
    parser = ReplyParser()
    replies = []
    for index in range(len(wire) - 1):
        replies.extend(parser.feed(wire[index : index + 1]))
        assert replies == []
        assert parser.has_partial
    replies.extend(parser.feed(wire[-1:]))
    assert replies == [SMTPReply(250, ["mx.example.com Hello", "SIZE 1000", "8BITMIME", "HELP"])]
    assert not parser.has_partial


@pytest.mark.parametrize("split", range(1, 20))
def test_reply_split_in_two_anywhere(split: int) -> None:
    wire = b"250-first line\r\n250 last\r\n"
    parser = ReplyParser()
    replies = parser.feed(wire[:split]) + parser.feed(wire[split:])
    assert replies == [SMTPReply(250, ["first line", "last"])]


def test_crlf_split_between_cr_and_lf() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250 OK\r") == []
    assert parser.has_partial
    assert parser.feed(b"\n") == [SMTPReply(250, "OK")]


def test_several_replies_in_one_chunk_pipelining() -> None:
    wire = b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n554-no\r\n554 data\r\n354 go\r\n"
    parser = ReplyParser()
    assert parser.feed(wire) == [
        SMTPReply(250, "2.1.0 Sender OK"),
        SMTPReply(250, "2.1.5 Recipient OK"),
        SMTPReply(554, ["no", "data"]),
        SMTPReply(354, "go"),
    ]
    assert not parser.has_partial


def test_pipelined_replies_byte_by_byte_keep_order() -> None:
    wire = b"250 a\r\n251 b\n452-c\r\n452 d\r\n"
    assert feed_bytewise(ReplyParser(), wire) == [
        SMTPReply(250, "a"),
        SMTPReply(251, "b"),
        SMTPReply(452, ["c", "d"]),
    ]


def test_chunk_ending_mid_reply_keeps_the_rest() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250 one\r\n250-two\r\n250 thr") == [SMTPReply(250, "one")]
    assert parser.has_partial
    assert parser.feed(b"ee\r\n") == [SMTPReply(250, ["two", "three"])]
    assert not parser.has_partial


def test_feed_accepts_bytearray_and_memoryview() -> None:
    parser = ReplyParser()
    assert parser.feed(bytearray(b"250 a\r\n")) == [SMTPReply(250, "a")]
    assert parser.feed(memoryview(b"251 b\r\n")) == [SMTPReply(251, "b")]


def test_empty_feed_returns_nothing() -> None:
    parser = ReplyParser()
    assert parser.feed(b"") == []
    assert not parser.has_partial


def test_non_utf8_octets_survive_as_surrogate_escapes() -> None:
    reply = parse_reply(b"250 caf\xe9\r\n")
    assert reply.lines == ("caf\udce9",)
    assert reply.to_bytes() == b"250 caf\xe9\r\n"


# --- has_partial and truncation ------------------------------------------------------


def test_has_partial_false_initially() -> None:
    assert not ReplyParser().has_partial


def test_has_partial_for_unfinished_line() -> None:
    parser = ReplyParser()
    assert parser.feed(b"25") == []
    assert parser.has_partial


def test_truncated_continuation_gives_no_reply() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n250-second\r\n") == []
    assert parser.has_partial


# --- malformed input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"25\r\n",
        b"2\r\n",
        b"\r\n",
        b"\n",
        b"abc\r\n",
        b"abc def\r\n",
        b"250x\r\n",
        b"250xOK\r\n",
        b"250\tOK\r\n",
        b"150 x\r\n",
        b"650 x\r\n",
        b"050 x\r\n",
        b"950 x\r\n",
        b"2a0 x\r\n",
        b"25a x\r\n",
        b" 250 x\r\n",
        b"250 a\rb\r\n",
        b"250 a\r\r\n",
        b"250 \rOK\n",
        b"250 nul\x00here\r\n",
        b"250-ok\r\n250 nul\x00\r\n",
        b"\x00250 x\r\n",
        b"OK\r\n",
        "٢٥٠ x\r\n".encode(),
    ],
)
def test_malformed_lines_are_refused(wire: bytes) -> None:
    with pytest.raises(MalformedReplyError):
        ReplyParser().feed(wire)
    with pytest.raises(MalformedReplyError):
        feed_bytewise(ReplyParser(), wire)
    with pytest.raises(MalformedReplyError):
        parse_reply(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"250-a\r\n251 b\r\n",
        b"250-a\r\n550 b\r\n",
        b"250-a\r\n250-b\r\n220 c\r\n",
        b"354-a\n355 b\n",
    ],
)
def test_continuation_code_mismatch_is_refused(wire: bytes) -> None:
    with pytest.raises(MalformedReplyError, match="differs"):
        ReplyParser().feed(wire)


def test_malformed_reply_error_is_a_reply_error() -> None:
    with pytest.raises(ReplyError):
        ReplyParser().feed(b"xyz\r\n")


def test_codes_may_change_between_replies() -> None:
    assert ReplyParser().feed(b"250 a\r\n550 b\r\n") == [SMTPReply(250, "a"), SMTPReply(550, "b")]


# --- failure is sticky; reset --------------------------------------------------------


def test_parser_raises_the_same_error_again_after_failure() -> None:
    parser = ReplyParser()
    with pytest.raises(MalformedReplyError) as first:
        parser.feed(b"garbage\r\n")
    with pytest.raises(MalformedReplyError) as second:
        parser.feed(b"250 OK\r\n")
    assert second.value is first.value
    with pytest.raises(MalformedReplyError) as third:
        parser.feed(b"")
    assert third.value is first.value


def test_parser_stays_failed_after_too_long() -> None:
    parser = ReplyParser(max_line_length=16)
    with pytest.raises(ReplyTooLongError) as first:
        parser.feed(b"x" * 17)
    with pytest.raises(ReplyTooLongError) as second:
        parser.feed(b"250 OK\r\n")
    assert second.value is first.value


def test_reset_clears_failure() -> None:
    parser = ReplyParser()
    with pytest.raises(MalformedReplyError):
        parser.feed(b"nonsense\r\n")
    parser.reset()
    assert parser.feed(b"250 OK\r\n") == [SMTPReply(250, "OK")]


def test_reset_clears_partial_line() -> None:
    parser = ReplyParser()
    parser.feed(b"250 plaintext inject")
    assert parser.has_partial
    parser.reset()
    assert not parser.has_partial
    assert parser.feed(b"220 Ready\r\n") == [SMTPReply(220, "Ready")]


def test_reset_clears_partial_continuation() -> None:
    parser = ReplyParser()
    parser.feed(b"250-first\r\n")
    assert parser.has_partial
    parser.reset()
    assert not parser.has_partial
    # Without the reset a 220 would be a code mismatch; afterwards it is a fresh reply.
    assert parser.feed(b"220 fresh\r\n") == [SMTPReply(220, "fresh")]


def test_reset_clears_reply_size_accounting() -> None:
    parser = ReplyParser(max_line_length=100, max_reply_length=100)
    parser.feed(b"250-" + b"x" * 80 + b"\r\n")
    parser.reset()
    line = b"250 " + b"y" * 94 + b"\r\n"
    assert len(line) == 100
    assert parser.feed(line) == [SMTPReply(250, "y" * 94)]


def test_reset_after_too_long_allows_reuse() -> None:
    parser = ReplyParser(max_line_length=10)
    with pytest.raises(ReplyTooLongError):
        parser.feed(b"250 " + b"x" * 20)
    parser.reset()
    assert parser.feed(b"250 ok\r\n") == [SMTPReply(250, "ok")]


# --- size caps -----------------------------------------------------------------------


def test_default_caps_are_the_hardening_limits() -> None:
    parser = ReplyParser()
    assert parser.max_line_length == limits.REPLY_LINE_CAP == 8192
    assert parser.max_reply_length == limits.REPLY_CAP == 32768


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_of_exactly_the_default_cap_passes(ending: bytes) -> None:
    text = b"x" * (8192 - 4 - len(ending))
    line = b"250 " + text + ending
    assert len(line) == 8192
    assert ReplyParser().feed(line) == [SMTPReply(250, text.decode())]
    assert feed_bytewise(ReplyParser(), line) == [SMTPReply(250, text.decode())]


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_one_over_the_default_cap_fails(ending: bytes) -> None:
    line = b"250 " + b"x" * (8193 - 4 - len(ending)) + ending
    assert len(line) == 8193
    with pytest.raises(ReplyTooLongError) as info:
        ReplyParser().feed(line)
    assert info.value.scope == "line"
    assert info.value.limit == 8192


def test_line_over_cap_detected_without_line_feed() -> None:
    """Bounded memory: the excess is refused as soon as it is buffered."""
    parser = ReplyParser()
    assert parser.feed(b"250 " + b"x" * (8192 - 4)) == []
    with pytest.raises(ReplyTooLongError) as info:
        parser.feed(b"x")
    assert info.value.scope == "line"


def test_huge_chunk_without_line_feed_is_refused_at_once() -> None:
    with pytest.raises(ReplyTooLongError) as info:
        ReplyParser().feed(b"2" * 100_000)
    assert info.value.scope == "line"


def test_line_over_cap_detected_byte_by_byte_without_line_feed() -> None:
    parser = ReplyParser(max_line_length=32)
    for _ in range(32):
        assert parser.feed(b"a") == []
    with pytest.raises(ReplyTooLongError):
        parser.feed(b"a")


def test_reply_of_exactly_the_default_cap_passes() -> None:
    lines = [b"250-" + b"a" * 7994 + b"\r\n"] * 4  # 8000 octets each
    last = b"250 " + b"b" * 762 + b"\r\n"  # 768 octets
    wire = b"".join(lines) + last
    assert len(wire) == 32768
    replies = ReplyParser().feed(wire)
    assert len(replies) == 1
    assert len(replies[0].lines) == 5


def test_reply_one_over_the_default_cap_fails() -> None:
    lines = [b"250-" + b"a" * 7994 + b"\r\n"] * 4
    last = b"250 " + b"b" * 763 + b"\r\n"
    wire = b"".join(lines) + last
    assert len(wire) == 32769
    with pytest.raises(ReplyTooLongError) as info:
        ReplyParser().feed(wire)
    assert info.value.scope == "reply"
    assert info.value.limit == 32768


def test_reply_over_cap_detected_without_line_feed() -> None:
    parser = ReplyParser()
    continuation = b"250-" + b"a" * 7994 + b"\r\n"
    for _ in range(4):
        assert parser.feed(continuation) == []
    assert parser.feed(b"250 " + b"b" * 764) == []  # 32000 + 768: exactly at the cap
    with pytest.raises(ReplyTooLongError) as info:
        parser.feed(b"b")  # no line feed anywhere in sight
    assert info.value.scope == "reply"


def test_reply_cap_counts_each_reply_separately() -> None:
    parser = ReplyParser(max_line_length=100, max_reply_length=150)
    reply = b"250-" + b"a" * 66 + b"\r\n" + b"250 " + b"b" * 66 + b"\r\n"  # 144 octets
    assert len(parser.feed(reply * 3)) == 3
    assert len(parser.feed(reply)) == 1


@pytest.mark.parametrize(
    ("max_line", "wire", "ok"),
    [
        (10, b"250 abcd\r\n", True),
        (10, b"250 abcde\r\n", False),
        (10, b"250 abcde\n", True),
        (10, b"250 abcdef\n", False),
        (5, b"250\r\n", True),
        (4, b"250\r\n", False),
    ],
)
def test_custom_line_cap(max_line: int, wire: bytes, ok: bool) -> None:
    parser = ReplyParser(max_line_length=max_line)
    if ok:
        assert len(parser.feed(wire)) == 1
    else:
        with pytest.raises(ReplyTooLongError) as info:
            parser.feed(wire)
        assert info.value.scope == "line"
        assert info.value.limit == max_line


@pytest.mark.parametrize(
    ("max_reply", "ok"),
    [(20, True), (19, False)],
)
def test_custom_reply_cap(max_reply: int, ok: bool) -> None:
    wire = b"250-abcd\r\n250 efgh\r\n"  # 20 octets
    parser = ReplyParser(max_reply_length=max_reply)
    if ok:
        assert parser.feed(wire) == [SMTPReply(250, ["abcd", "efgh"])]
    else:
        with pytest.raises(ReplyTooLongError) as info:
            parser.feed(wire)
        assert info.value.scope == "reply"
        assert info.value.limit == max_reply


def test_custom_reply_cap_without_line_feed() -> None:
    parser = ReplyParser(max_line_length=100, max_reply_length=20)
    assert parser.feed(b"250-abcd\r\n") == []
    assert parser.feed(b"250 efghij") == []  # 20 buffered
    with pytest.raises(ReplyTooLongError) as info:
        parser.feed(b"k")
    assert info.value.scope == "reply"


def test_reply_too_long_is_a_line_too_long_and_reply_error() -> None:
    with pytest.raises(ReplyTooLongError) as info:
        ReplyParser(max_line_length=8).feed(b"250 too long\r\n")
    assert isinstance(info.value, LineTooLongError)
    assert isinstance(info.value, ReplyError)


# --- parse_reply -------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"250 OK",
        b"250-more\r\n",
        b"250 one\r\n250 two\r\n",
        b"250 one\r\n250",
        b"250 one\r\n250-two\r\n",
    ],
)
def test_parse_reply_requires_exactly_one_complete_reply(wire: bytes) -> None:
    with pytest.raises(MalformedReplyError):
        parse_reply(wire)


# --- properties ----------------------------------------------------------------------

SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=200,
)
CODES = st.integers(min_value=200, max_value=599)


def split_points(data: st.DataObject, size: int) -> list[int]:
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=size), max_size=12))
    return sorted(set(cuts))


def feed_in_pieces(parser: ReplyParser, wire: bytes, cuts: list[int]) -> list[SMTPReply]:
    replies: list[SMTPReply] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        replies.extend(parser.feed(wire[start:cut]))
        start = cut
    return replies


@settings(deadline=None)
@given(code=CODES, lines=st.lists(SAFE_TEXT, min_size=1, max_size=10), data=st.data())
def test_format_then_parse_round_trips(code: int, lines: list[str], data: st.DataObject) -> None:
    wire = format_reply(code, lines)
    parser = ReplyParser()
    replies = feed_in_pieces(parser, wire, split_points(data, len(wire)))
    assert len(replies) == 1
    assert replies[0].code == code
    assert replies[0].lines == tuple(lines)
    assert not parser.has_partial
    assert replies[0].to_bytes() == wire


@settings(deadline=None)
@given(code=CODES, lines=st.lists(SAFE_TEXT, min_size=1, max_size=10))
def test_string_text_round_trips_through_the_wire(code: int, lines: list[str]) -> None:
    reply = parse_reply(format_reply(code, "\n".join(lines)))
    assert reply.code == code
    assert reply.message == "\n".join(lines)


@settings(deadline=None)
@given(
    replies=st.lists(
        st.tuples(CODES, st.lists(SAFE_TEXT, min_size=1, max_size=4)), min_size=1, max_size=6
    ),
    data=st.data(),
)
def test_pipelined_replies_round_trip_in_any_split(
    replies: list[tuple[int, list[str]]], data: st.DataObject
) -> None:
    wire = b"".join(format_reply(code, lines) for code, lines in replies)
    parsed = feed_in_pieces(ReplyParser(), wire, split_points(data, len(wire)))
    assert [(reply.code, list(reply.lines)) for reply in parsed] == replies


@settings(deadline=None)
@given(data=st.binary(max_size=400), cuts=st.data())
def test_parser_never_returns_unsafe_lines(data: bytes, cuts: st.DataObject) -> None:
    parser = ReplyParser(max_line_length=128, max_reply_length=256)
    try:
        replies = feed_in_pieces(parser, data, split_points(cuts, len(data)))
    except ReplyError:
        return
    for reply in replies:
        assert 200 <= reply.code <= 599
        for line in reply.lines:
            assert "\r" not in line
            assert "\n" not in line
            assert "\x00" not in line


_LINEISH = st.lists(
    st.one_of(
        st.sampled_from([b"250", b"250-", b"250 ", b"550 ", b"\r\n", b"\n", b"\r", b"\x00"]),
        st.binary(max_size=8),
    ),
    max_size=40,
).map(b"".join)


@settings(deadline=None)
@given(data=_LINEISH, cuts=st.data())
def test_parser_on_reply_shaped_noise_is_safe_and_split_independent(
    data: bytes, cuts: st.DataObject
) -> None:
    def outcome(pieces: list[int]) -> tuple[str, object]:
        parser = ReplyParser()
        try:
            return ("ok", feed_in_pieces(parser, data, pieces))
        except ReplyError as error:
            return ("error", type(error))

    whole = outcome([])
    split = outcome(split_points(cuts, len(data)))
    if whole[0] == "ok":
        assert isinstance(whole[1], list)
        for reply in whole[1]:
            assert not any(ch in line for line in reply.lines for ch in "\r\n\x00")
    assert whole == split


def fed_outcome(chunks: list[bytes], caps: tuple[int, int]) -> object:
    """What a parser with these caps (line, reply) makes of ``chunks`` fed one after
    the other: the replies, or the error's type and scope."""
    parser = ReplyParser(max_line_length=caps[0], max_reply_length=caps[1])
    replies: list[SMTPReply] = []
    try:
        for chunk in chunks:
            replies += parser.feed(chunk)
    except ReplyError as error:
        return type(error), getattr(error, "scope", None)
    return replies


@settings(max_examples=500, deadline=None)
@given(
    line=st.one_of(
        st.from_regex(rb"[2-5][0-9][0-9](?:[ -][ -~\x80-\xff]{0,30})?", fullmatch=True),
        st.binary(max_size=40),
    ),
    ending=st.sampled_from([b"\r\n", b"\n"]),
    caps=st.tuples(st.integers(min_value=3, max_value=50), st.integers(min_value=3, max_value=50)),
)
def test_one_reply_per_feed_matches_the_general_path(
    line: bytes, ending: bytes, caps: tuple[int, int]
) -> None:
    """Whole one-line replies take a fast path; it must agree with byte-wise feeding."""
    data = line + ending
    assert fed_outcome([data], caps) == fed_outcome([data[:1], data[1:]], caps)


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            st.one_of(
                st.from_regex(rb"[2-5][0-9][0-9](?:[ -][ -~\x80-\xff]{0,20})?", fullmatch=True),
                st.binary(max_size=12),
            ),
            st.sampled_from([b"\r\n", b"\n", b"\r\r\n"]),
        ),
        min_size=2,
        max_size=6,
    ),
    caps=st.tuples(
        st.integers(min_value=3, max_value=120), st.integers(min_value=3, max_value=120)
    ),
)
def test_a_group_of_replies_in_one_feed_matches_the_general_path(
    lines: list[tuple[bytes, bytes]], caps: tuple[int, int]
) -> None:
    """A pipelined group's one-line replies in one read take a fast path; it must
    agree with the general path (taken when a first octet came in a read of its own)."""
    data = b"".join(line + ending for line, ending in lines)
    assert fed_outcome([data], caps) == fed_outcome([data[:1], data[1:]], caps)


def test_a_group_of_one_line_replies_in_one_feed() -> None:
    wire = b"250 2.0.0 Ok: queued as 1\r\n250 Ok\r\n250\r\n354 End data with <CR><LF>.<CR><LF>\n"
    replies = ReplyParser().feed(wire)
    assert [(reply.code, reply.lines) for reply in replies] == [
        (250, ("2.0.0 Ok: queued as 1",)),
        (250, ("Ok",)),
        (250, ("",)),
        (354, ("End data with <CR><LF>.<CR><LF>",)),
    ]
