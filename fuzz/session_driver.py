"""The server's sans-I/O session (ServerSession) under fuzzing: a small host and a
synchronous driver that does what the asyncio adapter does for a hookless handler
(after tests/common/test_server_session.py), with the session's invariants
checked as it runs.

Properties: every reply is a valid SMTP reply line (ReplyParser reads the whole
output back: 2xx-5xx, no control octets, ASCII unless SMTPUTF8 is on); the
envelope changes only when MAIL/RCPT are answered 250; a message is delivered
only with a 250 for its end, a sender and recipients; whole and randomly split
input give the same session (unless STARTTLS discards pipelined plaintext, as
it must); with generated command sequences, what is delivered is what was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fuzz_input import FuzzInput, amplify, check, chunks
from smtpwire.common.data import BareNewlinePolicy, DataDecoder, encode_data
from smtpwire.common.errors import ReplyError
from smtpwire.common.replies import ReplyParser
from smtpwire.common.server_commands import argument_refusal, message_refusal, read_vrfy
from smtpwire.common.server_input import ExactBytes
from smtpwire.common.server_rules import CommandRefusal, RcptDSN
from smtpwire.common.server_session import (
    TOO_MANY_ERRORS,
    BdatStep,
    ServerSession,
    SessionRules,
)

__all__ = ["check_session_bytes", "check_session_commands", "check_wire_replies"]

HOSTNAME = "mx.example"
OK = "250 OK"
POLICIES = tuple(BareNewlinePolicy)


def check_wire_replies(replies: list[str], *, ascii_only: bool) -> None:
    """The replies, written as a server writes them, read back by the client's
    parser: whole replies only, codes 200-599, no control octets in the text."""
    wire = b"".join(reply.encode("utf-8", "surrogateescape") + b"\r\n" for reply in replies)
    check(wire.count(b"\n") == len(replies), f"a reply holds a line break: {replies}")
    for line in wire.split(b"\r\n")[:-1]:
        check(all(octet >= 0x20 and octet != 0x7F for octet in line), f"control octet in {line!r}")
        check(not ascii_only or line.isascii(), f"non-ASCII reply {line!r}")
    parser = ReplyParser()
    try:
        parsed = parser.feed(wire)
    except ReplyError as error:
        check(False, f"unparseable reply ({error}): {replies}")
        return
    check(not parser.has_partial, f"an unfinished multi-line reply: {replies[-3:]}")
    for reply in parsed:
        check(200 <= reply.code <= 599, f"reply code {reply.code}")


@dataclass
class Facts:
    host_name: str | None = None
    extended_smtp: bool = False
    authenticated: bool | None = None


@dataclass
class Envelope:
    mail_from: str | None = None
    mail_options: list[str] = field(default_factory=list)
    smtp_utf8: bool = False
    rcpt_tos: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    rcpt_dsn: dict[str, RcptDSN] = field(default_factory=dict)
    body_type: str | None = None


@dataclass
class Host:
    hostname: str = HOSTNAME
    data_size_limit: int | None = 33554432
    enable_SMTPUTF8: bool = False
    command_size_limit: int = 512
    line_length_limit: int = 1001
    local_part_limit: int = 0
    session: Facts = field(default_factory=Facts)
    envelope: Envelope = field(default_factory=Envelope)


Delivered = tuple[str, tuple[str, ...], bytes]


class Driver:
    """The adapter's part of a session, synchronous; replies and deliveries recorded."""

    def __init__(self, rules: SessionRules, host: Host, *, refuse_every: int = 0) -> None:
        self.rules = rules
        self.host = host
        verbs = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "STARTTLS"}
        verbs |= {"VRFY"} | ({"BDAT"} if rules.chunking else set())
        self.machine = ServerSession(verbs, host, rules)
        self.refuse_every = refuse_every  # the "handler" refuses every n-th recipient
        self.rcpts_seen = 0
        self.replies: list[str] = []
        self.delivered: list[Delivered] = []
        self.closed = False
        self.tls_started = False
        self._message: Callable[[bytes], None] | None = None
        self._bdat_content = b""

    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        reading = self._message is not None
        if not self.machine.receive_data(data) and reading:
            self._end_message()
        self._run()
        inbound = self.machine.inbound
        if not self.closed:  # a closed session leaves what followed unread
            check(inbound.buffered <= inbound.max_line_length, "command input not bounded")

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
            envelope = self.host.envelope
            before = (envelope.mail_from, len(envelope.rcpt_tos))
            if verb == "RCPT" and self.refuse_every:
                self._rcpt(argument)
                continue
            reply = machine.answer(screened)
            if reply is None:
                getattr(self, f"_{verb.lower()}")(argument)
                continue
            self._reply(reply)
            accepted = reply.startswith("250")
            after = (self.host.envelope.mail_from, len(self.host.envelope.rcpt_tos))
            if verb == "MAIL":
                began = before[0] is None and after[0] is not None
                check(began if accepted else after == before, "MAIL changed state without 250")
            if verb == "RCPT":
                check(after[1] == before[1] + accepted, "RCPT added without 250 (or not with)")

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
        check(finish is not None, "a message ended that never began")
        if finish is not None:
            finish(b"".join(self.machine.inbound.take_content()))

    def _deliver(self, content: bytes) -> None:
        envelope = self.host.envelope
        check(envelope.mail_from is not None and envelope.rcpt_tos, "delivery without envelope")
        self.delivered.append((envelope.mail_from or "", tuple(envelope.rcpt_tos), content))
        self._reset()
        self._reply(OK)

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

    def _vrfy(self, argument: str | None) -> None:
        request = read_vrfy(argument, utf8=self.host.enable_SMTPUTF8)
        if isinstance(request, str):
            self._reply(request)
        else:
            self._reply("252 Cannot VRFY user, but will accept message and attempt delivery")

    def _rcpt(self, argument: str | None) -> None:
        machine = self.machine
        request = machine.transaction_refusal() or machine.rcpt(argument)
        if isinstance(request, str):
            self._reply(request)
            return
        self.rcpts_seen += 1
        if self.rcpts_seen % self.refuse_every == 0:
            status = "550 5.1.1 No such user"
        else:
            status = machine.accept_rcpt(request)
        machine.note_rcpt_dsn(request, status)
        self._reply(status)

    def _starttls(self, argument: str | None) -> None:
        if (refusal := self.machine.starttls(argument)) is not None:
            self._reply(refusal)
            return
        self._reply("220 Ready to start TLS")
        self.tls_started = True
        self.machine.inbound.discard()
        self._reset()
        self.host.session = Facts()
        self.machine.tls_established(accepted=True)

    def _data(self, argument: str | None) -> None:
        machine = self.machine
        refusal = machine.transaction_refusal() or machine.data(argument)
        if refusal is not None:
            self._reply(refusal)
            return
        check(bool(self.host.envelope.rcpt_tos), "DATA accepted without recipients")
        self._reply("354 End data with <CR><LF>.<CR><LF>")
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
                self._reset()
            self._reply(step.refusal)
            return
        check(endings is not None, "an accepted chunk without line-ending state")
        if endings is None:
            return
        self.machine.bdat_taken(size)
        self._bdat_content += endings.feed(chunk)
        if not last:
            self._reply(f"250 OK {size} octets received")
            return
        self._bdat_content += endings.flush()
        if endings.refused:
            self._reset()
            self._reply("550 5.5.2 Error: bare <CR> or <LF> in message data")
        else:
            self._deliver(self._bdat_content)


def _setup(source: FuzzInput) -> tuple[SessionRules, Callable[[], Host], int]:
    bits = source.octet()
    rules = SessionRules(
        chunking=bool(bits & 1),
        dsn=bool(bits & 2),
        decode_data=bool(bits & 4),
        tls_offered=bool(bits & 8),
        require_starttls=bool(bits & 16),
        auth_required=bool(bits & 32) and not bits & 64,
        rcpt_limit=source.pick((100, 1, 2, 3)),
        bare_newline=source.pick(POLICIES),
        error_limit=source.pick((None, None, 3, 10)),
        command_call_limit=source.pick((None, None, 5, {"NOOP": 2, "*": 10})),
    )
    utf8 = bool(bits & 128)
    size_limit = source.pick((33554432, None, 0, 10, 200))
    command_limit = source.pick((512, 20, 100))
    line_limit = source.pick((1001, 5, 80))
    local_part_limit = source.pick((0, 64, 3))

    def host() -> Host:
        return Host(
            data_size_limit=size_limit,
            enable_SMTPUTF8=utf8,
            command_size_limit=command_limit,
            line_length_limit=line_limit,
            local_part_limit=local_part_limit,
        )

    return rules, host, source.octet() % 4


def _session(
    stream: bytes, seed: int, rules: SessionRules, host: Host, refuse_every: int
) -> Driver:
    driver = Driver(rules, host, refuse_every=refuse_every)
    for piece in chunks(stream, seed):
        driver.feed(piece)
    check_wire_replies(driver.replies, ascii_only=not host.enable_SMTPUTF8)
    return driver


def _compare(whole: Driver, split: Driver) -> None:
    if whole.tls_started or split.tls_started:
        return  # STARTTLS discards what was pipelined after it: that depends on the split
    check(split.replies == whole.replies, "the replies depend on the split")
    check(split.delivered == whole.delivered, "the deliveries depend on the split")


def check_session_bytes(data: bytes) -> None:
    """A random byte stream into a randomly configured session, whole and split."""
    source = FuzzInput(data)
    rules, host, refuse_every = _setup(source)
    seed = source.octet()
    stream = amplify(source.rest(), source.octet() % 24 - 18)
    whole = _session(stream, 0, rules, host(), refuse_every)
    split = _session(stream, seed, rules, host(), refuse_every)
    _compare(whole, split)


# -- generated command sequences ------------------------------------------------------------


def _word(source: FuzzInput) -> str:
    return "".join(chr(0x61 + source.octet() % 26) for _ in range(1 + source.octet() % 6))


def _plain_text(source: FuzzInput) -> bytes:
    """Message text over a small alphabet: letters, dots, spaces, CR, LF."""
    alphabet = b"ab.. \r\n\r\n\n\rxyz"
    return bytes(alphabet[source.octet() % len(alphabet)] for _ in range(source.octet()))


def _generate(source: FuzzInput, expected: set[bytes]) -> tuple[bytes, bool]:
    """A command sequence chosen by the input, and whether it holds arbitrary
    octets; ``expected`` gets every content a delivery may carry."""
    garbage = False
    out: list[bytes] = []
    for _ in range(1 + source.octet() % 40):
        choice = source.octet() % 16
        if choice == 0:
            out.append(b"EHLO client.example\r\n")
        elif choice == 1:
            out.append(b"HELO client.example\r\n")
        elif choice in (2, 3):
            params = source.pick(("", " SIZE=100", " BODY=8BITMIME", " BODY=BINARYMIME"))
            params += source.pick(("", " RET=HDRS ENVID=x+2By", " SMTPUTF8"))
            out.append(f"MAIL FROM:<{_word(source)}@example.com>{params}\r\n".encode())
        elif choice in (4, 5):
            notify = source.pick(("", " NOTIFY=SUCCESS", " ORCPT=rfc822;a+40b", " NOTIFY=NO"))
            out.append(f"RCPT TO:<{_word(source)}@example.org>{notify}\r\n".encode())
        elif choice in (6, 7):
            text = _plain_text(source)
            out.append(b"DATA\r\n" + encode_data(text))
            normal = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
            expected.add(normal if normal.endswith(b"\r\n") else normal + b"\r\n")
        elif choice == 8:
            raw = _plain_text(source).replace(b"\r", b"").replace(b".", b"")
            out.append(b"DATA\r\n" + raw + b"\r\n.\r\n")
            expected.update((raw + b"\r\n", raw.replace(b"\n", b"\r\n") + b"\r\n"))
        elif choice in (9, 10):
            pieces = [_plain_text(source) for _ in range(1 + source.octet() % 3)]
            for index, piece in enumerate(pieces):
                last = " LAST" if index == len(pieces) - 1 else ""
                out.append(f"BDAT {len(piece)}{last}\r\n".encode() + piece)
            whole = b"".join(pieces)
            normal = whole.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
            expected.update((whole, normal))
        elif choice == 11:
            out.append(b"RSET\r\n")
        elif choice == 12:
            out.append(source.pick((b"NOOP\r\n", b"VRFY postmaster\r\n", b"NOOP x\r\n")))
        elif choice == 13:
            out.append(source.take(source.octet() % 64))  # anything at all
            garbage = True
        elif choice == 14:
            out.append(b"STARTTLS\r\n")
        else:
            out.append(b"QUIT\r\n")
    return b"".join(out), garbage


def check_session_commands(data: bytes) -> None:
    """Sequences of mostly valid commands (pipelined, with messages) in random
    chunks: the same session however split, valid replies, and every delivered
    message is one that was sent."""
    source = FuzzInput(data)
    rules, host, refuse_every = _setup(source)
    seeds = (source.octet(), source.octet())
    expected: set[bytes] = set()
    stream, garbage = _generate(source, expected)
    whole = _session(stream, 0, rules, host(), refuse_every)
    for seed in seeds:
        _compare(whole, _session(stream, seed, rules, host(), refuse_every))
    for _, _, content in whole.delivered:
        check(content in expected or garbage, f"delivered {content[:60]!r} was never sent")
