"""The inbox of the test server: what a ReceivedMessage holds (envelope, bytes, the
parsed message, the transcript, TLS and AUTH facts); waiting for messages from a
thread or a coroutine; reading and emptying the inbox; and the promise that a message
is recorded once its 250 reply went out, and never when it was refused.

Waits are on events (a predicate called, a message arriving), never on sleeps; the
only time bounds asserted are loose ones.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage

import pytest

import smtpwire.client as aiosmtplib
from plugin.helpers import RECIPIENT, SENDER, WAIT, StartServer, body, connect, send
from smtpwire.server.testing import (
    InboxTimeout,
    ReceivedMessage,
    SMTPTestServer,
    TestCertificates,
)

# --- what a message holds ---------------------------------------------------------------------


def test_envelope_bytes_options_and_session_facts(server: SMTPTestServer) -> None:
    raw = f"From: {SENDER}\r\nSubject: Envelope\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n"
    before = time.time()
    with connect(server) as client:
        client.ehlo()
        assert client.sock is not None
        local = client.sock.getsockname()
        refused = client.sendmail(
            SENDER,
            ["ann@example.com", "bob@example.com"],
            raw,
            mail_options=["BODY=8BITMIME"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
        )
    assert refused == {}
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert message.mail_from == SENDER
    assert message.rcpt_tos == ("ann@example.com", "bob@example.com")
    assert message.raw == raw.encode()  # smtplib dot-stuffed it; the server unstuffed it
    mail_options = [option.upper() for option in message.mail_options]
    assert "BODY=8BITMIME" in mail_options
    assert f"SIZE={len(raw)}" in mail_options  # smtplib adds it, the server offers SIZE
    assert "NOTIFY=SUCCESS,FAILURE" in [option.upper() for option in message.rcpt_options]
    assert message.helo == "client.test"
    assert tuple(message.peer)[:2] == tuple(local)[:2]
    assert not message.tls
    assert message.tls_version is None
    assert not message.authenticated
    assert message.auth_login is None
    assert before <= message.received_at <= time.time()


def test_parsed_message_subject_and_text_of_a_multipart_message(server: SMTPTestServer) -> None:
    email = EmailMessage()
    email["From"] = SENDER
    email["To"] = RECIPIENT
    email["Subject"] = "Grüße aus Köln"  # an RFC 2047 encoded word on the wire
    email.set_content("line one\nline two\n")
    email.add_alternative("<p>the <b>HTML</b> part</p>\n", subtype="html")
    with connect(server) as client:
        client.send_message(email)
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert b"Gr\xc3\xbc" not in message.raw  # encoded on the wire, decoded below
    assert isinstance(message.message, EmailMessage)
    assert message.message.get_content_type() == "multipart/alternative"
    assert message.message["To"] == RECIPIENT
    assert message.subject == "Grüße aus Köln"
    assert message.text == "line one\nline two\n"  # the plain part, not the HTML one
    assert message.message is message.message  # parsed once


def test_text_is_decoded_and_subject_may_be_missing(server: SMTPTestServer) -> None:
    email = EmailMessage()
    email["From"] = SENDER
    email.set_content("Bücher über Bäume\n", cte="base64")
    with connect(server) as client:
        client.sendmail(SENDER, [RECIPIENT], email.as_bytes())
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert b"Content-Transfer-Encoding: base64" in message.raw
    assert message.text == "Bücher über Bäume\n"
    assert message.subject is None


def test_transcript_of_each_message_up_to_its_250(server: SMTPTestServer) -> None:
    first_body, second_body = body("first"), body("second")
    with connect(server) as client:
        client.sendmail(SENDER, [RECIPIENT], first_body)
        client.noop()
        client.sendmail(SENDER, ["bob@example.com"], second_body)
    first, second = server.inbox.wait_for(2, timeout=WAIT)

    transcript = first.transcript
    assert all(line.startswith(("C: ", "S: ")) for line in transcript), transcript
    assert not any("\r" in line or "\n" in line for line in transcript)
    assert transcript[0].startswith("S: 220 ")  # the greeting
    assert "C: ehlo client.test" in transcript  # as the client sent it
    assert "S: 250-PIPELINING" in transcript  # a multi-line reply, line by line
    expected_in_order = [  # smtplib's case varies with the Python version
        "c: ehlo client.test",
        f"c: mail from:<{SENDER}> size={len(first_body)}",
        f"c: rcpt to:<{RECIPIENT}>",
        "c: data",
        f"c: <message, {len(first_body)} octets>",
    ]
    lowered = [line.lower() for line in transcript]
    positions = [lowered.index(line) for line in expected_in_order]
    assert positions == sorted(positions)
    assert transcript[transcript.index("C: data") + 1].startswith("S: 354 ")
    assert transcript[-1] == "S: 250 2.6.0 OK"  # ends with the reply to the message

    # The next message on the connection has its own transaction, and only it.
    transcript = second.transcript
    lowered = [line.lower() for line in transcript]
    assert "c: noop" in lowered
    assert "c: rcpt to:<bob@example.com>" in lowered
    assert f"c: rcpt to:<{RECIPIENT}>" not in lowered
    assert [line for line in transcript if line.startswith("C: <message")] == [
        f"C: <message, {len(second_body)} octets>"
    ]
    assert transcript[-1] == "S: 250 2.6.0 OK"


def test_tls_facts_after_starttls(
    start_server: StartServer, certificates: TestCertificates
) -> None:
    server = start_server(tls="starttls")
    with connect(server) as client:
        client.starttls(context=certificates.client_context())
        assert isinstance(client.sock, ssl.SSLSocket)
        version = client.sock.version()
        client.sendmail(SENDER, [RECIPIENT], body("over TLS"))
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert message.tls
    assert version is not None
    assert version.startswith("TLSv1.")
    assert message.tls_version == version
    assert "C: STARTTLS" in message.transcript
    assert message.transcript[-1] == "S: 250 2.6.0 OK"


def test_tls_facts_with_implicit_tls(
    start_server: StartServer, certificates: TestCertificates
) -> None:
    server = start_server(tls="implicit")
    with smtplib.SMTP_SSL(*server.address, context=certificates.client_context()) as client:
        assert isinstance(client.sock, ssl.SSLSocket)
        version = client.sock.version()
        client.sendmail(SENDER, [RECIPIENT], body("implicit"))
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert message.tls
    assert message.tls_version == version
    assert message.transcript[0].startswith("S: 220 ")


def _secrets(user: str, password: str) -> list[str]:
    """The password as it could leak: plain, base64 alone (AUTH LOGIN), and base64 in
    an AUTH PLAIN response."""
    return [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
    ]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_facts_and_the_password_nowhere(
    start_server: StartServer, certificates: TestCertificates, mechanism: str
) -> None:
    server = start_server(tls="starttls", auth=True)
    user, password = server.username, server.password
    assert user is not None
    assert password is not None
    with connect(server) as client:
        client.starttls(context=certificates.client_context())
        client.ehlo()
        client.user, client.password = user, password  # what smtplib's auth_* read
        authenticate = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, authenticate, initial_response_ok=True)
        assert code == 235
        client.sendmail(user, [RECIPIENT], body("authenticated"))
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert message.authenticated
    assert message.auth_login == user
    assert f"C: AUTH {mechanism} ********" in message.transcript  # masked, as in the logs
    assert any(line.startswith("S: 235 ") for line in message.transcript)
    shown = [repr(message), "\n".join(message.transcript)]
    shown += [str(getattr(message, field.name)) for field in dataclasses.fields(message)]
    for secret in _secrets(user, password):
        for text in shown:
            assert secret not in text


# --- waiting ----------------------------------------------------------------------------------


def test_wait_for_returns_as_soon_as_messages_sent_meanwhile_match(
    server: SMTPTestServer,
) -> None:
    send(server, "seed")  # already there when the wait starts: the predicate sees it first
    server.inbox.wait_for(1, timeout=WAIT)
    waiting = threading.Event()

    def predicate(message: ReceivedMessage) -> bool:
        waiting.set()  # the wait has looked at the inbox: what follows arrives during it
        return message.subject in ("one", "two")

    def sender() -> None:
        if not waiting.wait(WAIT):
            return
        send(server, "filtered out by the predicate", to=["Ann@Example.com"])
        send(server, "one", to=["ANN@example.com"])
        send(server, "one, but not to ann", to=["bob@example.com"])
        send(server, "two", to=["bob@example.com", "ann@example.com"])

    thread = threading.Thread(target=sender)
    thread.start()
    started = time.monotonic()
    try:
        found = server.inbox.wait_for(2, timeout=60, to="ann@EXAMPLE.com", predicate=predicate)
    finally:
        thread.join(WAIT)
    assert time.monotonic() - started < 30  # woken by the arrivals, not by the timeout
    assert [message.subject for message in found] == ["one", "two"]
    assert not thread.is_alive()


def test_wait_for_by_sender_and_with_messages_already_there(server: SMTPTestServer) -> None:
    send(server, "from the app")
    send(server, "from ops", sender="ops@example.com")
    [ops] = server.inbox.wait_for(1, sender="OPS@example.com", timeout=WAIT)
    assert ops.subject == "from ops"
    assert len(server.inbox.wait_for(2, timeout=0)) == 2  # no time needed: already there
    everything = server.inbox.wait_for(1, timeout=0)
    assert [message.subject for message in everything] == ["from the app", "from ops"]


def test_wait_for_times_out_saying_what_arrived(server: SMTPTestServer) -> None:
    send(server, "the one that came", to=["bob@example.com"])
    server.inbox.wait_for(1, timeout=WAIT)
    started = time.monotonic()
    with pytest.raises(InboxTimeout) as caught:
        server.inbox.wait_for(1, timeout=0.3, to="ann@example.com")
    assert time.monotonic() - started >= 0.25  # it did wait
    assert isinstance(caught.value, AssertionError)  # pytest reports it as a failure
    text = str(caught.value)
    assert "the one that came" in text
    assert "bob@example.com" in text
    with pytest.raises(InboxTimeout):
        server.inbox.wait_for(2, timeout=0)


def test_wait_for_on_an_empty_inbox_times_out(server: SMTPTestServer) -> None:
    with pytest.raises(InboxTimeout):
        server.inbox.wait_for(timeout=0.1)


async def test_wait_for_async_leaves_the_loop_free_to_send(server: SMTPTestServer) -> None:
    send(server, "seed")
    await server.inbox.wait_for_async(1, timeout=WAIT)
    waiting = asyncio.Event()

    def predicate(message: ReceivedMessage) -> bool:
        waiting.set()
        return message.subject == "sent from this loop"

    waiter = asyncio.create_task(server.inbox.wait_for_async(timeout=WAIT, predicate=predicate))
    try:
        await asyncio.wait_for(waiting.wait(), WAIT)
        assert not waiter.done()
        # Sent by this very loop while the wait is on: a blocking wait would hang here.
        async with aiosmtplib.SMTP(**server.client_kwargs()) as client:
            await client.sendmail(SENDER, [RECIPIENT], body("sent from this loop"))
        [message] = await asyncio.wait_for(waiter, WAIT)
    finally:
        waiter.cancel()
    assert message.subject == "sent from this loop"


async def test_wait_for_async_times_out(server: SMTPTestServer) -> None:
    send(server, "not this one")
    await server.inbox.wait_for_async(1, timeout=WAIT)
    started = time.monotonic()
    with pytest.raises(InboxTimeout) as caught:
        await server.inbox.wait_for_async(2, timeout=0.3)
    assert time.monotonic() - started >= 0.25
    assert "not this one" in str(caught.value)


async def test_wait_for_async_cancelled_then_messages_still_arrive(
    server: SMTPTestServer,
) -> None:
    waiter = asyncio.create_task(server.inbox.wait_for_async(5, timeout=WAIT))
    await asyncio.sleep(0)  # let it start waiting (its cancellation is the point)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with aiosmtplib.SMTP(**server.client_kwargs()) as client:
        await client.sendmail(SENDER, [RECIPIENT], body("after the cancel"))
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.subject == "after the cancel"


# --- reading and emptying -----------------------------------------------------------------------


def test_find_last_len_iteration_indexing_and_clear(server: SMTPTestServer) -> None:
    send(server, "one", to=["ann@example.com"])
    send(server, "two", sender="ops@example.com", to=["bob@example.com"])
    send(server, "three", to=["Ann@Example.com", "carl@example.com"])
    inbox = server.inbox
    inbox.wait_for(3, timeout=WAIT)

    assert len(inbox) == 3
    assert [message.subject for message in inbox] == ["one", "two", "three"]  # arrival order
    assert inbox[0].subject == "one"
    assert inbox[-1].subject == "three"
    assert inbox.last.subject == "three"
    assert [m.subject for m in inbox.find(to="ANN@example.com")] == ["one", "three"]
    assert [m.subject for m in inbox.find(sender="Ops@Example.com")] == ["two"]
    assert [
        m.subject for m in inbox.find(to="ann@example.com", predicate=lambda m: m.subject != "one")
    ] == ["three"]
    assert [
        m.subject for m in inbox.find(to="ann@example.com", sender="ops@example.com")
    ] == []  # every filter must hold
    assert inbox.find() == inbox.messages

    snapshot = inbox.messages
    snapshot.clear()  # a copy: the inbox keeps its messages
    assert len(inbox) == 3

    inbox.clear()
    assert len(inbox) == 0
    assert list(inbox) == []
    with pytest.raises(LookupError):
        _ = inbox.last
    send(server, "four")
    assert [m.subject for m in inbox.wait_for(1, timeout=WAIT)] == ["four"]


def test_find_predicate_sees_parsed_messages(server: SMTPTestServer) -> None:
    send(server, "Invoice 7", text="total: 12 EUR")
    send(server, "Newsletter")
    server.inbox.wait_for(2, timeout=WAIT)
    [invoice] = server.inbox.find(predicate=lambda m: "EUR" in m.text)
    assert invoice.subject == "Invoice 7"


# --- recorded once the 250 went out, and only then ----------------------------------------------


def test_a_refused_message_is_not_recorded(server: SMTPTestServer) -> None:
    server.faults.reply(554, "5.7.1 Refused", command="MESSAGE", attempt=1)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail(SENDER, [RECIPIENT], body("refused"))
        assert caught.value.smtp_code == 554
        client.sendmail(SENDER, [RECIPIENT], body("accepted"))
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert message.subject == "accepted"


def test_a_message_whose_reply_never_went_out_is_not_recorded(server: SMTPTestServer) -> None:
    server.faults.drop(command="MESSAGE", attempt=1)  # all data read, then no reply
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server, "lost")
    send(server, "delivered")
    [message] = server.inbox.wait_for(1, timeout=WAIT)
    assert message.subject == "delivered"


HOLD = 2.0  # seconds: how long the gate below holds a recording back, at most


def test_the_message_is_in_the_inbox_when_the_client_has_its_250(
    server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made deterministic: the recording is held back until the client says
    it has its 250 (or for HOLD seconds at most, which is what a server recording the
    message before it writes the 250 pays, once)."""
    client_has_its_250 = threading.Event()
    add = server.inbox.add

    def add_once_the_client_has_its_250(message: ReceivedMessage) -> None:
        client_has_its_250.wait(HOLD)
        add(message)

    monkeypatch.setattr(server.inbox, "add", add_once_the_client_has_its_250)
    with connect(server) as client:
        try:
            client.sendmail(SENDER, [RECIPIENT], body("gated"))
            recorded = len(server.inbox)
        finally:
            client_has_its_250.set()
    assert recorded == 1
    monkeypatch.undo()
    with connect(server) as client:  # and without the gate, as it happens
        for number in range(50):
            client.sendmail(SENDER, [RECIPIENT], body(f"message {number}"))
            assert len(server.inbox) == number + 2, f"message {number} not yet recorded"
