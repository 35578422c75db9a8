"""Python's smtplib, a client written without smtpwire in mind, against
smtpwire.server: plaintext, STARTTLS with the certificate verified, AUTH PLAIN and
LOGIN over TLS, and SMTPUTF8.  Each checks the exact envelope and bytes delivered."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTPUTF8

import pytest

from interop.peers import CLIENT_NAME, LOGIN, PASSWORD, WAIT, Inbox, starttls_then_auth
from smtpwire.server.controller import Controller

Serve = Callable[..., Controller]


# A leading dot (stuffed by smtplib, unstuffed by the server), a lone dot, an empty
# last line: the places where a DATA section goes wrong.
MESSAGE = (
    b"From: sender@example.org\r\n"
    b"To: one@example.org, two@example.org\r\n"
    b"Subject: interop with smtplib\r\n"
    b"\r\n"
    b"first line\r\n"
    b".leading dot\r\n"
    b".\r\n"
    b"\r\n"
)


def connect(controller: Controller) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", controller.port, local_hostname=CLIENT_NAME, timeout=WAIT)


def test_plaintext(serve: Serve) -> None:
    inbox = Inbox()
    controller = serve(inbox)
    with connect(controller) as client:
        refused = client.sendmail(
            "sender@example.org", ["one@example.org", "two@example.org"], MESSAGE
        )
        assert refused == {}
    [message] = inbox.messages
    assert message.helo == CLIENT_NAME
    assert message.mail_from == "sender@example.org"
    # aiosmtpd upper-cases the parameters; smtpwire.server does the same.
    assert message.mail_options == (f"SIZE={len(MESSAGE)}",)
    assert message.rcpt_tos == ("one@example.org", "two@example.org")
    assert message.content == MESSAGE
    assert not message.tls


def test_starttls_with_the_certificate_verified(
    serve: Serve, server_tls_context: ssl.SSLContext, client_tls_context: ssl.SSLContext
) -> None:
    inbox = Inbox()
    controller = serve(inbox, tls_context=server_tls_context, require_starttls=True)
    with connect(controller) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, _ = client.starttls(context=client_tls_context)
        assert code == 220
        assert client.sock.version() is not None  # type: ignore[union-attr]
        refused = client.sendmail("sender@example.org", ["one@example.org"], MESSAGE)
        assert refused == {}
    [message] = inbox.messages
    assert message.tls
    assert message.mail_from == "sender@example.org"
    assert message.rcpt_tos == ("one@example.org",)
    assert message.content == MESSAGE


def test_starttls_fails_when_the_client_does_not_trust_the_certificate(
    serve: Serve, server_tls_context: ssl.SSLContext
) -> None:
    """The verified test above is meaningful: an unknown CA is refused."""
    inbox = Inbox()
    controller = serve(inbox, tls_context=server_tls_context, require_starttls=True)
    with connect(controller) as client, pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=ssl.create_default_context())
    assert inbox.messages == []


@pytest.mark.parametrize("initial_response", [True, False], ids=["initial", "challenged"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_over_starttls(
    serve: Serve,
    server_tls_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
    mechanism: str,
    initial_response: bool,
) -> None:
    inbox = Inbox()
    controller = serve(
        inbox,
        **starttls_then_auth(server_tls_context),
    )
    with connect(controller) as client:
        client.starttls(context=client_tls_context)
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"].split()
        assert "LOGIN" in client.esmtp_features["auth"].split()
        # smtplib.login() picks the mechanism itself; auth() is how to pick one.
        client.user, client.password = LOGIN, PASSWORD
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, text = client.auth(mechanism, method, initial_response_ok=initial_response)
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        refused = client.sendmail("sender@example.org", ["one@example.org"], MESSAGE)
        assert refused == {}
    [message] = inbox.messages
    assert message.tls
    assert message.login == LOGIN.encode()
    assert message.content == MESSAGE


def test_auth_with_a_wrong_password_is_refused_and_nothing_is_delivered(
    serve: Serve, server_tls_context: ssl.SSLContext, client_tls_context: ssl.SSLContext
) -> None:
    inbox = Inbox()
    controller = serve(
        inbox,
        **starttls_then_auth(server_tls_context),
    )
    with connect(controller) as client:
        client.starttls(context=client_tls_context)
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(LOGIN, "wrong")
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as unauthenticated:
            client.sendmail("sender@example.org", ["one@example.org"], MESSAGE)
        assert unauthenticated.value.smtp_code == 530
    assert inbox.messages == []


def test_smtputf8_addresses_with_sendmail(serve: Serve) -> None:
    inbox = Inbox()
    controller = serve(inbox, enable_SMTPUTF8=True)
    sender = "jos\u00e9@ex\u00e4mple.org"
    recipient = "\u7528\u6237@example.org"
    content = f"From: {sender}\r\nTo: {recipient}\r\nSubject: caf\u00e9\r\n\r\nna\u00efve\r\n"
    with connect(controller) as client:
        refused = client.sendmail(
            sender, [recipient], content.encode(), mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )
        assert refused == {}
    [message] = inbox.messages
    assert message.smtp_utf8
    assert message.mail_from == sender
    assert message.rcpt_tos == (recipient,)
    assert message.content == content.encode()


def test_smtputf8_message_with_send_message(serve: Serve) -> None:
    """send_message finds the non-ASCII addresses itself, asks for SMTPUTF8 and
    8BITMIME, and sends the headers in UTF-8."""
    inbox = Inbox()
    controller = serve(inbox, enable_SMTPUTF8=True)
    email = EmailMessage()
    email["From"] = "Jos\u00e9 <jos\u00e9@ex\u00e4mple.org>"
    email["To"] = "\u7528\u6237@example.org"
    email["Subject"] = "caf\u00e9"
    email.set_content("na\u00efve\n")
    expected = email.as_bytes(policy=SMTPUTF8)  # what send_message flattens with
    with connect(controller) as client:
        assert client.send_message(email) == {}
    [message] = inbox.messages
    assert message.smtp_utf8
    assert {option.upper() for option in message.mail_options} >= {"SMTPUTF8", "BODY=8BITMIME"}
    assert message.mail_from == "jos\u00e9@ex\u00e4mple.org"
    assert message.rcpt_tos == ("\u7528\u6237@example.org",)
    assert message.content == expected
