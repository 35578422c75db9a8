"""Postfix's load generator, smtp-source, driving smtpwire.server with ten
parallel sessions and thousands of messages: every message must be counted as
received, once, whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from interop.peers import CLIENT_NAME, Inbox, run_peer, transcript
from smtpwire.server.controller import Controller
from smtpwire.server.lmtp import LMTP

Serve = Callable[..., Controller]

SENDER = "sender@example.org"
RECIPIENT = "rcpt@example.org"
SESSIONS = 10
LENGTH = 1024  # smtp-source's payload octets per message (-l), its line endings included


class LMTPController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


def drive(tool: str, port: int, *options: str) -> None:
    """Runs smtp-source to its end; it exits 0 only if every reply was the expected one."""
    command = [
        tool,
        "-s", str(SESSIONS),
        "-l", str(LENGTH),
        "-f", SENDER,
        "-t", RECIPIENT,
        "-M", CLIENT_NAME,
        *options,
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    result = run_peer(command)
    assert result.returncode == 0, transcript(result)
    assert result.stderr == "", transcript(result)


def assert_all_received(inbox: Inbox, count: int, recipients: tuple[str, ...]) -> None:
    assert len(inbox.messages) == count
    bodies: set[bytes] = set()
    message_ids: set[bytes] = set()
    for message in inbox.messages:
        assert message.helo == CLIENT_NAME
        assert message.mail_from == SENDER
        assert message.rcpt_tos == recipients
        headers, body = message.content.split(b"\r\n\r\n", 1)
        assert headers.startswith(f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n".encode())
        assert len(body) == LENGTH + len(b"\r\n")  # and the CRLF ending the last line
        bodies.add(body)
        message_ids.update(
            line for line in headers.split(b"\r\n") if line.startswith(b"Message-Id: ")
        )
    assert len(bodies) == 1  # the same payload every time: nothing cut or mixed up
    assert len(message_ids) == count  # each message once: none delivered twice


@pytest.mark.parametrize(
    "server_options", [{}, {"modern": True}], ids=["aiosmtpd-compatible", "modern"]
)
def test_ten_sessions_reusing_their_connections(
    serve: Serve, smtp_source: str, server_options: dict[str, Any]
) -> None:
    inbox = Inbox()
    controller = serve(inbox, **server_options)
    drive(smtp_source, controller.port, "-d", "-m", "2000")
    assert_all_received(inbox, 2000, (RECIPIENT,))
    assert inbox.sessions == SESSIONS


def test_ten_sessions_a_connection_per_message(serve: Serve, smtp_source: str) -> None:
    inbox = Inbox()
    controller = serve(inbox)
    drive(smtp_source, controller.port, "-m", "1000")
    assert_all_received(inbox, 1000, (RECIPIENT,))
    assert inbox.sessions == 1000


def test_several_recipients_per_message(serve: Serve, smtp_source: str) -> None:
    inbox = Inbox()
    controller = serve(inbox)
    drive(smtp_source, controller.port, "-d", "-m", "500", "-r", "3")
    # smtp-source numbers the extra recipients, counting down: 3rcpt@, 2rcpt@, rcpt@.
    assert_all_received(inbox, 500, (f"3{RECIPIENT}", f"2{RECIPIENT}", RECIPIENT))


def test_lmtp_with_a_reply_per_recipient(smtp_source: str) -> None:
    """smtp-source -L speaks LMTP and reads one reply per recipient after the data."""
    inbox = Inbox()
    controller = LMTPController(inbox, hostname="127.0.0.1", port=0, server_hostname="lmtp.test")
    controller.start()
    try:
        drive(smtp_source, controller.port, "-L", "-d", "-m", "500", "-r", "2")
    finally:
        controller.stop()
    assert_all_received(inbox, 500, (f"2{RECIPIENT}", RECIPIENT))
    assert inbox.sessions == SESSIONS
