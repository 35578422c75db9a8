"""smtpwire.common.server_rules in memory: the command gate (every refusal, their
order, the budgets, the close flags) and the MAIL/RCPT parameter rules."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpwire.common.data import BareNewlinePolicy
from smtpwire.common.lines import LINE_TOO_LONG, LineTooLong
from smtpwire.common.mail_parameters import OriginalRecipient
from smtpwire.common.server_rules import (
    ALLOWED_BEFORE_STARTTLS,
    BOGUS_LIMIT,
    CALL_LIMIT_DEFAULT,
    STRICT_ASCII,
    CommandGate,
    CommandRefusal,
    MailDSN,
    RcptDSN,
    ReceivedCommand,
    check_mail_parameters,
    decode_text,
    parse_mail_dsn,
    parse_rcpt_parameters,
    printable,
)

VERBS = frozenset(
    {"HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "STARTTLS"}
)
MAX = 512
TOO_LONG = "500 Command line too long"
BARE_NEWLINE = "500 5.5.2 Error: bare <CR> or <LF> received"
BAD_SYNTAX = "500 Error: bad syntax"
HTTP_REFUSED = "421 4.7.0 Error: HTTP request refused, this is an SMTP server"
INSECURE = "554 Command refused due to lack of security"
STARTTLS_FIRST = "530 Must issue a STARTTLS command first"
BOGUS_GOODBYE = "502 5.5.1 Too many unrecognized commands, goodbye."
REPLY_LINE = re.compile(r"[2-5][0-9]{2} [\x20-\x7e]*\Z")
PRINTABLE = re.compile(r"[\x20-\x7e]+\Z")


def make_gate(**options: Any) -> CommandGate:
    return CommandGate(VERBS, **options)


def screen(line: bytes | LineTooLong, gate: CommandGate | None = None, **flags: Any) -> Any:
    flags.setdefault("max_length", MAX)
    return (gate or make_gate()).screen(line, **flags)


def refused(
    line: bytes | LineTooLong, gate: CommandGate | None = None, **flags: Any
) -> CommandRefusal:
    result = screen(line, gate, **flags)
    assert isinstance(result, CommandRefusal), result
    return result


def rejecting() -> CommandGate:
    return make_gate(bare_newline=BareNewlinePolicy.REJECT)


# --- commands that pass ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "verb", "argument"),
    [
        (b"NOOP", "NOOP", None),
        (b"noop", "NOOP", None),
        (b"NOOP\r", "NOOP", None),  # a stray CR before the LF, kept by the lenient policy
        (b"NOOP ", "NOOP", None),
        (b"NOOP  ", "NOOP", ""),  # an argument that is only spaces is empty, not absent
        (b"MAIL FROM:<a@example.com>", "MAIL", "FROM:<a@example.com>"),
        (b"MAIL  FROM:<a@example.com>  \t", "MAIL", "FROM:<a@example.com>"),
        (b"Helo there", "HELO", "there"),
    ],
)
def test_a_good_line_gives_its_verb_and_argument(
    line: bytes, verb: str, argument: str | None
) -> None:
    assert screen(line) == ReceivedCommand(verb, argument)


def test_a_utf8_argument_is_decoded_with_smtputf8() -> None:
    result = screen("MAIL FROM:<é@example.com>".encode(), utf8=True)
    assert result == ReceivedCommand("MAIL", "FROM:<é@example.com>")


def test_invalid_utf8_is_kept_as_surrogate_escapes_for_the_parsers_to_refuse() -> None:
    assert screen(b"NOOP \xff", utf8=True) == ReceivedCommand("NOOP", "\udcff")


# --- every refusal ---------------------------------------------------------------------------


def test_an_overlong_line_from_the_reader() -> None:
    refusal = refused(LINE_TOO_LONG)
    assert refusal == CommandRefusal(TOO_LONG)
    assert not refusal.close
    assert refusal.verb == ""


@pytest.mark.parametrize(
    ("line", "bare_lf"),
    [(b"NOOP", True), (b"NO\rOP", False), (b"NOOP\r", True), (b"NOOP\r", False), (b"\r", False)],
)
def test_rejected_bare_newlines(line: bytes, bare_lf: bool) -> None:
    refusal = refused(line, rejecting(), bare_lf=bare_lf)
    assert refusal == CommandRefusal(BARE_NEWLINE)


@pytest.mark.parametrize("line", [b"BDAT 10", b"bdat 10 LAST", b"BDAT", b"BDAT 1\r"])
def test_a_rejected_bdat_line_closes_since_its_chunk_would_be_read_as_commands(
    line: bytes,
) -> None:
    refusal = refused(line, rejecting(), bare_lf=True)
    assert refusal.reply == BARE_NEWLINE
    assert refusal.close


def test_bdat_lookalikes_do_not_close() -> None:
    assert not refused(b"BDATX 10", rejecting(), bare_lf=True).close


@pytest.mark.parametrize("policy", [BareNewlinePolicy.KEEP, BareNewlinePolicy.NORMALIZE])
def test_bare_newlines_pass_unless_rejected(policy: BareNewlinePolicy) -> None:
    gate = make_gate(bare_newline=policy)
    assert screen(b"NOOP\r", gate, bare_lf=True) == ReceivedCommand("NOOP", None)


@pytest.mark.parametrize("line", [b"", b"\r", b"\r\r"])
def test_an_empty_line(line: bytes) -> None:
    assert refused(line) == CommandRefusal(BAD_SYNTAX)


@pytest.mark.parametrize(
    "line",
    [b"NO\x00OP", b"\x1b[31mHELO", b"NOOP\x7f", b"\xc3\xa9HLO x", b"\x80", b"\tNOOP", b"NO\rOP"],
)
def test_a_verb_with_control_or_non_ascii_characters(line: bytes) -> None:
    refusal = refused(line)
    assert refusal == CommandRefusal(BAD_SYNTAX)
    assert refusal.verb == ""


@pytest.mark.parametrize(
    "line", [b"GET / HTTP/1.1", b"post /x HTTP/1.0", b"CONNECT a:25 HTTP/2  ", b"HEAD / HTTP/1"]
)
def test_an_http_request_line_is_refused_and_closes(line: bytes) -> None:
    refusal = refused(line)
    assert refusal.reply == HTTP_REFUSED
    assert refusal.close
    assert refusal.log_reason == "sent an HTTP request"
    assert refusal.verb == line.split(b" ")[0].upper().decode()


@pytest.mark.parametrize("line", [b"GET /", b"GET / HTTP/1.1 extra", b"FETCH / HTTP/1.1"])
def test_what_is_not_an_http_request_line_is_an_unknown_command(line: bytes) -> None:
    refusal = refused(line)
    assert refusal.reply.startswith("500 Error: command ")
    assert not refusal.close


def test_a_non_ascii_argument_without_smtputf8() -> None:
    refusal = refused("MAIL FROM:<é@example.com>".encode())
    assert refusal == CommandRefusal(STRICT_ASCII, verb="MAIL")


def test_a_line_over_the_limit() -> None:
    assert screen(b"NOOP " + b"x" * 5, max_length=10) == ReceivedCommand("NOOP", "xxxxx")
    assert refused(b"NOOP " + b"x" * 6, max_length=10) == CommandRefusal(TOO_LONG, verb="NOOP")


def test_the_limit_counts_the_line_without_its_trailing_crs() -> None:
    assert screen(b"NOOP xxxxx\r\r", max_length=10) == ReceivedCommand("NOOP", "xxxxx")


def test_per_verb_limits_replace_the_default_after_ehlo() -> None:
    lengths = {"MAIL": 20}
    line = b"MAIL FROM:<a@b.c>xx"  # 19 octets
    assert refused(line, max_length=10).reply == TOO_LONG
    assert screen(line, max_length=10, max_lengths=lengths) == ReceivedCommand(
        "MAIL", "FROM:<a@b.c>xx"
    )
    assert refused(b"NOOP " + b"x" * 6, max_length=10, max_lengths=lengths).reply == TOO_LONG


def test_after_a_refused_handshake_only_quit_runs() -> None:
    assert refused(b"NOOP", handshake_refused=True) == CommandRefusal(INSECURE, verb="NOOP")
    assert screen(b"QUIT", handshake_refused=True) == ReceivedCommand("QUIT", None)


@pytest.mark.parametrize("verb", sorted(ALLOWED_BEFORE_STARTTLS))
def test_before_starttls_the_way_to_tls_stays_open(verb: str) -> None:
    assert screen(verb.encode(), starttls_required=True) == ReceivedCommand(verb, None)


@pytest.mark.parametrize("line", [b"MAIL FROM:<a@b.c>", b"HELO x", b"RSET", b"DATA"])
def test_before_starttls_everything_else_is_refused(line: bytes) -> None:
    refusal = refused(line, starttls_required=True)
    assert refusal.reply == STARTTLS_FIRST
    assert not refusal.close


def test_call_limit_counts_down_then_refuses_and_closes() -> None:
    gate = make_gate(command_call_limit=2)
    assert screen(b"NOOP", gate) == ReceivedCommand("NOOP", None)
    assert gate.calls_left["NOOP"] == 1
    assert screen(b"noop", gate) == ReceivedCommand("NOOP", None)
    assert gate.calls_left["NOOP"] == 0
    refusal = refused(b"NOOP", gate)
    assert refusal == CommandRefusal(
        "421 4.7.0 NOOP sent too many times",
        close=True,
        log_reason="over limit for NOOP",
        verb="NOOP",
    )
    assert screen(b"RSET", gate) == ReceivedCommand("RSET", None)  # each verb its own budget


def test_call_limits_per_verb_with_a_default() -> None:
    gate = make_gate(command_call_limit={"noop": 1, "*": 3})
    assert screen(b"NOOP", gate) == ReceivedCommand("NOOP", None)
    assert refused(b"NOOP", gate).close
    for _ in range(3):
        assert screen(b"RSET", gate) == ReceivedCommand("RSET", None)
    assert refused(b"RSET", gate).reply == "421 4.7.0 RSET sent too many times"


def test_call_limits_per_verb_without_a_default_use_aiosmtpds() -> None:
    gate = make_gate(command_call_limit={"NOOP": 1})
    for _ in range(CALL_LIMIT_DEFAULT):
        assert screen(b"RSET", gate) == ReceivedCommand("RSET", None)
    assert refused(b"RSET", gate).close


def test_no_call_limit_by_default() -> None:
    gate = make_gate()
    for _ in range(CALL_LIMIT_DEFAULT * 3):
        assert screen(b"NOOP", gate) == ReceivedCommand("NOOP", None)


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("5", "command_call_limit must be int or Dict[str, int]"),
        (5.0, "command_call_limit must be int or Dict[str, int]"),
        (True, "command_call_limit must be int or Dict[str, int]"),
        ({"NOOP": "5"}, "All command_call_limit values must be int"),
        ({"NOOP": 5, "*": None}, "All command_call_limit values must be int"),
    ],
)
def test_bad_call_limits_are_refused_with_aiosmtpds_messages(limit: Any, message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        make_gate(command_call_limit=limit)


def test_unknown_verbs_count_down_the_bogus_budget_then_close() -> None:
    gate = make_gate()
    for left in range(BOGUS_LIMIT - 1, 0, -1):
        refusal = refused(b"xyzzy now", gate)
        assert refusal == CommandRefusal(
            '500 Error: command "XYZZY" not recognized',
            log_reason="unrecognised: XYZZY",
            verb="XYZZY",
        )
        assert gate.bogus_left == left
    refusal = refused(b"PLUGH", gate)
    assert refusal.reply == BOGUS_GOODBYE
    assert refusal.close
    assert refusal.log_reason is not None
    assert "PLUGH" in refusal.log_reason
    assert gate.bogus_left == 0


def test_the_bogus_budget_is_set_by_the_server() -> None:
    gate = make_gate(bogus_limit=1)
    assert refused(b"XYZZY", gate).reply == BOGUS_GOODBYE


def test_refused_lines_do_not_count_against_the_bogus_budget() -> None:
    gate = make_gate()
    for line in (b"", b"\x00", "XYZZY é".encode()):
        refused(line, gate)
    assert gate.bogus_left == BOGUS_LIMIT


def test_a_verb_with_punctuation_is_echoed_as_unknown() -> None:
    assert refused(b"X-FOO!").reply == '500 Error: command "X-FOO!" not recognized'


# --- the order of the checks -------------------------------------------------------------


def test_order_bare_newline_before_empty_line() -> None:
    assert refused(b"\r", rejecting()).reply == BARE_NEWLINE
    assert refused(b"", rejecting(), bare_lf=True).reply == BARE_NEWLINE


def test_order_bare_newline_before_bad_verb() -> None:
    assert refused(b"\x00OOP", rejecting(), bare_lf=True).reply == BARE_NEWLINE


def test_order_bad_verb_before_strict_ascii() -> None:
    assert refused(b"\x00OOP \xff").reply == BAD_SYNTAX


def test_order_http_before_strict_ascii_and_length() -> None:
    line = b"GET /\xff" + b"x" * 100 + b" HTTP/1.1"
    assert refused(line, max_length=10).reply == HTTP_REFUSED


def test_order_strict_ascii_before_length() -> None:
    assert refused(b"NOOP \xff" + b"x" * 100, max_length=10).reply == STRICT_ASCII


def test_order_length_before_refused_handshake() -> None:
    line = b"NOOP " + b"x" * 100
    assert refused(line, max_length=10, handshake_refused=True).reply == TOO_LONG


def test_order_refused_handshake_before_starttls_required() -> None:
    refusal = refused(b"MAIL FROM:<a@b.c>", handshake_refused=True, starttls_required=True)
    assert refusal.reply == INSECURE


def test_order_starttls_required_before_call_limit_which_is_not_spent() -> None:
    gate = make_gate(command_call_limit=1)
    assert refused(b"RSET", gate, starttls_required=True).reply == STARTTLS_FIRST
    assert gate.calls_left["RSET"] == 1
    assert screen(b"RSET", gate) == ReceivedCommand("RSET", None)


def test_order_call_limit_before_unknown_verb() -> None:
    gate = make_gate(command_call_limit=1)
    assert refused(b"XYZZY", gate).reply == '500 Error: command "XYZZY" not recognized'
    assert gate.bogus_left == BOGUS_LIMIT - 1
    refusal = refused(b"XYZZY", gate)
    assert refusal.reply == "421 4.7.0 XYZZY sent too many times"
    assert refusal.close
    assert gate.bogus_left == BOGUS_LIMIT - 1  # the call limit answered first


# --- properties ----------------------------------------------------------------------------

FLAGS = st.fixed_dictionaries(
    {
        "max_length": st.integers(0, 600),
        "bare_lf": st.booleans(),
        "utf8": st.booleans(),
        "handshake_refused": st.booleans(),
        "starttls_required": st.booleans(),
    }
)
GATE_OPTIONS = st.fixed_dictionaries(
    {
        "command_call_limit": st.none() | st.integers(0, 3),
        "bogus_limit": st.integers(1, BOGUS_LIMIT),
        "bare_newline": st.sampled_from(list(BareNewlinePolicy)),
    }
)
LINES = st.binary(max_size=80) | st.builds(
    lambda verb, rest: verb + rest,
    st.sampled_from([b"NOOP", b"GET", b"BDAT", b"MAIL", b"xyzzy", b"QUIT", b""]),
    st.binary(max_size=40),
)


@given(st.lists(LINES, min_size=1, max_size=8), GATE_OPTIONS, FLAGS)
def test_every_line_gives_a_command_or_a_valid_reply(
    lines: list[bytes], options: dict[str, Any], flags: dict[str, Any]
) -> None:
    gate = make_gate(**options)
    for line in lines:
        result = gate.screen(line, **flags)
        if isinstance(result, ReceivedCommand):
            assert result.verb in VERBS
            continue
        assert isinstance(result, CommandRefusal)
        assert REPLY_LINE.match(result.reply), result.reply
        assert result.log_reason is None or PRINTABLE.match(result.log_reason)


CONTROLS = st.sampled_from([bytes([code]) for code in (*range(0x20), 0x7F)])
LETTERS = st.text(string.ascii_letters, min_size=1, max_size=12).map(str.encode)


CONTROL_VERBS = st.builds(lambda *parts: b"".join(parts), LETTERS, CONTROLS, LETTERS)


@given(CONTROL_VERBS, st.binary(max_size=20), GATE_OPTIONS, FLAGS)
def test_a_verb_with_a_control_character_is_never_echoed(
    verb: bytes, rest: bytes, options: dict[str, Any], flags: dict[str, Any]
) -> None:
    result = make_gate(**options).screen(verb + b" " + rest, **flags)
    assert isinstance(result, CommandRefusal)
    assert result.reply in (BAD_SYNTAX, BARE_NEWLINE)
    assert result.verb == ""


@given(LETTERS, FLAGS)
def test_an_unknown_verb_is_echoed_upper_cased(verb: bytes, flags: dict[str, Any]) -> None:
    flags = {**flags, "max_length": MAX, "handshake_refused": False, "starttls_required": False}
    result = make_gate().screen(verb, **flags)
    name = verb.upper().decode()
    if name in VERBS:
        assert result == ReceivedCommand(name, None)
    else:
        assert result == CommandRefusal(
            f'500 Error: command "{name}" not recognized',
            log_reason=f"unrecognised: {name}",
            verb=name,
        )


# --- MAIL parameters -----------------------------------------------------------------------

SYNTAX_ERROR = "501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"


def check_mail(options: list[str], **settings: Any) -> str | None:
    values: dict[str, Any] = {
        "size_limit": 1000,
        "smtputf8": False,
        "decode_data": False,
        "chunking": False,
        "dsn": False,
    }
    values.update(settings)
    return check_mail_parameters(options, SYNTAX_ERROR, **values)


@pytest.mark.parametrize(
    ("options", "settings", "reply"),
    [
        ([], {}, None),
        (["BODY=7BIT"], {}, None),
        (["BODY=8BITMIME"], {}, None),
        (["BODY=BINARYMIME"], {}, "501 Error: BODY can only be one of 7BIT, 8BITMIME"),
        (["BODY=BINARYMIME"], {"chunking": True}, None),
        (
            ["BODY=FOO"],
            {"chunking": True},
            "501 Error: BODY can only be one of 7BIT, 8BITMIME, BINARYMIME",
        ),
        (
            ["BODY=7BIT"],
            {"decode_data": True},
            "555 MAIL FROM parameters not recognized or not implemented",
        ),
        (["SMTPUTF8"], {"smtputf8": True}, None),
        (["SMTPUTF8"], {}, "501 Error: SMTPUTF8 disabled"),
        (["SMTPUTF8=YES"], {"smtputf8": True}, "501 Error: SMTPUTF8 takes no arguments"),
        (["SIZE=1000"], {}, None),
        (["SIZE=1001"], {}, "552 Error: message size exceeds fixed maximum message size"),
        (["SIZE=1001"], {"size_limit": None}, None),
        (["SIZE=1001"], {"size_limit": 0}, None),
        (["SIZE=ABC"], {}, SYNTAX_ERROR),
        (["SIZE"], {}, SYNTAX_ERROR),
        (["SIZE=\u0661"], {}, SYNTAX_ERROR),  # a digit, but not an ASCII one
        (["RET=FULL", "ENVID=X"], {"dsn": True}, None),
        (["RET=FULL"], {}, "555 MAIL FROM parameters not recognized or not implemented"),
        (["FOO=BAR"], {"dsn": True}, "555 MAIL FROM parameters not recognized or not implemented"),
        # The first rule broken answers.
        (["SMTPUTF8=X", "BODY=FOO"], {}, "501 Error: BODY can only be one of 7BIT, 8BITMIME"),
        (["SIZE=X", "SMTPUTF8"], {}, "501 Error: SMTPUTF8 disabled"),
        (["FOO", "SIZE=X"], {}, SYNTAX_ERROR),
    ],
)
def test_mail_parameters(options: list[str], settings: dict[str, Any], reply: str | None) -> None:
    assert check_mail(options, **settings) == reply


@pytest.mark.parametrize(
    ("parameters", "result"),
    [
        ({}, MailDSN(None, None)),
        ({"RET": "hdrs"}, MailDSN("HDRS", None)),
        ({"RET": "FULL", "ENVID": "abc+2B"}, MailDSN("FULL", "abc+")),
        ({"RET": "BAD"}, "501 5.5.4 Error: RET must be FULL or HDRS: 'BAD'"),
        ({"RET": None}, "501 5.5.4 Error: RET needs a value"),
        ({"ENVID": "x" * 101}, "501 5.5.4 Error: ENVID longer than 100 characters"),
    ],
)
def test_mail_dsn(parameters: dict[str, str | None], result: MailDSN | str) -> None:
    assert parse_mail_dsn(parameters) == result


# --- RCPT parameters ------------------------------------------------------------------------

UNKNOWN_RCPT = "555 RCPT TO parameters not recognized or not implemented"


@pytest.mark.parametrize(
    ("parameters", "dsn", "result"),
    [
        ({}, False, None),
        ({}, True, None),
        ({"NOTIFY": "SUCCESS"}, False, UNKNOWN_RCPT),
        ({"FOO": None}, True, UNKNOWN_RCPT),
        ({"NOTIFY": "BAD", "FOO": None}, True, UNKNOWN_RCPT),  # unknown before malformed
        ({"NOTIFY": "success,Failure"}, True, RcptDSN(frozenset({"SUCCESS", "FAILURE"}), None)),
        ({"NOTIFY": "NEVER"}, True, RcptDSN(frozenset(), None)),
        (
            {"ORCPT": "rfc822;a@example.com"},
            True,
            RcptDSN(None, OriginalRecipient("rfc822", "a@example.com")),
        ),
        (
            {"NOTIFY": "NEVER,SUCCESS"},
            True,
            "501 5.5.4 Error: NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY: 'NEVER,SUCCESS'",
        ),
        ({"ORCPT": "a@b"}, True, "501 5.5.4 Error: ORCPT is not addr-type;address: 'a@b'"),
    ],
)
def test_rcpt_parameters(
    parameters: dict[str, str | None], dsn: bool, result: RcptDSN | str | None
) -> None:
    assert parse_rcpt_parameters(parameters, dsn=dsn) == result


@given(
    st.dictionaries(
        st.sampled_from(["NOTIFY", "ORCPT", "RET", "ENVID"]), st.none() | st.text(max_size=30)
    )
)
def test_dsn_error_replies_are_single_printable_lines(parameters: dict[str, str | None]) -> None:
    for result in (
        parse_mail_dsn(parameters),
        parse_rcpt_parameters(parameters, dsn=True),
    ):
        if isinstance(result, str):
            assert "\r" not in result
            assert "\n" not in result
            assert REPLY_LINE.match(result.encode("ascii", "replace").decode())


def test_printable_replaces_control_characters() -> None:
    assert printable("a\r\nb\x00c\x7fé") == "a??b?c?é"


# --- the client's octets as text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "utf8", "text"),
    [
        (b"", False, ""),
        (b"anne@example.com", False, "anne@example.com"),
        (b"anne@example.com", True, "anne@example.com"),
        ("jörg".encode(), False, None),
        ("jörg".encode(), True, "jörg"),
        (b"\xff\x80", True, "\udcff\udc80"),  # kept for the parsers to refuse
        (b"\x7f\x00", False, "\x7f\x00"),  # ASCII: controls are the parsers' concern
    ],
)
def test_decode_text(data: bytes, utf8: bool, text: str | None) -> None:
    assert decode_text(data, utf8=utf8) == text


def test_strict_ascii_is_aiosmtpds_reply() -> None:
    assert STRICT_ASCII == "500 Error: strict ASCII mode"


@given(st.binary(max_size=40), st.booleans())
def test_decoded_text_encodes_back_to_the_octets(data: bytes, utf8: bool) -> None:
    text = decode_text(data, utf8=utf8)
    if text is None:
        assert not utf8
        assert not data.isascii()
    else:
        assert text.encode("utf-8" if utf8 else "ascii", "surrogateescape") == data
