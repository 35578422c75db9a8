"""swaks, the scriptable SMTP client mail administrators use, against
smtpwire.server: plaintext, STARTTLS (``--tls``), implicit TLS (``--tlsc``), AUTH
PLAIN, LOGIN and CRAM-MD5 over TLS (``--auth``) and pipelining (``--pipeline``).

swaks verifies the server's certificate against the test CA (``--tls-verify
--tls-ca-path``, both in Debian 12's swaks 20201014, which checks the chain only).
From 20240103 ``--tls-verify`` also checks the name, against ``--server``'s
127.0.0.1: the test certificate names that address, so the same options work."""

from __future__ import annotations

import email
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from interop.peers import (
    CLIENT_NAME,
    LOGIN,
    PASSWORD,
    WAIT,
    Inbox,
    authenticator,
    run_peer,
    starttls_then_auth,
    transcript,
)
from smtpwire.server.controller import Controller

Serve = Callable[..., Controller]

SENDER = "sender@example.org"
RECIPIENTS = ("one@example.org", "two@example.org", "three@example.org")

# The whole DATA section, so what arrives is known to the byte.  swaks turns each
# line feed into CRLF, stuffs the leading dot and ends the data with CRLF.CRLF.
DATA = "\n".join(
    [
        "From: sender@example.org",
        "Subject: interop with swaks",
        "",
        "first line",
        ".leading dot",
        "last line",
    ]
)
CONTENT = DATA.replace("\n", "\r\n").encode() + b"\r\n"


def swaks_command(swaks: str, port: int, *options: str) -> list[str]:
    return [
        swaks,
        "--server", "127.0.0.1",
        "--port", str(port),
        "--timeout", str(int(WAIT)),
        "--ehlo", CLIENT_NAME,
        "--from", SENDER,
        "--to", ",".join(RECIPIENTS),
        *options,
    ]  # fmt: skip


def run_swaks(swaks: str, port: int, *options: str) -> str:
    """Runs swaks with the fixed DATA; returns its transcript once it succeeded."""
    result = run_peer(swaks_command(swaks, port, "--data", DATA, *options))
    assert result.returncode == 0, transcript(result)
    return result.stdout


def verified(ca_file: Path) -> tuple[str, ...]:
    return ("--tls-verify", "--tls-ca-path", str(ca_file))


def assert_delivered(inbox: Inbox, *, tls: bool, login: bytes | None = None) -> None:
    [message] = inbox.messages
    assert message.helo == CLIENT_NAME
    assert message.mail_from == SENDER
    assert message.rcpt_tos == RECIPIENTS
    assert message.content == CONTENT
    assert message.tls is tls
    assert message.login == login


def test_plaintext(serve: Serve, swaks: str) -> None:
    inbox = Inbox()
    controller = serve(inbox)
    run_swaks(swaks, controller.port)
    assert_delivered(inbox, tls=False)


def test_swaks_own_message_with_body_and_header(serve: Serve, swaks: str) -> None:
    """swaks' default message (its own Date, Message-Id and X-Mailer headers) with
    the body and a header given on the command line."""
    inbox = Inbox()
    controller = serve(inbox)
    options = ("--body", "Hello from swaks", "--header", "Subject: interop body and header")
    result = run_peer(swaks_command(swaks, controller.port, *options))
    assert result.returncode == 0, transcript(result)
    [message] = inbox.messages
    assert message.rcpt_tos == RECIPIENTS
    parsed = email.message_from_bytes(message.content)
    assert parsed["Subject"] == "interop body and header"
    assert parsed["From"] == SENDER
    assert parsed["To"] == ",".join(RECIPIENTS)
    assert parsed["Message-Id"]
    payload = parsed.get_payload()
    assert isinstance(payload, str)
    assert payload.strip() == "Hello from swaks"
    assert b"\r\n" in message.content
    assert b"\n" not in message.content.replace(b"\r\n", b"")


def test_starttls(
    serve: Serve, swaks_with_tls: str, server_tls_context: ssl.SSLContext, ca_file: Path
) -> None:
    inbox = Inbox()
    controller = serve(inbox, tls_context=server_tls_context, require_starttls=True)
    output = run_swaks(swaks_with_tls, controller.port, "--tls", *verified(ca_file))
    assert "220 Ready to start TLS" in output
    assert_delivered(inbox, tls=True)


def test_starttls_refused_by_swaks_when_the_certificate_is_not_trusted(
    serve: Serve, swaks_with_tls: str, server_tls_context: ssl.SSLContext
) -> None:
    """``--tls-verify`` really verifies: without the test CA, no mail goes."""
    inbox = Inbox()
    controller = serve(inbox, tls_context=server_tls_context, require_starttls=True)
    result = run_peer(swaks_command(swaks_with_tls, controller.port, "--tls", "--tls-verify"))
    assert result.returncode != 0, transcript(result)
    assert inbox.messages == []


def test_implicit_tls(
    serve: Serve, swaks_with_tls: str, server_tls_context: ssl.SSLContext, ca_file: Path
) -> None:
    inbox = Inbox()
    controller = serve(inbox, ssl_context=server_tls_context)
    output = run_swaks(swaks_with_tls, controller.port, "--tlsc", *verified(ca_file))
    assert "STARTTLS" not in output
    assert_delivered(inbox, tls=True)


def cram_md5_secret(login: bytes) -> str | None:
    return PASSWORD if login == LOGIN.encode() else None


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_over_starttls(
    serve: Serve,
    swaks_with_tls: str,
    server_tls_context: ssl.SSLContext,
    ca_file: Path,
    mechanism: str,
) -> None:
    inbox = Inbox()
    controller = serve(
        inbox,
        **starttls_then_auth(server_tls_context, cram_md5_secret=cram_md5_secret),
    )
    output = run_swaks(
        swaks_with_tls,
        controller.port,
        "--tls",
        *verified(ca_file),
        "--auth", mechanism,
        "--auth-user", LOGIN,
        "--auth-password", PASSWORD,
    )  # fmt: skip
    assert f"AUTH {mechanism}" in output
    assert "235 2.7.0 Authentication successful" in output
    assert_delivered(inbox, tls=True, login=LOGIN.encode())


def test_auth_over_implicit_tls(
    serve: Serve, swaks_with_tls: str, server_tls_context: ssl.SSLContext, ca_file: Path
) -> None:
    inbox = Inbox()
    controller = serve(
        inbox, ssl_context=server_tls_context, auth_required=True, authenticator=authenticator
    )
    run_swaks(
        swaks_with_tls,
        controller.port,
        "--tlsc",
        *verified(ca_file),
        "--auth", "PLAIN",
        "--auth-user", LOGIN,
        "--auth-password", PASSWORD,
    )  # fmt: skip
    assert_delivered(inbox, tls=True, login=LOGIN.encode())


def test_auth_with_a_wrong_password_fails_and_nothing_is_delivered(
    serve: Serve, swaks_with_tls: str, server_tls_context: ssl.SSLContext, ca_file: Path
) -> None:
    inbox = Inbox()
    controller = serve(
        inbox,
        **starttls_then_auth(server_tls_context),
    )
    options = ("--tls", *verified(ca_file), "--auth", "PLAIN")
    credentials = ("--auth-user", LOGIN, "--auth-password", "wrong")
    result = run_peer(swaks_command(swaks_with_tls, controller.port, *options, *credentials))
    assert result.returncode != 0, transcript(result)
    assert "535 5.7.8 Authentication credentials invalid" in result.stdout
    assert inbox.messages == []


@pytest.mark.parametrize(
    "server_options",
    [{"modern": True}, {"pipelining": True}],
    ids=["modern", "pipelining-only"],
)
def test_pipeline(serve: Serve, swaks: str, server_options: dict[str, Any]) -> None:
    inbox = Inbox()
    controller = serve(inbox, **server_options)
    output = run_swaks(swaks, controller.port, "--pipeline")
    # swaks wrote MAIL, every RCPT and DATA before reading a reply.
    lines = [line.strip() for line in output.splitlines()]
    start = lines.index(f"-> MAIL FROM:<{SENDER}>")
    sent = [f"-> RCPT TO:<{recipient}>" for recipient in RECIPIENTS] + ["-> DATA"]
    assert lines[start + 1 : start + 1 + len(sent)] == sent
    assert_delivered(inbox, tls=False)
