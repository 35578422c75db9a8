"""SMTPPool pipelining across messages (RFC 2920 section 3.1): the end of one
message, the next one's MAIL, RCPTs and DATA in one write.

Against smtpwire.server with PIPELINING (its ``data_received`` chunks recorded: on
loopback one client write arrives as one chunk, and a group cannot be two writes,
since the next one waits for its replies) and against the scripted fake server
where a reply must be placed exactly (DATA taken after a refused MAIL, a drop after
the group, a 421).  Every caller must get what a plain ``SMTP`` client would have
given it, and nothing may be delivered twice.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtpwire.client as aiosmtplib
from smtpwire.client.pool import SMTPPool
from smtpwire.server.smtp import SMTP as ServerSMTP
from support.fake_smtp import FakeConnection, FakeSMTPServer
from support.server import ServerThread, serving

WAIT = 10.0
Outcome = tuple[Any, ...]


def content(number: int, marker: str = "") -> bytes:
    return b"Subject: %d\r\n\r\nbody %d %s\r\n" % (number, number, marker.encode())


class Decider:
    """MAIL from "refused*" gets 553, RCPT to "nobody*" 550; a message holding
    REJECT-ME gets 554 at its end, TEMPFAIL 451; the rest is kept, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str | None, list[str], bytes]] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("refused"):
            return "553 5.7.1 Sender refused"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody"):
            return f"550 5.1.1 No such user {address}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"REJECT-ME" in envelope.original_content:
            return "554 5.6.0 Message refused"
        if b"TEMPFAIL" in envelope.original_content:
            return "451 4.3.0 Try again later"
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 OK"


class RecordingServer(ServerSMTP):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(bytes(data))
        super().data_received(data)


@contextmanager
def pipelining_server(decider: Decider) -> Iterator[ServerThread]:
    def make() -> ServerSMTP:
        return RecordingServer(decider, hostname="testhost", pipelining=True)

    with serving(make) as server:
        yield server


def pool_for(port: int, **kwargs: Any) -> SMTPPool:
    kwargs.setdefault("max_connections", 1)
    return SMTPPool(
        hostname="127.0.0.1", port=port, start_tls=False,
        local_hostname="client.test", timeout=WAIT, **kwargs,
    )  # fmt: skip


def outcome(result: Any) -> Outcome:
    """A send's result or error, comparable (the exception's class and fields)."""
    if isinstance(result, aiosmtplib.SMTPRecipientsRefused):
        refused = sorted((r.recipient, r.code, r.message) for r in result.recipients)
        return ("SMTPRecipientsRefused", *refused)
    if isinstance(result, aiosmtplib.SMTPSenderRefused):
        return ("SMTPSenderRefused", result.code, result.message, result.sender)
    if isinstance(result, aiosmtplib.SMTPResponseException):
        return (type(result).__name__, result.code, result.message)
    if isinstance(result, BaseException):
        return (type(result).__name__,)
    refused, message = result
    return ("ok", sorted((address, *reply) for address, reply in refused.items()), message)


Send = tuple[str, list[str], bytes]


async def through_pool(port: int, sends: list[Send], **kwargs: Any) -> list[Outcome]:
    async with pool_for(port, **kwargs) as pool:
        results = await asyncio.gather(
            *(pool.sendmail(*send) for send in sends), return_exceptions=True
        )
    return [outcome(result) for result in results]


async def through_plain_client(port: int, sends: list[Send]) -> list[Outcome]:
    """The reference: each message on a plain client connection of its own."""
    outcomes = []
    for send in sends:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False,
            local_hostname="client.test", timeout=WAIT,
        )  # fmt: skip
        async with client:
            try:
                outcomes.append(outcome(await client.sendmail(*send)))
            except aiosmtplib.SMTPException as error:
                outcomes.append(outcome(error))
    return outcomes


def envelope(send: Send, *, size: bool = True) -> bytes:
    """MAIL (with SIZE when the server offers it), every RCPT and DATA."""
    sender, recipients, body = send
    return (
        b"MAIL FROM:<%s>%s\r\n" % (sender.encode(), b" SIZE=%d" % len(body) if size else b"")
        + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients)
        + b"DATA\r\n"
    )


# --- (1) N messages, N + 1 writes --------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 5])
async def test_queued_messages_go_in_one_write_each_plus_one(count: int) -> None:
    decider = Decider()
    sends = [("s@example.com", [f"r{n}@example.com"], content(n)) for n in range(count)]
    with pipelining_server(decider) as server:
        outcomes = await through_pool(server.port, sends)
        received = server.call(lambda: list(server.protocols[0].received))
        connections = len(server.protocols)
    assert outcomes == [("ok", [], "OK")] * count
    assert decider.messages == [(s, r, c) for s, r, c in sends]  # once each, in order
    assert connections == 1
    assert received[0] == b"EHLO client.test\r\n"
    assert received[-1] == b"QUIT\r\n"
    # The first write opens message 0; each next one ends a message and opens the
    # following; the last ends the last message alone.
    expected = [envelope(sends[0])]
    expected += [content(n) + b".\r\n" + envelope(sends[n + 1]) for n in range(count - 1)]
    expected += [content(count - 1) + b".\r\n"]
    assert received[1:-1] == expected


async def test_max_messages_per_connection_still_counts_messages() -> None:
    decider = Decider()
    sends = [("s@example.com", ["a@example.com"], content(n)) for n in range(7)]
    with pipelining_server(decider) as server:
        outcomes = await through_pool(server.port, sends, max_messages_per_connection=3)
        sessions = [server.call(lambda p=p: b"".join(p.received)) for p in server.protocols]
    assert outcomes == [("ok", [], "OK")] * 7
    assert [m[2] for m in decider.messages] == [c for _, _, c in sends]
    assert [session.count(b"MAIL FROM") for session in sessions] == [3, 3, 1]
    assert all(session.endswith(b"QUIT\r\n") for session in sessions)


# --- (2) every failure position in a group, against smtpwire.server ---------------------------

GOOD = ("s@example.com", ["a@example.com"], content(0))
AFTER = ("s@example.com", ["c@example.com"], content(2))
POSITIONS = {
    "MAIL of k+1 refused": [GOOD, ("refused@example.com", ["b@example.com"], content(1)), AFTER],
    "one RCPT of k+1 refused": [
        GOOD, ("s@example.com", ["b@example.com", "nobody@example.com"], content(1)), AFTER,
    ],
    "all RCPTs of k+1 refused (DATA 503)": [
        GOOD, ("s@example.com", ["nobody1@example.com", "nobody2@example.com"], content(1)), AFTER,
    ],
    "final reply of k refused": [
        ("s@example.com", ["a@example.com"], content(0, "REJECT-ME")),
        ("s@example.com", ["b@example.com"], content(1)), AFTER,
    ],
    "final reply of k temporary": [
        ("s@example.com", ["a@example.com"], content(0, "TEMPFAIL")),
        ("s@example.com", ["b@example.com"], content(1)), AFTER,
    ],
}  # fmt: skip


@pytest.mark.parametrize("sends", POSITIONS.values(), ids=POSITIONS.keys())
async def test_each_message_gets_what_a_plain_client_gets(sends: list[Send]) -> None:
    decider = Decider()
    with pipelining_server(decider) as server:
        pooled = await through_pool(server.port, sends)
        pooled_deliveries = list(decider.messages)
        decider.messages.clear()
        plain = await through_plain_client(server.port, sends)
        connections = server.call(lambda: len(server.protocols)) - len(sends)
    assert pooled == plain
    assert pooled_deliveries == decider.messages  # the same messages, once each
    assert connections == 1  # refusals keep the connection


# --- failures the fake server places exactly ---------------------------------------------------


class Script:
    """The fake server's replies by the sender of the transaction under way: MAIL,
    DATA and the end of the message (None: the server vanishes instead).  After a
    421 the server closes, as it says."""

    def __init__(
        self,
        mail: dict[str, bytes] | None = None,
        data: dict[str, bytes] | None = None,
        final: dict[str, bytes | None] | None = None,
    ) -> None:
        self.mail = mail or {}
        self.data = data or {}
        self.final = final or {}
        self.sender: dict[FakeConnection, str] = {}

    def on_line(self, connection: FakeConnection, line: bytes) -> bytes | None:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"MAIL":
            sender = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
            self.sender[connection] = sender
            reply = self.mail.get(sender, b"250 OK\r\n")
        elif verb == b"RCPT" and b"<nobody" in line:
            reply = b"550 5.1.1 No such user\r\n"
        elif verb == b"DATA":
            reply = self.data.get(self.sender.get(connection, ""), b"354 Go ahead\r\n")
        else:
            return connection.default(line)
        connection.close_after_reply = reply.startswith(b"421")
        return reply

    def on_message(self, connection: FakeConnection, raw: bytes) -> bytes | None:
        if raw == b".\r\n":
            return b"554 5.5.1 No valid recipients\r\n"
        sender = self.sender.get(connection, "")
        reply = self.final.get(sender, b"250 OK queued\r\n")
        if reply is None:
            connection.abort()  # gone without a word, after the whole group arrived
        else:
            connection.close_after_reply = reply.startswith(b"421")
        return reply


def fake_sends(count: int) -> list[Send]:
    return [(f"s{n}@example.com", [f"r{n}@example.com"], content(n)) for n in range(count)]


async def fake_run(script: Script, sends: list[Send]) -> tuple[list[Outcome], FakeSMTPServer]:
    fake = FakeSMTPServer(
        on_line=script.on_line, on_message=script.on_message,
        extensions=("8BITMIME", "PIPELINING"),
    )  # fmt: skip
    async with fake:
        outcomes = await through_pool(fake.port, sends)
    return outcomes, fake


def delivered(fake: FakeSMTPServer) -> collections.Counter[bytes]:
    """Every message content the fake received, across connections."""
    return collections.Counter(raw for c in fake.connections for raw in c.messages)


def mails(fake: FakeSMTPServer) -> collections.Counter[bytes]:
    return collections.Counter(
        line for c in fake.connections for line in c.lines if line.startswith(b"MAIL")
    )


@pytest.mark.parametrize("code", [b"503 5.5.1 Bad sequence", b"554 5.3.0 No DATA today"])
async def test_data_of_k_plus_1_refused(code: bytes) -> None:
    sends = fake_sends(3)
    script = Script(data={"s1@example.com": code + b"\r\n"})
    outcomes, fake = await fake_run(script, sends)
    code_number, text = int(code[:3]), code[4:].decode()
    assert outcomes == [
        ("ok", [], "OK queued"), ("SMTPDataError", code_number, text), ("ok", [], "OK queued"),
    ]  # fmt: skip
    assert len(fake.connections) == 1
    assert b"RSET" in fake.connection.lines  # as sendmail: the open transaction reset
    assert delivered(fake) == {c + b".\r\n": 1 for _, _, c in (sends[0], sends[2])}


async def test_data_taken_although_every_recipient_refused_is_ended_alone() -> None:
    sends = fake_sends(3)
    sends[1] = ("s1@example.com", ["nobody1@example.com", "nobody2@example.com"], content(1))
    outcomes, fake = await fake_run(Script(), sends)
    assert outcomes[0] == outcomes[2] == ("ok", [], "OK queued")
    assert outcomes[1] == (
        "SMTPRecipientsRefused",
        ("nobody1@example.com", 550, "5.1.1 No such user"),
        ("nobody2@example.com", 550, "5.1.1 No such user"),
    )
    chunks = fake.connection.chunks
    assert b".\r\n" in chunks  # the empty message, in a write of its own (RFC 2920 3.1)
    assert chunks[chunks.index(b".\r\n") + 1] == b"RSET\r\n"
    assert delivered(fake)[content(1) + b".\r\n"] == 0


async def test_no_recipient_at_all_counts_as_all_refused() -> None:
    sends = fake_sends(3)
    sends[1] = ("s1@example.com", [], content(1))
    outcomes, fake = await fake_run(Script(), sends)
    assert outcomes == [
        ("ok", [], "OK queued"),
        ("SMTPRecipientsRefused",),
        ("ok", [], "OK queued"),
    ]
    assert b".\r\n" in fake.connection.chunks  # DATA taken all the same: ended empty
    assert delivered(fake)[content(1) + b".\r\n"] == 0


async def test_data_taken_after_a_refused_mail_drops_the_connection() -> None:
    sends = fake_sends(4)
    script = Script(mail={"s1@example.com": b"553 5.7.1 Not you\r\n"})
    outcomes, fake = await fake_run(script, sends)
    assert outcomes == [
        ("ok", [], "OK queued"),
        ("SMTPSenderRefused", 553, "5.7.1 Not you", "s1@example.com"),
        ("ok", [], "OK queued"),
        ("ok", [], "OK queued"),
    ]
    first, second = fake.connections
    # The server's 354 was for a transaction not ours: nothing ended it.
    assert first.messages == [content(0) + b".\r\n"]
    assert second.messages == [c + b".\r\n" for _, _, c in sends[2:]]


# --- (3) the connection drops after a group was written -------------------------------------


async def test_drop_after_the_group_fails_both_and_resends_neither() -> None:
    sends = fake_sends(4)
    script = Script(final={"s0@example.com": None})  # message 0's end: the server vanishes
    outcomes, fake = await fake_run(script, sends)
    assert outcomes == [
        ("SMTPServerDisconnected",),
        ("SMTPServerDisconnected",),
        ("ok", [], "OK queued"),
        ("ok", [], "OK queued"),
    ]
    first, second = fake.connections
    # Message 0's end and message 1's envelope left together, and neither went again.
    assert first.chunks[-1] == content(0) + b".\r\n" + envelope(sends[1], size=False)
    assert mails(fake) == {envelope(s, size=False).split(b"\r\n")[0]: 1 for s in sends}
    assert delivered(fake) == {c + b".\r\n": 1 for _, _, c in (sends[0], *sends[2:])}
    assert all(not line.startswith(b"MAIL FROM:<s1@") for line in second.lines)


# --- (4) a 421 in the middle of a group ------------------------------------------------------


async def test_421_to_the_next_mail() -> None:
    sends = fake_sends(4)
    script = Script(mail={"s1@example.com": b"421 4.3.2 Shutting down\r\n"})
    outcomes, fake = await fake_run(script, sends)
    assert outcomes == [
        ("ok", [], "OK queued"),
        ("SMTPServerDisconnected",),
        ("ok", [], "OK queued"),
        ("ok", [], "OK queued"),
    ]
    assert len(fake.connections) == 2
    assert mails(fake)[b"MAIL FROM:<s1@example.com>"] == 1
    assert delivered(fake) == {c + b".\r\n": 1 for _, _, c in (sends[0], *sends[2:])}


async def test_421_as_the_final_reply() -> None:
    sends = fake_sends(4)
    script = Script(final={"s0@example.com": b"421 4.3.2 Shutting down\r\n"})
    outcomes, fake = await fake_run(script, sends)
    # Message 0 got its own reply (a plain client says SMTPDataError too); message 1
    # was on the wire behind it and is lost with the connection.
    assert outcomes == [
        ("SMTPDataError", 421, "4.3.2 Shutting down"),
        ("SMTPServerDisconnected",),
        ("ok", [], "OK queued"),
        ("ok", [], "OK queued"),
    ]
    assert len(fake.connections) == 2
    assert mails(fake)[b"MAIL FROM:<s1@example.com>"] == 1
    assert content(1) + b".\r\n" not in delivered(fake)


# --- what stays on the plain path -------------------------------------------------------------


class Holding:
    """A well-behaved fake server that, from the end of the message holding
    ``trigger`` on, keeps its replies (in order) until :meth:`release`: a point
    where the client has written a group and waits."""

    def __init__(self, trigger: bytes) -> None:
        self.trigger = trigger
        self.connection: FakeConnection | None = None
        self.held: list[bytes] = []
        self.released = False

    def on_line(self, connection: FakeConnection, line: bytes) -> bytes | None:
        return self._hold(connection.default(line))

    def on_message(self, connection: FakeConnection, raw: bytes) -> bytes | None:
        if self.trigger in raw and not self.released:
            self.connection = connection
        return self._hold(b"250 OK queued\r\n")

    def _hold(self, reply: bytes | None) -> bytes | None:
        if self.connection is None or self.released or reply is None:
            return reply
        self.held.append(reply)
        return None

    def release(self) -> None:
        assert self.connection is not None
        self.released = True
        # The held DATA's 354 puts the fake into the message, as if it had been sent.
        self.connection.in_data = self.held[-1].startswith(b"354")
        self.connection.send(b"".join(self.held))


async def test_a_stream_waiting_for_a_connection_is_not_starved() -> None:
    """A stream goes with a plain sendmail on a connection of its own; the busy
    connection hands its slot (and, idle, itself) over after the message it has
    open, rather than serve the whole queue first."""

    async def stream() -> Any:
        yield b"Subject: streamed\r\n\r\n"
        yield b"in two chunks\r\n"

    holding = Holding(b"body 0")
    fake = FakeSMTPServer(
        on_line=holding.on_line, on_message=holding.on_message, extensions=("PIPELINING",)
    )
    async with fake, pool_for(fake.port) as pool:
        queued = [asyncio.ensure_future(pool.sendmail(*send)) for send in fake_sends(5)]
        await fake.wait_until(lambda: holding.connection is not None)
        streamed = asyncio.ensure_future(
            pool.sendmail("x@example.com", ["y@example.com"], stream())
        )
        # The stream's task runs (and waits for a connection) before any reply
        # released now can reach the client: the loop runs ready tasks first.
        holding.release()
        results = await asyncio.gather(*queued, streamed)
    assert [outcome(r) for r in results] == [("ok", [], "OK queued")] * 6
    assert len(fake.connections) == 1
    assert fake.connection.messages == [
        content(0) + b".\r\n",
        content(1) + b".\r\n",  # its envelope was out with message 0's end
        b"Subject: streamed\r\n\r\nin two chunks\r\n.\r\n",
        *(content(n) + b".\r\n" for n in range(2, 5)),
    ]


async def test_send_message_is_pipelined_too() -> None:
    decider = Decider()
    messages = []
    for n in range(3):
        message = EmailMessage()
        message["From"] = "s@example.com"
        message["To"] = f"r{n}@example.com"
        message["Bcc"] = f"hidden{n}@example.com"
        message.set_content(f"pooled {n}\n")
        messages.append(message)
    with pipelining_server(decider) as server:
        async with pool_for(server.port) as pool:
            results = await asyncio.gather(*(pool.send_message(m) for m in messages))
        received = server.call(lambda: list(server.protocols[0].received))
    assert results == [({}, "OK")] * 3
    assert [rcpts for _, rcpts, _ in decider.messages] == [
        [f"r{n}@example.com", f"hidden{n}@example.com"] for n in range(3)
    ]
    assert all(b"hidden" not in body for _, _, body in decider.messages)
    assert sum(b"\r\n.\r\nMAIL FROM:" in chunk for chunk in received) == 2  # two groups


async def test_a_send_cancelled_while_queued_is_never_sent() -> None:
    holding = Holding(b"body 1")
    fake = FakeSMTPServer(
        on_line=holding.on_line, on_message=holding.on_message, extensions=("PIPELINING",)
    )
    sends = fake_sends(4)
    async with fake, pool_for(fake.port) as pool:
        tasks = [asyncio.ensure_future(pool.sendmail(*send)) for send in sends]
        # Message 1's end is out with message 2's envelope; message 3 still waits.
        await fake.wait_until(lambda: holding.connection is not None)
        tasks[3].cancel()
        holding.release()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [outcome(r) for r in results[:3]] == [("ok", [], "OK queued")] * 3
    assert isinstance(results[3], asyncio.CancelledError)
    assert b"s3@example.com" not in b"".join(c.received for c in fake.connections)


# --- (5) random decisions, compared with a reference -----------------------------------------

MESSAGE = st.fixed_dictionaries(
    {
        "sender_ok": st.booleans(),
        "recipients_ok": st.lists(st.booleans(), min_size=1, max_size=3),
        "end": st.sampled_from(["", "REJECT-ME", "TEMPFAIL"]),
    }
)


def plan_sends(plan: list[dict[str, Any]]) -> list[Send]:
    sends = []
    for n, message in enumerate(plan):
        sender = "s@example.com" if message["sender_ok"] else "refused@example.com"
        recipients = [
            f"{'r' if ok else 'nobody'}{n}-{i}@example.com"
            for i, ok in enumerate(message["recipients_ok"])
        ]
        sends.append((sender, recipients, content(n, message["end"])))
    return sends


def reference(send: Send) -> Outcome:
    sender, recipients, body = send
    refused = [(r, 550, f"5.1.1 No such user {r}") for r in recipients if r.startswith("nobody")]
    if sender.startswith("refused"):
        return ("SMTPSenderRefused", 553, "5.7.1 Sender refused", sender)
    if len(refused) == len(recipients):
        return ("SMTPRecipientsRefused", *sorted(refused))
    if b"REJECT-ME" in body:
        return ("SMTPDataError", 554, "5.6.0 Message refused")
    if b"TEMPFAIL" in body:
        return ("SMTPDataError", 451, "4.3.0 Try again later")
    return ("ok", sorted(refused), "OK")


def test_random_decisions_match_the_reference() -> None:
    decider = Decider()
    with pipelining_server(decider) as server:

        @settings(max_examples=60)
        @given(plan=st.lists(MESSAGE, min_size=1, max_size=6), connections=st.integers(1, 2))
        def check(plan: list[dict[str, Any]], connections: int) -> None:
            decider.messages.clear()
            sends = plan_sends(plan)
            outcomes = asyncio.run(through_pool(server.port, sends, max_connections=connections))
            assert outcomes == [reference(send) for send in sends]
            kept = [
                (s, [r for r in rcpts if not r.startswith("nobody")], body)
                for (s, rcpts, body), result in zip(sends, outcomes, strict=True)
                if result[0] == "ok"
            ]
            if connections == 1:
                assert decider.messages == kept  # once each, in order
            else:
                assert sorted(decider.messages) == sorted(kept)

        check()
