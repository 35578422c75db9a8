"""Server tests written to kill mutants that survived the whole suite (issue 20,
docs/mutation.md): each names the broken product it would notice.

* ``require_starttls`` with AUTH among the commands allowed before STARTTLS: with
  ``auth_require_tls=False`` the credentials would then cross the wire in clear.
* the ``handle_STARTTLS`` hook's answer ignored: a handler that refuses the TLS
  session (a weak cipher, a client certificate it does not like) would be obeyed
  by nobody.
"""

from __future__ import annotations

import ssl
from base64 import b64encode
from collections.abc import Callable
from typing import Any

import pytest

from smtpwire.common.replies import ReplyParser, SMTPReply
from smtpwire.server.smtp import SMTP, AuthResult, Envelope, Session
from support.server import WAIT, RawClient, Recorder, serving

REFUSED_BEFORE_TLS = "530 Must issue a STARTTLS command first"
LACK_OF_SECURITY = "554 Command refused due to lack of security"
PLAIN = b64encode(b"\0anne\0s3cr3t").decode()


class TLSClient:
    """Commands over the TLS socket that replaced a RawClient's plaintext one."""

    def __init__(self, raw: RawClient, context: ssl.SSLContext) -> None:
        raw.sock.settimeout(WAIT)
        self.sock = context.wrap_socket(raw.sock, server_hostname="localhost")
        self.parser = ReplyParser()
        self.pending: list[SMTPReply] = []

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.pending.extend(self.parser.feed(data))
        reply = self.pending.pop(0)
        return f"{reply.code} {reply.message}"


def start_tls(raw: RawClient, context: ssl.SSLContext) -> TLSClient:
    assert raw.reply().code == 220
    assert raw.command("EHLO client.example").code == 250
    assert str(raw.command("STARTTLS")) == "220 Ready to start TLS"
    return TLSClient(raw, context)


# -- require_starttls refuses AUTH before the handshake --------------------------------------


class CountingAuthenticator:
    """Accepts anyone; counts its calls (none may happen in plaintext)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.calls.append(mechanism)
        return AuthResult(success=True, auth_data=auth_data)


def test_require_starttls_refuses_auth_in_plaintext_even_when_auth_may_run_without_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    authenticator = CountingAuthenticator()

    def factory() -> SMTP:
        return SMTP(
            Recorder(),
            hostname="testhost",
            tls_context=server_context,
            require_starttls=True,
            auth_require_tls=False,
            authenticator=authenticator,
        )

    with serving(factory) as srv, RawClient(srv.port) as raw:
        assert raw.reply().code == 220
        assert raw.command("EHLO client.example").code == 250
        assert str(raw.command(f"AUTH PLAIN {PLAIN}")) == REFUSED_BEFORE_TLS
        assert str(raw.command("AUTH LOGIN")) == REFUSED_BEFORE_TLS
        assert authenticator.calls == []
        assert str(raw.command("STARTTLS")) == "220 Ready to start TLS"
        tls = TLSClient(raw, client_context)
        assert tls.command("EHLO client.example").startswith("250")
        # Over TLS the same credentials are taken: the refusal was about the wire.
        assert tls.command(f"AUTH PLAIN {PLAIN}") == "235 2.7.0 Authentication successful"
        assert authenticator.calls == ["PLAIN"]
        tls.sock.close()


# -- handle_STARTTLS decides whether the TLS session may be used ----------------------------


class StartTLSJudge(Recorder):
    """A handler with aiosmtpd's ``handle_STARTTLS`` hook answering ``verdict``, which
    records the session's TLS facts as the hook saw them."""

    def __init__(self, verdict: bool) -> None:
        super().__init__()
        self.verdict = verdict
        self.seen_ssl: list[Any] = []

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.seen_ssl.append(session.ssl)
        return self.verdict


def judged(handler: StartTLSJudge, context: ssl.SSLContext) -> Callable[[], SMTP]:
    return lambda: SMTP(handler, hostname="testhost", tls_context=context)


def test_handle_starttls_returning_false_leaves_only_quit(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    judge = StartTLSJudge(verdict=False)
    with serving(judged(judge, server_context)) as srv, RawClient(srv.port) as raw:
        tls = start_tls(raw, client_context)
        for command in (
            "EHLO client.example",
            "HELO client.example",
            "NOOP",
            "MAIL FROM:<a@example.com>",
            "RCPT TO:<b@example.com>",
            "DATA",
            "RSET",
            "STARTTLS",
        ):
            assert tls.command(command) == LACK_OF_SECURITY, command
        assert tls.command("QUIT").startswith("221")
        tls.sock.close()
    assert len(judge.seen_ssl) == 1
    assert judge.seen_ssl[0] is not None
    assert judge.seen_ssl[0]["cipher"] is not None
    assert judge.messages == []


def test_handle_starttls_returning_true_lets_the_session_proceed(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    judge = StartTLSJudge(verdict=True)
    with serving(judged(judge, server_context)) as srv, RawClient(srv.port) as raw:
        tls = start_tls(raw, client_context)
        assert tls.command("EHLO client.example").startswith("250")
        assert tls.command("MAIL FROM:<a@example.com>") == "250 OK"
        assert tls.command("RCPT TO:<b@example.com>") == "250 OK"
        assert tls.command("DATA").startswith("354")
        assert tls.command("over tls\r\n.") == "250 OK"
        tls.sock.close()
    assert len(judge.seen_ssl) == 1
    assert judge.seen_ssl[0] is not None
    assert judge.seen_ssl[0]["cipher"] is not None
    assert [message.content for message in judge.messages] == [b"over tls\r\n"]


@pytest.mark.parametrize("verdict", [0, None, ""])
def test_handle_starttls_falsy_answers_refuse_like_false(
    verdict: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    judge = StartTLSJudge(verdict=verdict)
    with serving(judged(judge, server_context)) as srv, RawClient(srv.port) as raw:
        tls = start_tls(raw, client_context)
        assert tls.command("EHLO client.example") == LACK_OF_SECURITY
        tls.sock.close()
