"""A whole classic session decided by smtpwire.common's server rules alone (the
command gate and each command's rules), in memory with no event loop: the replies
aiosmtpd's SMTP gives a hookless handler, in order, for a client that gets most
things wrong before it sends two messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpwire.common.data import DataDecoder
from smtpwire.common.server_commands import (
    MALFORMED_ADDRESS,
    TOO_MUCH_DATA,
    argument_refusal,
    check_mail,
    check_rcpt,
    data_refusal,
    ehlo_offer,
    message_refusal,
    path_syntax_error,
    rcpt_sequence_refusal,
    read_path,
)
from smtpwire.common.server_rules import CommandGate, CommandRefusal, ReceivedCommand

MAIL_SYNTAX = "501 Syntax: MAIL FROM: <address>"
RCPT_SYNTAX_EHLO = "501 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
NEED_MAIL = "503 Error: need MAIL command"
NEED_RCPT = "503 Error: need RCPT command"
NESTED_MAIL = "503 Error: nested MAIL command"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
SIZE_EXCEEDED = "552 Error: message size exceeds fixed maximum message size"
LINE_TOO_LONG = "500 Command line too long"


@dataclass
class ClassicSession:
    """The decisions of aiosmtpd's SMTP with a hookless handler, made by the rules
    alone: what the asyncio adapter adds is the writing, the hooks and the logs."""

    hostname: str = "mx.example"
    gate: CommandGate = field(
        default_factory=lambda: CommandGate(
            {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "HELP"}
        )
    )
    host_name: str | None = None
    extended: bool = False
    mail_length: int | None = None
    mail_from: str | None = None
    rcpt_tos: list[str] = field(default_factory=list)
    body_type: str | None = None
    decoder: DataDecoder | None = None
    delivered: list[bytes] = field(default_factory=list)

    def reset(self) -> None:
        self.mail_from, self.rcpt_tos, self.body_type, self.decoder = None, [], None, None

    def feed(self, line: bytes) -> list[str]:
        """One command line (or, after 354, the whole message); the replies."""
        if self.decoder is not None:
            return self._message(line)
        # After EHLO, MAIL's line may be longer by what SIZE= takes.
        limits = {"MAIL": self.mail_length} if self.extended and self.mail_length else None
        screened = self.gate.screen(line, max_length=512, max_lengths=limits)
        if isinstance(screened, CommandRefusal):
            return [screened.reply]
        assert isinstance(screened, ReceivedCommand)
        verb, argument = screened
        refusal = argument_refusal(verb, argument)
        if verb in ("HELO", "EHLO") and refusal is None:
            self.reset()
            self.host_name, self.extended = argument, verb == "EHLO"
            if verb == "HELO":
                return [f"250 {self.hostname}"]
            ehlo = ehlo_offer(
                self.hostname,
                command_length=512,
                data_size_limit=100,
                eight_bit_mime=True,
                smtputf8=False,
                starttls=False,
                auth_line=None,
                keywords=(),
            )
            self.mail_length = ehlo.mail_length
            return [*ehlo.lines, "250 HELP"]
        if verb in ("MAIL", "RCPT", "DATA") and not self.host_name:
            return ["503 Error: send HELO first"]
        handler = getattr(self, f"_{verb.lower()}", None)
        if refusal is not None or handler is None:
            return [refusal or "250 OK"]
        reply: str = handler(argument)
        return [reply]

    def _mail(self, argument: str | None) -> str:
        syntax_error = path_syntax_error("MAIL FROM:", extended=self.extended)
        path = read_path(
            argument, "FROM:", syntax_error, utf8=False, max_local_part=None, extended=self.extended
        )
        if isinstance(path, str):
            return path
        decided = check_mail(
            path,
            syntax_error,
            mail_from=self.mail_from,
            size_limit=100,
            smtputf8=False,
            decode_data=False,
            chunking=False,
            dsn=False,
        )
        if isinstance(decided, str):
            return decided
        self.mail_from, self.body_type = path.address, path.parameters.get("BODY")
        return "250 OK"

    def _rcpt(self, argument: str | None) -> str:
        refusal = rcpt_sequence_refusal(self.mail_from)
        if refusal is not None:
            return refusal
        syntax_error = path_syntax_error("RCPT TO:", extended=self.extended)
        path = read_path(
            argument, "TO:", syntax_error, utf8=False, max_local_part=None, extended=self.extended
        )
        if isinstance(path, str):
            return path
        decided = check_rcpt(path, recipients=len(self.rcpt_tos), rcpt_limit=2, dsn=False)
        if isinstance(decided, str):
            return decided
        self.rcpt_tos.append(path.address)
        return "250 OK"

    def _data(self, argument: str | None) -> str:
        refusal = data_refusal(
            argument,
            has_recipients=bool(self.rcpt_tos),
            body_type=self.body_type,
            bdat_started=False,
        )
        if refusal is not None:
            return refusal
        self.decoder = DataDecoder(max_size=100, max_line_length=1001)
        return "354 End data with <CR><LF>.<CR><LF>"

    def _quit(self, argument: str | None) -> str:
        return "221 Bye"  # and the adapter closes the connection

    def _rset(self, argument: str | None) -> str:
        self.reset()
        return "250 OK"

    def _message(self, wire: bytes) -> list[str]:
        assert self.decoder is not None
        content = self.decoder.feed(wire)
        assert self.decoder.done
        violation = self.decoder.violation
        self.reset()
        if violation is not None:
            return [message_refusal(violation)]
        self.delivered.append(content)
        return ["250 OK"]


def test_a_classic_session_decided_without_an_event_loop() -> None:
    session = ClassicSession()
    script: list[tuple[bytes, list[str]]] = [
        (b"MAIL FROM:<anne@example.com>", ["503 Error: send HELO first"]),
        (b"EHLO", ["501 Syntax: EHLO hostname"]),
        (
            b"EHLO client.example",
            ["250-mx.example", "250-SIZE 100", "250-8BITMIME", "250 HELP"],
        ),
        (b"RCPT TO:<bart@example.com>", [NEED_MAIL]),
        (b"DATA", [NEED_RCPT]),
        (b"MAIL FROM:anne@example.com>", [MALFORMED_ADDRESS]),
        (b"MAIL FROM:<anne@example.com> SIZE=101", [SIZE_EXCEEDED]),
        (b"MAIL FROM:<anne@example.com> SIZE=" + b"0" * 500 + b"101", [SIZE_EXCEEDED]),
        (b"MAIL FROM:<anne@example.com> SIZE=" + b"0" * 502 + b"101", [LINE_TOO_LONG]),
        (b"MAIL FROM:<anne@example.com> BODY=8BITMIME", ["250 OK"]),
        (b"MAIL FROM:<carl@example.com>", [NESTED_MAIL]),
        (b"DATA", [NEED_RCPT]),
        (b"RCPT FROM:<bart@example.com>", [RCPT_SYNTAX_EHLO]),
        (b"RCPT TO:<bart@example.com>", ["250 OK"]),
        (b"RCPT TO:<carl@example.com>", ["250 OK"]),
        (b"RCPT TO:<dora@example.com>", [TOO_MANY_RECIPIENTS]),
        (b"DATA now", ["501 Syntax: DATA"]),
        (b"DATA", ["354 End data with <CR><LF>.<CR><LF>"]),
        (b"x" * 101 + b"\r\n.\r\n", [TOO_MUCH_DATA]),  # the transaction ends with it
        (b"RCPT TO:<bart@example.com>", [NEED_MAIL]),
        (b"MAIL FROM:<> SIZE=10", ["250 OK"]),
        (b"RCPT TO:<bart@example.com>", ["250 OK"]),
        (b"DATA", ["354 End data with <CR><LF>.<CR><LF>"]),
        (b"Subject: hi\r\n\r\n..dot\r\n.\r\n", ["250 OK"]),
        (b"RSET x", ["501 Syntax: RSET"]),
        (b"HELO", ["501 Syntax: HELO hostname"]),
        (b"HELO client.example", ["250 mx.example"]),
        (b"MAIL FROM:<anne@example.com> SIZE=10", [MAIL_SYNTAX]),  # no parameters after HELO
        (b"XYZZY", ['500 Error: command "XYZZY" not recognized']),
        (b"QUIT now", ["501 Syntax: QUIT"]),
        (b"QUIT", ["221 Bye"]),
    ]
    for line, replies in script:
        assert session.feed(line) == replies, line
    assert session.delivered == [b"Subject: hi\r\n\r\n.dot\r\n"]
