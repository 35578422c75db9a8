"""Small pieces shared by the tests of smtpwire.server.testing."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from typing import Protocol

from smtpwire.server.testing import SMTPTestServer

WAIT = 10.0  # seconds: the bound on every wait that is expected to succeed
SENDER = "app@example.com"
RECIPIENT = "ann@example.com"


class StartServer(Protocol):
    def __call__(self, **kwargs: object) -> SMTPTestServer: ...


def body(subject: str, text: str = "hello") -> str:
    return f"From: {SENDER}\r\nSubject: {subject}\r\n\r\n{text}\r\n"


def connect(server: SMTPTestServer) -> smtplib.SMTP:
    """An smtplib client connected to a plaintext (or STARTTLS, not yet upgraded)
    test server; use it in a ``with`` block."""
    return smtplib.SMTP(*server.address, local_hostname="client.test", timeout=WAIT)


def send(
    server: SMTPTestServer,
    subject: str = "hi",
    *,
    sender: str = SENDER,
    to: Sequence[str] = (RECIPIENT,),
    text: str = "hello",
) -> dict[str, tuple[int, bytes]]:
    """One message on a connection of its own (plaintext); the refused recipients."""
    with connect(server) as client:
        return client.sendmail(sender, list(to), body(subject, text))
