"""smtpwire.common.server_commands in memory: each command's refusals (aiosmtpd's
texts, byte for byte), the order of their checks, EHLO's and HELP's replies.  A
whole session decided by these rules is test_classic_session.py's."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpwire.common.data import DataViolation
from smtpwire.common.mail_parameters import BdatCommand
from smtpwire.common.server_commands import (
    BARE_NEWLINE_IN_DATA,
    MALFORMED_ADDRESS,
    TOO_MUCH_DATA,
    CommandSyntax,
    EhloOffer,
    ParsedPath,
    VerifyRequest,
    argument_refusal,
    bdat_refusal,
    check_mail,
    check_rcpt,
    data_refusal,
    ehlo_offer,
    help_reply,
    message_refusal,
    path_syntax_error,
    rcpt_sequence_refusal,
    read_bdat,
    read_path,
    read_vrfy,
    starttls_refusal,
)
from smtpwire.common.server_rules import MailDSN, RcptDSN

REPLY_LINE = re.compile(r"[2-5][0-9]{2} [^\r\n]*\Z")
MAIL_SYNTAX = "501 Syntax: MAIL FROM: <address>"
MAIL_SYNTAX_EHLO = "501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
RCPT_SYNTAX_EHLO = "501 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
NEED_MAIL = "503 Error: need MAIL command"
NEED_RCPT = "503 Error: need RCPT command"
NESTED_MAIL = "503 Error: nested MAIL command"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
BINARYMIME_NEEDS_BDAT = "503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA"
DATA_AFTER_BDAT = "503 5.5.1 Error: DATA after BDAT in the same transaction"


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "argument", "reply"),
    [
        ("HELO", None, "501 Syntax: HELO hostname"),
        ("HELO", "", "501 Syntax: HELO hostname"),
        ("HELO", "client.example", None),
        ("EHLO", None, "501 Syntax: EHLO hostname"),
        ("LHLO", "", "501 Syntax: LHLO hostname"),
        ("VRFY", None, "501 Syntax: VRFY <address>"),
        ("VRFY", "anne", None),
        ("QUIT", "now", "501 Syntax: QUIT"),
        ("QUIT", None, None),
        ("QUIT", "", None),  # an argument of spaces only: no argument
        ("RSET", "x", "501 Syntax: RSET"),
        ("DATA", "x", "501 Syntax: DATA"),
        ("STARTTLS", "x", "501 Syntax: STARTTLS"),
        ("NOOP", "anything", None),  # NOOP takes whatever it is given
        ("XYZZY", None, None),  # a subclass's command: no rule here
    ],
)
def test_argument_refusal(verb: str, argument: str | None, reply: str | None) -> None:
    assert argument_refusal(verb, argument) == reply


@pytest.mark.parametrize(
    ("argument", "available", "reply"),
    [
        (None, True, None),
        (None, False, "454 TLS not available"),
        ("x", True, "501 Syntax: STARTTLS"),
        ("x", False, "501 Syntax: STARTTLS"),  # the syntax first
    ],
)
def test_starttls_refusal(argument: str | None, available: bool, reply: str | None) -> None:
    assert starttls_refusal(argument, available=available) == reply


# --- EHLO ---------------------------------------------------------------------------------


def offer(**settings: Any) -> EhloOffer:
    values: dict[str, Any] = {
        "command_length": 512,
        "data_size_limit": 33554432,
        "eight_bit_mime": True,
        "smtputf8": False,
        "starttls": False,
        "auth_line": None,
        "keywords": (),
    }
    values.update(settings)
    return ehlo_offer("mx.example", **values)


@pytest.mark.parametrize(
    ("settings", "lines", "mail_length"),
    [
        ({}, ["250-mx.example", "250-SIZE 33554432", "250-8BITMIME"], 538),
        ({"data_size_limit": None}, ["250-mx.example", "250-8BITMIME"], 512),
        ({"data_size_limit": 0}, ["250-mx.example", "250-8BITMIME"], 512),
        ({"eight_bit_mime": False}, ["250-mx.example", "250-SIZE 33554432"], 538),
        (
            {"smtputf8": True},
            ["250-mx.example", "250-SIZE 33554432", "250-8BITMIME", "250-SMTPUTF8"],
            548,
        ),
        (
            {"data_size_limit": None, "smtputf8": True, "command_length": 100},
            ["250-mx.example", "250-8BITMIME", "250-SMTPUTF8"],
            110,
        ),
    ],
)
def test_ehlo_offer_and_the_mail_line_it_makes_room_for(
    settings: dict[str, Any], lines: list[str], mail_length: int
) -> None:
    assert offer(**settings) == EhloOffer(lines, mail_length)


def test_ehlo_keywords_in_aiosmtpds_order_then_the_further_ones() -> None:
    result = offer(
        smtputf8=True,
        starttls=True,
        auth_line="250-AUTH LOGIN PLAIN",
        keywords=["PIPELINING", "CHUNKING"],
    )
    assert result.lines == [
        "250-mx.example",
        "250-SIZE 33554432",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-STARTTLS",
        "250-AUTH LOGIN PLAIN",
        "250-PIPELINING",
        "250-CHUNKING",
    ]


# --- HELP -------------------------------------------------------------------------------------

DOCUMENTED = {
    "HELO": CommandSyntax("HELO hostname"),
    "MAIL": CommandSyntax("MAIL FROM: <address>", " [SP <mail-parameters>]"),
    "NOOP": CommandSyntax("NOOP [ignored]"),
}
LIST = "Supported commands: HELO MAIL NOOP"


@pytest.mark.parametrize(
    ("topic", "extended", "reply"),
    [
        (None, False, f"250 {LIST}"),
        ("", True, f"250 {LIST}"),
        ("mail", False, "250 Syntax: MAIL FROM: <address>"),
        ("MAIL", True, "250 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"),
        ("helo", True, "250 Syntax: HELO hostname"),  # nothing to add after EHLO
        ("XYZZY", False, f"501 {LIST}"),
    ],
)
def test_help_reply(topic: str | None, extended: bool, reply: str) -> None:
    assert help_reply(topic, DOCUMENTED, extended=extended) == reply


def test_help_lists_the_documented_verbs_sorted() -> None:
    documented = {"VRFY": CommandSyntax("VRFY <address>"), "AUTH": CommandSyntax("AUTH <m>")}
    assert help_reply(None, documented, extended=False) == "250 Supported commands: AUTH VRFY"


# --- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "extended", "reply"),
    [
        ("MAIL FROM:", False, MAIL_SYNTAX),
        ("MAIL FROM:", True, MAIL_SYNTAX_EHLO),
        ("RCPT TO:", True, RCPT_SYNTAX_EHLO),
        ("RCPT TO:", False, "501 Syntax: RCPT TO: <address>"),
    ],
)
def test_path_syntax_error(command: str, extended: bool, reply: str) -> None:
    assert path_syntax_error(command, extended=extended) == reply


def mail_path(argument: str | None, **settings: Any) -> ParsedPath | str:
    values: dict[str, Any] = {"utf8": False, "max_local_part": None, "extended": True}
    values.update(settings)
    return read_path(argument, "FROM:", MAIL_SYNTAX_EHLO, **values)


@pytest.mark.parametrize(
    ("argument", "result"),
    [
        ("FROM:<anne@example.com>", ParsedPath("anne@example.com", [], {})),
        ("from: <anne@example.com>", ParsedPath("anne@example.com", [], {})),
        ("FROM:<>", ParsedPath("<>", [], {})),
        (
            "FROM:<anne@example.com> size=10 ENVID=Ab+2B",
            ParsedPath(
                "anne@example.com", ["SIZE=10", "ENVID=AB+2B"], {"SIZE": "10", "ENVID": "Ab+2B"}
            ),
        ),
        ("FROM:<anne@example.com> BODY", ParsedPath("anne@example.com", ["BODY"], {"BODY": None})),
        (None, MAIL_SYNTAX_EHLO),
        ("", MAIL_SYNTAX_EHLO),
        ("TO:<anne@example.com>", MAIL_SYNTAX_EHLO),
        ("FROM:", MAIL_SYNTAX_EHLO),
        ("FROM:   ", MAIL_SYNTAX_EHLO),
        ("FROM:<anne@example.com> =x", MAIL_SYNTAX_EHLO),  # a malformed parameter
        ("FROM:Anne <anne@example.com>", MAIL_SYNTAX_EHLO),  # aiosmtpd: word, then more
        ("FROM:<anne@@example.com>", MALFORMED_ADDRESS),
        ("FROM:<anne@example.com", MALFORMED_ADDRESS),
    ],
)
def test_read_path(argument: str | None, result: ParsedPath | str) -> None:
    assert mail_path(argument) == result


def test_parameters_only_after_ehlo() -> None:
    assert mail_path("FROM:<a@example.com> SIZE=1", extended=False) == MAIL_SYNTAX_EHLO
    assert mail_path("FROM:<a@example.com>", extended=False) == ParsedPath("a@example.com", [], {})


def test_the_null_path_is_for_mail_only() -> None:
    rcpt = read_path(
        "TO:<>", "TO:", RCPT_SYNTAX_EHLO, utf8=False, max_local_part=None, extended=True
    )
    assert rcpt == MALFORMED_ADDRESS


def test_a_utf8_address_needs_smtputf8() -> None:
    argument = "FROM:<jörg@example.com>"
    assert mail_path(argument) == MALFORMED_ADDRESS
    assert mail_path(argument, utf8=True) == ParsedPath("jörg@example.com", [], {})


def test_the_local_part_limit() -> None:
    argument = f"FROM:<{'a' * 11}@example.com>"
    assert mail_path(argument, max_local_part=10) == MALFORMED_ADDRESS
    assert isinstance(mail_path(argument, max_local_part=11), ParsedPath)


@given(st.none() | st.text(max_size=60), st.booleans(), st.booleans())
def test_a_path_is_read_or_refused_with_one_of_two_replies(
    argument: str | None, utf8: bool, extended: bool
) -> None:
    result = mail_path(argument, utf8=utf8, extended=extended)
    if isinstance(result, str):
        assert result in (MAIL_SYNTAX_EHLO, MALFORMED_ADDRESS)
    else:
        assert result.address
        assert extended or not result.options


@pytest.mark.parametrize(
    ("argument", "result"),
    [
        ("anne", VerifyRequest("anne")),
        ("<anne@example.com>", VerifyRequest("anne@example.com")),
        ("  <anne@example.com> and more", VerifyRequest("anne@example.com")),
        ("anne@example.com whatever", VerifyRequest("anne@example.com")),
        (None, "501 Syntax: VRFY <address>"),
        ("", "501 Syntax: VRFY <address>"),
        ("<>", "502 Could not VRFY <>"),
        ("<a@@b>", "502 Could not VRFY <a@@b>"),
        ("<a\x00b>", "502 Could not VRFY <a?b>"),  # never echoes a control character
    ],
)
def test_read_vrfy(argument: str | None, result: VerifyRequest | str) -> None:
    assert read_vrfy(argument, utf8=False) == result


# --- MAIL and RCPT --------------------------------------------------------------------------


def mail(options: list[str], mail_from: str | None = None, *, dsn: bool = False) -> Any:
    """check_mail's composition; its parameter rules are test_server_rules's."""
    parameters = {
        keyword: value or None
        for keyword, _, value in (option.partition("=") for option in options)
    }
    path = ParsedPath("anne@example.com", [option.upper() for option in options], parameters)
    return check_mail(
        path,
        MAIL_SYNTAX_EHLO,
        mail_from=mail_from,
        size_limit=1000,
        smtputf8=False,
        decode_data=False,
        chunking=False,
        dsn=dsn,
    )


@pytest.mark.parametrize(
    ("options", "mail_from", "dsn", "result"),
    [
        ([], None, False, None),
        ([], "", False, None),  # an empty sender is no transaction
        ([], "<>", False, NESTED_MAIL),  # the null sender is one
        ([], "a@example.com", False, NESTED_MAIL),
        (["SIZE=X"], "a@example.com", False, NESTED_MAIL),  # sequence before parameters
        (["SIZE=X"], None, False, MAIL_SYNTAX_EHLO),
        (["SIZE=1001"], None, False, "552 Error: message size exceeds fixed maximum message size"),
        (["RET=FULL"], None, False, "555 MAIL FROM parameters not recognized or not implemented"),
        ([], None, True, MailDSN(None, None)),
        (["RET=hdrs", "ENVID=Ab+2B"], None, True, MailDSN("HDRS", "Ab+")),
        (["RET=BAD"], None, True, "501 5.5.4 Error: RET must be FULL or HDRS: 'BAD'"),
        (["SIZE=X", "RET=BAD"], None, True, MAIL_SYNTAX_EHLO),  # parameters first
    ],
)
def test_check_mail(options: list[str], mail_from: str | None, dsn: bool, result: Any) -> None:
    assert mail(options, mail_from, dsn=dsn) == result


@pytest.mark.parametrize(
    ("mail_from", "reply"), [(None, NEED_MAIL), ("", NEED_MAIL), ("<>", None), ("a@b.c", None)]
)
def test_rcpt_needs_a_sender(mail_from: str | None, reply: str | None) -> None:
    assert rcpt_sequence_refusal(mail_from) == reply


def rcpt(parameters: dict[str, str | None], recipients: int = 0, **settings: Any) -> Any:
    values: dict[str, Any] = {"rcpt_limit": 100, "dsn": False}
    values.update(settings)
    options = [
        key if value is None else f"{key}={value}".upper() for key, value in parameters.items()
    ]
    path = ParsedPath("bart@example.com", options, parameters)
    return check_rcpt(path, recipients=recipients, **values)


def test_check_rcpt() -> None:
    assert rcpt({}) is None
    assert rcpt({}, recipients=99) is None
    assert rcpt({}, recipients=100) == TOO_MANY_RECIPIENTS
    assert rcpt({"NOTIFY": "NEVER"}, dsn=True) == RcptDSN(frozenset(), None)
    unknown = "555 RCPT TO parameters not recognized or not implemented"
    assert rcpt({"NOTIFY": "NEVER"}) == unknown
    # The parameters answer before the cap.
    assert rcpt({"FOO": None}, recipients=100, dsn=True) == unknown
    assert rcpt({"NOTIFY": "BAD"}, recipients=100, dsn=True) == (
        "501 5.5.4 Error: NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY: 'BAD'"
    )


# --- DATA and BDAT ----------------------------------------------------------------------------


def data(argument: str | None = None, **facts: Any) -> str | None:
    values: dict[str, Any] = {"has_recipients": True, "body_type": None, "bdat_started": False}
    values.update(facts)
    return data_refusal(argument, **values)


@pytest.mark.parametrize(
    ("argument", "facts", "reply"),
    [
        (None, {}, None),
        (None, {"body_type": "8BITMIME"}, None),
        (None, {"has_recipients": False}, NEED_RCPT),
        ("x", {}, "501 Syntax: DATA"),
        (None, {"body_type": "BINARYMIME"}, BINARYMIME_NEEDS_BDAT),
        (None, {"bdat_started": True}, DATA_AFTER_BDAT),
        # The order: recipients, syntax, BINARYMIME, BDAT.
        ("x", {"has_recipients": False, "bdat_started": True}, NEED_RCPT),
        ("x", {"body_type": "BINARYMIME"}, "501 Syntax: DATA"),
        (None, {"body_type": "BINARYMIME", "bdat_started": True}, BINARYMIME_NEEDS_BDAT),
    ],
)
def test_data_refusal(argument: str | None, facts: dict[str, Any], reply: str | None) -> None:
    assert data(argument, **facts) == reply


@pytest.mark.parametrize(
    ("argument", "result"),
    [
        ("10", BdatCommand(10, False)),
        ("0 last", BdatCommand(0, True)),
        (None, "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("", "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("ten", "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("10 FIRST", "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("10 LAST more", "501 5.5.4 Syntax: BDAT <size> [LAST]"),
    ],
)
def test_read_bdat(argument: str | None, result: BdatCommand | str) -> None:
    assert read_bdat(argument) == result


def bdat(size: int = 10, **facts: Any) -> str | None:
    values: dict[str, Any] = {
        "greeted": True,
        "auth_needed": False,
        "has_recipients": True,
        "received": 0,
        "size_limit": 100,
    }
    values.update(facts)
    return bdat_refusal(size, **values)


@pytest.mark.parametrize(
    ("size", "facts", "reply"),
    [
        (10, {}, None),
        (100, {}, None),
        (60, {"received": 40}, None),
        (61, {"received": 40}, TOO_MUCH_DATA),
        (101, {"size_limit": None}, None),
        (101, {"size_limit": 0}, None),
        (10, {"greeted": False}, "503 Error: send HELO first"),
        (10, {"auth_needed": True}, "530 5.7.0 Authentication required"),
        (10, {"has_recipients": False}, NEED_RCPT),
        # The order: greeting, authentication, recipients, size.
        (101, {"greeted": False, "auth_needed": True}, "503 Error: send HELO first"),
        (101, {"auth_needed": True, "has_recipients": False}, "530 5.7.0 Authentication required"),
        (101, {"has_recipients": False}, NEED_RCPT),
    ],
)
def test_bdat_refusal(size: int, facts: dict[str, Any], reply: str | None) -> None:
    assert bdat(size, **facts) == reply


@pytest.mark.parametrize(
    ("violation", "reply"),
    [
        (DataViolation.TOO_LARGE, "552 Error: Too much mail data"),
        (DataViolation.LINE_TOO_LONG, "500 Line too long (see RFC5321 4.5.3.1.6)"),
        (DataViolation.BARE_LF, "550 5.5.2 Error: bare <CR> or <LF> in message data"),
        (DataViolation.BARE_CR, "550 5.5.2 Error: bare <CR> or <LF> in message data"),
    ],
)
def test_message_refusal(violation: DataViolation, reply: str) -> None:
    assert message_refusal(violation) == reply


def test_bdat_and_data_refuse_an_oversized_message_alike() -> None:
    assert bdat(101) == message_refusal(DataViolation.TOO_LARGE) == TOO_MUCH_DATA
    assert message_refusal(DataViolation.BARE_LF) == BARE_NEWLINE_IN_DATA


@given(st.sampled_from(list(DataViolation)))
def test_every_refusal_is_one_reply_line(violation: DataViolation) -> None:
    assert REPLY_LINE.match(message_refusal(violation))
