"""SMTPReply values, split_reply_text and format_reply (smtpwire.common.replies)."""

from __future__ import annotations

import pytest

from smtpwire.common.errors import UnsafeCharacterError
from smtpwire.common.replies import SMTPReply, format_reply, split_reply_text
from smtpwire.common.status import EnhancedStatusCode, SMTPStatus

# --- value semantics ---------------------------------------------------------------


def test_reply_stores_code_and_lines() -> None:
    reply = SMTPReply(250, ["first", "second"])
    assert reply.code == 250
    assert reply.lines == ("first", "second")


def test_reply_defaults_to_one_empty_line() -> None:
    reply = SMTPReply(250)
    assert reply.lines == ("",)
    assert reply.message == ""


def test_reply_lines_are_a_tuple_even_from_a_list() -> None:
    source = ["a", "b"]
    reply = SMTPReply(250, source)
    source.append("c")
    assert reply.lines == ("a", "b")
    assert isinstance(reply.lines, tuple)


def test_reply_accepts_a_generator_of_lines() -> None:
    reply = SMTPReply(250, (text for text in ["x", "y"]))
    assert reply.lines == ("x", "y")


def test_equal_replies_compare_and_hash_equal() -> None:
    first = SMTPReply(250, "a\nb")
    second = SMTPReply(250, ["a", "b"])
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (SMTPReply(250, "ok"), SMTPReply(251, "ok")),
        (SMTPReply(250, "ok"), SMTPReply(250, "OK")),
        (SMTPReply(250, "a\nb"), SMTPReply(250, "a b")),
        (SMTPReply(250, ["a", "b"]), SMTPReply(250, ["a"])),
    ],
)
def test_different_replies_are_not_equal(left: SMTPReply, right: SMTPReply) -> None:
    assert left != right
    assert not left == right  # noqa: SIM201 - exercise __eq__ directly


def test_reply_is_not_equal_to_other_types() -> None:
    reply = SMTPReply(250, "ok")
    assert reply != (250, "ok")
    assert reply != "250 ok"
    assert reply != 250
    assert reply.__eq__((250, ("ok",))) is NotImplemented


@pytest.mark.parametrize(("name", "value"), [("code", 550), ("lines", ("x",)), ("extra", 1)])
def test_setting_an_attribute_raises(name: str, value: object) -> None:
    reply = SMTPReply(250, "ok")
    with pytest.raises(AttributeError):
        setattr(reply, name, value)
    assert reply.code == 250
    assert reply.lines == ("ok",)


@pytest.mark.parametrize("name", ["code", "lines"])
def test_deleting_an_attribute_raises(name: str) -> None:
    """Immutable means no attribute can be removed either."""
    reply = SMTPReply(250, "ok")
    with pytest.raises(AttributeError):
        delattr(reply, name)
    assert reply.code == 250
    assert reply.lines == ("ok",)


def test_reply_has_no_instance_dict() -> None:
    assert not hasattr(SMTPReply(250, "ok"), "__dict__")


def test_repr_shows_code_and_lines() -> None:
    assert repr(SMTPReply(250, ["a", "b"])) == "SMTPReply(code=250, lines=('a', 'b'))"


# --- message and str ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["OK"], "OK"),
        (["mx.example.com", "SIZE 100", "8BITMIME"], "mx.example.com\nSIZE 100\n8BITMIME"),
        (["", ""], "\n"),
        ([""], ""),
    ],
)
def test_message_joins_lines_with_newline(lines: list[str], message: str) -> None:
    assert SMTPReply(250, lines).message == message


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (SMTPReply(250, "OK"), "250 OK"),
        (SMTPReply(550, ["no such", "user"]), "550 no such\nuser"),
        (SMTPReply(221), "221 "),
        (SMTPReply(354, "Start mail input"), "354 Start mail input"),
    ],
)
def test_str_is_code_space_message(reply: SMTPReply, text: str) -> None:
    assert str(reply) == text


# --- enhanced status codes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "lines", "expected"),
    [
        (250, ["2.1.0 Sender OK"], EnhancedStatusCode(2, 1, 0)),
        (250, ["2.1.0"], EnhancedStatusCode(2, 1, 0)),
        (550, ["5.7.1 Relaying denied"], EnhancedStatusCode(5, 7, 1)),
        (451, ["4.123.999 try later"], EnhancedStatusCode(4, 123, 999)),
        (250, ["2.0.0 first", "other line"], EnhancedStatusCode(2, 0, 0)),
    ],
)
def test_enhanced_code_is_read_from_the_first_line(
    code: int, lines: list[str], expected: EnhancedStatusCode
) -> None:
    assert SMTPReply(code, lines).enhanced_code == expected


@pytest.mark.parametrize(
    ("code", "lines"),
    [
        (550, ["2.1.0 class does not match"]),
        (250, ["5.1.0 class does not match"]),
        (451, ["5.0.0 class does not match"]),
        (250, ["OK"]),
        (250, [""]),
        (250, ["2.1.0x no separator"]),
        (250, ["2.1.0\ttab is not the separator"]),
        (250, ["2.1000.0 subject too long"]),
        (250, ["2.1.1000 detail too long"]),
        (250, ["2.1 two parts"]),
        (250, [" 2.1.0 leading space"]),
        (354, ["3.0.0 class 3 does not exist"]),
        (250, ["plain first line", "2.0.0 only later"]),
    ],
)
def test_enhanced_code_absent_or_mismatched_is_none(code: int, lines: list[str]) -> None:
    assert SMTPReply(code, lines).enhanced_code is None


# --- classification ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (200, "positive"),
        (250, "positive"),
        (299, "positive"),
        (300, "intermediate"),
        (334, "intermediate"),
        (354, "intermediate"),
        (399, "intermediate"),
        (400, "transient"),
        (421, "transient"),
        (499, "transient"),
        (500, "permanent"),
        (550, "permanent"),
        (599, "permanent"),
    ],
)
def test_reply_classification(code: int, kind: str) -> None:
    reply = SMTPReply(code, "text")
    flags = {
        "positive": reply.is_positive,
        "intermediate": reply.is_intermediate,
        "transient": reply.is_transient,
        "permanent": reply.is_permanent,
    }
    assert flags == {name: name == kind for name in flags}


# --- build ---------------------------------------------------------------------------


def test_build_without_enhanced_keeps_text() -> None:
    assert SMTPReply.build(250, "a\nb") == SMTPReply(250, ["a", "b"])


def test_build_default_text_is_one_empty_line() -> None:
    assert SMTPReply.build(250).lines == ("",)


def test_build_puts_the_enhanced_code_on_every_line() -> None:
    reply = SMTPReply.build(250, "first\n\nlast", enhanced="2.0.0")
    assert reply.lines == ("2.0.0 first", "2.0.0", "2.0.0 last")
    assert reply.enhanced_code == EnhancedStatusCode(2, 0, 0)


def test_build_enhanced_with_empty_text_is_the_bare_code() -> None:
    reply = SMTPReply.build(550, enhanced="5.7.1")
    assert reply.lines == ("5.7.1",)
    assert reply.enhanced_code == EnhancedStatusCode(5, 7, 1)


def test_build_enhanced_from_iterable() -> None:
    reply = SMTPReply.build(451, ["try", "later"], enhanced="4.3.0")
    assert reply.lines == ("4.3.0 try", "4.3.0 later")


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [(250, "5.0.0"), (550, "2.0.0"), (451, "5.3.0"), (550, "4.3.0"), (221, "4.0.0")],
)
def test_build_refuses_mismatching_enhanced_class(code: int, enhanced: str) -> None:
    with pytest.raises(ValueError, match="does not match"):
        SMTPReply.build(code, "text", enhanced=enhanced)


@pytest.mark.parametrize("enhanced", ["2.0", "2.0.0.0", "3.0.0", "x.y.z", "", "2.0.0 "])
def test_build_refuses_malformed_enhanced(enhanced: str) -> None:
    with pytest.raises(ValueError, match="enhanced status"):
        SMTPReply.build(250, "text", enhanced=enhanced)


def test_build_refuses_unsafe_text() -> None:
    with pytest.raises(UnsafeCharacterError):
        SMTPReply.build(250, ["ok\r\n250 forged"], enhanced="2.0.0")


# --- code validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [199, 600, 0, -1, 1000, 99, True, False, "250", 250.0, None, b"250"]
)
def test_invalid_codes_are_refused(code: object) -> None:
    with pytest.raises(ValueError, match="reply code"):
        SMTPReply(code, "text")  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [200, 599])
def test_boundary_codes_are_accepted(code: int) -> None:
    assert SMTPReply(code, "x").code == code


def test_smtpstatus_member_is_accepted_as_code() -> None:
    reply = SMTPReply(SMTPStatus.completed, "OK")
    assert reply.code == 250
    assert reply == SMTPReply(250, "OK")


@pytest.mark.parametrize("code", [199, 600, True])
def test_format_reply_refuses_invalid_codes(code: int) -> None:
    with pytest.raises(ValueError, match="reply code"):
        format_reply(code, "text")


# --- unsafe characters and line splitting --------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        ["ok\rforged"],
        ["ok\nforged"],
        ["ok\r\n250 forged"],
        ["nul\x00here"],
        ["fine", "second\rbad"],
        ["\r"],
        ["\x00"],
    ],
)
def test_cr_lf_nul_inside_a_line_are_refused(lines: list[str]) -> None:
    with pytest.raises(UnsafeCharacterError):
        SMTPReply(250, lines)
    with pytest.raises(UnsafeCharacterError):
        split_reply_text(lines)
    with pytest.raises(UnsafeCharacterError):
        format_reply(250, lines)


@pytest.mark.parametrize("text", ["bare\rCR", "nul\x00", "a\n\rb", "a\r\rb"])
def test_unsafe_characters_left_after_splitting_a_string_are_refused(text: str) -> None:
    with pytest.raises(UnsafeCharacterError):
        SMTPReply(250, text)
    with pytest.raises(UnsafeCharacterError):
        format_reply(250, text)


def test_unsafe_character_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the subclass relation is what is tested
        SMTPReply(250, "x\x00y")


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("one", ("one",)),
        ("a\nb", ("a", "b")),
        ("a\r\nb", ("a", "b")),
        ("a\r\nb\nc", ("a", "b", "c")),
        ("a\n\nb", ("a", "", "b")),
        ("a\n", ("a", "")),
        ("", ("",)),
        ("\n", ("", "")),
        ("  spaced  ", ("  spaced  ",)),
    ],
)
def test_string_text_is_split_at_lf_and_crlf(text: str, lines: tuple[str, ...]) -> None:
    assert split_reply_text(text) == lines
    assert SMTPReply(250, text).lines == lines


def test_iterable_lines_are_taken_as_given() -> None:
    assert split_reply_text(["a", "", "b"]) == ("a", "", "b")


def test_empty_iterable_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one line"):
        SMTPReply(250, [])
    with pytest.raises(ValueError, match="at least one line"):
        split_reply_text(())


@pytest.mark.parametrize("lines", [[b"bytes"], ["ok", 5], [None]])
def test_non_str_lines_are_refused(lines: list[object]) -> None:
    with pytest.raises(TypeError):
        SMTPReply(250, lines)  # type: ignore[arg-type]


# --- wire form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "wire"),
    [
        (250, "OK", None, b"250 OK\r\n"),
        (250, "", None, b"250 \r\n"),
        (250, [""], None, b"250 \r\n"),
        (221, "Bye", None, b"221 Bye\r\n"),
        (250, "a\nb", None, b"250-a\r\n250 b\r\n"),
        (250, "a\r\nb", None, b"250-a\r\n250 b\r\n"),
        (250, ["a", "b", "c"], None, b"250-a\r\n250-b\r\n250 c\r\n"),
        (250, ["a", ""], None, b"250-a\r\n250 \r\n"),
        (250, ["", "b"], None, b"250-\r\n250 b\r\n"),
        (250, "OK", "2.0.0", b"250 2.0.0 OK\r\n"),
        (250, "", "2.0.0", b"250 2.0.0\r\n"),
        (
            550,
            ["No such user", "try again"],
            "5.1.1",
            b"550-5.1.1 No such user\r\n550 5.1.1 try again\r\n",
        ),
        (451, ["a", "", "b"], "4.3.0", b"451-4.3.0 a\r\n451-4.3.0\r\n451 4.3.0 b\r\n"),
        (
            354,
            "Start mail input; end with <CRLF>.<CRLF>",
            None,
            b"354 Start mail input; end with <CRLF>.<CRLF>\r\n",
        ),
        (250, " leading and trailing ", None, b"250  leading and trailing \r\n"),
    ],
)
def test_format_reply_exact_bytes(
    code: int, text: str | list[str], enhanced: str | None, wire: bytes
) -> None:
    assert format_reply(code, text, enhanced=enhanced) == wire
    assert SMTPReply.build(code, text, enhanced=enhanced).to_bytes() == wire


def test_format_reply_default_text() -> None:
    assert format_reply(250) == b"250 \r\n"


@pytest.mark.parametrize(
    "text", ["héllo wörld", "✓ done", "日本語のテキスト", "emoji 📬", "ελληνικά"]
)
def test_non_ascii_text_is_utf8(text: str) -> None:
    assert format_reply(250, text) == b"250 " + text.encode("utf-8") + b"\r\n"


def test_non_ascii_multiline_is_utf8_on_every_line() -> None:
    assert format_reply(550, ["café", "naïve"], enhanced="5.0.0") == (
        "550-5.0.0 café\r\n550 5.0.0 naïve\r\n".encode()
    )


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (SMTPReply(250, "OK"), b"250 OK\r\n"),
        (SMTPReply(250, ["mx", "SIZE 10"]), b"250-mx\r\n250 SIZE 10\r\n"),
        (SMTPReply(220), b"220 \r\n"),
        (SMTPReply(554, "no\nway"), b"554-no\r\n554 way\r\n"),
    ],
)
def test_to_bytes(reply: SMTPReply, wire: bytes) -> None:
    assert reply.to_bytes() == wire


def test_formatted_reply_never_holds_more_line_endings_than_lines() -> None:
    wire = format_reply(250, ["a", "b", "c"])
    assert wire.count(b"\r\n") == 3
    assert wire.count(b"\n") == 3
    assert wire.count(b"\r") == 3
