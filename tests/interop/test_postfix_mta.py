"""A real MTA as a peer: a private Postfix (see :mod:`interop._postfix`) relaying into
smtpwire.server, delivering by LMTP into smtpwire's LMTP server, and taking mail
from smtpwire.client.

1. Postfix relays into smtpwire.server (its ``relayhost``), in plaintext and over
   STARTTLS with the certificate verified against the test CA: every message
   submitted to Postfix's smtpd (by smtplib) arrives exactly once, with its
   envelope, and with the bytes sent below the Received: header Postfix adds.
2. Postfix delivers by LMTP into smtpwire.server.lmtp.LMTP, whose handler refuses
   some recipients at RCPT and fails others (or the whole message) after DATA,
   some for good and some only the first time: Postfix's log must say, for each
   recipient, what the replies said (sent, deferred then sent, bounced), and a
   recipient is logged as sent exactly when the handler stored the message for it.
   With a size limit on the LMTP server, a message over it is refused at the end
   of DATA with a 552 for each recipient, and Postfix bounces each recipient.
3. smtpwire.client (the pool, and parallel SMTP clients) sends over required
   STARTTLS into Postfix's smtpd, which forbids unauthorised pipelining and bare
   newlines: every message is queued, and Postfix logs no protocol complaint.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import re
import smtplib
import ssl
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from interop._postfix import QUEUE_ID, Postfix, private_postfix, require_postfix, supported
from interop.peers import CLIENT_NAME, WAIT, Inbox, Received
from smtpwire.client import SMTP
from smtpwire.client.pool import SMTPPool
from smtpwire.server.controller import Controller
from smtpwire.server.lmtp import LMTP

DELIVERY_TIMEOUT = 60.0  # seconds: bound on Postfix emptying its queue
RELAYED = 300  # messages per relay test
SUBMITTERS = 4  # smtplib connections submitting to Postfix at once
STATUS = re.compile(
    rf"postfix/(?:smtp|lmtp|discard)\[\d+\]: ({QUEUE_ID}): to=<([^>]*)>,.*"
    r" status=(\w+) \((.*)\)$",
    re.MULTILINE,
)
RECEIVED = re.compile(rb"Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n")


# -- messages of varied shape -----------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    test_id: str
    sender: str
    recipients: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]


def body_lines(number: int) -> list[str]:
    """The body: tiny, 8-bit, a 998-octet line, dots at line starts, ~64 KiB, or
    (every 50th) ~1 MiB."""
    shape = number % 6
    if number % 50 == 49:
        return [f"{line:07d} " + "x" * 68 for line in range(1024 * 1024 // 78)]
    if shape == 0:
        return ["hi"]
    if shape == 1:
        return ["caf\u00e9 na\u00efve \u00fcber \u2603", "\u00e0 la ligne"]
    if shape == 2:
        return ["before", "L" * 998, "after"]
    if shape == 3:
        return [".", "..", ".leading dot", "...three", "", "."]
    if shape == 4:
        return [f"line {line} " + "m" * 60 for line in range(64 * 1024 // 70)]
    return ["an empty last line follows", ""]


def outgoing(number: int, run: str) -> Outgoing:
    """Message ``number`` of a run: 1 to 4 recipients, a null sender sometimes, and
    a UTF-8 address (with SMTPUTF8) every 7th."""
    utf8 = number % 7 == 3
    sender = "" if number % 11 == 5 else f"sender-{number}@example.org"
    if utf8:
        sender = f"jos\u00e9-{number}@example.org"
    recipients = [f"rcpt{index}-{number}@example.net" for index in range(number % 4 + 1)]
    if utf8:
        recipients.append(f"zo\u00eb-{number}@example.net")
    test_id = f"{number}.{run}@{CLIENT_NAME}"
    headers = [
        f"From: <{sender or 'nobody@example.org'}>",
        f"To: {', '.join(f'<{recipient}>' for recipient in recipients)}",
        f"Subject: Postfix interop {number}",
        "Date: Mon, 01 Jan 2024 00:00:00 +0000",
        f"Message-ID: <{test_id}>",
        f"X-Test-Id: {test_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    content = "\r\n".join([*headers, "", *body_lines(number)]) + "\r\n"
    options = ["BODY=8BITMIME", *(["SMTPUTF8"] if utf8 else [])]
    return Outgoing(test_id, sender, tuple(recipients), content.encode(), tuple(options))


def submit(port: int, messages: Sequence[Outgoing]) -> None:
    """Submits ``messages`` to Postfix's smtpd with smtplib, over SUBMITTERS
    connections at once."""

    def one_connection(share: Sequence[Outgoing]) -> None:
        with smtplib.SMTP("127.0.0.1", port, CLIENT_NAME, timeout=WAIT) as smtp:
            for message in share:
                refused = smtp.sendmail(
                    message.sender,
                    list(message.recipients),
                    message.content,
                    mail_options=list(message.mail_options),
                )
                assert refused == {}, (message.test_id, refused)

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        shares = [messages[start::SUBMITTERS] for start in range(SUBMITTERS)]
        for done in [pool.submit(one_connection, share) for share in shares]:
            done.result(timeout=DELIVERY_TIMEOUT)


def id_of(content: bytes) -> str:
    found = email.message_from_bytes(content)["X-Test-Id"]
    assert found is not None, content[:500]
    return str(found)


def statuses(postfix: Postfix) -> dict[tuple[str, str], list[str]]:
    """(Message-ID, recipient) -> the delivery statuses Postfix logged, in order."""
    message_ids = postfix.message_ids()
    found: dict[tuple[str, str], list[str]] = {}
    for queue_id, recipient, status, _reply in STATUS.findall(postfix.log()):
        found.setdefault((message_ids[queue_id], recipient), []).append(status)
    return found


@pytest.fixture(scope="module")
def server_certificate(certificate_authority: trustme.CA) -> trustme.LeafCert:
    return certificate_authority.issue_cert("localhost", "127.0.0.1")


# -- 1. Postfix relaying into smtpwire.server ----------------------------------------------


def assert_relayed(inbox: Inbox, sent: Sequence[Outgoing], *, tls: bool) -> None:
    by_id: dict[str, list[Received]] = {}
    for received in inbox.messages:
        by_id.setdefault(id_of(received.content), []).append(received)
    assert sorted(by_id) == sorted(message.test_id for message in sent)
    for message in sent:
        [received] = by_id[message.test_id]  # exactly once
        # The null reverse-path is "<>" in the envelope, as aiosmtpd has it.
        assert received.mail_from == (message.sender or "<>")
        assert sorted(received.rcpt_tos) == sorted(message.recipients)
        assert received.tls is tls
        assert received.smtp_utf8 is ("SMTPUTF8" in message.mail_options)
        assert "BODY=8BITMIME" in received.mail_options
        # Postfix puts its Received: header first and changes nothing else.
        assert received.content.endswith(message.content), message.test_id
        added = received.content[: len(received.content) - len(message.content)]
        assert RECEIVED.fullmatch(added), added


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_postfix_relays_into_smtpwire_server(
    tls: bool,
    serve: Callable[..., Controller],
    server_tls_context: ssl.SSLContext,
    ca_file: Path,
) -> None:
    inbox = Inbox()
    options: dict[str, Any] = {"tls_context": server_tls_context} if tls else {}
    controller = serve(inbox, **options)
    settings = {"relayhost": f"[127.0.0.1]:{controller.port}", "smtp_tls_loglevel": "1"}
    if tls:
        # Stricter than "encrypt": the certificate must chain to the test CA and
        # name the peer ("localhost"; Postfix does not match IP addresses).
        settings |= {
            "smtp_tls_security_level": "secure",
            "smtp_tls_secure_cert_match": "localhost",
            "smtp_tls_CAfile": str(ca_file),
        }
    run = uuid.uuid4().hex[:12]
    sent = [outgoing(number, run) for number in range(RELAYED)]
    with private_postfix(settings) as postfix:
        submit(postfix.port, sent)
        postfix.wait_for_empty_queue(DELIVERY_TIMEOUT)
        expected = {(message.test_id, rcpt) for message in sent for rcpt in message.recipients}
        postfix.wait_until(lambda: set(statuses(postfix)) >= expected, "all logged", WAIT)
        logged = statuses(postfix)
        log = postfix.log()
    assert_relayed(inbox, sent, tls=tls)
    assert logged == {pair: ["sent"] for pair in expected}
    if tls:
        assert "Verified TLS connection established to 127.0.0.1" in log
        assert "Untrusted TLS" not in log
        assert "Anonymous TLS" not in log


# -- 2. Postfix delivering by LMTP into smtpwire's LMTP server -----------------------------

LMTP_MESSAGES = 60
LMTP_DOMAIN = "lmtp.test"
SENDER = "sender@origin.test"

# What the handler answers each kind of recipient (the address's first part), and
# so what Postfix must log for it: "later" and "full" fail once, then succeed.
EXPECTED_STATUSES = {
    "ok": ["sent"],
    "refuse": ["bounced"],  # 550 at RCPT
    "later": ["deferred", "sent"],  # 451 at RCPT, the first time
    "full": ["deferred", "sent"],  # 452 for it after DATA, the first time
    "gone": ["bounced"],  # 554 for it after DATA
}


class Mailboxes:
    """An LMTP handler: refuses, defers and fails recipients by their names, and
    records every (Message-ID, recipient) it answered 250 for after DATA, and every
    bounce Postfix sent back to the sender."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, str]] = []
        self.bounces: list[Received] = []
        self.tries: Counter[tuple[str, str]] = Counter()  # (recipient, stage)

    def first_try(self, recipient: str, stage: str) -> bool:
        self.tries[recipient, stage] += 1
        return self.tries[recipient, stage] == 1

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        kind = address.split("-", 1)[0]
        if kind == "refuse":
            return "550 5.1.1 No such mailbox"
        if kind == "later" and self.first_try(address, "RCPT"):
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_exception(self, error: Exception) -> str:
        """What a failing handle_DATA answers for every recipient: a temporary
        failure, as an LMTP store should report one.  (Without this hook, classic
        mode sends aiosmtpd's ``500 Error: (RuntimeError) ...``; after a 500 for
        every recipient at the end of DATA, Postfix 3.7's LMTP client neither
        quits nor reuses the connection: it waits for a reply that never comes, and
        the message stays in its active queue for the lmtp timeouts.)"""
        return "451 4.3.0 Error: the mailbox store failed; try again"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> list[str]:
        content = envelope.original_content
        if envelope.mail_from == "<>":
            self.bounces.append(
                Received(
                    helo=session.host_name,
                    mail_from=envelope.mail_from,
                    mail_options=tuple(envelope.mail_options),
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=content,
                    smtp_utf8=bool(envelope.smtp_utf8),
                    tls=False,
                    login=None,
                    session_id=id(session),
                )
            )
            return ["250 2.0.0 Bounce stored"] * len(envelope.rcpt_tos)
        test_id = id_of(content)
        if b"\r\nSubject: explode" in content and self.first_try(test_id, "DATA"):
            raise RuntimeError("the mailbox store is on fire")
        replies = []
        for recipient in envelope.rcpt_tos:
            kind = recipient.split("-", 1)[0]
            if kind == "gone":
                replies.append("554 5.2.1 Mailbox disabled")
            elif kind == "full" and self.first_try(recipient, "DATA"):
                replies.append("452 4.2.2 Mailbox full")
            else:
                self.stored.append((test_id, recipient))
                replies.append("250 2.0.0 Stored")
        return replies


class LMTPController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def mailboxes() -> Iterator[tuple[Mailboxes, int]]:
    handler = Mailboxes()
    controller = LMTPController(handler, hostname="127.0.0.1", port=0, server_hostname="lmtp.test")
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def lmtp_message(number: int, run: str) -> tuple[Outgoing, dict[str, list[str]]]:
    """Message ``number`` and what Postfix must log for each of its recipients: every
    kind in turn, two or three kinds a message; every 10th message makes the handler
    raise after DATA the first time (a 451 for each recipient: all deferred, then
    sent)."""
    explode = number % 10 == 9
    kinds = ["ok"] if explode else ["ok", *list(EXPECTED_STATUSES)[1 + number % 4 :][:2]]
    recipients = [f"{kind}-{number}@{LMTP_DOMAIN}" for kind in kinds]
    recipients.append(f"ok-{number}-b@{LMTP_DOMAIN}")
    test_id = f"lmtp-{number}.{run}@{CLIENT_NAME}"
    subject = "explode" if explode else f"LMTP {number}"
    content = (
        f"From: <{SENDER}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{test_id}>\r\nX-Test-Id: {test_id}\r\n\r\n.dot\r\nbody {number}\r\n"
    ).encode()
    expected = {
        recipient: EXPECTED_STATUSES["later" if explode else recipient.split("-", 1)[0]]
        for recipient in recipients
    }
    return Outgoing(test_id, SENDER, tuple(recipients), content, ()), expected


def bounced_pairs(bounce: Received) -> list[tuple[str, str]]:
    """(Message-ID, recipient) for each recipient a bounce reports as failed."""
    # The returned headers are the only X-Test-Id in the report.
    [message_id] = re.findall(rb"^X-Test-Id: (\S+)\r$", bounce.content, re.MULTILINE)
    failed: list[str] = []
    for part in email.message_from_bytes(bounce.content).walk():
        if part.get_content_type() == "message/delivery-status":
            # One block of fields for the message, then one per recipient.
            for block in part.get_payload():
                assert isinstance(block, email.message.Message)
                if block.get("Action") == "failed":
                    failed.append(block["Final-Recipient"].split(";", 1)[1].strip())
    return [(message_id.decode(), recipient) for recipient in failed]


def test_postfix_delivers_by_lmtp_into_smtpwire(mailboxes: tuple[Mailboxes, int]) -> None:
    handler, port = mailboxes
    run = uuid.uuid4().hex[:12]
    messages = [lmtp_message(number, run) for number in range(LMTP_MESSAGES)]
    sent = [message for message, _ in messages]
    expected = {
        (message.test_id, recipient): statuses
        for message, per_recipient in messages
        for recipient, statuses in per_recipient.items()
    }
    settings = {"default_transport": f"lmtp:inet:127.0.0.1:{port}"}
    with private_postfix(settings) as postfix:
        submit(postfix.port, sent)
        postfix.wait_for_empty_queue(DELIVERY_TIMEOUT)

        def all_logged() -> bool:
            found = statuses(postfix)
            return all(len(found.get(pair, [])) >= len(want) for pair, want in expected.items())

        postfix.wait_until(all_logged, "every recipient's status logged", WAIT)
        logged = statuses(postfix)
    delivered = {pair: found for pair, found in logged.items() if pair in expected}
    assert delivered == expected
    # Nothing else was delivered but the bounces, to the sender.
    others = {pair: found for pair, found in logged.items() if pair not in expected}
    assert {(recipient, *found) for (_, recipient), found in others.items()} == {(SENDER, "sent")}
    # "sent" exactly when stored: once each, never sent without being stored.
    assert Counter(handler.stored) == Counter(
        pair for pair, want in expected.items() if "sent" in want
    )
    # Each bounced recipient reported back to the sender exactly once.
    reported = Counter(pair for bounce in handler.bounces for pair in bounced_pairs(bounce))
    assert reported == Counter(pair for pair, want in expected.items() if want == ["bounced"])
    assert all(bounce.rcpt_tos == (SENDER,) for bounce in handler.bounces)


LMTP_SIZE_LIMIT = 64 * 1024  # octets: smtpwire's LMTP server refuses larger messages
SIZED_MESSAGES = 8  # half of them over the limit


@pytest.fixture
def size_limited_mailboxes() -> Iterator[tuple[Mailboxes, int]]:
    handler = Mailboxes()
    controller = LMTPController(
        handler,
        hostname="127.0.0.1",
        port=0,
        server_hostname="lmtp.test",
        data_size_limit=LMTP_SIZE_LIMIT,
    )
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def sized_message(number: int, run: str) -> Outgoing:
    """Two recipients; every other message (odd ``number``) about 100 KiB, over
    LMTP_SIZE_LIMIT, the others a few lines."""
    recipients = (f"ok-{number}@{LMTP_DOMAIN}", f"ok-{number}-b@{LMTP_DOMAIN}")
    test_id = f"sized-{number}.{run}@{CLIENT_NAME}"
    lines = [f"{line:07d} " + "y" * 68 for line in range(1300)] if number % 2 else ["small"]
    content = (
        f"From: <{SENDER}>\r\nTo: <{recipients[0]}>\r\nSubject: sized {number}\r\n"
        f"Message-ID: <{test_id}>\r\nX-Test-Id: {test_id}\r\n\r\n" + "\r\n".join(lines) + "\r\n"
    ).encode()
    assert (len(content) > LMTP_SIZE_LIMIT) is bool(number % 2)
    return Outgoing(test_id, SENDER, recipients, content, ())


def test_postfix_bounces_per_recipient_what_smtpwire_lmtp_finds_too_big(
    size_limited_mailboxes: tuple[Mailboxes, int],
) -> None:
    """smtpwire's LMTP server with a size limit refuses a message over it at the end
    of DATA with one 552 per recipient (RFC 2033 section 4.2): Postfix must log each
    recipient of a too-big message bounced with that reply, and each of a small one
    sent; nothing too big is stored, and the sender gets each bounce once."""
    handler, port = size_limited_mailboxes
    run = uuid.uuid4().hex[:12]
    sent = [sized_message(number, run) for number in range(SIZED_MESSAGES)]
    too_big = {message.test_id for message in sent if len(message.content) > LMTP_SIZE_LIMIT}
    expected = {(message.test_id, rcpt) for message in sent for rcpt in message.recipients}
    settings = {
        "default_transport": f"lmtp:inet:127.0.0.1:{port}",
        # Told the server's SIZE, Postfix would bounce a larger message itself without
        # sending it: ignoring the keyword, it sends it and the server must refuse it
        # at the end of DATA.
        "lmtp_discard_lhlo_keywords": "size",
        # The bounces go to smtpwire too: keep them well under its limit.
        "bounce_size_limit": "10000",
    }
    with private_postfix(settings) as postfix:
        submit(postfix.port, sent)
        postfix.wait_for_empty_queue(DELIVERY_TIMEOUT)
        postfix.wait_until(lambda: set(statuses(postfix)) >= expected, "all logged", WAIT)
        message_ids = postfix.message_ids()
        replies = {
            (message_ids[queue_id], recipient): reply
            for queue_id, recipient, _status, reply in STATUS.findall(postfix.log())
        }
        logged = statuses(postfix)
    for pair in expected:
        assert logged[pair] == (["bounced"] if pair[0] in too_big else ["sent"]), pair
        reply = replies[pair]
        if pair[0] in too_big:
            assert "said: 552 Error: Too much mail data" in reply, reply
            assert reply.endswith("(in reply to end of DATA command)"), reply
    # Only the small messages stored, once for each recipient.
    assert Counter(handler.stored) == Counter(pair for pair in expected if pair[0] not in too_big)
    reported = Counter(pair for bounce in handler.bounces for pair in bounced_pairs(bounce))
    assert reported == Counter(pair for pair in expected if pair[0] in too_big)


# -- 3. smtpwire.client into Postfix's smtpd --------------------------------------------------

CLIENT_MESSAGES = 200
CLIENT_CONNECTIONS = 10
COMPLAINTS = ("improper command pipelining", "bare <LF>", "warning:", "reject:", "lost connection")
# Warnings about the machine, not the client: a loaded host's file system clock
# running ahead (and the performance note that follows it).
NOT_ABOUT_THE_CLIENT = ("file system clock is", "performance")


async def send_through_pool(port: int, context: ssl.SSLContext, sent: Sequence[Outgoing]) -> None:
    async with SMTPPool(
        hostname="127.0.0.1",
        port=port,
        local_hostname=CLIENT_NAME,
        timeout=WAIT,
        start_tls=True,
        tls_context=context,
        max_connections=CLIENT_CONNECTIONS,
    ) as pool:
        results = await asyncio.gather(
            *(
                pool.sendmail(
                    message.sender,
                    list(message.recipients),
                    message.content,
                    mail_options=list(message.mail_options),
                )
                for message in sent
            )
        )
    assert [refused for refused, _reply in results] == [{}] * len(sent)


async def send_through_clients(
    port: int, context: ssl.SSLContext, sent: Sequence[Outgoing]
) -> None:
    async def one_client(share: Sequence[Outgoing]) -> None:
        client = SMTP(
            hostname="127.0.0.1",
            port=port,
            local_hostname=CLIENT_NAME,
            timeout=WAIT,
            start_tls=True,
            tls_context=context,
        )
        async with client:
            for message in share:
                refused, _reply = await client.sendmail(
                    message.sender,
                    list(message.recipients),
                    message.content,
                    mail_options=list(message.mail_options),
                )
                assert refused == {}, message.test_id

    await asyncio.gather(
        *(one_client(sent[start::CLIENT_CONNECTIONS]) for start in range(CLIENT_CONNECTIONS))
    )


@pytest.mark.parametrize(
    "sender", [send_through_pool, send_through_clients], ids=["pool", "clients"]
)
def test_smtpwire_client_into_postfix_smtpd(
    sender: Callable[[int, ssl.SSLContext, Sequence[Outgoing]], Any],
    server_certificate: trustme.LeafCert,
    client_tls_context: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    postfix_command = require_postfix()
    chain = tmp_path / "smtpd.pem"  # the key first, then the chain: read by root
    chain.write_bytes(
        server_certificate.private_key_pem.bytes()
        + b"".join(blob.bytes() for blob in server_certificate.cert_chain_pems)
    )
    chain.chmod(0o600)
    settings = {
        "default_transport": "discard:smtpwire interop",
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_chain_files": str(chain),
        "smtpd_tls_auth_only": "yes",
        "smtpd_tls_loglevel": "1",
    }
    if supported(postfix_command, "smtpd_forbid_unauth_pipelining"):
        settings["smtpd_forbid_unauth_pipelining"] = "yes"
    if supported(postfix_command, "smtpd_forbid_bare_newline"):
        # Enforced for mynetworks too (excluded by default).
        settings["smtpd_forbid_bare_newline"] = "yes"
        settings["smtpd_forbid_bare_newline_exclusions"] = ""
    run = uuid.uuid4().hex[:12]
    sent = [outgoing(number, run) for number in range(CLIENT_MESSAGES)]
    expected = {(message.test_id, rcpt) for message in sent for rcpt in message.recipients}
    with private_postfix(settings) as postfix:
        asyncio.run(sender(postfix.port, client_tls_context, sent))
        postfix.wait_for_empty_queue(DELIVERY_TIMEOUT)
        postfix.wait_until(lambda: set(statuses(postfix)) >= expected, "all logged", WAIT)
        logged = statuses(postfix)
        queued = Counter(postfix.message_ids().values())
        log = postfix.log()
    # Each message queued once, and each recipient's copy discarded ("sent") once.
    assert queued == Counter(message.test_id for message in sent)
    assert logged == {pair: ["sent"] for pair in expected}
    complaints = [
        line
        for line in log.splitlines()
        if any(word in line for word in COMPLAINTS)
        and not any(word in line for word in NOT_ABOUT_THE_CLIENT)
    ]
    assert complaints == []
    # Every session that sent mail did so after STARTTLS.
    sessions = re.findall(r"smtpd\[\d+\]: disconnect from .* (ehlo=.*)$", log, re.MULTILINE)
    mailing = [session for session in sessions if " mail=" in session]
    assert mailing
    assert all("starttls=1" in session for session in mailing), mailing
