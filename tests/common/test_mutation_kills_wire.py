"""Tests written to kill mutants of smtpwire.common's wire modules (commands.py,
replies.py, data.py) that survived tests/common (``nox -s mutate``,
docs/mutation.md).  Each pins a fact a user, a log reader or the server's adapter
relies on but no other test looked at."""

from __future__ import annotations

import pytest

from smtpwire.common.commands import (
    format_command,
    format_rcpt_to,
    parse_mail_from,
    parse_rcpt_to,
    split_command,
)
from smtpwire.common.data import BareNewlinePolicy, DataDecoder, DataEncoder, DataViolation
from smtpwire.common.errors import (
    AddressSyntaxError,
    CommandSyntaxError,
    CommandTooLongError,
    MalformedReplyError,
    NonASCIIError,
    ReplyTooLongError,
    UnsafeCharacterError,
)
from smtpwire.common.replies import ReplyParser, SMTPReply, parse_reply, split_reply_text

# -- commands.py --------------------------------------------------------------------------


def test_a_command_line_over_the_limit_says_the_limit() -> None:
    """The error gives the limit, in its text and as ``limit`` (mutant: no text)."""
    with pytest.raises(CommandTooLongError) as caught:
        split_command(b"NOOP " + b"x" * 600)
    assert str(caught.value) == "command line longer than 512 octets"
    assert caught.value.limit == 512


def test_a_malformed_verb_is_quoted_cut_at_40_octets() -> None:
    """The error names the verb a peer sent, but never copies more than 40 octets of
    a hostile line into a log (mutants: the message dropped, the cut moved)."""
    with pytest.raises(CommandSyntaxError) as caught:
        split_command(b"!" + b"v" * 100 + b" argument")
    assert str(caught.value) == "malformed command verb: b'!" + "v" * 39 + "'"


def test_a_non_ascii_argument_without_smtputf8_says_so() -> None:
    """The refusal of UTF-8 without SMTPUTF8 says what it refused (mutants: the text
    dropped or changed)."""
    with pytest.raises(NonASCIIError) as caught:
        split_command("MAIL FROM:<jörg@example.com>".encode())
    assert str(caught.value) == "non-ASCII octets in command argument"


def test_only_spaces_are_stripped_from_the_argument() -> None:
    """RFC 5321 separates with SP: a tab (or CR) around the argument stays in it,
    where the path parser refuses it, rather than being dropped silently (mutant:
    ``strip()`` of all whitespace, or of other characters as well)."""
    assert split_command(b"MAIL  FROM:<a@example.com>\t ") == ("MAIL", "FROM:<a@example.com>\t")
    assert split_command(b"NOOP \tx\r") == ("NOOP", "\tx\r")
    assert split_command(b"XCLIENT NAME=X") == ("XCLIENT", "NAME=X")
    _, argument = split_command(b"MAIL FROM:<a@example.com>\t")
    with pytest.raises(AddressSyntaxError):
        parse_mail_from(argument)


def test_text_glued_to_the_path_is_quoted_cut_at_40_characters() -> None:
    """Text right after ``>`` is refused, quoting at most 40 characters of it
    (mutants: the message dropped, the cut moved)."""
    with pytest.raises(AddressSyntaxError) as caught:
        parse_mail_from("FROM:<a@example.com>" + "x" * 100)
    assert str(caught.value) == "unexpected text after path: '" + "x" * 40 + "'"


def test_a_missing_prefix_is_quoted_cut_at_40_characters() -> None:
    """The error says which prefix was expected and quotes at most 40 characters of
    what came instead (mutants: the message dropped, the cut moved)."""
    argument = "RCPT TO:<" + "r" * 60 + "@example.com>"
    with pytest.raises(CommandSyntaxError) as caught:
        parse_mail_from(argument)
    assert str(caught.value) == "expected 'FROM:': 'RCPT TO:<" + "r" * 31 + "'"


def test_path_errors_name_the_path() -> None:
    """A control character or non-ASCII text without SMTPUTF8 is reported as being in
    the path (mutants: ``what`` dropped or changed)."""
    with pytest.raises(AddressSyntaxError) as control:
        parse_mail_from("FROM:<a\x00b@example.com>")
    assert str(control.value) == (
        "path holds the control character '\\x00': 'FROM:<a\\x00b@example.com>'"
    )
    with pytest.raises(NonASCIIError) as non_ascii:
        parse_rcpt_to("TO:<jörg@example.com>")
    assert str(non_ascii.value) == (
        "path is not ASCII and SMTPUTF8 is not in use: 'TO:<jörg@example.com>'"
    )


def test_the_null_path_is_refused_as_a_recipient_with_its_reason() -> None:
    """On both sides: the server's parser and the client's formatter (mutants: the
    texts dropped or changed)."""
    reason = "the null path <> is not a valid recipient"
    with pytest.raises(AddressSyntaxError, match=rf"\A{reason}\Z"):
        parse_rcpt_to("TO:<>")
    with pytest.raises(AddressSyntaxError, match=rf"\A{reason}\Z"):
        format_rcpt_to("")


def test_strict_parsing_says_what_rfc_5321_wants() -> None:
    """``strict=True`` refusals: the angle brackets, the domain (mutants: the texts
    dropped or changed)."""
    with pytest.raises(AddressSyntaxError, match=r"\Apath must be enclosed in angle brackets\Z"):
        parse_mail_from("FROM:a@example.com", strict=True)
    with pytest.raises(AddressSyntaxError) as no_domain:
        parse_mail_from("FROM:<user>", strict=True)
    assert str(no_domain.value) == "address has no domain: 'user'"


def test_a_malformed_address_is_quoted_cut_at_60_characters() -> None:
    """Where no mailbox starts, the error quotes the text from there; where a bracket
    is not closed, the path; each at most 60 characters (mutants: the message
    dropped, the slice emptied or lengthened)."""
    with pytest.raises(AddressSyntaxError) as unmatched:
        parse_mail_from("FROM:<(" + "x" * 100 + ">")
    assert str(unmatched.value) == "malformed address: '(" + "x" * 59 + "'"
    with pytest.raises(AddressSyntaxError) as unclosed:
        parse_mail_from("FROM:<" + "a" * 70 + "@example.com SIZE=1>")
    assert str(unclosed.value) == "malformed address: '<" + "a" * 59 + "'"


def test_format_command_errors_say_what_was_refused() -> None:
    """The client's refusals name the verb, the argument (control character, bytes
    that are not UTF-8) or the limit (mutants: the texts dropped)."""
    with pytest.raises(UnsafeCharacterError) as verb:
        format_command("NO OP")
    assert str(verb.value) == "malformed command verb: 'NO OP'"
    with pytest.raises(UnsafeCharacterError) as control:
        format_command("NOOP", b"a\rb")
    assert str(control.value) == "command argument holds b'\\r': b'a\\rb'"
    with pytest.raises(UnsafeCharacterError) as not_utf8:
        format_command("NOOP", b"\xff")
    assert str(not_utf8.value) == "command argument is not UTF-8: b'\\xff'"
    with pytest.raises(CommandTooLongError) as too_long:
        format_command("NOOP", "x" * 600, max_length=512)
    assert str(too_long.value) == "command longer than 512 octets"
    assert too_long.value.limit == 512


# -- replies.py ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [(200, "2.0.0"), (201, "2.1.5"), (403, "4.7.1"), (500, "5.5.2"), (504, "5.5.4")],
)
def test_the_enhanced_class_must_be_the_codes_hundreds_digit(code: int, enhanced: str) -> None:
    """The class is ``code // 100`` for every code, not only the x5y codes most tests
    use (mutant: ``code // 101``, which differs for 200-201, 400-403 and 500-504)."""
    reply = SMTPReply.build(code, "text", enhanced=enhanced)
    assert reply.lines == (f"{enhanced} text",)
    assert reply.enhanced_code is not None
    other = "4.0.0" if enhanced[0] == "5" else "5.0.0"
    with pytest.raises(ValueError, match="does not match reply code"):
        SMTPReply.build(code, "text", enhanced=other)


def test_different_replies_hash_apart() -> None:
    """Equal replies hash equal, and distinct ones spread over the hash space: a
    constant hash keeps sets and dicts correct but makes every lookup a scan."""
    assert hash(SMTPReply(250, "ok")) == hash(SMTPReply(250, ("ok",)))
    hashes = {hash(SMTPReply(code, "ok")) for code in range(200, 600)}
    hashes |= {hash(SMTPReply(250, f"line {number}")) for number in range(400)}
    assert len(hashes) == 800


def test_reply_text_errors_say_what_was_wrong() -> None:
    """No lines, a line that is not text, and a CR inside a line: each error says
    which (mutants: the texts dropped or changed, the type named wrongly)."""
    with pytest.raises(ValueError, match=r"\Aa reply has at least one line\Z"):
        split_reply_text([])
    with pytest.raises(TypeError) as not_text:
        split_reply_text(["ok", 3])  # type: ignore[list-item]
    assert str(not_text.value) == "reply lines must be str, not int"
    with pytest.raises(UnsafeCharacterError) as unsafe:
        split_reply_text(["a\rb"])
    assert str(unsafe.value) == "reply line holds '\\r': 'a\\rb'"


def test_each_reply_of_a_chunk_is_measured_from_zero() -> None:
    """The reply cap counts one reply's lines: the second reply of a chunk may use
    all of it (mutant: the count restarted at 1 after each reply)."""
    second = b"250-first\r\n250 last\r\n"
    parser = ReplyParser(max_reply_length=len(second))
    replies = parser.feed(b"220 ready\r\n" + second)
    assert [reply.lines for reply in replies] == [("ready",), ("first", "last")]
    assert parser.feed(second) == [SMTPReply(250, ["first", "last"])]


def test_reset_forgets_the_size_of_a_partial_reply() -> None:
    """After ``reset()`` (STARTTLS) a reply may again use the whole cap (mutants: the
    count left at None or 1)."""
    reply = b"250-mx.example.com\r\n250 STARTTLS\r\n"
    parser = ReplyParser(max_reply_length=len(reply))
    assert parser.feed(b"250-plaintext injected\r\n") == []
    parser.reset()
    assert not parser.has_partial
    assert parser.feed(reply) == [SMTPReply(250, ["mx.example.com", "STARTTLS"])]


def test_an_unfinished_line_over_a_cap_reports_the_cap() -> None:
    """The buffered, unfinished line is checked against both caps, and the error
    carries the cap it broke (mutants: the limit dropped, the message dropped)."""
    parser = ReplyParser(max_line_length=16)
    with pytest.raises(ReplyTooLongError) as line:
        parser.feed(b"250 " + b"x" * 20)
    assert (line.value.limit, line.value.scope) == (16, "line")
    assert str(line.value) == "reply line longer than 16 octets"
    parser = ReplyParser(max_reply_length=20)
    assert parser.feed(b"250-" + b"a" * 10 + b"\r\n") == []
    with pytest.raises(ReplyTooLongError) as reply:
        parser.feed(b"250 " + b"b" * 6)
    assert (reply.value.limit, reply.value.scope) == (20, "reply")
    assert "longer than 20 octets" in str(reply.value)


def test_a_malformed_reply_line_is_quoted_cut_at_80_octets() -> None:
    """A server's garbage is quoted in the error, at most 80 octets of it (mutants:
    the message dropped, the cut moved)."""
    with pytest.raises(MalformedReplyError) as caught:
        ReplyParser().feed(b"hello" + b"x" * 100 + b"\r\n")
    assert str(caught.value) == "malformed reply line: b'hello" + "x" * 75 + "'"


def test_a_continuation_with_another_code_quotes_the_line() -> None:
    """The error shows the offending line itself (not only its code), cut at 80
    octets."""
    with pytest.raises(MalformedReplyError) as short:
        ReplyParser().feed(b"250-a\r\n550 no\r\n")
    assert str(short.value) == "continuation line code 550 differs from 250: b'550 no\\r'"
    with pytest.raises(MalformedReplyError) as long:
        ReplyParser().feed(b"250-a\r\n550 " + b"y" * 100 + b"\r\n")
    assert str(long.value) == "continuation line code 550 differs from 250: b'550 " + "y" * 76 + "'"


def test_parse_reply_quotes_what_it_got_cut_at_80_octets() -> None:
    """``parse_reply`` of an unfinished reply quotes at most 80 octets of its input
    (mutants: the message dropped, the cut moved)."""
    with pytest.raises(MalformedReplyError) as caught:
        parse_reply(b"250-" + b"z" * 100 + b"\r\n")
    assert str(caught.value) == "expected exactly one complete reply: b'250-" + "z" * 76 + "'"


# -- data.py: the encoder -----------------------------------------------------------------


def test_the_encoder_refuses_use_after_finish_with_its_message() -> None:
    """Feeding after ``finish()`` and finishing twice are programming errors whose
    messages name the call (mutants: the texts dropped or changed)."""
    encoder = DataEncoder()
    assert encoder.finish() == b"\r\n.\r\n"
    with pytest.raises(RuntimeError) as fed:
        encoder.feed(b"late")
    assert str(fed.value) == "DataEncoder.feed() after finish()"
    with pytest.raises(RuntimeError) as finished:
        encoder.finish()
    assert str(finished.value) == "DataEncoder.finish() called twice"


# -- data.py: the decoder -----------------------------------------------------------------


def test_the_decoder_refuses_use_after_the_end_with_its_message() -> None:
    """Feeding after the terminator and a line limit below 3 are refused with
    messages that say so (mutants: the texts dropped or changed)."""
    decoder = DataDecoder()
    decoder.feed(b"hi\r\n.\r\n")
    with pytest.raises(RuntimeError) as caught:
        decoder.feed(b"QUIT\r\n")
    assert str(caught.value) == "DataDecoder.feed() after the end of data"
    with pytest.raises(
        ValueError, match=r"\Amax_line_length must be at least 3 \(one octet and CRLF\)\Z"
    ):
        DataDecoder(max_line_length=2)


def test_the_bare_newline_flags_are_false_before_anything_is_decided() -> None:
    """``bare_lf`` and ``bare_cr`` are bools from the start, also while every octet
    fed is still undecided (mutants: None until the first segment)."""
    decoder = DataDecoder()
    assert (decoder.bare_lf, decoder.bare_cr) == (False, False)
    assert decoder.bare_lf is False
    assert decoder.bare_cr is False
    assert decoder.feed(b"\r") == b""
    assert decoder.bare_lf is False
    assert decoder.bare_cr is False


@pytest.mark.parametrize(
    ("options", "chunk", "violation"),
    [
        ({"max_size": 4}, b"abc\r\nlonger line\r\n", DataViolation.TOO_LARGE),
        ({"max_line_length": 10}, b"short\r\n" + b"x" * 20 + b"\r\n", DataViolation.LINE_TOO_LONG),
        ({"bare_newline": BareNewlinePolicy.REJECT}, b"one\r\ntwo\nthree", DataViolation.BARE_LF),
    ],
)
def test_the_feed_that_breaks_a_rule_returns_no_content(
    options: dict[str, object], chunk: bytes, violation: DataViolation
) -> None:
    """Once a rule is broken the message is discarded: the feed that breaks it
    returns nothing (not even the content before the break), nor do later feeds
    (mutants: something returned)."""
    decoder = DataDecoder(**options)  # type: ignore[arg-type]
    assert decoder.feed(chunk) == b""
    assert decoder.violation is violation
    assert decoder.feed(b"more\r\n.\r\n") == b""
    assert decoder.done


def feed_in_two(decoder: DataDecoder, wire: bytes, cut: int) -> bytes:
    """Feed a whole message cut at ``cut``; the content decoded (the decoder must end)."""
    content = decoder.feed(wire[:cut])
    if not decoder.done:
        content += decoder.feed(wire[cut:])
    assert decoder.done
    return content


def test_a_bare_cr_that_makes_a_line_too_long_is_reported_as_a_bare_cr() -> None:
    """When one octet breaks two rules (the bare CR that is also the line's octet
    past the limit), the bare newline is reported, as the reference model in
    test_data_oracle.py says, in any chunking (mutant: the line length wins ties)."""
    wire = b"abcd\rx\r\n.\r\n"
    for cut in range(len(wire) + 1):
        decoder = DataDecoder(max_line_length=5, bare_newline=BareNewlinePolicy.REJECT)
        feed_in_two(decoder, wire, cut)
        assert decoder.violation is DataViolation.BARE_CR


def test_a_full_length_dot_line_ending_a_chunk_does_not_shorten_the_next_line() -> None:
    """A stuffed line of the full length (dot not counted) that ends exactly at a
    chunk's end, followed by a bare LF and a line of normal length in the next chunk:
    the message is within the limits however it is cut (mutant: the next line
    measured from before the chunk's start, refused as too long)."""
    wire = b"." + b"a" * 999 + b"\n" + b"b" * 998 + b"\r\n.\r\n"
    expected = b"a" * 999 + b"\n" + b"b" * 998 + b"\r\n"
    for cut in (1000, 1001, 999, len(wire)):
        decoder = DataDecoder()
        assert feed_in_two(decoder, wire, cut) == expected
        assert decoder.violation is None


def test_the_line_after_a_full_length_dot_line_is_measured_from_its_first_octet() -> None:
    """After a stuffed line of exactly the limit, the next line gets the ordinary
    limit, counted from the octet after the LF (mutant: one octet skipped)."""
    limit = 1000
    dot_line = b"." + b"a" * (limit - 2) + b"\r\n"  # limit octets besides the stuffing dot
    fitting = DataDecoder(max_line_length=limit)
    fitting.feed(dot_line + b"b" * (limit - 2) + b"\r\n.\r\n")
    assert (fitting.done, fitting.violation) == (True, None)
    one_too_many = DataDecoder(max_line_length=limit)
    one_too_many.feed(dot_line + b"b" * (limit - 1) + b"\r\n.\r\n")
    assert (one_too_many.done, one_too_many.violation) == (True, DataViolation.LINE_TOO_LONG)


def test_the_size_at_a_break_counts_the_content_of_earlier_chunks() -> None:
    """At a break (here a bare LF under REJECT) the size limit is judged on all the
    content before it, from every chunk, so the verdict does not depend on where the
    chunks end (mutant: only this segment's content counted, giving BARE_LF when the
    first chunk was fed alone)."""
    wire = b"abcdef\r\n\nrest\r\n.\r\n"  # 8 octets of content before the bare LF
    for cut in range(len(wire) + 1):
        decoder = DataDecoder(max_size=7, bare_newline=BareNewlinePolicy.REJECT)
        feed_in_two(decoder, wire, cut)
        assert decoder.violation is DataViolation.TOO_LARGE
