"""aiosmtpd 1.4.6 behaviours of the server engine (issue 15): bare local parts in
MAIL and RCPT, the warnings of ``challenge_auth(log_client_response=True)``,
``LoginPassword``'s repr, the warnings logged for a TLS context that would fail
clients, and the 4-argument ``handle_EHLO`` deprecation text.

Each fact was read in aiosmtpd's ``aiosmtpd/smtp.py`` (``_getaddr``,
``challenge_auth``, ``LoginPassword``, ``SMTP.__init__``)."""

from __future__ import annotations

import logging
import re
import ssl
from base64 import b64encode
from typing import Any

import pytest

from smtpwire.server.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from support.server import Recorder, greeted, serving, text

HOST = "compat.example"
MALFORMED = "553 5.1.3 Error: malformed address"
MAIL_SYNTAX = "501 Syntax: MAIL FROM: <address>"


def smtp(handler: Any = None, **kwargs: Any) -> Any:
    kwargs.setdefault("hostname", HOST)
    handler = handler if handler is not None else Recorder()
    return lambda: SMTP(handler, **kwargs)


def envelope_of(server: Any) -> Envelope:
    envelope: Envelope = server.call(lambda: server.protocols[-1].envelope)
    return envelope


# -- 1. a bare local part: no angle brackets, no domain ------------------------------------


@pytest.mark.parametrize(
    "local_part",
    ["postmaster", "root", "a" * 500, "first.last+tag"],
    ids=["postmaster", "root", "500-octets", "dot-atom"],
)
@pytest.mark.parametrize("greeting", ["EHLO client.example", "HELO client.example"])
def test_bare_local_part_is_taken_as_aiosmtpd_takes_it(local_part: str, greeting: str) -> None:
    """aiosmtpd's get_addr_spec takes a local part without a domain, and stores it
    as sent (no brackets), as it stores <root> as "root"; local_part_limit is 0
    (no limit), so 500 octets pass.  RCPT takes the same."""
    recorder = Recorder()
    with serving(smtp(recorder)) as server, greeted(server.port, greeting) as client:
        assert text(client.command(f"MAIL FROM:{local_part}")) == "250 OK"
        assert envelope_of(server).mail_from == local_part
        assert text(client.command(f"RCPT TO:{local_part}")) == "250 OK"
        assert envelope_of(server).rcpt_tos == [local_part]
        assert client.command("DATA").code == 354
        assert text(client.command("Subject: hi\r\n\r\nbody\r\n.")) == "250 OK"
    assert [(m.mail_from, m.rcpt_tos) for m in recorder.messages] == [(local_part, (local_part,))]


def test_bare_local_part_with_a_space_after_the_colon() -> None:
    with serving(smtp()) as server, greeted(server.port) as client:
        assert text(client.command("MAIL FROM: postmaster")) == "250 OK"
        assert envelope_of(server).mail_from == "postmaster"
        assert text(client.command("RCPT TO: postmaster")) == "250 OK"
        assert envelope_of(server).rcpt_tos == ["postmaster"]


def test_bare_local_part_then_parameters_are_parameters() -> None:
    """aiosmtpd's header parser folds "anne SIZE=100" into one obsolete RFC 5322
    local part and stores the sender '"anne SIZE=100"' with no parameters, so SIZE
    and BODY go unchecked.  smtpwire reads the address, then the parameters, as it
    does after a bracketed or domain-qualified path (a deliberate difference)."""
    with serving(smtp()) as server, greeted(server.port) as client:
        assert text(client.command("MAIL FROM:anne SIZE=100 BODY=8BITMIME")) == "250 OK"
        envelope = envelope_of(server)
        assert envelope.mail_from == "anne"
        assert envelope.mail_options == ["SIZE=100", "BODY=8BITMIME"]
        assert text(client.command("RSET")) == "250 OK"
        assert text(client.command("MAIL FROM:anne SIZE=999999999999")) == (
            "552 Error: message size exceeds fixed maximum message size"
        )
        assert text(client.command("MAIL FROM:anne BODY=9BIT")) == (
            "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        )


def test_bare_local_part_then_parameters_after_helo_is_a_syntax_error() -> None:
    with serving(smtp()) as server, greeted(server.port, "HELO client.example") as client:
        assert text(client.command("MAIL FROM:anne SIZE=100")) == MAIL_SYNTAX
        assert envelope_of(server).mail_from is None


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        ("anne (comment)", f"{MAIL_SYNTAX} [SP <mail-parameters>]"),
        ("(comment)anne", MALFORMED),
        ("anne\\b", MALFORMED),
        ("anne@[IPv6::1]", MALFORMED),
        ("anne>", MALFORMED),
        ("anne,bart", MALFORMED),
        ("anne;bart", MALFORMED),
        (".anne", MALFORMED),
        ("anne..bart", MALFORMED),
    ],
    ids=[
        "comment",
        "comment-first",
        "backslash",
        "bad-ipv6-literal",
        "stray-bracket",
        "comma",
        "semicolon",
        "leading-dot",
        "double-dot",
    ],
)
def test_bare_local_parts_smtpwire_still_refuses(argument: str, reply: str) -> None:
    """RFC 5322 comments, obsolete local parts, a malformed literal and characters
    that would join a second address stay refused, bare or not."""
    with serving(smtp()) as server, greeted(server.port) as client:
        assert text(client.command(f"MAIL FROM:{argument}")) == reply
        assert envelope_of(server).mail_from is None
        assert text(client.command("MAIL FROM:postmaster")) == "250 OK"
        assert text(client.command(f"RCPT TO:{argument}")).startswith(("501 ", "553 "))
        assert envelope_of(server).rcpt_tos == []


def test_bare_local_part_control_character_is_refused() -> None:
    """A control character cannot ride in on a bare local part."""
    with serving(smtp()) as server, greeted(server.port) as client:
        assert text(client.command(b"MAIL FROM:anne\x00bart")) == MALFORMED
        assert text(client.command(b"MAIL FROM:anne\x0bbart")) == MALFORMED
        assert envelope_of(server).mail_from is None


# -- 2. AUTH: challenge_auth's logging warnings, LoginPassword's repr -------------------------


class LoggingMechanism:
    """A handler mechanism that asks for one answer with log_client_response on."""

    def __init__(self) -> None:
        self.answers: list[Any] = []

    async def auth_TRACE(self, server: SMTP, args: list[str]) -> AuthResult:
        answer = await server.challenge_auth("who?", log_client_response=True)
        self.answers.append(answer)
        return AuthResult(success=answer == b"anne", handled=False)


# pytest.warns re-emits a warning its match refuses: the pattern takes both.
LOGGING_WARNINGS = r"^(AUTH interaction logging is enabled|Sensitive information might be leaked)!$"


def trace(client: Any, answer: bytes) -> list[str]:
    """AUTH TRACE answered with ``answer``: the challenge and the final reply."""
    return [text(client.command("AUTH TRACE")), text(client.command(b64encode(answer)))]


def test_challenge_auth_logging_warns_twice_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mail.log")
    handler = LoggingMechanism()
    challenge = "334 " + b64encode(b"who?").decode()
    outcomes = [
        (b"bart", "535 5.7.8 Authentication credentials invalid"),
        (b"anne", "235 2.7.0 Authentication successful"),
    ]
    factory = smtp(handler, auth_require_tls=False)
    with serving(factory) as server, greeted(server.port) as client:
        for answer, final in outcomes:
            # The server's thread warns while the test waits for the reply.
            with pytest.warns(UserWarning, match=LOGGING_WARNINGS) as warned:
                replies = trace(client, answer)
            assert replies == [challenge, final]
            assert [(w.category, str(w.message)) for w in warned] == [
                (UserWarning, "AUTH interaction logging is enabled!"),
                (UserWarning, "Sensitive information might be leaked!"),
            ]
    assert handler.answers == [b"bart", b"anne"]
    # The answer itself is logged (that is what the option is for).
    assert any(repr(b64encode(b"anne")) in message for message in caplog.messages)


def test_challenge_auth_without_logging_does_not_warn() -> None:
    class Quiet:
        async def auth_QUIET(self, server: SMTP, args: list[str]) -> AuthResult:
            answer = await server.challenge_auth("who?")
            return AuthResult(success=answer == b"anne", handled=False)

    with serving(smtp(Quiet(), auth_require_tls=False)) as server, greeted(server.port) as client:
        # filterwarnings = error: a warning here would fail the session's command.
        assert text(client.command("AUTH QUIET")).startswith("334 ")
        assert text(client.command(b64encode(b"anne"))) == "235 2.7.0 Authentication successful"


@pytest.mark.parametrize(
    ("login", "shown"),
    [(b"user", "user"), (b"anne@example.com", "anne@example.com"), (b"", "")],
)
def test_login_password_repr_is_its_str(login: bytes, shown: str) -> None:
    credentials = LoginPassword(login, b"s3cr3t")
    expected = f"LoginPassword(login='{shown}', password=...)"
    assert str(credentials) == expected
    assert repr(credentials) == expected
    assert "s3cr3t" not in repr([credentials])
    assert repr((credentials,)) == f"({expected},)"


def test_login_password_repr_of_undecodable_login_hides_the_password() -> None:
    credentials = LoginPassword(b"\xffanne", b"\xffs3cr3t")
    expected = "LoginPassword(login='\ufffdanne', password=...)"
    assert repr(credentials) == str(credentials) == expected
    assert "s3cr3t" not in repr(credentials)


# -- 3. a TLS context that would fail ordinary clients is logged, not changed ---------------

VERIFY_WARNING = (
    "tls_context.verify_mode not in {CERT_NONE, CERT_OPTIONAL}; "
    "this might cause client connection problems"
)
HOSTNAME_WARNING = "tls_context.check_hostname == True; this might cause client connection problems"


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "mail.log" and record.levelno == logging.WARNING
    ]


def client_side_context() -> ssl.SSLContext:
    # A client's default context: CERT_REQUIRED with check_hostname.
    return ssl.create_default_context()


async def test_tls_context_requiring_certificates_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mail.log")
    context = client_side_context()
    SMTP(Recorder(), hostname=HOST, tls_context=context)
    # The verify_mode warning only, as aiosmtpd (its check_hostname one is an elif).
    assert warnings_logged(caplog) == [VERIFY_WARNING]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


async def test_tls_context_checking_host_names_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mail.log")
    # CERT_OPTIONAL passes the first check; check_hostname stays on.  (The ssl
    # module never lets CERT_NONE and check_hostname meet.)
    context = client_side_context()
    context.verify_mode = ssl.CERT_OPTIONAL
    SMTP(Recorder(), hostname=HOST, tls_context=context)
    assert warnings_logged(caplog) == [HOSTNAME_WARNING]
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert context.check_hostname is True


@pytest.mark.parametrize("verify_mode", [ssl.CERT_NONE, ssl.CERT_OPTIONAL])
async def test_server_tls_context_is_not_warned_about(
    caplog: pytest.LogCaptureFixture, verify_mode: ssl.VerifyMode
) -> None:
    caplog.set_level(logging.WARNING, logger="mail.log")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = verify_mode
    SMTP(Recorder(), hostname=HOST, tls_context=context)
    SMTP(Recorder(), hostname=HOST)
    assert warnings_logged(caplog) == []
    assert context.verify_mode == verify_mode
    assert context.check_hostname is False


def test_warned_tls_context_is_used_as_given(caplog: pytest.LogCaptureFixture) -> None:
    """The warning only warns: the server keeps the very context, unchanged, and
    offers STARTTLS with it."""
    caplog.set_level(logging.WARNING, logger="mail.log")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    with serving(smtp(tls_context=context)) as server, greeted(server.port, "NOOP") as client:
        assert "STARTTLS" in client.command("EHLO client.example").lines
        assert server.call(lambda: server.protocols[0].tls_context) is context
    assert VERIFY_WARNING in warnings_logged(caplog)
    assert context.verify_mode == ssl.CERT_REQUIRED


# -- 4. the 4-argument handle_EHLO ----------------------------------------------------------

EHLO_DEPRECATION = (
    "Use the 5-argument handle_EHLO() hook instead of the 4-argument handle_EHLO() hook; "
    "support for the 4-argument handle_EHLO() hook will be removed in version 2.0"
)


class FourArgumentEhlo:
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        return "250 HELP"


async def test_four_argument_handle_ehlo_deprecation_text() -> None:
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(EHLO_DEPRECATION)}$") as warned:
        SMTP(FourArgumentEhlo(), hostname=HOST)
    assert len(warned) == 1


# -- settings changed after construction (aiosmtpd's attributes are live) --------------


def test_tls_context_set_after_construction_is_offered_and_used(
    server_context: Any, client_context: Any
) -> None:
    """A subclass that sets ``tls_context`` after ``__init__`` gets STARTTLS in EHLO
    and a working STARTTLS, as in aiosmtpd (the session machine follows it)."""
    import smtplib

    from smtpwire.server.handlers import Sink
    from smtpwire.server.smtp import SMTP
    from support.server import serving

    class LateTLS(SMTP):
        def __init__(self) -> None:
            super().__init__(Sink(), hostname="mx.test")
            self.tls_context = server_context
            self.require_starttls = True

    with serving(LateTLS) as server, smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        assert client.ehlo()[0] == 250
        assert client.has_extn("starttls")
        assert client.mail("a@example.org")[0] == 530  # required, and not yet started
        client.starttls(context=client_context)
        assert client.ehlo()[0] == 250
        assert not client.has_extn("starttls")
        assert client.mail("a@example.org")[0] == 250
