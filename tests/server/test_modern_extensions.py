"""The opt-in ESMTP extensions aiosmtpd lacks, over real sockets: PIPELINING,
ENHANCEDSTATUSCODES, DSN, LIMITS RCPTMAX (and the recipient cap behind it), the
bare-LF policy for commands and DATA, and SMTP smuggling under every policy.

CHUNKING, BINARYMIME and the client end to end are in test_modern_bdat.py.

Every extension is off by default so that ``SMTP(handler)`` answers exactly as
aiosmtpd does; ``modern=True`` turns them all on and each keyword argument
(``pipelining``, ``chunking``, ``dsn``, ``enhanced_status_codes``) overrides it for
its own extension.  Clients here write exact bytes; every read is bounded by the
socket timeout of :class:`~support.server.RawClient`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpwire.common.mail_parameters import OriginalRecipient
from smtpwire.common.replies import SMTPReply
from smtpwire.server.controller import Controller
from smtpwire.server.session import Envelope, RecipientDSN, Session
from smtpwire.server.smtp import SMTP
from support.server import EnvelopeKeeper, RawClient, greeted, replies_until_close, serving, text

HOST = "mx.test"
AIOSMTPD_EHLO = [f"250-{HOST}", "250-SIZE 33554432", "250-8BITMIME"]
MODERN_KEYWORDS = [
    "250-PIPELINING",
    "250-CHUNKING",
    "250-BINARYMIME",
    "250-DSN",
    "250-ENHANCEDSTATUSCODES",
    "250-LIMITS RCPTMAX=1000",
]
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
BARE_IN_DATA = "550 5.5.2 Error: bare <CR> or <LF> in message data"


# -- helpers ------------------------------------------------------------------------------


class Keeper(EnvelopeKeeper):
    """Keeps every envelope handed to handle_DATA; refuses RCPT for ``nobody@``
    (with an enhanced code) and ``gone@`` (without)."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        if address.startswith("gone@"):
            return "550 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"


def smtp(handler: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("hostname", HOST)
    return lambda: SMTP(handler, **kwargs)


def wire(reply: SMTPReply) -> list[str]:
    """A reply's lines as they travelled: ``["250-mx.test", ..., "250 HELP"]``."""
    last = len(reply.lines) - 1
    return [
        f"{reply.code}{' ' if index == last else '-'}{line}"
        for index, line in enumerate(reply.lines)
    ]


def current_envelope(server: Any) -> Envelope:
    envelope: Envelope = server.call(lambda: server.protocols[0].envelope)
    return envelope


@contextmanager
def controller(handler: Any, **kwargs: Any) -> Iterator[Controller]:
    ctl = Controller(handler, hostname="127.0.0.1", port=0, **kwargs)
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


def transaction(sender: str, recipient: str, body: bytes) -> bytes:
    return b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n%s.\r\n" % (
        sender.encode(),
        recipient.encode(),
        body,
    )


# -- defaults: aiosmtpd's behaviour, byte for byte --------------------------------------------


def test_default_ehlo_is_aiosmtpds_exactly() -> None:
    with controller(Keeper(), enable_SMTPUTF8=False) as ctl, RawClient(ctl.port) as client:
        assert client.reply().code == 220
        ehlo = client.command("EHLO client.example")
    assert wire(ehlo) == [
        f"250-{socket.getfqdn()}",
        "250-SIZE 33554432",
        "250-8BITMIME",
        "250 HELP",
    ]


def test_default_has_no_bdat_dsn_or_enhanced_codes() -> None:
    handler = Keeper()
    with controller(handler, enable_SMTPUTF8=False) as ctl, greeted(ctl.port) as client:
        assert text(client.command("BDAT 5 LAST")) == '500 Error: command "BDAT" not recognized'
        help_reply = text(client.command("HELP"))
        assert help_reply.startswith("250 Supported commands: ")
        assert "DATA" in help_reply.split()
        assert "BDAT" not in help_reply.split()
        assert client.command("HELP BDAT").code == 501
        assert text(client.command("MAIL FROM:<a@x> RET=HDRS")) == (
            "555 MAIL FROM parameters not recognized or not implemented"
        )
        assert text(client.command("MAIL FROM:<a@x> BODY=BINARYMIME")) == (
            "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        )
        assert text(client.command("MAIL FROM:<a@x>")) == "250 OK"
        assert text(client.command("RCPT TO:<b@x> NOTIFY=NEVER")) == (
            "555 RCPT TO parameters not recognized or not implemented"
        )
        assert text(client.command("RCPT TO:<b@x>")) == "250 OK"
        assert text(client.command("NOOP")) == "250 OK"
        assert text(client.command("DATA")) == START_DATA
        client.send(b"hi\r\n.\r\n")
        assert text(client.reply()) == "250 OK"
    (envelope,) = handler.envelopes
    assert (envelope.dsn_ret, envelope.dsn_envid, envelope.rcpt_dsn) == (None, None, {})


# -- EHLO under modern and the individual switches -----------------------------------------


def test_modern_ehlo_adds_the_keywords_before_help() -> None:
    with serving(smtp(Keeper(), modern=True)) as server, RawClient(server.port) as client:
        assert text(client.reply()) == f"220 {HOST} Python SMTP 1.4.6"
        ehlo = client.command("EHLO client.example")
        assert wire(ehlo) == [*AIOSMTPD_EHLO, *MODERN_KEYWORDS, "250 HELP"]
        assert "BDAT" in text(client.command("HELP")).split()
        assert text(client.command("HELP BDAT")) == "250 2.0.0 Syntax: BDAT <size> [LAST]"


def test_modern_limits_reports_the_configured_cap() -> None:
    factory = smtp(Keeper(), modern=True, rcpt_limit=250)
    with serving(factory) as server, RawClient(server.port) as client:
        client.reply()
        lines = wire(client.command("EHLO client.example"))
    assert "250-LIMITS RCPTMAX=250" in lines
    assert "250-LIMITS RCPTMAX=1000" not in lines


@pytest.mark.parametrize(
    ("switch", "keywords"),
    [
        ("pipelining", ["250-PIPELINING"]),
        ("chunking", ["250-CHUNKING", "250-BINARYMIME"]),
        ("dsn", ["250-DSN"]),
        ("enhanced_status_codes", ["250-ENHANCEDSTATUSCODES"]),
    ],
)
def test_one_switch_turns_on_its_extension_alone(switch: str, keywords: list[str]) -> None:
    with serving(smtp(Keeper(), **{switch: True})) as server, RawClient(server.port) as client:
        client.reply()
        assert wire(client.command("EHLO client.example")) == [
            *AIOSMTPD_EHLO,
            *keywords,
            "250 HELP",
        ]


@pytest.mark.parametrize(
    ("switch", "missing"),
    [
        ("pipelining", ["250-PIPELINING"]),
        ("chunking", ["250-CHUNKING", "250-BINARYMIME"]),
        ("dsn", ["250-DSN"]),
        ("enhanced_status_codes", ["250-ENHANCEDSTATUSCODES"]),
    ],
)
def test_one_switch_turns_off_its_extension_under_modern(switch: str, missing: list[str]) -> None:
    factory = smtp(Keeper(), modern=True, **{switch: False})
    with serving(factory) as server, RawClient(server.port) as client:
        client.reply()
        expected = [keyword for keyword in MODERN_KEYWORDS if keyword not in missing]
        assert wire(client.command("EHLO client.example")) == [
            *AIOSMTPD_EHLO,
            *expected,
            "250 HELP",
        ]


def test_chunking_off_under_modern_makes_bdat_unknown() -> None:
    factory = smtp(Keeper(), modern=True, chunking=False)
    with serving(factory) as server, greeted(server.port) as client:
        assert text(client.command("BDAT 0 LAST")) == (
            '500 5.5.2 Error: command "BDAT" not recognized'
        )
        assert "BDAT" not in text(client.command("HELP")).split()
        assert text(client.command("MAIL FROM:<a@x> BODY=BINARYMIME")).startswith("501 ")


# Async so that SMTP() finds a running loop instead of making one it never closes.


@pytest.mark.parametrize("limit", [99, 0, -1])
async def test_rcpt_limit_below_rfc_minimum_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 100"):
        SMTP(Keeper(), rcpt_limit=limit)


async def test_rcpt_limit_floor_itself_is_accepted() -> None:
    assert SMTP(Keeper(), rcpt_limit=100).extensions.rcpt_limit == 100


def test_controller_refuses_a_low_rcpt_limit() -> None:
    with pytest.raises(ValueError, match="at least 100"), controller(Keeper(), rcpt_limit=99):
        pass


# -- PIPELINING ------------------------------------------------------------------------------


def test_pipelined_transactions_reply_in_order_and_deliver_once() -> None:
    handler = Keeper()
    with serving(smtp(handler, pipelining=True)) as server, greeted(server.port) as client:
        client.send(
            b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<gone@x>\r\nRCPT TO:<c@x>\r\nDATA\r\n"
        )
        assert [text(reply) for reply in client.replies(5)] == [
            "250 OK",
            "250 OK",
            "550 Mailbox unavailable",
            "250 OK",
            START_DATA,
        ]
        # The first message's end, a whole second transaction and QUIT in one write.
        client.send(b"first\r\n.\r\n" + transaction("d@x", "e@x", b"second\r\n") + b"QUIT\r\n")
        assert replies_until_close(client) == [
            "250 OK",
            "250 OK",
            "250 OK",
            START_DATA,
            "250 OK",
            "221 Bye",
        ]
    assert handler.contents == [b"first\r\n", b"second\r\n"]
    assert [envelope.rcpt_tos for envelope in handler.envelopes] == [["b@x", "c@x"], ["e@x"]]
    assert handler.senders == ["a@x", "d@x"]


# -- ENHANCEDSTATUSCODES -------------------------------------------------------------------


def test_enhanced_status_codes_on_every_reply_that_needs_one() -> None:
    handler = Keeper()
    factory = smtp(handler, enhanced_status_codes=True)
    with serving(factory) as server, RawClient(server.port) as client:
        assert text(client.reply()) == f"220 {HOST} Python SMTP 1.4.6"
        assert text(client.command("HELO client.example")) == f"250 {HOST}"
        assert wire(client.command("EHLO client.example")) == [
            *AIOSMTPD_EHLO,
            "250-ENHANCEDSTATUSCODES",
            "250 HELP",
        ]
        assert text(client.command("NOOP")) == "250 2.0.0 OK"
        assert text(client.command("FOO")) == '500 5.5.2 Error: command "FOO" not recognized'
        assert text(client.command("RCPT TO:<b@x>")) == "503 5.5.1 Error: need MAIL command"
        assert text(client.command("DATA")) == "503 5.5.1 Error: need RCPT command"
        assert text(client.command("MAIL FROM:<a@x>")) == "250 2.1.0 OK"
        assert text(client.command("MAIL FROM:<a@x>")) == "503 5.5.1 Error: nested MAIL command"
        # A handler's reply that has a code keeps it; one without gets one.
        assert text(client.command("RCPT TO:<nobody@x>")) == "550 5.1.1 No such user"
        assert text(client.command("RCPT TO:<gone@x>")) == "550 5.1.1 Mailbox unavailable"
        assert text(client.command("RCPT TO:<b@x>")) == "250 2.1.5 OK"
        assert text(client.command("DATA")) == START_DATA
        client.send(b"hello\r\n.\r\n")
        assert text(client.reply()) == "250 2.6.0 OK"
        assert text(client.command("RSET")) == "250 2.0.0 OK"
        assert text(client.command("QUIT")) == "221 2.0.0 Bye"
    assert handler.contents == [b"hello\r\n"]


def test_enhanced_code_is_not_doubled_on_auth_replies() -> None:
    factory = smtp(Keeper(), enhanced_status_codes=True, auth_require_tls=False)
    with serving(factory) as server, greeted(server.port) as client:
        # "\0user\0pass": refused by the default callback.
        assert text(client.command("AUTH PLAIN AHVzZXIAcGFzcw==")) == (
            "535 5.7.8 Authentication credentials invalid"
        )
        assert text(client.command("AUTH BOGUS")) == "504 5.5.4 Unrecognized authentication type"


@pytest.mark.parametrize("greet", [False, True], ids=["first-line", "after-ehlo"])
@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"\r\n", "500 5.5.2 Error: bad syntax"),
        (b"\x01\r\n", "500 5.5.2 Error: bad syntax"),
        (b"NOOP " + b"x" * 1100 + b"\r\n", "500 5.5.2 Command line too long"),
    ],
    ids=["blank", "control", "too-long"],
)
def test_enhanced_code_on_lines_with_no_command(line: bytes, reply: str, greet: bool) -> None:
    """Neither "no command yet" nor the EHLO before is an exemption (RFC 2034)."""
    factory = smtp(Keeper(), enhanced_status_codes=True)
    with serving(factory) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        if greet:
            assert client.command("EHLO client.example").code == 250
        client.send(line)
        assert text(client.reply()) == reply
        assert text(client.command("NOOP")) == "250 2.0.0 OK"


# -- DSN ----------------------------------------------------------------------------------


def test_dsn_parameters_reach_the_envelope() -> None:
    handler = Keeper()
    with serving(smtp(handler, dsn=True)) as server, greeted(server.port) as client:
        assert text(client.command("MAIL FROM:<a@x> RET=HDRS ENVID=Ab+2Bc")) == "250 OK"
        reply = client.command("RCPT TO:<b@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+40x")
        assert text(reply) == "250 OK"
        assert text(client.command("RCPT TO:<c@x> NOTIFY=NEVER")) == "250 OK"
        assert text(client.command("RCPT TO:<d@x>")) == "250 OK"
        assert text(client.command("DATA")) == START_DATA
        client.send(b"hi\r\n.\r\n")
        assert text(client.reply()) == "250 OK"
    (envelope,) = handler.envelopes
    assert envelope.dsn_ret == "HDRS"
    assert envelope.dsn_envid == "Ab+c"  # xtext decoded, case kept
    assert envelope.rcpt_dsn == {
        "b@x": RecipientDSN(frozenset({"SUCCESS", "FAILURE"}), OriginalRecipient("rfc822", "B@x")),
        "c@x": RecipientDSN(frozenset(), None),
    }
    assert envelope.rcpt_tos == ["b@x", "c@x", "d@x"]


def test_dsn_is_not_kept_for_a_refused_recipient() -> None:
    handler = Keeper()
    with serving(smtp(handler, dsn=True)) as server, greeted(server.port) as client:
        assert text(client.command("MAIL FROM:<a@x>")) == "250 OK"
        assert text(client.command("RCPT TO:<gone@x> NOTIFY=FAILURE")) == (
            "550 Mailbox unavailable"
        )
        assert text(client.command("RCPT TO:<b@x> NOTIFY=DELAY")) == "250 OK"
        assert current_envelope(server).rcpt_dsn == {
            "b@x": RecipientDSN(frozenset({"DELAY"}), None)
        }


@pytest.mark.parametrize(
    "params", ["RET=BOGUS", "RET=HDRS ENVID=", "ENVID=bad+ZZ", "RET=FULL ENVID=a+"]
)
def test_bad_mail_dsn_value_is_a_syntax_error_and_stores_nothing(params: str) -> None:
    handler = Keeper()
    with serving(smtp(handler, dsn=True)) as server, greeted(server.port) as client:
        assert client.command(f"MAIL FROM:<a@x> {params}").code == 501
        envelope = current_envelope(server)
        assert (envelope.mail_from, envelope.dsn_ret, envelope.dsn_envid) == (None, None, None)
        client.send(transaction("a@x", "b@x", b"hi\r\n"))
        assert [text(reply) for reply in client.replies(4)] == [
            "250 OK",
            "250 OK",
            START_DATA,
            "250 OK",
        ]
    (delivered,) = handler.envelopes
    assert (delivered.dsn_ret, delivered.dsn_envid) == (None, None)


@pytest.mark.parametrize(
    "params",
    ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=", "ORCPT=rfc822", "ORCPT=rfc822;"],
)
def test_bad_rcpt_dsn_value_is_a_syntax_error_and_stores_nothing(params: str) -> None:
    with serving(smtp(Keeper(), dsn=True)) as server, greeted(server.port) as client:
        assert text(client.command("MAIL FROM:<a@x>")) == "250 OK"
        assert client.command(f"RCPT TO:<b@x> {params}").code == 501
        envelope = current_envelope(server)
        assert (envelope.rcpt_tos, envelope.rcpt_options, envelope.rcpt_dsn) == ([], [], {})


def test_unknown_parameters_are_still_refused_with_dsn_on() -> None:
    with serving(smtp(Keeper(), dsn=True)) as server, greeted(server.port) as client:
        assert text(client.command("MAIL FROM:<a@x> RET=FULL XFOO=1")) == (
            "555 MAIL FROM parameters not recognized or not implemented"
        )
        assert text(client.command("MAIL FROM:<a@x> RET=FULL")) == "250 OK"
        assert text(client.command("RCPT TO:<b@x> NOTIFY=SUCCESS XFOO=1")) == (
            "555 RCPT TO parameters not recognized or not implemented"
        )
        assert text(client.command("RCPT TO:<b@x> RET=FULL")) == (
            "555 RCPT TO parameters not recognized or not implemented"
        )
        assert current_envelope(server).rcpt_tos == []


# -- LIMITS RCPTMAX and the recipient cap ---------------------------------------------------


def rcpt_lines(count: int) -> bytes:
    return b"".join(b"RCPT TO:<r%d@x>\r\n" % number for number in range(count))


@pytest.mark.parametrize(("kwargs", "cap"), [({"rcpt_limit": 100}, 100), ({}, 1000)])
def test_recipients_over_the_cap_are_refused_temporarily(kwargs: dict[str, Any], cap: int) -> None:
    handler = Keeper()
    with serving(smtp(handler, **kwargs)) as server, greeted(server.port) as client:
        client.send(b"MAIL FROM:<a@x>\r\n" + rcpt_lines(cap + 2) + b"DATA\r\n")
        replies = [text(reply) for reply in client.replies(cap + 4)]
        assert replies[0] == "250 OK"
        assert replies[1 : cap + 1] == ["250 OK"] * cap
        assert replies[cap + 1 :] == ["452 4.5.3 Error: too many recipients"] * 2 + [START_DATA]
        client.send(b"capped\r\n.\r\n")
        assert text(client.reply()) == "250 OK"
    (envelope,) = handler.envelopes
    assert envelope.rcpt_tos == [f"r{number}@x" for number in range(cap)]


def test_the_cap_is_per_transaction() -> None:
    handler = Keeper()
    with serving(smtp(handler, rcpt_limit=100)) as server, greeted(server.port) as client:
        client.send(b"MAIL FROM:<a@x>\r\n" + rcpt_lines(101) + b"RSET\r\n")
        assert [reply.code for reply in client.replies(103)][-2:] == [452, 250]
        client.send(b"MAIL FROM:<a@x>\r\n" + rcpt_lines(100))
        assert {reply.code for reply in client.replies(101)} == {250}


def test_controller_passes_rcpt_limit_on() -> None:
    with controller(Keeper(), rcpt_limit=100, modern=True) as ctl, greeted(ctl.port) as client:
        client.send(b"MAIL FROM:<a@x>\r\n" + rcpt_lines(101))
        replies = client.replies(102)
    assert [reply.code for reply in replies[:101]] == [250] * 101
    assert text(replies[101]) == "452 4.5.3 Error: too many recipients"


# -- bare LF policy: command lines ------------------------------------------------------------


@pytest.mark.parametrize("line", [b"NOOP\n", b"NOOP\rRSET\r\n", b"NOOP\r\r\n"])
def test_bare_newline_in_a_command_is_refused_under_reject(line: bytes) -> None:
    with serving(smtp(Keeper(), bare_lf="reject")) as server, greeted(server.port) as client:
        client.send(line)
        assert text(client.reply()) == "500 5.5.2 Error: bare <CR> or <LF> received"
        assert text(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize("policy", ["keep", "normalize"])
def test_bare_lf_command_is_accepted_under_keep_and_normalize(policy: str) -> None:
    handler = Keeper()
    with serving(smtp(handler, bare_lf=policy)) as server, greeted(server.port) as client:
        client.send(b"NOOP\n")
        assert text(client.reply()) == "250 OK"
        client.send(b"MAIL FROM:<a@x>\nRCPT TO:<b@x>\nDATA\n")
        assert [text(reply) for reply in client.replies(3)] == ["250 OK", "250 OK", START_DATA]
        client.send(b"x\r\n.\r\n")
        assert text(client.reply()) == "250 OK"
    assert handler.contents == [b"x\r\n"]


def test_default_policy_is_keep_for_commands() -> None:
    with serving(smtp(Keeper())) as server, greeted(server.port) as client:
        client.send(b"NOOP\n")
        assert text(client.reply()) == "250 OK"


# -- bare LF policy: DATA --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "delivered_first"),
    [
        ("keep", b"line one\nline two\r\n"),
        ("normalize", b"line one\r\nline two\r\n"),
        ("reject", None),
    ],
)
def test_bare_lf_in_data_follows_the_policy(policy: str, delivered_first: bytes | None) -> None:
    handler = Keeper()
    with serving(smtp(handler, bare_lf=policy)) as server, greeted(server.port) as client:
        client.send(
            transaction("a@x", "b@x", b"line one\nline two\r\n")
            + transaction("c@x", "d@x", b"clean\r\n")
            + b"QUIT\r\n"
        )
        final = "250 OK" if delivered_first is not None else BARE_IN_DATA
        assert replies_until_close(client) == [
            "250 OK",
            "250 OK",
            START_DATA,
            final,
            "250 OK",
            "250 OK",
            START_DATA,
            "250 OK",
            "221 Bye",
        ]
    if delivered_first is None:
        assert handler.contents == [b"clean\r\n"]
        assert handler.senders == ["c@x"]
    else:
        assert handler.contents == [delivered_first, b"clean\r\n"]
        assert handler.senders == ["a@x", "c@x"]


# -- SMTP smuggling: every variant, every policy, modern on and off ------------------------------

SMUGGLING_ENDS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\n",
    b"\r\n.\n",
    b"\r\n.\x00\r\n",
]
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@x>\r\nDATA\r\nsmuggled\r\n.\r\n"
BODY = b"Subject: hello\r\n\r\nbody"


def unstuff(content: bytes) -> bytes:
    return content.replace(b"\r\n.", b"\r\n")


def to_crlf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize("modern", [False, True], ids=["classic", "modern"])
@pytest.mark.parametrize("policy", ["keep", "reject", "normalize"])
@pytest.mark.parametrize("fake_end", SMUGGLING_ENDS, ids=repr)
def test_smuggled_transaction_is_never_executed(fake_end: bytes, policy: str, modern: bool) -> None:
    handler = Keeper()
    factory = smtp(handler, modern=modern, bare_lf=policy)
    with serving(factory) as server, greeted(server.port) as client:
        client.send(
            b"MAIL FROM:<real@x>\r\nRCPT TO:<rcpt@x>\r\nDATA\r\n"
            + BODY
            + fake_end
            + SMUGGLED
            + b"\r\n.\r\nQUIT\r\n"
        )
        replies = replies_until_close(client)
    # The message ends at the CRLF.CRLF closing "smuggled"; the real end that
    # follows is two bad command lines.
    content = BODY + fake_end + SMUGGLED[: -len(b".\r\n")]
    bare = content.count(b"\r") + content.count(b"\n") != 2 * content.count(b"\r\n")
    if policy == "reject" and bare:
        assert [reply[:3] for reply in replies] == ["250", "250", "354", "550", "500", "500", "221"]
        assert "bare <CR> or <LF>" in replies[3]
        assert handler.envelopes == []
        return
    assert [reply[:3] for reply in replies] == ["250", "250", "354", "250", "500", "500", "221"]
    assert handler.senders == ["real@x"]
    assert handler.envelopes[0].rcpt_tos == ["rcpt@x"]
    expected = unstuff(to_crlf(content)) if policy == "normalize" else unstuff(content)
    assert handler.contents == [expected]
