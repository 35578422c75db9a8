"""STARTTLS on the server: the upgrade, the session reset it implies, and the
plaintext-injection attack (aiosmtpd's CVE-2024-34083, which it fixed without a
regression test)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from smtpwire.common.replies import ReplyParser
from smtpwire.server.smtp import SMTP
from support.server import WAIT, RawClient, Recorder, ServerThread, serving


@pytest.fixture
def server(server_context: ssl.SSLContext) -> Iterator[tuple[ServerThread, Recorder]]:
    recorder = Recorder()
    with serving(lambda: SMTP(recorder, hostname="testhost", tls_context=server_context)) as srv:
        yield srv, recorder


class TLSClient:
    """Commands over the TLS socket that replaced a RawClient's plaintext one."""

    def __init__(self, raw: RawClient, context: ssl.SSLContext) -> None:
        raw.sock.settimeout(WAIT)
        self.sock = context.wrap_socket(raw.sock, server_hostname="localhost")
        self.parser = ReplyParser()
        self.pending: list[Any] = []

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.pending.extend(self.parser.feed(data))
        reply = self.pending.pop(0)
        return f"{reply.code} {reply.message}"


def test_starttls_upgrades_and_resets_the_session(
    server: tuple[ServerThread, Recorder], client_context: ssl.SSLContext
) -> None:
    srv, recorder = server
    with RawClient(srv.port) as raw:
        raw.reply()
        assert "STARTTLS" in raw.command("EHLO client").message
        assert str(raw.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert str(raw.command("STARTTLS")) == "220 Ready to start TLS"
        tls = TLSClient(raw, client_context)
        # RFC 3207 section 4.2: everything from before the handshake is forgotten.
        assert tls.command("MAIL FROM:<a@example.com>") == "503 Error: send HELO first"
        ehlo = tls.command("EHLO client")
        assert "STARTTLS" not in ehlo
        assert "AUTH LOGIN PLAIN" in ehlo
        assert tls.command("STARTTLS") == "454 TLS not available"
        assert tls.command("MAIL FROM:<a@example.com>") == "250 OK"
        assert tls.command("RCPT TO:<b@example.com>") == "250 OK"
        assert tls.command("DATA").startswith("354")
        assert tls.command("secret\r\n.") == "250 OK"
        tls.sock.close()
    assert [message.content for message in recorder.messages] == [b"secret\r\n"]
    session = srv.call(lambda: srv.protocols[0].session)
    assert session.ssl is not None
    assert session.ssl["cipher"] is not None


def test_commands_pipelined_after_starttls_are_never_executed(
    server: tuple[ServerThread, Recorder], client_context: ssl.SSLContext
) -> None:
    srv, _ = server
    with RawClient(srv.port) as raw:
        raw.reply()
        raw.command("EHLO client")
        # A man in the middle appends plaintext commands to the client's STARTTLS.
        raw.send(b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<evil@example.com>\r\nNOOP\r\n")
        assert str(raw.reply()) == "220 Ready to start TLS"
        tls = TLSClient(raw, client_context)
        # Had the injected EHLO run, MAIL would be accepted; had NOOP run, its
        # reply would answer this first command.
        assert tls.command("MAIL FROM:<a@example.com>") == "503 Error: send HELO first"
        assert tls.command("NOOP") == "250 OK"
        tls.sock.close()


def test_starttls_with_an_argument_and_without_a_context() -> None:
    with serving(lambda: SMTP(Recorder(), hostname="testhost")) as srv, RawClient(srv.port) as raw:
        raw.reply()
        raw.command("EHLO client")
        assert str(raw.command("STARTTLS now")) == "501 Syntax: STARTTLS"
        assert str(raw.command("STARTTLS")) == "454 TLS not available"


def test_require_starttls_refuses_commands_until_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def factory() -> SMTP:
        return SMTP(
            Recorder(), hostname="testhost", tls_context=server_context, require_starttls=True
        )

    with serving(factory) as srv, RawClient(srv.port) as raw:
        raw.reply()
        assert raw.command("EHLO client").code == 250
        assert str(raw.command("NOOP")) == "250 OK"
        refused = "530 Must issue a STARTTLS command first"
        assert str(raw.command("MAIL FROM:<a@example.com>")) == refused
        assert str(raw.command("HELP")) == refused
        assert str(raw.command("STARTTLS")) == "220 Ready to start TLS"
        tls = TLSClient(raw, client_context)
        tls.command("EHLO client")
        assert tls.command("MAIL FROM:<a@example.com>") == "250 OK"
        tls.sock.close()
