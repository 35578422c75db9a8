"""SMTPTestServer itself: every set-up reached through client_kwargs(); AUTH (TLS
first, wrong passwords, accounts of one's own); SMTP keyword arguments passed
through; its life cycle and the arguments it refuses.
"""

from __future__ import annotations

import base64
import smtplib
import socket

import pytest

import smtpwire.client as aiosmtplib
from plugin.helpers import RECIPIENT, SENDER, WAIT, StartServer, body, connect, send
from smtpwire.server.testing import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    SMTPTestServer,
    TestCertificates,
)


@pytest.mark.parametrize("auth", [False, True], ids=["anonymous", "auth"])
@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
async def test_client_kwargs_reach_the_server_as_set_up(
    start_server: StartServer, tls: str, auth: bool
) -> None:
    server = start_server(tls=tls, auth=auth)
    async with aiosmtplib.SMTP(**server.client_kwargs(), timeout=WAIT) as client:
        await client.sendmail(SENDER, [RECIPIENT], body("via client_kwargs"))
    [message] = await server.inbox.wait_for_async(timeout=WAIT)
    assert message.tls is (tls != "none")
    assert message.authenticated is auth
    assert message.auth_login == (DEFAULT_USERNAME if auth else None)


def test_the_default_account(start_server: StartServer) -> None:
    server = start_server(auth=True)
    assert (server.username, server.password) == (DEFAULT_USERNAME, DEFAULT_PASSWORD)
    assert (SMTPTestServer().username, SMTPTestServer().password) == (None, None)


def test_auth_needs_starttls_first_and_the_right_password(
    start_server: StartServer, certificates: TestCertificates
) -> None:
    server = start_server(tls="starttls", require_starttls=True, auth=True)
    user, password = server.username, server.password
    assert user is not None
    assert password is not None
    credentials = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("AUTH", f"PLAIN {credentials}")[0] == 530  # STARTTLS first
        assert client.docmd("MAIL", f"FROM:<{SENDER}>")[0] == 530
        client.starttls(context=certificates.client_context())
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login(user, "not " + password)
        assert caught.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("someone@example.com", password)
        client.login(user, password)
        client.sendmail(user, [RECIPIENT], body("authenticated"))
    [message] = server.inbox.wait_for(timeout=WAIT)
    assert message.authenticated
    assert message.auth_login == user
    assert all(password not in line for line in message.transcript)


def test_auth_refused_in_plaintext_when_the_server_has_tls(start_server: StartServer) -> None:
    server = start_server(tls="starttls", auth=True)
    credentials = base64.b64encode(f"\0{server.username}\0{server.password}".encode()).decode()
    with connect(server) as client:
        client.ehlo()
        code, _ = client.docmd("AUTH", f"PLAIN {credentials}")
    assert code == 538  # encryption required for this mechanism


def test_accounts_of_ones_own_in_plaintext(start_server: StartServer) -> None:
    server = start_server(auth={"ann": "secret", "bob": "hunter2"})
    assert (server.username, server.password) == ("ann", "secret")
    for user, password in (("ann", "secret"), ("bob", "hunter2")):
        with connect(server) as client:
            client.login(user, password)
            client.sendmail(SENDER, [RECIPIENT], body(f"from {user}"))
    messages = server.inbox.wait_for(2, timeout=WAIT)
    assert [message.auth_login for message in messages] == ["ann", "bob"]
    with connect(server) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("ann", "hunter2")  # another account's password


def test_smtp_keyword_arguments_pass_through(start_server: StartServer) -> None:
    server = start_server(hostname="mx.test", data_size_limit=1024)
    with connect(server) as client:
        code, reply = client.ehlo()
        assert code == 250
        assert reply.split(b"\n")[0] == b"mx.test"
        assert client.esmtp_features["size"] == "1024"
        assert "pipelining" in client.esmtp_features  # modern=True by default
        with pytest.raises(smtplib.SMTPSenderRefused) as caught:
            client.sendmail(SENDER, [RECIPIENT], body("too big", "x" * 2000))
        assert caught.value.smtp_code == 552


def test_the_classic_extension_set_on_request(start_server: StartServer) -> None:
    server = start_server(modern=False)
    with connect(server) as client:
        client.ehlo()
        assert "pipelining" not in client.esmtp_features
        client.sendmail(SENDER, [RECIPIENT], body("classic"))
    assert server.inbox.wait_for(timeout=WAIT)[0].subject == "classic"


def test_life_cycle() -> None:
    server = SMTPTestServer()
    assert "stopped" in repr(server)
    with server as running:
        assert running is server
        port = server.port
        assert server.address == ("127.0.0.1", port)
        assert f"127.0.0.1:{port}" in repr(server)
        send(server)
        assert len(server.inbox.wait_for(timeout=WAIT)) == 1
    assert "stopped" in repr(server)
    server.stop()  # a second stop does nothing
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()


def test_reset_empties_the_inbox_and_forgets_the_rules(server: SMTPTestServer) -> None:
    send(server)
    server.inbox.wait_for(timeout=WAIT)
    server.faults.reply(550, command="MAIL")
    server.reset()
    assert len(server.inbox) == 0
    assert server.faults.rules == []
    send(server, "after the reset")
    assert server.inbox.wait_for(timeout=WAIT)[0].subject == "after the reset"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="tls"):
        SMTPTestServer(tls="ssl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="require_starttls"):
        SMTPTestServer(require_starttls=True)
    with pytest.raises(ValueError, match="require_starttls"):
        SMTPTestServer(tls="implicit", require_starttls=True)
    with pytest.raises(RuntimeError):
        SMTPTestServer().client_context()  # no TLS, no CA to trust
