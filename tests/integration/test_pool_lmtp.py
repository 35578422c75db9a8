"""LMTP with one reply per recipient after the message, and the connection pool
sending 1,000 messages from 50 tasks over STARTTLS with AUTH, each arriving once.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from email.message import EmailMessage
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from integration.harness import (
    CLIENT_NAME,
    WAIT,
    Inbox,
    Server,
    StartServer,
    message_number,
    numbered_message,
)
from smtpwire.client.lmtp import LMTP
from smtpwire.client.pool import SMTPPool
from smtpwire.server.smtp import AuthResult, LoginPassword

# --- LMTP -----------------------------------------------------------------------------------------

# After the message, each mailbox answers for itself (RFC 2033); "unknown-" ones are
# refused earlier, at RCPT.
AFTER_DATA = {
    "full@example.org": "452 4.2.2 Mailbox full",
    "broken@example.org": "554 5.2.1 Mailbox disabled",
}


class Mailstore(Inbox):
    def __init__(self, statuses: dict[str, str] | None = None) -> None:
        super().__init__()
        self.statuses = AFTER_DATA if statuses is None else statuses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("unknown-"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> list[str]:
        self.record(session, envelope)
        return [
            self.statuses.get(address, f"250 2.0.0 <{address}> delivered")
            for address in envelope.rcpt_tos
        ]


def lmtp_client(server: Server, **kwargs: Any) -> LMTP:
    kwargs.setdefault("local_hostname", CLIENT_NAME)
    kwargs.setdefault("timeout", WAIT)
    return LMTP(hostname=server.hostname, port=server.port, **kwargs)


@pytest.mark.parametrize("modern", [False, True], ids=["lockstep", "pipelining"])
async def test_lmtp_reports_each_recipient(start_server: StartServer, modern: bool) -> None:
    store = Mailstore()
    server = start_server(store, lmtp=True, modern=modern)
    everyone = [
        "ann@example.org",
        "full@example.org",
        "unknown-1@example.org",
        "broken@example.org",
        "bob@example.org",
    ]
    async with lmtp_client(server) as client:
        assert client.supports_extension("pipelining") is modern
        refused, reply = await client.sendmail("a@example.org", everyone, b"to the store\r\n")
    assert {address: (r.code, r.message) for address, r in refused.items()} == {
        "unknown-1@example.org": (550, "5.1.1 No such mailbox"),
        "full@example.org": (452, "4.2.2 Mailbox full"),
        "broken@example.org": (554, "5.2.1 Mailbox disabled"),
    }
    assert reply == "2.0.0 <bob@example.org> delivered"
    [delivery] = store.deliveries
    assert delivery.rcpt_tos == (
        "ann@example.org",
        "full@example.org",
        "broken@example.org",
        "bob@example.org",
    )
    assert delivery.content == b"to the store\r\n"


async def test_lmtp_every_mailbox_refusing_after_the_message(start_server: StartServer) -> None:
    store = Mailstore()
    server = start_server(store, lmtp=True)
    async with lmtp_client(server) as client:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as failure:
            await client.sendmail(
                "a@example.org", ["full@example.org", "broken@example.org"], b"nowhere\r\n"
            )
        assert [(r.recipient, r.code) for r in failure.value.recipients] == [
            ("full@example.org", 452),
            ("broken@example.org", 554),
        ]
        # Every reply was read: the connection is still in step.
        refused, _ = await client.sendmail("a@example.org", ["ann@example.org"], b"next\r\n")
        assert refused == {}
    assert [d.rcpt_tos for d in store.deliveries] == [
        ("full@example.org", "broken@example.org"),
        ("ann@example.org",),
    ]


async def test_lmtp_one_status_for_all(start_server: StartServer, inbox: Inbox) -> None:
    """A handler returning one status gets it repeated for every recipient."""
    server = start_server(inbox, lmtp=True)
    async with lmtp_client(server) as client:
        refused, reply = await client.send_message(
            lmtp_message(), recipients=["a@example.org", "b@example.org", "c@example.org"]
        )
    assert (refused, reply) == ({}, "OK")
    assert [len(d.rcpt_tos) for d in inbox.deliveries] == [3]


def lmtp_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@example.org"
    message["To"] = "a@example.org"
    message["Subject"] = "lmtp"
    message.set_content("hello store\n")
    return message


async def test_lmtp_over_required_starttls(
    start_server: StartServer,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """LHLO is allowed before STARTTLS (aiosmtpd forgets it, so its LMTP with
    require_starttls cannot start)."""
    store = Mailstore()
    server = start_server(store, lmtp=True, tls=server_context, require_starttls=True)
    async with lmtp_client(server, start_tls=True, tls_context=client_context) as client:
        refused, _ = await client.sendmail(
            "a@example.org", ["ann@example.org", "full@example.org"], b"secure store\r\n"
        )
    await server.all_closed()
    assert {address: r.code for address, r in refused.items()} == {"full@example.org": 452}
    assert [d.over_tls for d in store.deliveries] == [True]


# --- the pool -------------------------------------------------------------------------------------

USER, PASSWORD = "pool", "pool-secret"
TASKS, PER_TASK = 50, 20


def pool_authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    assert isinstance(auth_data, LoginPassword)
    return AuthResult(success=auth_data == (USER.encode(), PASSWORD.encode()))


async def test_pool_sends_a_thousand_messages_from_fifty_tasks_exactly_once(
    start_server: StartServer,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    inbox = Inbox()
    server = start_server(
        inbox,
        tls=server_context,
        require_starttls=True,
        authenticator=pool_authenticator,
        auth_required=True,
        modern=True,
        # The server's own limit equals the pool's: one connection too many would be
        # refused with 421 and fail a send.
        max_connections=10,
    )
    pool = SMTPPool(
        hostname=server.hostname,
        port=server.port,
        local_hostname=CLIENT_NAME,
        timeout=WAIT,
        start_tls=True,
        tls_context=client_context,
        username=USER,
        password=PASSWORD,
        max_connections=10,
        max_messages_per_connection=100,
    )

    async def sender(task: int) -> list[int]:
        sent = []
        for index in range(PER_TASK):
            number = task * PER_TASK + index
            refused, _ = await pool.sendmail(
                "sender@example.org", [f"rcpt-{task}@example.org"], numbered_message(number)
            )
            assert refused == {}
            sent.append(number)
        return sent

    async with pool:
        results = await asyncio.gather(*(sender(task) for task in range(TASKS)))
    await server.all_closed()

    total = TASKS * PER_TASK
    assert sorted(number for sent in results for number in sent) == list(range(total))
    deliveries = inbox.deliveries
    numbers = [message_number(delivery.content) for delivery in deliveries]
    # Every message exactly once: nothing lost, nothing duplicated, none mixed up.
    assert len(numbers) == total
    assert set(numbers) == set(range(total))
    assert collections.Counter(numbers).most_common(1)[0][1] == 1
    for delivery, number in zip(deliveries, numbers, strict=True):
        assert delivery.content == numbered_message(number)
        assert delivery.rcpt_tos == (f"rcpt-{number // PER_TASK}@example.org",)
        assert (delivery.over_tls, delivery.authenticated) == (True, True)
    # Connections were reused (at most 100 messages each), not opened per message.
    assert total // 100 <= server.tracker.opened < total // 10
