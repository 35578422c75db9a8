"""Tests written to kill mutants of smtpwire.common that survived tests/common
(issue 20; ``nox -s mutate``, docs/mutation.md).  Each pins a fact a user or the
server's adapter relies on but no other test looked at."""

from __future__ import annotations

import pytest

from smtpwire.common.data import BareNewlinePolicy, DataViolation
from smtpwire.common.server_rules import (
    STRICT_ASCII,
    CommandGate,
    CommandRefusal,
    ReceivedCommand,
)
from smtpwire.common.server_session import RcptRequest, ServerSession, SessionRules
from support.session_host import Facts, Host

VERBS = frozenset({"EHLO", "HELO", "MAIL", "RCPT", "DATA", "NOOP", "QUIT", "STARTTLS", "AUTH"})


def test_a_crlf_line_passes_a_rejecting_gate_when_bare_lf_is_not_said() -> None:
    """``bare_lf`` defaults to False: a caller that does not pass it has a line that
    ended with CRLF (mutant: the default flipped refuses every command)."""
    gate = CommandGate(VERBS, bare_newline=BareNewlinePolicy.REJECT)
    assert gate.screen(b"NOOP", max_length=512) == ReceivedCommand("NOOP", None)


def test_refusal_before_starttls_names_the_verb() -> None:
    """The verb of a refused command is what the adapter's enhanced status codes
    are chosen by (mutant: the verb dropped from the 530 refusal)."""
    gate = CommandGate(VERBS)
    refusal = gate.screen(b"MAIL FROM:<a@example.com>", max_length=512, starttls_required=True)
    assert refusal == CommandRefusal("530 Must issue a STARTTLS command first", verb="MAIL")


@pytest.mark.parametrize("verb", ["AUTH", "MAIL", "RCPT", "DATA", "HELO"])
def test_only_the_commands_leading_to_tls_pass_before_starttls(verb: str) -> None:
    gate = CommandGate(VERBS)
    refusal = gate.screen(f"{verb} x".encode(), max_length=512, starttls_required=True)
    assert isinstance(refusal, CommandRefusal)
    assert refusal.reply == "530 Must issue a STARTTLS command first"


def test_the_last_unrecognised_command_names_its_verb() -> None:
    """The refusal that ends the session still carries the verb (mutant: dropped)."""
    gate = CommandGate(VERBS, bogus_limit=2)
    first = gate.screen(b"XYZZY", max_length=512)
    assert isinstance(first, CommandRefusal)
    assert (first.verb, first.close) == ("XYZZY", False)
    last = gate.screen(b"PLUGH", max_length=512)
    assert last == CommandRefusal(
        "502 5.5.1 Too many unrecognized commands, goodbye.",
        close=True,
        log_reason="unrecognised: PLUGH; too many bogus commands",
        verb="PLUGH",
    )


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("20", "command_call_limit must be int or Dict[str, int]"),
        (True, "command_call_limit must be int or Dict[str, int]"),
        ({"MAIL": "3"}, "All command_call_limit values must be int"),
    ],
)
def test_bad_call_limits_are_refused_with_aiosmtpds_message(limit: object, message: str) -> None:
    """aiosmtpd's exact TypeError texts (users' tests match on them)."""
    with pytest.raises(TypeError) as caught:
        CommandGate(VERBS, command_call_limit=limit)  # type: ignore[arg-type]
    assert str(caught.value) == message


# -- ServerSession ------------------------------------------------------------------------


def machine(rules: SessionRules | None = None, **settings: object) -> ServerSession:
    """A session after EHLO (unless ``session`` is given)."""
    settings.setdefault("session", Facts("client.example", extended_smtp=True))
    return ServerSession(VERBS | {"BDAT"}, Host(**settings), rules or SessionRules())  # type: ignore[arg-type]


def host_of(session: ServerSession) -> Host:
    host = session._host
    assert isinstance(host, Host)
    return host


def test_a_fresh_session_holds_no_state() -> None:
    session = machine()
    assert session.verb is None
    assert (session.bdat_received, session.bdat_started) == (0, False)
    assert session.encrypted is False
    assert session.handshake_refused is False


def test_the_line_reader_takes_a_command_as_long_as_the_command_limit_allows() -> None:
    """The reader's limit is the longer of a message line and a command line plus
    its CRLF (mutants: the 2 changed)."""
    session = machine(command_size_limit=2000, line_length_limit=1001)
    assert session.inbound.max_line_length == 2002
    assert session.line_limits["HELO"] == 2000  # a verb without a limit of its own


def test_the_mail_line_limit_announced_by_ehlo_applies_only_in_an_ehlo_session() -> None:
    session = machine()
    session.ehlo_lines(None, [])
    longer = session.line_limits["MAIL"]
    assert longer > 512
    line = b"MAIL FROM:<" + b"a" * (520 - 24) + b"@example.com>"
    assert 512 < len(line) <= longer
    assert isinstance(session.screen(line), ReceivedCommand)
    host_of(session).session.extended_smtp = False  # HELO after EHLO
    assert session.screen(line) == CommandRefusal("500 Command line too long", verb="MAIL")


def test_screen_records_the_verb_and_takes_utf8_under_smtputf8() -> None:
    session = machine(enable_SMTPUTF8=True)
    screened = session.screen("MAIL FROM:<jörg@example.com> SMTPUTF8".encode())
    assert screened == ReceivedCommand("MAIL", "FROM:<jörg@example.com> SMTPUTF8")
    assert session.verb == "MAIL"
    plain = machine()
    assert plain.screen("MAIL FROM:<jörg@example.com>".encode()) == CommandRefusal(
        STRICT_ASCII, verb="MAIL"
    )
    assert plain.verb == "MAIL"


def test_ehlo_lines_carry_the_auth_line() -> None:
    lines = machine().ehlo_lines("250-AUTH LOGIN PLAIN", [])
    assert "250-AUTH LOGIN PLAIN" in lines


def test_starttls_with_an_argument_is_a_syntax_error() -> None:
    session = machine(rules=SessionRules(tls_offered=True))
    assert session.starttls(None) is None
    assert session.starttls("now") == "501 Syntax: STARTTLS"


def test_tls_established_accepts_by_default() -> None:
    session = machine(rules=SessionRules(tls_offered=True, require_starttls=True))
    session.tls_established()
    assert session.screen(b"NOOP") == ReceivedCommand("NOOP", None)


def test_syntax_errors_name_the_command_and_the_parameters_after_ehlo() -> None:
    session = machine()
    mail_error = "501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
    assert session.answer(ReceivedCommand("MAIL", "FROM:<a@example.com> SIZE=abc")) == mail_error
    assert session.answer(ReceivedCommand("MAIL", "FROM:<a@example.com>")) == "250 OK"
    rcpt_error = "501 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
    assert session.answer(ReceivedCommand("RCPT", "TO:")) == rcpt_error


def test_the_local_part_limit_applies() -> None:
    session = machine(local_part_limit=5)
    assert session.answer(ReceivedCommand("MAIL", "FROM:<abcde@example.com>")) == "250 OK"
    refused = machine(local_part_limit=5).answer(ReceivedCommand("MAIL", "FROM:<abcdef@ex.com>"))
    assert refused is not None
    assert refused.startswith("5")


def test_smtputf8_on_mail_is_noted_in_the_envelope() -> None:
    session = machine(enable_SMTPUTF8=True)
    request = session.mail("FROM:<a@example.com> SMTPUTF8")
    assert isinstance(request, tuple)
    assert request.smtp_utf8 is True
    session.note_mail_parameters(request)
    assert host_of(session).envelope.smtp_utf8 is True
    plain = session.mail("FROM:<a@example.com>")
    assert isinstance(plain, tuple)
    assert plain.smtp_utf8 is False
    session.note_mail_parameters(plain)
    assert host_of(session).envelope.smtp_utf8 is False


def test_a_decoding_server_takes_no_body_parameter() -> None:
    refused = machine(rules=SessionRules(decode_data=True)).mail("FROM:<a@ex.com> BODY=8BITMIME")
    assert refused == "555 MAIL FROM parameters not recognized or not implemented"
    assert isinstance(machine().mail("FROM:<a@ex.com> BODY=8BITMIME"), tuple)


def test_rcpt_dsn_kept_only_for_a_25x_text_status() -> None:
    session = machine(rules=SessionRules(dsn=True))
    assert session.answer(ReceivedCommand("MAIL", "FROM:<a@example.com>")) == "250 OK"
    assert session.answer(ReceivedCommand("RCPT", "TO:<b@example.com> NOTIFY=SUCCESS")) == "250 OK"
    assert set(host_of(session).envelope.rcpt_dsn) == {"b@example.com"}
    request = session.rcpt("TO:<c@example.com> NOTIFY=FAILURE")
    assert isinstance(request, RcptRequest)
    session.note_rcpt_dsn(request, 250)  # not a reply text: not an acceptance
    assert set(host_of(session).envelope.rcpt_dsn) == {"b@example.com"}
    session.note_rcpt_dsn(request, b"251 forwarded")
    assert set(host_of(session).envelope.rcpt_dsn) == {"b@example.com", "c@example.com"}


def test_data_is_refused_for_a_binarymime_message_and_taken_otherwise() -> None:
    session = machine()
    host_of(session).envelope.rcpt_tos.append("b@example.com")
    assert session.data(None) is None
    host_of(session).envelope.body_type = "BINARYMIME"
    assert session.data(None) is not None


@pytest.mark.parametrize(
    ("settings", "message", "violation"),
    [
        ({"data_size_limit": 10}, b"0123456789abcdef\r\n.\r\n", DataViolation.TOO_LARGE),
        ({"line_length_limit": 20}, b"x" * 40 + b"\r\n.\r\n", DataViolation.LINE_TOO_LONG),
        ({"data_size_limit": None}, b"x" * 100 + b"\r\n.\r\n", None),
    ],
)
def test_the_data_decoder_has_the_sessions_limits(
    settings: dict[str, object], message: bytes, violation: DataViolation | None
) -> None:
    decoder = machine(**settings).data_decoder()
    decoder.feed(message)
    assert decoder.done
    assert decoder.violation is violation


def test_bdat_counts_every_chunk_and_marks_the_first() -> None:
    session = machine(rules=SessionRules(chunking=True))
    host_of(session).envelope.rcpt_tos.append("b@example.com")
    step = session.bdat("3")
    assert not isinstance(step, str)
    assert step.first is True
    session.bdat_taken(3)
    again = session.bdat("4 LAST")
    assert not isinstance(again, str)
    assert again.first is False
    session.bdat_taken(4)
    assert (session.bdat_received, session.bdat_started) == (7, True)
    session.end_transaction()
    assert (session.bdat_received, session.bdat_started) == (0, False)
