"""Whole SMTP sessions driven through smtpwire.common's ServerSession in memory:
no event loop, no sockets.  A small host holds aiosmtpd-style session and envelope
facts; the driver below does what the asyncio adapter does with a hookless
handler (greetings, RSET, QUIT, DATA, BDAT, STARTTLS), and lets ServerSession
answer NOOP, MAIL and RCPT.  Reply texts are aiosmtpd 1.4.6's."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common.data import BareNewlinePolicy, DataDecoder
from smtpwire.common.server_commands import (
    BARE_NEWLINE_IN_DATA,
    TOO_MUCH_DATA,
    argument_refusal,
    message_refusal,
)
from smtpwire.common.server_input import ExactBytes
from smtpwire.common.server_rules import CommandRefusal, RcptDSN
from smtpwire.common.server_session import (
    TOO_MANY_ERRORS,
    BdatStep,
    RcptRequest,
    ServerSession,
    SessionRules,
)
from support.session_host import Envelope, Facts, Host

HOSTNAME = "mx.example"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
HELO_FIRST = "503 Error: send HELO first"
NEED_MAIL = "503 Error: need MAIL command"
NEED_RCPT = "503 Error: need RCPT command"
NESTED_MAIL = "503 Error: nested MAIL command"
LINE_TOO_LONG = "500 Command line too long"
BARE_NEWLINE = "500 5.5.2 Error: bare <CR> or <LF> received"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
STARTTLS_FIRST = "530 Must issue a STARTTLS command first"
INSECURE = "554 Command refused due to lack of security"
OK = "250 OK"
EHLO_PLAIN = [f"250-{HOSTNAME}", "250-SIZE 33554432", "250-8BITMIME", "250-PIPELINING", "250 HELP"]


Delivered = tuple[str | None, tuple[str, ...], bytes]
RcptDecision = Callable[[ServerSession, RcptRequest], str]


class Driver:
    """The adapter's part of a session, hookless, synchronous; replies and messages
    are recorded in order."""

    def __init__(
        self,
        rules: SessionRules | None = None,
        host: Host | None = None,
        *,
        handshake_accepted: bool = True,
        rcpt_decision: RcptDecision | None = None,
    ) -> None:
        self.rules = rules or SessionRules()
        self.host = host or Host()
        verbs = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "STARTTLS"}
        verbs |= {"BDAT"} if self.rules.chunking else set()
        self.machine = ServerSession(verbs, self.host, self.rules)
        self.handshake_accepted = handshake_accepted
        self.rcpt_decision = rcpt_decision
        self.replies: list[str] = []
        self.delivered: list[Delivered] = []
        self.closed = False
        self._message: Callable[[bytes], None] | None = None
        self._bdat_content = b""

    def feed(self, data: bytes) -> list[str]:
        """The client's bytes; the replies they caused."""
        start = len(self.replies)
        if not self.closed:
            reading = self._message is not None
            if not self.machine.receive_data(data) and reading:
                self._end_message()
            self._run()
        return self.replies[start:]

    def _run(self) -> None:
        machine = self.machine
        while not self.closed and self._message is None:
            screened = machine.next_command()
            if screened is None:
                return
            if isinstance(screened, CommandRefusal):
                self._reply(screened.reply)
                self.closed = self.closed or screened.close
                continue
            verb, argument = screened
            decided = verb == "RCPT" and self.rcpt_decision is not None
            reply = None if decided else machine.answer(screened)
            if reply is not None:
                self._reply(reply)
            else:
                getattr(self, f"_{verb.lower()}")(argument)

    def _reply(self, status: str) -> None:
        self.replies.append(status)
        if not self.closed and self.machine.count_reply(status):
            self.replies.append(TOO_MANY_ERRORS)
            self.closed = True

    def _reset(self) -> None:
        self.host.envelope = Envelope()
        self._bdat_content = b""
        self.machine.end_transaction()

    def _begin(self, decoder: ExactBytes | DataDecoder, finish: Callable[[bytes], None]) -> None:
        self._message = finish
        self.machine.inbound.begin_message(decoder)
        if not self.machine.inbound.reading_message:
            self._end_message()

    def _end_message(self) -> None:
        finish, self._message = self._message, None
        assert finish is not None
        finish(b"".join(self.machine.inbound.take_content()))

    def _deliver(self, content: bytes) -> None:
        envelope = self.host.envelope
        self.delivered.append((envelope.mail_from, tuple(envelope.rcpt_tos), content))
        self._reset()
        self._reply(OK)

    # -- the commands the adapter runs --------------------------------------------------

    def _helo(self, argument: str | None, extended: bool = False) -> None:
        verb = "EHLO" if extended else "HELO"
        if (refusal := argument_refusal(verb, argument)) is not None:
            self._reply(refusal)
            return
        self._reset()
        self.host.session.extended_smtp, self.host.session.host_name = extended, argument
        if not extended:
            self._reply(f"250 {HOSTNAME}")
            return
        keywords = ["PIPELINING"] + (["CHUNKING", "BINARYMIME"] if self.rules.chunking else [])
        keywords += ["DSN"] if self.rules.dsn else []
        for line in [*self.machine.ehlo_lines(None, keywords), "250 HELP"]:
            self._reply(line)

    def _ehlo(self, argument: str | None) -> None:
        self._helo(argument, extended=True)

    def _rset(self, argument: str | None) -> None:
        self._reset()
        self._reply(argument_refusal("RSET", argument) or OK)

    def _quit(self, argument: str | None) -> None:
        self._reply("221 Bye")
        self.closed = True

    def _rcpt(self, argument: str | None) -> None:
        assert self.rcpt_decision is not None
        machine = self.machine
        request = machine.transaction_refusal() or machine.rcpt(argument)
        if isinstance(request, str):
            self._reply(request)
            return
        status = self.rcpt_decision(machine, request)
        machine.note_rcpt_dsn(request, status)
        self._reply(status)

    def _starttls(self, argument: str | None) -> None:
        if (refusal := self.machine.starttls(argument)) is not None:
            self._reply(refusal)
            return
        self._reply("220 Ready to start TLS")
        self.machine.inbound.discard()  # plaintext after STARTTLS is never run
        self._reset()
        self.host.session = Facts()
        self.machine.tls_established(accepted=self.handshake_accepted)

    def _data(self, argument: str | None) -> None:
        machine = self.machine
        refusal = machine.transaction_refusal() or machine.data(argument)
        if refusal is not None:
            self._reply(refusal)
            return
        self._reply(START_DATA)
        decoder = machine.data_decoder()

        def finish(content: bytes) -> None:
            if decoder.violation is not None:
                self._reset()
                self._reply(message_refusal(decoder.violation))
            else:
                self._deliver(content)

        self._begin(decoder, finish)

    def _bdat(self, argument: str | None) -> None:
        step = self.machine.bdat(argument)
        if isinstance(step, str):
            self._reply(step)
            self.closed = True
            return
        if step.first:
            self._bdat_content = b""
        size = step.command.size
        if size:
            keep = step.refusal is None
            self._begin(ExactBytes(size, keep=keep), lambda chunk: self._chunk(step, chunk))
        else:
            self._chunk(step, b"")

    def _chunk(self, step: BdatStep, chunk: bytes) -> None:
        (size, last), endings = step.command, step.endings
        if step.refusal is not None:
            if self.host.envelope.rcpt_tos:
                self._reset()  # the transaction failed (RFC 3030 section 4.2)
            self._reply(step.refusal)
            return
        assert endings is not None
        self.machine.bdat_taken(size)
        self._bdat_content += endings.feed(chunk)
        if not last:
            self._reply(f"250 OK {size} octets received")
            return
        self._bdat_content += endings.flush()
        if endings.refused:
            self._reset()
            self._reply(BARE_NEWLINE_IN_DATA)
        else:
            self._deliver(self._bdat_content)


def drive(*feeds: bytes, rules: SessionRules | None = None, host: Host | None = None) -> Driver:
    driver = Driver(rules, host)
    for data in feeds:
        driver.feed(data)
    return driver


def after_ehlo(replies: list[str]) -> list[str]:
    """The replies after EHLO's (which ends with "250 HELP")."""
    return replies[replies.index("250 HELP") + 1 :]


# -- pipelining and chunk independence -----------------------------------------------------

BATCH = (
    b"EHLO client.example\r\nMAIL FROM:<anne@example.com>\r\n"
    b"RCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"
)
MESSAGE = b"Subject: hi\r\n\r\n..a stuffed dot\r\nbare\nLF\r\n.\r\nQUIT\r\n"
ANNE = ("anne@example.com", ("bob@example.org", "carol@example.org"))
DELIVERED: Delivered = (*ANNE, b"Subject: hi\r\n\r\n.a stuffed dot\r\nbare\nLF\r\n")
AB = ("a@example.com", ("b@example.com",))


def test_pipelined_batch_then_message_and_quit() -> None:
    driver = Driver()
    assert driver.feed(BATCH) == [*EHLO_PLAIN, OK, OK, OK, START_DATA]
    assert driver.feed(MESSAGE) == [OK, "221 Bye"]
    assert driver.delivered == [DELIVERED]
    assert driver.closed
    assert driver.host.envelope == Envelope()


def test_byte_at_a_time_gives_the_same_session() -> None:
    whole = drive(BATCH + MESSAGE)
    driver = Driver()
    for octet in BATCH + MESSAGE:
        driver.feed(bytes([octet]))
    assert driver.replies == whole.replies
    assert driver.delivered == whole.delivered == [DELIVERED]


CHUNKED_SESSION = (
    BATCH
    + MESSAGE[:-6]
    + b"MAIL FROM:<dan@example.com> BODY=BINARYMIME\r\nRCPT TO:<eve@example.org>\r\n"
    + b"BDAT 7\r\nline\r\n.BDAT 3 LAST\r\nx\nyNOOP\r\nMAIL FROM:<f@example.com>\r\n"
    + b"RCPT TO:<g@example.com>\r\nDATA\r\n.dot\r\n.\r\nQUIT\r\n"
)


@settings(max_examples=200)
@given(sizes=st.lists(st.integers(min_value=1, max_value=23), max_size=60))
def test_any_split_gives_the_same_session(sizes: list[int]) -> None:
    rules = SessionRules(chunking=True, bare_newline=BareNewlinePolicy.REJECT)
    whole = drive(CHUNKED_SESSION, rules=rules)
    # REJECT: the DATA message's bare LF refuses it; BINARYMIME keeps the BDAT one's.
    assert after_ehlo(whole.replies) == [
        *[OK, OK, OK, START_DATA, BARE_NEWLINE_IN_DATA, OK, OK, "250 OK 7 octets received"],
        *[OK, OK, OK, OK, START_DATA, OK, "221 Bye"],
    ]
    assert whole.delivered == [
        ("dan@example.com", ("eve@example.org",), b"line\r\n.x\ny"),
        ("f@example.com", ("g@example.com",), b"dot\r\n"),
    ]
    pieces: list[bytes] = []
    rest = CHUNKED_SESSION
    for size in sizes:
        pieces.append(rest[:size])
        rest = rest[size:]
    split = drive(*pieces, rest, rules=rules)
    assert split.replies == whole.replies
    assert split.delivered == whole.delivered


# -- sequence errors and parameters --------------------------------------------------------


def test_mail_before_helo_rcpt_before_mail_nested_mail_data_without_rcpt() -> None:
    driver = drive(
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        b"HELO client.example\r\nRCPT TO:<b@example.com>\r\nMAIL FROM:<a@example.com>\r\n"
        b"MAIL FROM:<c@example.com>\r\nDATA\r\nRSET\r\nRCPT TO:<b@example.com>\r\n"
    )
    assert driver.replies == [
        *[HELO_FIRST, HELO_FIRST, HELO_FIRST, f"250 {HOSTNAME}", NEED_MAIL, OK],
        *[NESTED_MAIL, NEED_RCPT, OK, NEED_MAIL],
    ]
    assert driver.host.envelope == Envelope()


def test_parameters_size_and_recipient_limit() -> None:
    host = Host(data_size_limit=1000)
    driver = drive(
        b"HELO client.example\r\nMAIL FROM:<a@example.com> SIZE=10\r\n"
        b"EHLO client.example\r\nMAIL FROM:<a@example.com> SIZE=1001\r\n"
        b"MAIL FROM:<a@example.com> SIZE=1000\r\nRCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n",
        rules=SessionRules(rcpt_limit=2),
        host=host,
    )
    assert driver.replies[:2] == [f"250 {HOSTNAME}", "501 Syntax: MAIL FROM: <address>"]
    too_big = "552 Error: message size exceeds fixed maximum message size"
    assert after_ehlo(driver.replies) == [too_big, OK, OK, OK, TOO_MANY_RECIPIENTS]
    assert host.envelope.mail_options == ["SIZE=1000"]
    assert host.envelope.rcpt_tos == ["b@example.com", "c@example.com"]


def test_error_budget_counts_permanent_errors_only() -> None:
    rules = SessionRules(rcpt_limit=1, error_limit=3)
    driver = drive(
        b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA x\r\nFOO\r\n"
        b"MAIL FROM:<e@example.com>\r\nNOOP\r\n",
        rules=rules,
    )
    assert after_ehlo(driver.replies) == [
        *[OK, OK, TOO_MANY_RECIPIENTS, TOO_MANY_RECIPIENTS, "501 Syntax: DATA"],
        *['500 Error: command "FOO" not recognized', NESTED_MAIL, TOO_MANY_ERRORS],
    ]
    assert driver.closed
    assert driver.machine.errors == 3
    machine = ServerSession({"NOOP"}, Host(), rules)
    replies = ("421 x", b"550 x", OK, "452 x", "554 x", b"500 x")
    assert [machine.count_reply(status) for status in replies] == [False] * 5 + [True]
    assert not ServerSession({"NOOP"}, Host(), SessionRules()).count_reply("550 x")


# -- the gate ------------------------------------------------------------------------------


def test_overlong_lines_and_bare_lf_under_reject() -> None:
    reject = BareNewlinePolicy.REJECT
    driver = drive(
        b"NOOP " + b"x" * 508 + b"\r\nNOOP " + b"x" * 507 + b"\r\n",  # 513 and 512 octets
        b"NOOP " + b"y" * 2000 + b"\r\nNOOP\nNOOP\r\nNO\rOP\r\n",
        rules=SessionRules(bare_newline=reject),
    )
    refusals = [LINE_TOO_LONG, OK, LINE_TOO_LONG, BARE_NEWLINE, OK, BARE_NEWLINE]
    assert driver.replies == refusals
    assert not driver.closed
    bdat = drive(b"EHLO c\r\nBDAT 3\nabc", rules=SessionRules(chunking=True, bare_newline=reject))
    assert after_ehlo(bdat.replies) == [BARE_NEWLINE]
    assert bdat.closed  # the chunk's octets must never be read as commands


def test_unknown_verbs_up_to_the_bogus_limit() -> None:
    driver = drive(b"FOO\r\nBAR x\r\nNOOP\r\nBAZ\r\nQUX\r\nXYZZY\r\nNOOP\r\n")
    unknown = [f'500 Error: command "{verb}" not recognized' for verb in ("FOO", "BAR", "BAZ")]
    assert driver.replies == [
        *[*unknown[:2], OK, unknown[2], '500 Error: command "QUX" not recognized'],
        "502 5.5.1 Too many unrecognized commands, goodbye.",
    ]
    assert driver.closed
    assert driver.feed(b"NOOP\r\n") == []


def test_http_request_line_closes() -> None:
    driver = drive(b"GET / HTTP/1.1\r\nHost: mx.example\r\n\r\n")
    assert driver.replies == ["421 4.7.0 Error: HTTP request refused, this is an SMTP server"]
    assert driver.closed


def test_command_call_limit() -> None:
    driver = drive(
        b"NOOP\r\nNOOP\r\nHELO a\r\nNOOP\r\nNOOP\r\n",
        rules=SessionRules(command_call_limit={"NOOP": 2, "*": 5}),
    )
    assert driver.replies == [OK, OK, f"250 {HOSTNAME}", "421 4.7.0 NOOP sent too many times"]
    assert driver.closed


# -- STARTTLS -------------------------------------------------------------------------------


def test_starttls_not_offered_without_tls() -> None:
    assert drive(b"EHLO c\r\nSTARTTLS\r\n").replies == [*EHLO_PLAIN, "454 TLS not available"]


def test_starttls_offered_until_encrypted_and_plaintext_discarded() -> None:
    host = Host(enable_SMTPUTF8=True)
    rules = SessionRules(tls_offered=True)
    driver = drive(
        b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@example.com>\r\n", host=host, rules=rules
    )
    assert driver.replies == [
        *EHLO_PLAIN[:3],
        *["250-SMTPUTF8", "250-STARTTLS", "250-PIPELINING", "250 HELP", "220 Ready to start TLS"],
    ]
    assert driver.machine.line_limits["MAIL"] == 512 + 26 + 10
    assert driver.machine.encrypted
    assert host.session == Facts()
    assert driver.feed(b"EHLO c\r\nSTARTTLS\r\n")[-2:] == ["250 HELP", "454 TLS not available"]
    assert "250-STARTTLS" not in driver.replies[8:]


def test_require_starttls_refuses_mail_until_encrypted() -> None:
    driver = Driver(SessionRules(tls_offered=True, require_starttls=True))
    replies = driver.feed(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\nSTARTTLS\r\n")
    assert after_ehlo(replies) == [STARTTLS_FIRST, OK, "220 Ready to start TLS"]
    assert after_ehlo(driver.feed(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")) == [OK]


def test_refused_handshake_leaves_only_quit() -> None:
    driver = Driver(SessionRules(tls_offered=True), handshake_accepted=False)
    driver.feed(b"EHLO c\r\nSTARTTLS\r\n")
    assert driver.machine.handshake_refused
    assert driver.feed(b"EHLO c\r\nNOOP\r\nQUIT\r\n") == [INSECURE, INSECURE, "221 Bye"]


def test_ehlo_mail_line_limit_applies_after_ehlo_only() -> None:
    mail = b"MAIL FROM:<a@" + b"b" * 60 + b"." + b"c" * 60 + b".example> SIZE=10"
    mail += b" " * (530 - len(mail))  # 530 octets: over 512, under 512 + 26
    driver = drive(b"HELO c\r\n" + mail + b"\r\nEHLO c\r\n" + mail + b"\r\n")
    assert driver.machine.line_limits["MAIL"] == 538
    assert driver.replies[1] == LINE_TOO_LONG
    assert after_ehlo(driver.replies) == [OK]


# -- BDAT ------------------------------------------------------------------------------------

CHUNKING = SessionRules(chunking=True)
ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"


def test_bdat_chunks_across_feeds_and_bdat_0_last() -> None:
    driver = drive(
        ENVELOPE + b"BDAT 10\r\nhell",
        b"o, wor",
        b"BDAT 5\r\nld!\r\n",
        b"BDAT 0 LAST\r\nNOOP\r\n",
        rules=CHUNKING,
    )
    chunks = ["250 OK 10 octets received", "250 OK 5 octets received"]
    assert after_ehlo(driver.replies) == [OK, OK, *chunks, OK, OK]
    assert driver.delivered == [(*AB, b"hello, world!\r\n")]
    assert driver.machine.bdat_received == 0
    assert not driver.machine.bdat_started


def test_refused_bdat_chunk_is_consumed() -> None:
    driver = drive(
        b"BDAT 6\r\nQUIT\r\nEHLO c\r\nMAIL FROM:<a@example.com>\r\n",
        b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n",
        rules=CHUNKING,
    )
    assert driver.replies[0] == HELO_FIRST
    assert after_ehlo(driver.replies) == [OK, NEED_RCPT, OK]
    assert driver.delivered == []
    assert driver.host.envelope.mail_from == "a@example.com"
    assert not driver.closed


def test_data_after_bdat_chunk_refused() -> None:
    driver = drive(ENVELOPE + b"BDAT 3\r\nabcDATA\r\nBDAT 3 LAST\r\ndef", rules=CHUNKING)
    data_after_bdat = "503 5.5.1 Error: DATA after BDAT in the same transaction"
    assert after_ehlo(driver.replies) == [OK, OK, "250 OK 3 octets received", data_after_bdat, OK]
    assert driver.delivered == [(*AB, b"abcdef")]


def test_bdat_size_limit_across_chunks() -> None:
    driver = drive(
        ENVELOPE + b"BDAT 6\r\n123456BDAT 6 LAST\r\n789012RCPT TO:<c@example.com>\r\n",
        ENVELOPE[8:] + b"BDAT 6\r\n123456BDAT 6\r\n789012RCPT TO:<c@example.com>\r\n",
        rules=CHUNKING,
        host=Host(data_size_limit=10),
    )
    transaction = [OK, OK, "250 OK 6 octets received", TOO_MUCH_DATA, NEED_MAIL]
    assert after_ehlo(driver.replies) == transaction * 2
    assert driver.delivered == []


def test_binarymime_keeps_bare_lf_under_reject() -> None:
    rules = SessionRules(chunking=True, bare_newline=BareNewlinePolicy.REJECT)
    chunks = b"BDAT 3\r\na\r\rBDAT 3 LAST\r\n\nb\n"
    binary = ENVELOPE.replace(b"com>\r\nRCPT", b"com> BODY=BINARYMIME\r\nRCPT")
    driver = drive(binary + chunks, ENVELOPE[8:] + chunks, rules=rules)
    transaction = [OK, OK, "250 OK 3 octets received"]
    assert after_ehlo(driver.replies) == [*transaction, OK, *transaction, BARE_NEWLINE_IN_DATA]
    assert driver.delivered == [(*AB, b"a\r\r\nb\n")]
    split = drive(ENVELOPE + b"BDAT 2\r\nx\rBDAT 2 LAST\r\n\ny", rules=rules)
    assert split.delivered == [(*AB, b"x\r\ny")]


# -- AUTH and DSN ------------------------------------------------------------------------------


def test_auth_required_until_authenticated() -> None:
    driver = Driver(SessionRules(auth_required=True, chunking=True))
    replies = driver.feed(ENVELOPE + b"BDAT 1 LAST\r\nx")
    assert after_ehlo(replies) == [AUTH_REQUIRED] * 3
    driver.host.session.authenticated = True
    assert driver.feed(ENVELOPE[8:]) == [OK, OK]


def test_dsn_kept_for_accepted_recipients_only() -> None:
    def decide(machine: ServerSession, request: RcptRequest) -> str:
        if request.address.startswith("nobody"):
            return "550 5.1.1 No such user"
        return machine.accept_rcpt(request)

    driver = Driver(SessionRules(dsn=True), rcpt_decision=decide)
    replies = driver.feed(
        b"EHLO c\r\nMAIL FROM:<a@example.com> RET=hdrs ENVID=x+2By\r\n"
        b"RCPT TO:<b@example.com> NOTIFY=SUCCESS\r\n"
        b"RCPT TO:<nobody@example.com> NOTIFY=SUCCESS,FAILURE\r\n"
        b"RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com> NOTIFY=SOMETIMES\r\n"
    )
    bad_notify = "501 5.5.4 Error: NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY: 'SOMETIMES'"
    assert after_ehlo(replies) == [OK, OK, "550 5.1.1 No such user", OK, bad_notify]
    envelope = driver.host.envelope
    assert (envelope.dsn_ret, envelope.dsn_envid) == ("HDRS", "x+y")
    assert envelope.rcpt_tos == ["b@example.com", "c@example.com"]
    assert envelope.rcpt_dsn == {"b@example.com": RcptDSN(frozenset({"SUCCESS"}), None)}
    assert envelope.rcpt_options == ["NOTIFY=SUCCESS"]


def test_dsn_kept_when_the_decision_is_bytes() -> None:
    """Regression: a hook's bytes answer (sent as it is) used to lose the DSN request."""
    driver = drive(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n", rules=SessionRules(dsn=True))
    request = driver.machine.rcpt("TO:<b@example.com> NOTIFY=DELAY")
    assert isinstance(request, RcptRequest)
    driver.machine.accept_rcpt(request)
    driver.machine.note_rcpt_dsn(request, b"250 OK")
    assert driver.host.envelope.rcpt_dsn == {"b@example.com": RcptDSN(frozenset({"DELAY"}), None)}
