"""``python -m smtpwire.client``: aiosmtplib's interactive sender (issue 15), run as
a real process fed on standard input, against a loopback server on port 0."""

from __future__ import annotations

import ssl
import subprocess
import sys

import trustme

from support.client_harness import Sink, smtp_server
from support.server import ServerThread

WAIT = 60.0  # bound on the child process (its getfqdn() included)


def run_module(stdin: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, fixed module
        [sys.executable, "-m", "smtpwire.client", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def test_interactive_sender_prompts_sends_and_reports(server: ServerThread, sink: Sink) -> None:
    stdin = (
        "127.0.0.1\n"
        f"{server.port}\n"
        "anne@example.com\n"
        "bart@example.com, carl@example.com\n"
        "Subject: hello\n"
        "\n"
        "Hi there.\n"
    )
    result = run_module(stdin)
    assert result.returncode == 0, result.stderr
    message = "Subject: hello\n\nHi there."
    assert result.stdout == (
        "SMTP server hostname [localhost]: "
        "SMTP server port [25]: "
        "From: "
        "To: "
        "Enter message, end with ^D:\n"
        f"Message length (bytes): {len(message.encode())}\n"
        "Server response: OK\n"
    )
    assert sink.messages == [
        (
            "anne@example.com",
            ["bart@example.com", "carl@example.com"],
            b"Subject: hello\r\n\r\nHi there.\r\n",
        )
    ]


def test_interactive_sender_does_not_start_tls() -> None:
    # A server offering STARTTLS with a certificate the child cannot verify: an
    # upgrade would fail, so delivery shows that none was tried (start_tls=False).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    sink = Sink()
    with smtp_server(sink, tls_context=context) as server:
        result = run_module(f"127.0.0.1\n{server.port}\na@example.com\nb@example.com\nhi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("Server response: OK\n")
    assert sink.messages == [("a@example.com", ["b@example.com"], b"hi\r\n")]


def test_arguments_are_not_the_interactive_form() -> None:
    result = run_module("", "--bogus")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: python -m smtpwire.client" in result.stderr
