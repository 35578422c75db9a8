"""The protocol state of one SMTP server session, without I/O (h11's model).

A :class:`ServerSession` is fed the client's bytes (:meth:`ServerSession.receive_data`)
and hands out what they hold: command lines (:meth:`~ServerSession.next_command`,
screened by the gate) or, while a message is read, its decoded octets.  For each
command it applies the rules of :mod:`.server_rules` and :mod:`.server_commands`
and returns either the reply to send or what the application must decide (a
:class:`MailRequest`, a :class:`RcptRequest`, a chunk to take); the application's
answer comes back through the ``accept_*`` methods.  :meth:`~ServerSession.answer`
is the whole default session for the commands that need no decision at all, so
tests (and an adapter with nothing to ask the application) run them in memory.

What it owns: the input framing, the gate's counters, whether the connection is
encrypted or must become so, the BDAT transfer in progress, the error budget, the
verb being answered and the line limits EHLO announced.

What it reads, not owns: the greeting, authentication and the transaction live in
the objects the application sees (aiosmtpd's ``Session`` and ``Envelope``, reached
through the :class:`SessionHost`), because aiosmtpd's hooks own those changes: a
``handle_MAIL`` that does not set ``envelope.mail_from`` leaves no transaction, and
the next RCPT must be refused.  Keeping a second copy here would disagree with them.
"""

from __future__ import annotations

import collections
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from .data import BareNewlinePolicy, DataDecoder
from .lines import LineTooLong
from .mail_parameters import BdatCommand
from .server_commands import (
    ParsedPath,
    bdat_refusal,
    check_mail,
    check_rcpt,
    data_refusal,
    ehlo_offer,
    path_syntax_error,
    rcpt_sequence_refusal,
    read_bdat,
    read_path,
    starttls_refusal,
)
from .server_input import ChunkLineEndings, Inbound
from .server_rules import CommandGate, CommandRefusal, MailDSN, RcptDSN, ReceivedCommand

__all__ = [
    "TOO_MANY_ERRORS",
    "BdatStep",
    "EnvelopeFacts",
    "MailRequest",
    "RcptRequest",
    "ServerSession",
    "SessionFacts",
    "SessionHost",
    "SessionRules",
]

_OK: Final = "250 OK"
# Only permanent errors count towards the error limit: a 4xx (say, recipients past
# the cap) is the server's own limit, which a well-behaved client may meet often.
_PERMANENT: Final = ("5", b"5")
TOO_MANY_ERRORS: Final = "421 4.7.0 Error: too many errors, closing"
#: The reply to an accepted DATA (aiosmtpd's text): the message follows.
START_MAIL_INPUT: Final = "354 End data with <CR><LF>.<CR><LF>"
_ACCEPTED: Final = ("25", b"25")


class SessionFacts(Protocol):
    """What the session machine reads of aiosmtpd's ``Session``."""

    host_name: str | None
    extended_smtp: bool
    authenticated: bool | None


class EnvelopeFacts(Protocol):
    """What the session machine reads and, by default, writes of aiosmtpd's ``Envelope``."""

    mail_from: str | None
    mail_options: list[str]
    smtp_utf8: bool
    rcpt_tos: list[str]
    rcpt_options: list[str]
    dsn_ret: str | None
    dsn_envid: str | None
    rcpt_dsn: dict[str, RcptDSN]
    body_type: str | None


class SessionHost(Protocol):
    """The adapter that holds the objects the application sees, and aiosmtpd's
    public settings (read live: a user may change them on the server object)."""

    hostname: str
    data_size_limit: int | None
    enable_SMTPUTF8: bool
    command_size_limit: int
    line_length_limit: int
    local_part_limit: int

    @property
    def session(self) -> SessionFacts: ...

    @property
    def envelope(self) -> EnvelopeFacts: ...


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The settings fixed for the session's life."""

    decode_data: bool = False
    chunking: bool = False
    dsn: bool = False
    rcpt_limit: int = 100
    bare_newline: BareNewlinePolicy = BareNewlinePolicy.KEEP
    tls_offered: bool = False
    require_starttls: bool = False
    auth_required: bool = False
    error_limit: int | None = None
    command_call_limit: int | Mapping[str, int] | None = None


class MailRequest(NamedTuple):
    """A MAIL command the rules accept, for the application (``handle_MAIL``) to
    decide, or for :meth:`ServerSession.accept_mail`."""

    address: str
    options: list[str]
    dsn: MailDSN | None
    smtp_utf8: bool
    body_type: str | None


class RcptRequest(NamedTuple):
    """A RCPT command the rules accept, for the application to decide."""

    address: str
    options: list[str]
    dsn: RcptDSN | None


class BdatStep(NamedTuple):
    """A BDAT command: its chunk is read in any case (its octets are never
    commands); ``refusal`` is the reply when it cannot be taken, ``endings`` the
    transfer's line-ending state when it can."""

    command: BdatCommand
    refusal: str | None
    endings: ChunkLineEndings | None
    first: bool  # the message's first chunk: where its content must be opened


class ServerSession:
    """The protocol state of one server session; see the module's docstring.

    ``verbs`` are the commands the server implements (the gate refuses others);
    ``host`` is the adapter (see :class:`SessionHost`).
    """

    __slots__ = (
        "_bdat_endings",
        "_host",
        "bdat_received",
        "bdat_started",
        "encrypted",
        "errors",
        "gate",
        "handshake_refused",
        "inbound",
        "line_limits",
        "rules",
        "verb",
    )

    def __init__(self, verbs: Container[str], host: SessionHost, rules: SessionRules) -> None:
        self._host = host
        self.rules = rules
        self.inbound = Inbound(max(host.line_length_limit, host.command_size_limit + 2))
        self.gate = CommandGate(
            verbs, command_call_limit=rules.command_call_limit, bare_newline=rules.bare_newline
        )
        #: Per-verb line limits that replace ``command_size_limit`` after EHLO.
        self.line_limits: collections.defaultdict[str, int] = collections.defaultdict(
            lambda: host.command_size_limit
        )
        self.encrypted = False
        self.handshake_refused = False
        self.errors = 0
        #: The verb being answered ("" while a refused line's verb is unknown).
        self.verb: str | None = None
        self.bdat_received = 0  # octets of the BDAT message so far
        self.bdat_started = False  # a chunk was taken: DATA is out of sequence
        self._bdat_endings: ChunkLineEndings | None = None

    # -- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> bool:
        """Take the client's bytes; False when they ended the message being read."""
        return self.inbound.feed(data)

    def next_command(self) -> ReceivedCommand | CommandRefusal | None:
        """The next complete command line, screened; None until one is complete."""
        line = self.inbound.next_line()
        return None if line is None else self.screen(line)

    def screen(self, line: bytes | LineTooLong) -> ReceivedCommand | CommandRefusal:
        """The gate's verdict on one line: the command to run, or its refusal."""
        host = self._host
        screened = self.gate.screen(
            line,
            max_length=host.command_size_limit,
            max_lengths=self.line_limits if host.session.extended_smtp else None,
            bare_lf=self.inbound.last_line_bare_lf,
            utf8=host.enable_SMTPUTF8,
            handshake_refused=self.handshake_refused,
            starttls_required=self.rules.require_starttls and not self.encrypted,
        )
        self.verb = screened.verb
        return screened

    # -- replies ----------------------------------------------------------------------

    def count_reply(self, status: str | bytes) -> bool:
        """Count a reply sent; True when it used up the error budget (Postfix's
        ``smtpd_hard_error_limit``): send :data:`TOO_MANY_ERRORS` and close."""
        limit = self.rules.error_limit
        if limit is None or status[:1] not in _PERMANENT:
            return False
        self.errors += 1
        return self.errors >= limit

    # -- greeting ---------------------------------------------------------------------

    def ehlo_lines(self, auth_line: str | None, keywords: list[str]) -> list[str]:
        """EHLO's reply before its last line; records the MAIL line limit it announces."""
        host = self._host
        offer = ehlo_offer(
            host.hostname,
            command_length=host.command_size_limit,
            data_size_limit=host.data_size_limit,
            eight_bit_mime=not self.rules.decode_data,
            smtputf8=host.enable_SMTPUTF8,
            starttls=self.rules.tls_offered and not self.encrypted,
            auth_line=auth_line,
            keywords=keywords,
        )
        self.line_limits["MAIL"] = offer.mail_length
        return offer.lines

    def starttls(self, argument: str | None) -> str | None:
        """The refusal of STARTTLS, or None: reply 220 and start the handshake."""
        return starttls_refusal(argument, available=self.rules.tls_offered and not self.encrypted)

    def tls_established(self, accepted: bool = True) -> None:
        """The handshake is done; ``accepted`` False (``handle_STARTTLS`` refused
        it) leaves only QUIT."""
        self.encrypted = True
        self.handshake_refused = not accepted

    # -- the transaction --------------------------------------------------------------

    def transaction_refusal(self, helo: str = "HELO") -> str | None:
        """aiosmtpd's ``check_helo_needed`` then ``check_auth_needed``, as replies."""
        return self.helo_refusal(helo) or self.auth_refusal()

    def helo_refusal(self, helo: str = "HELO") -> str | None:
        """The refusal of a command that needs a greeting first (``helo`` names it)."""
        return None if self._host.session.host_name else f"503 Error: send {helo} first"

    def auth_refusal(self) -> str | None:
        """The refusal of a command that needs AUTH first, when the server requires it."""
        if self.rules.auth_required and not self._host.session.authenticated:
            return "530 5.7.0 Authentication required"
        return None

    def _read_path(self, argument: str | None, keyword: str, command: str) -> ParsedPath | str:
        host = self._host
        extended = host.session.extended_smtp
        return read_path(
            argument,
            keyword,
            path_syntax_error(command, extended=extended),
            utf8=host.enable_SMTPUTF8,
            max_local_part=host.local_part_limit or None,
            extended=extended,
        )

    def mail(self, argument: str | None) -> MailRequest | str:
        """MAIL's request, or its refusal (after the HELO and AUTH checks)."""
        host = self._host
        parsed = self._read_path(argument, "FROM:", "MAIL FROM:")
        if isinstance(parsed, str):
            return parsed
        rules = self.rules
        dsn = check_mail(
            parsed,
            path_syntax_error("MAIL FROM:", extended=host.session.extended_smtp),
            mail_from=host.envelope.mail_from,
            size_limit=host.data_size_limit,
            smtputf8=host.enable_SMTPUTF8,
            decode_data=rules.decode_data,
            chunking=rules.chunking,
            dsn=rules.dsn,
        )
        if isinstance(dsn, str):
            return dsn
        body = parsed.parameters.get("BODY")
        return MailRequest(
            parsed.address,
            parsed.options,
            dsn,
            "SMTPUTF8" in parsed.options,
            None if body is None else body.upper(),
        )

    def note_mail_parameters(self, request: MailRequest) -> None:
        """What MAIL's parameters say about the message, kept whatever the hook decides."""
        envelope = self._host.envelope
        if request.dsn is not None:
            envelope.dsn_ret, envelope.dsn_envid = request.dsn
        envelope.smtp_utf8 = request.smtp_utf8
        envelope.body_type = request.body_type

    def accept_mail(self, request: MailRequest) -> str:
        """Begin the transaction (no hook decided it); the reply."""
        envelope = self._host.envelope
        envelope.mail_from = request.address
        envelope.mail_options.extend(request.options)
        return _OK

    def rcpt(self, argument: str | None) -> RcptRequest | str:
        """RCPT's request, or its refusal (after the HELO and AUTH checks)."""
        envelope = self._host.envelope
        refusal = rcpt_sequence_refusal(envelope.mail_from)
        if refusal is not None:
            return refusal
        parsed = self._read_path(argument, "TO:", "RCPT TO:")
        if isinstance(parsed, str):
            return parsed
        rules = self.rules
        dsn = check_rcpt(
            parsed, recipients=len(envelope.rcpt_tos), rcpt_limit=rules.rcpt_limit, dsn=rules.dsn
        )
        if isinstance(dsn, str):
            return dsn
        return RcptRequest(parsed.address, parsed.options, dsn)

    def accept_rcpt(self, request: RcptRequest) -> str:
        """Add the recipient (no hook decided it); the reply."""
        envelope = self._host.envelope
        envelope.rcpt_tos.append(request.address)
        envelope.rcpt_options.extend(request.options)
        return _OK

    def note_rcpt_dsn(self, request: RcptRequest, status: object) -> None:
        """Keep the recipient's DSN request if it was accepted (``status`` 25x),
        whoever decided."""
        accepted = status[:2] in _ACCEPTED if isinstance(status, str | bytes) else False
        if request.dsn is not None and accepted:
            self._host.envelope.rcpt_dsn[request.address] = request.dsn

    def data(self, argument: str | None) -> str | None:
        """The refusal of DATA, or None: reply 354 and read the message with
        :meth:`data_decoder`."""
        envelope = self._host.envelope
        return data_refusal(
            argument,
            has_recipients=bool(envelope.rcpt_tos),
            body_type=envelope.body_type,
            bdat_started=self.bdat_started,
        )

    def data_decoder(self) -> DataDecoder:
        """The decoder of a DATA message, with the session's limits and policy."""
        return DataDecoder(
            max_size=self._host.data_size_limit or None,
            max_line_length=self._host.line_length_limit,
            bare_newline=self.rules.bare_newline,
        )

    def bdat(self, argument: str | None) -> BdatStep | str:
        """A BDAT command's step, or the 501 after which the connection must close
        (without a size, the chunk's end is unknown)."""
        command = read_bdat(argument)
        if isinstance(command, str):
            return command
        host = self._host
        session, envelope = host.session, host.envelope
        refusal = bdat_refusal(
            command.size,
            greeted=bool(session.host_name),
            auth_needed=self.rules.auth_required and not session.authenticated,
            has_recipients=bool(envelope.rcpt_tos),
            received=self.bdat_received,
            size_limit=host.data_size_limit,
        )
        first = refusal is None and self._bdat_endings is None
        if first:
            # BINARYMIME is delivered byte for byte, whatever the bare-LF policy.
            binary = envelope.body_type == "BINARYMIME"
            policy = BareNewlinePolicy.KEEP if binary else self.rules.bare_newline
            self._bdat_endings = ChunkLineEndings(policy)
        return BdatStep(command, refusal, self._bdat_endings, first)

    def bdat_taken(self, size: int) -> None:
        """A chunk of ``size`` octets was read into the message."""
        self.bdat_received += size
        self.bdat_started = True

    def end_transaction(self) -> None:
        """The transaction ended (message delivered or refused, RSET, HELO/EHLO,
        STARTTLS): forget the BDAT transfer."""
        self._bdat_endings = None
        self.bdat_received = 0
        self.bdat_started = False

    # -- the default session ----------------------------------------------------------

    def answer(self, command: ReceivedCommand) -> str | None:
        """The reply to a command that needs no decision by the application, with
        its state change; None for the others (greetings, DATA/BDAT, AUTH, RSET,
        QUIT, STARTTLS, HELP, VRFY, custom verbs), which the adapter runs."""
        verb, argument = command
        if verb == "NOOP":
            return _OK
        if verb == "MAIL":
            refusal = self.transaction_refusal()
            if refusal is not None:
                return refusal
            mail = self.mail(argument)
            if isinstance(mail, str):
                return mail
            self.note_mail_parameters(mail)
            return self.accept_mail(mail)
        if verb == "RCPT":
            refusal = self.transaction_refusal()
            if refusal is not None:
                return refusal
            rcpt = self.rcpt(argument)
            if isinstance(rcpt, str):
                return rcpt
            status = self.accept_rcpt(rcpt)
            self.note_rcpt_dsn(rcpt, status)
            return status
        return None
