"""Fault rules of the test server, seen from the client's side: a reply by command, by
address and by attempt; delays; dropped connections (before a reply and during a
message); refused TLS; the rule counters; and the arguments refused up front.

Each fault is checked with the exception smtpwire.client (aiosmtplib's API) or
smtplib raises for it, the inbox (nothing recorded that was not accepted), and the
next connection (the server carries on).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Collection

import pytest

import smtpwire.client as aiosmtplib
from plugin.helpers import RECIPIENT, SENDER, WAIT, StartServer, body, connect, send
from smtpwire.server.testing import (
    Fault,
    FaultRules,
    InboxTimeout,
    SMTPTestServer,
    TestCertificates,
)

BIG = f"From: {SENDER}\r\nSubject: big\r\n\r\n" + ("x" * 998 + "\r\n") * 2048  # 2 MiB


async def client_send(server: SMTPTestServer, subject: str = "hi", **kwargs: object) -> object:
    """One message with smtpwire.client, reaching ``server`` as it is set up."""
    return await aiosmtplib.send(
        body(subject),
        sender=SENDER,
        recipients=[RECIPIENT],
        **{**server.client_kwargs(), "timeout": WAIT, **kwargs},
    )


# --- replies, by command ------------------------------------------------------------------------


async def test_greeting_refused_with_421(server: SMTPTestServer) -> None:
    rule = server.faults.reply(421, "4.3.2 Service not available", command="CONNECT", times=1)
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
        await client_send(server)
    assert caught.value.code == 421
    assert "Service not available" in caught.value.message
    assert (rule.seen, rule.fired) == (1, 1)
    await client_send(server, "next")  # times=1: the next connection is greeted
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "next"


def test_greeting_refused_with_smtplib(server: SMTPTestServer) -> None:
    server.faults.reply(421, "4.3.2 Busy", command="connect")  # any case
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        connect(server)
    assert caught.value.smtp_code == 421


async def test_ehlo_refused_the_client_falls_back_to_helo(server: SMTPTestServer) -> None:
    rule = server.faults.reply(502, "5.5.1 Not implemented", command="EHLO")
    await client_send(server)
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert rule.fired == 1
    assert any(line.upper().startswith("C: HELO ") for line in message.transcript)
    assert "S: 502 5.5.1 Not implemented" in message.transcript


async def test_ehlo_and_helo_refused(server: SMTPTestServer) -> None:
    server.faults.reply(550, "5.7.1 Go away", command="EHLO")
    server.faults.reply(550, "5.7.1 Go away", command="HELO")
    with pytest.raises(aiosmtplib.SMTPHeloError) as caught:
        await client_send(server)
    assert caught.value.code == 550
    assert len(server.inbox) == 0


async def test_mail_refused(server: SMTPTestServer) -> None:
    server.faults.reply(550, "5.7.1 Sender blocked", command="MAIL")
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
        await client_send(server)
    assert (caught.value.code, caught.value.sender) == (550, SENDER)
    assert "Sender blocked" in caught.value.message


async def test_every_recipient_refused(server: SMTPTestServer) -> None:
    server.faults.reply(550, "5.1.1 No such user", command="RCPT")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
        await client_send(server)
    [refusal] = caught.value.recipients
    assert (refusal.code, refusal.recipient) == (550, RECIPIENT)
    assert "No such user" in refusal.message


@pytest.mark.parametrize("command", ["DATA", "MESSAGE"])
async def test_data_or_message_refused(server: SMTPTestServer, command: str) -> None:
    rule = server.faults.reply(554, "5.7.1 Rejected as spam", command=command, times=1)
    async with aiosmtplib.SMTP(**server.client_kwargs(), timeout=WAIT) as client:
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await client.sendmail(SENDER, [RECIPIENT], body("refused"))
        assert (caught.value.code, caught.value.message) == (554, "5.7.1 Rejected as spam")
        # One reply for the refusal, no more: the connection is still in step.
        assert (await client.noop()).code == 250
        await client.sendmail(SENDER, [RECIPIENT], body("accepted"))
    assert rule.fired == 1
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "accepted"
    replies = [line for line in message.transcript if line.startswith("S: 554")]
    assert replies == ["S: 554 5.7.1 Rejected as spam"]


def test_message_refused_then_smtplib_stays_in_step(server: SMTPTestServer) -> None:
    server.faults.reply(451, "4.3.0 Try again later", command="MESSAGE", times=1)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail(SENDER, [RECIPIENT], body("refused"))
        assert caught.value.smtp_code == 451
        assert client.noop()[0] == 250
        assert client.sendmail(SENDER, [RECIPIENT], body("accepted")) == {}
        assert client.noop()[0] == 250
    [message] = server.inbox.wait_for(timeout=WAIT)
    assert message.subject == "accepted"


def test_a_2xx_reply_to_the_message_is_not_recorded(server: SMTPTestServer) -> None:
    """A rule's 250 to a message answers it without accepting it (the documented
    "not recorded"): a client that believes it delivered, while nothing arrived."""
    rule = server.faults.reply(250, "2.0.0 Pretending", command="MESSAGE", times=1)
    send(server, "swallowed")
    send(server, "kept")
    [message] = server.inbox.wait_for(timeout=WAIT)
    assert message.subject == "kept"
    assert rule.fired == 1


# --- by address ---------------------------------------------------------------------------------


async def test_one_recipient_refused_by_address_case_insensitively(
    server: SMTPTestServer,
) -> None:
    rule = server.faults.reply(
        550, "5.1.1 No such user", command="RCPT", address="Gone@Example.COM"
    )
    async with aiosmtplib.SMTP(**server.client_kwargs(), timeout=WAIT) as client:
        refused, _ = await client.sendmail(
            SENDER, ["ann@example.com", "GONE@example.com"], body("partly")
        )
    assert list(refused) == ["GONE@example.com"]
    assert (refused["GONE@example.com"].code, refused["GONE@example.com"].message) == (
        550,
        "5.1.1 No such user",
    )
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.rcpt_tos == ("ann@example.com",)
    assert (rule.seen, rule.fired) == (1, 1)  # ann's RCPT did not match it


def test_smtplib_partial_refusal(server: SMTPTestServer) -> None:
    server.faults.reply(550, "5.1.1 No such user", command="RCPT", address="gone@example.com")
    refused = send(server, to=["ann@example.com", "gone@example.com"])
    assert refused == {"gone@example.com": (550, b"5.1.1 No such user")}
    assert server.inbox.wait_for(timeout=WAIT)[0].rcpt_tos == ("ann@example.com",)


async def test_sender_refused_by_address(server: SMTPTestServer) -> None:
    server.faults.reply(550, "5.7.1 Blocked", command="MAIL", address="spam@example.com")
    await client_send(server, "from the app")  # another sender: not matched
    with pytest.raises(aiosmtplib.SMTPSenderRefused):
        await aiosmtplib.send(
            body("spam"), sender="SPAM@example.com", recipients=[RECIPIENT],
            **server.client_kwargs(),
        )  # fmt: skip
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "from the app"


def test_an_address_rule_without_a_command_matches_mail_and_rcpt(
    server: SMTPTestServer,
) -> None:
    rule = server.faults.reply(550, "5.7.1 Not this one", address="eve@example.com")
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(server, sender="eve@example.com")
    assert send(server, to=["ann@example.com", "eve@example.com"]) == {
        "eve@example.com": (550, b"5.7.1 Not this one")
    }
    assert rule.fired == 2
    assert server.inbox.wait_for(timeout=WAIT)[0].rcpt_tos == ("ann@example.com",)


def test_a_message_rule_by_address_matches_sender_or_any_recipient(
    server: SMTPTestServer,
) -> None:
    server.faults.reply(554, "5.7.1 Refused", command="MESSAGE", address="Bob@Example.com")
    send(server, "to ann")
    with pytest.raises(smtplib.SMTPDataError):
        send(server, "to ann and bob", to=["ann@example.com", "bob@example.com"])
    with pytest.raises(smtplib.SMTPDataError):
        send(server, "from bob", sender="bob@example.com")
    assert [m.subject for m in server.inbox.wait_for(timeout=WAIT)] == ["to ann"]


# --- by attempt, and how many times ---------------------------------------------------------------


def _outcomes(server: SMTPTestServer, attempts: int) -> list[int]:
    """The reply code each of ``attempts`` sends got for its one recipient."""
    codes = []
    for number in range(attempts):
        refused = send(server, f"attempt {number + 1}", to=["ann@example.com", "bob@example.com"])
        codes.append(refused["ann@example.com"][0] if "ann@example.com" in refused else 250)
    return codes


def test_the_first_attempt_fails_and_the_retry_succeeds(server: SMTPTestServer) -> None:
    rule = server.faults.reply(451, "4.3.0 Try later", command="MESSAGE", attempt=1)
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send(server, "attempt 1")
    assert caught.value.smtp_code == 451
    send(server, "attempt 2")
    send(server, "attempt 3")
    assert (rule.seen, rule.fired) == (3, 1)
    subjects = [m.subject for m in server.inbox.wait_for(2, timeout=WAIT)]
    assert subjects == ["attempt 2", "attempt 3"]


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        ({2, 3}, [250, 452, 452, 250, 250]),
        ([1, 4], [452, 250, 250, 452, 250]),
        (5, [250, 250, 250, 250, 452]),
    ],
)
def test_chosen_attempts_fail(
    server: SMTPTestServer, attempt: int | Collection[int], expected: list[int]
) -> None:
    rule = server.faults.reply(
        452, "4.2.2 Mailbox full", command="RCPT", address="ann@example.com", attempt=attempt
    )
    assert _outcomes(server, 5) == expected
    assert rule.seen == 5
    assert rule.fired == expected.count(452)


def test_times_limits_how_often_a_rule_acts(server: SMTPTestServer) -> None:
    rule = server.faults.reply(
        452, "4.2.2 Mailbox full", command="RCPT", address="ann@example.com", times=2
    )
    assert _outcomes(server, 4) == [452, 452, 250, 250]
    assert (rule.seen, rule.fired) == (4, 2)


def test_the_first_matching_rule_acts(server: SMTPTestServer) -> None:
    first = server.faults.reply(
        451, "4.3.0 First", command="RCPT", address="bob@example.com", times=1
    )
    second = server.faults.reply(550, "5.1.1 Second", command="RCPT", address="bob@example.com")
    recipients = ["ann@example.com", "bob@example.com"]
    assert send(server, to=recipients) == {"bob@example.com": (451, b"4.3.0 First")}
    assert send(server, to=recipients) == {"bob@example.com": (550, b"5.1.1 Second")}
    assert (first.fired, second.fired) == (1, 1)
    assert [rule.reply for rule in server.faults.rules] == ["451 4.3.0 First", "550 5.1.1 Second"]


def test_rules_for_successive_attempts(server: SMTPTestServer) -> None:
    server.faults.reply(451, "4.3.0 First try", command="RCPT", address=RECIPIENT, attempt=1)
    server.faults.reply(452, "4.2.2 Second try", command="RCPT", address=RECIPIENT, attempt=2)
    assert _outcomes(server, 3) == [451, 452, 250]


# --- delays --------------------------------------------------------------------------------------

DELAY = 0.3


def test_a_delayed_reply(server: SMTPTestServer) -> None:
    rule = server.faults.delay(DELAY, command="MAIL")
    with connect(server) as client:
        client.ehlo()
        started = time.monotonic()
        code, _ = client.mail(SENDER)
        took = time.monotonic() - started
        assert code == 250  # then carried out as usual
        started = time.monotonic()
        assert client.rcpt(RECIPIENT)[0] == 250
        assert time.monotonic() - started < WAIT  # only MAIL is held back
    assert DELAY * 0.9 <= took < WAIT
    assert rule.fired == 1


def test_a_delayed_refusal(server: SMTPTestServer) -> None:
    server.faults.reply(451, "4.4.1 Slow and no", command="RCPT", delay=DELAY)
    with connect(server) as client:
        client.ehlo()
        client.mail(SENDER)
        started = time.monotonic()
        code, _ = client.rcpt(RECIPIENT)
        took = time.monotonic() - started
    assert code == 451
    assert DELAY * 0.9 <= took < WAIT


async def test_a_delayed_greeting(server: SMTPTestServer) -> None:
    server.faults.delay(DELAY, command="CONNECT")
    started = time.monotonic()
    await client_send(server)
    assert DELAY * 0.9 <= time.monotonic() - started < WAIT
    await server.inbox.wait_for_async(timeout=WAIT)


async def test_a_delay_beyond_the_client_timeout(server: SMTPTestServer) -> None:
    server.faults.delay(2.0, command="DATA", times=1)
    async with aiosmtplib.SMTP(**server.client_kwargs()) as client:
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
            await client.sendmail(SENDER, [RECIPIENT], body("too slow"), timeout=0.3)
    await client_send(server, "next")
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "next"


# --- dropped connections ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "MESSAGE"])
async def test_dropped_before_the_reply(server: SMTPTestServer, command: str) -> None:
    rule = server.faults.drop(command=command, times=1)
    # Dropped before the greeting, aiosmtplib calls it a failure to connect.
    expected = (
        aiosmtplib.SMTPConnectError if command == "CONNECT" else aiosmtplib.SMTPServerDisconnected
    )
    with pytest.raises(expected):
        await client_send(server, "dropped")
    assert (rule.seen, rule.fired) == (1, 1)
    await client_send(server, "next")
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "next"


def test_dropped_before_the_reply_with_smtplib(server: SMTPTestServer) -> None:
    server.faults.drop(command="RCPT", times=1)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server)
    send(server, "next")
    assert server.inbox.wait_for(timeout=WAIT)[0].subject == "next"


async def test_dropped_during_data(server: SMTPTestServer) -> None:
    rule = server.faults.drop_during_data(times=1)
    async with aiosmtplib.SMTP(**server.client_kwargs(), timeout=WAIT) as client:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.sendmail(SENDER, [RECIPIENT], BIG)
    assert (rule.seen, rule.fired) == (1, 1)
    await client_send(server, "next")
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "next"


@pytest.mark.parametrize("size", ["small", "big"])
def test_dropped_during_data_with_smtplib(server: SMTPTestServer, size: str) -> None:
    server.faults.drop_during_data(times=1)
    with connect(server) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail(SENDER, [RECIPIENT], BIG if size == "big" else body("small"))
    send(server, "next")
    [message] = server.inbox.wait_for(timeout=WAIT)
    assert message.subject == "next"


def test_dropped_during_data_after_the_354(server: SMTPTestServer) -> None:
    server.faults.drop_during_data()
    with connect(server) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(RECIPIENT)
        code, _ = client.docmd("DATA")
        assert code == 354  # the go-ahead came, then the hang-up
        client.send(b"Subject: cut\r\n\r\npart of a message\r\n")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.getreply()
    with pytest.raises(InboxTimeout):
        server.inbox.wait_for(timeout=0.2)


def test_dropped_during_data_for_one_recipient(server: SMTPTestServer) -> None:
    rule = server.faults.drop_during_data(address="Bob@Example.com")
    send(server, "to ann")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server, "to bob", to=["bob@example.com"])
    assert rule.fired == 1


async def test_dropped_during_a_bdat_message(server: SMTPTestServer) -> None:
    rule = server.faults.drop_during_data()
    async with aiosmtplib.SMTP(**server.client_kwargs(), chunking=True, timeout=WAIT) as client:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.sendmail(SENDER, [RECIPIENT], BIG)
    assert rule.fired == 1


# --- refused TLS ---------------------------------------------------------------------------------


async def test_starttls_refused_then_accepted(start_server: StartServer) -> None:
    server = start_server(tls="starttls")
    rule = server.faults.refuse_tls(attempt=1)
    with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
        await client_send(server, "not sent")
    assert caught.value.code == 454
    assert "TLS not available" in caught.value.message
    await client_send(server, "over TLS")  # the retry
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "over TLS"
    assert message.tls
    assert (rule.seen, rule.fired) == (2, 1)


def test_starttls_refused_with_smtplib(
    start_server: StartServer, certificates: TestCertificates
) -> None:
    server = start_server(tls="starttls")
    server.faults.refuse_tls()
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPResponseException) as caught:
            client.starttls(context=certificates.client_context())
        assert caught.value.smtp_code == 454
        assert client.noop()[0] == 250  # still there, in plaintext


async def test_implicit_tls_refused(start_server: StartServer) -> None:
    server = start_server(tls="implicit")
    rule = server.faults.refuse_tls(times=1)
    with pytest.raises((aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected)):
        await client_send(server, "not sent")
    assert (rule.seen, rule.fired) == (1, 1)
    await client_send(server, "next")
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.tls


def test_implicit_tls_refused_with_smtplib(
    start_server: StartServer, certificates: TestCertificates
) -> None:
    server = start_server(tls="implicit")
    server.faults.refuse_tls()
    with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP_SSL(*server.address, context=certificates.client_context(), timeout=WAIT)


def test_implicit_tls_refused_before_the_handshake(
    start_server: StartServer, certificates: TestCertificates
) -> None:
    server = start_server(tls="implicit")
    server.faults.refuse_tls()
    context = certificates.client_context()
    with (
        socket.create_connection(server.address, timeout=WAIT) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        context.wrap_socket(raw, server_hostname="localhost").close()


async def test_implicit_tls_greeting_refused_with_421(start_server: StartServer) -> None:
    server = start_server(tls="implicit")
    server.faults.reply(421, "4.3.2 Busy", command="CONNECT")
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
        await client_send(server)
    assert caught.value.code == 421


# --- counters, clearing, and the arguments refused up front ---------------------------------------


def test_counters_count_only_matching_commands(server: SMTPTestServer) -> None:
    rule = server.faults.reply(550, command="RCPT", address="bob@example.com", attempt=2)
    assert (rule.seen, rule.fired) == (0, 0)
    send(server, to=["ann@example.com"])
    send(server, to=["ann@example.com", "bob@example.com"])
    assert (rule.seen, rule.fired) == (1, 0)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(server, to=["bob@example.com"])
    assert (rule.seen, rule.fired) == (2, 1)


def test_reset_forgets_the_rules(server: SMTPTestServer) -> None:
    server.faults.reply(550, command="MAIL")
    assert len(server.faults.rules) == 1
    server.reset()
    assert server.faults.rules == []
    send(server)
    assert len(server.inbox.wait_for(timeout=WAIT)) == 1


def test_a_rule_returns_a_fault() -> None:
    rules = FaultRules()
    rule = rules.reply(550, "5.1.1 No", command="rcpt", address="Ann@Example.com", attempt={1, 3})
    assert isinstance(rule, Fault)
    assert rule.command == "RCPT"
    assert rule.address == "ann@example.com"
    assert rule.attempts == frozenset({1, 3})
    assert rule.reply == "550 5.1.1 No"
    assert rules.rules == [rule]
    rules.clear()
    assert rules.rules == []


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (199, "too low"),
        (600, "too high"),
        (25, ""),
        (2500, ""),
        (-250, ""),
        (250, "two\r\nlines"),
        (250, "bare\nLF"),
        (250, "bare\rCR"),
        (250, "nul\x00"),
    ],
)
def test_invalid_replies_are_refused(code: int, text: str) -> None:
    with pytest.raises(ValueError, match="reply"):
        FaultRules().reply(code, text)


@pytest.mark.parametrize("code", [200, 250, 354, 421, 599])
def test_codes_from_200_to_599_are_allowed(code: int) -> None:
    assert FaultRules().reply(code, "fine").reply == f"{code} fine"


def test_invalid_arguments_are_refused() -> None:
    rules = FaultRules()
    with pytest.raises(ValueError, match="unknown command"):
        rules.reply(550, command="MAIL FROM")
    with pytest.raises(ValueError, match="unknown command"):
        rules.drop(command="XYZZY")
    with pytest.raises(ValueError, match="attempt"):
        rules.reply(550, command="RCPT", attempt=0)
    with pytest.raises(ValueError, match="attempt"):
        rules.reply(550, command="RCPT", attempt={0, 1})
    with pytest.raises(ValueError, match="attempt"):
        rules.drop(command="RCPT", attempt=[])
    with pytest.raises(ValueError, match="times"):
        rules.reply(550, command="RCPT", times=0)
    with pytest.raises(ValueError, match="negative"):
        rules.delay(-0.5, command="MAIL")
    assert rules.rules == []  # nothing half-added


def test_a_negative_delay_on_a_reply_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        FaultRules().reply(451, command="RCPT", delay=-0.5)


async def test_a_refused_tls_connect_has_closed_its_socket_when_it_raises(
    start_server: StartServer,
) -> None:
    """Regression (a ResourceWarning seen in CI on 3.13): connect() failing over TLS
    returned with the socket still closing, so an asyncio.run() ending right after
    left it to the garbage collector.  It now waits for the close to finish.  The
    socket is the test's own (``sock=``): a TLS transport does not show its socket
    on every Python version."""
    server = start_server(tls="implicit")
    server.faults.reply(421, "4.3.2 Busy", command="CONNECT")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    try:
        with pytest.raises(aiosmtplib.SMTPConnectResponseError):
            await client_send(server, sock=sock, port=None)
        assert sock.fileno() == -1  # closed, not merely closing
    finally:
        sock.close()
