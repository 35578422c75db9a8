"""Transport security end to end: plaintext, STARTTLS (opportunistic and required by
the server), implicit TLS, on IPv4 and IPv6 loopback; the client verifying the
server's certificate (wrong name, unknown CA, expired: a clear error and nothing
delivered); and mutual TLS, where the server checks the client's certificate.
"""

from __future__ import annotations

import ssl

import pytest

import smtpwire.client as aiosmtplib
from integration.harness import (
    CLIENT_IDENTITY,
    SERVER_NAME,
    Certificates,
    Inbox,
    StartServer,
    alt_names,
    make_client,
)

SENDER = "alice@example.org"
RECIPIENT = "bob@example.org"
BODY = b"Subject: tls\r\n\r\nover the wire\r\n"


async def send_one(client: aiosmtplib.SMTP, body: bytes = BODY) -> None:
    assert await client.sendmail(SENDER, [RECIPIENT], body) == ({}, "OK")


async def connect_and_send(client: aiosmtplib.SMTP) -> None:
    """Where a refused handshake shows depends on the TLS version and the timing:
    at connect(), or at the first command after it."""
    await client.connect()
    await send_one(client)


# --- plaintext and the three ways to TLS ----------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_plaintext(start_server: StartServer, inbox: Inbox, host: str) -> None:
    server = start_server(inbox, host=host)
    async with make_client(server) as client:
        assert client.get_transport_info("sslcontext") is None
        assert not client.supports_extension("starttls")
        await send_one(client)
    [delivery] = inbox.deliveries
    assert (delivery.mail_from, delivery.rcpt_tos, delivery.content) == (
        SENDER,
        (RECIPIENT,),
        BODY,
    )
    assert not delivery.over_tls
    assert delivery.peer[0] == host


async def test_opportunistic_starttls_upgrades_when_offered(
    start_server: StartServer,
    inbox: Inbox,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = start_server(inbox, tls=server_context)
    async with make_client(server, tls_context=client_context) as client:  # start_tls=None
        assert client.get_transport_info("sslcontext") is client_context
        peercert = client.get_transport_info("peercert")
        assert ("IP Address", "127.0.0.1") in alt_names(peercert)
        # RFC 3207: the EHLO from before the handshake is forgotten and asked again.
        await client.ehlo()
        assert not client.supports_extension("starttls")
        await send_one(client)
    await server.all_closed()
    [delivery] = inbox.deliveries
    assert delivery.over_tls
    assert delivery.content == BODY


async def test_opportunistic_starttls_stays_plain_without_an_offer(
    start_server: StartServer, inbox: Inbox, client_context: ssl.SSLContext
) -> None:
    server = start_server(inbox)
    async with make_client(server, tls_context=client_context) as client:
        assert client.get_transport_info("sslcontext") is None
        await send_one(client)
    assert [d.over_tls for d in inbox.deliveries] == [False]


async def test_start_tls_true_refuses_a_server_without_starttls(
    start_server: StartServer, inbox: Inbox, client_context: ssl.SSLContext
) -> None:
    """A client that insists on TLS never sends the message in the clear."""
    server = start_server(inbox)
    client = make_client(server, start_tls=True, tls_context=client_context)
    with pytest.raises(aiosmtplib.SMTPException, match="STARTTLS extension not supported"):
        await client.connect()
    assert not client.is_connected
    assert inbox.deliveries == []


async def test_required_starttls_refuses_plaintext_mail(
    start_server: StartServer,
    inbox: Inbox,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = start_server(inbox, tls=server_context, require_starttls=True)
    async with make_client(server, start_tls=False, tls_context=client_context) as client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail(SENDER, [RECIPIENT], BODY)
        assert (refused.value.code, refused.value.message) == (
            530,
            "Must issue a STARTTLS command first",
        )
        # The same connection upgrades and then may send.
        assert (await client.starttls()).code == 220
        await send_one(client)
    await server.all_closed()
    assert [d.over_tls for d in inbox.deliveries] == [True]


@pytest.mark.parametrize("start_tls", [None, True])
async def test_required_starttls_with_a_client_that_upgrades(
    start_server: StartServer,
    inbox: Inbox,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    start_tls: bool | None,
) -> None:
    server = start_server(inbox, tls=server_context, require_starttls=True)
    async with make_client(server, start_tls=start_tls, tls_context=client_context) as client:
        await send_one(client)
        await send_one(client, b"second\r\n")
    await server.all_closed()
    assert [(d.over_tls, d.content) for d in inbox.deliveries] == [
        (True, BODY),
        (True, b"second\r\n"),
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_implicit_tls(
    start_server: StartServer,
    inbox: Inbox,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    host: str,
) -> None:
    server = start_server(inbox, host=host, tls=server_context, implicit=True)
    client = make_client(server, use_tls=True, tls_context=client_context)
    greeting = await client.connect()
    try:
        assert greeting.code == 220
        assert greeting.message.startswith(SERVER_NAME)
        assert ("IP Address", host) in alt_names(client.get_transport_info("peercert"))
        # The session knows it is encrypted (aiosmtpd does not, issues #274/#281):
        # no STARTTLS, and AUTH (which needs TLS by default) is offered.
        await client.ehlo()
        assert not client.supports_extension("starttls")
        assert client.supports_extension("auth")
        await send_one(client)
    finally:
        await client.quit()
    await server.all_closed()
    [delivery] = inbox.deliveries
    assert delivery.over_tls
    assert delivery.peer[0] == host


async def test_implicit_tls_with_a_ca_bundle_file(
    start_server: StartServer,
    inbox: Inbox,
    certificates: Certificates,
    server_context: ssl.SSLContext,
) -> None:
    """The client builds its own context from ``cert_bundle`` and still verifies."""
    server = start_server(inbox, tls=server_context, implicit=True)
    await aiosmtplib.send(
        BODY,
        sender=SENDER,
        recipients=[RECIPIENT],
        hostname=server.hostname,
        port=server.port,
        use_tls=True,
        cert_bundle=str(certificates.ca_bundle),
        timeout=10,
    )
    await server.all_closed()
    assert [d.over_tls for d in inbox.deliveries] == [True]


# --- the client refuses a certificate it cannot trust -------------------------------------------

BAD_CERTIFICATES = {
    "wrong-hostname": ("wrong_name", "IP address mismatch"),
    "unknown-ca": ("untrusted", "unable to get local issuer certificate"),
    "expired": ("expired", "certificate has expired"),
}


@pytest.mark.parametrize("case", sorted(BAD_CERTIFICATES))
async def test_starttls_refuses_a_bad_certificate(
    start_server: StartServer,
    inbox: Inbox,
    certificates: Certificates,
    client_context: ssl.SSLContext,
    case: str,
) -> None:
    leaf_name, reason = BAD_CERTIFICATES[case]
    leaf = getattr(certificates, leaf_name)
    server = start_server(inbox, tls=certificates.server_context(leaf))
    client = make_client(server, start_tls=True, tls_context=client_context)
    # As aiosmtplib: the ssl module's own verification error, naming the reason.
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        await client.connect()
    assert reason in failure.value.verify_message
    assert not client.is_connected
    await server.all_closed()
    assert inbox.deliveries == []


@pytest.mark.parametrize("case", sorted(BAD_CERTIFICATES))
async def test_implicit_tls_refuses_a_bad_certificate(
    start_server: StartServer,
    inbox: Inbox,
    certificates: Certificates,
    client_context: ssl.SSLContext,
    case: str,
) -> None:
    leaf_name, reason = BAD_CERTIFICATES[case]
    leaf = getattr(certificates, leaf_name)
    server = start_server(inbox, tls=certificates.server_context(leaf), implicit=True)
    with pytest.raises(aiosmtplib.SMTPConnectError, match=reason) as failure:
        await aiosmtplib.send(
            BODY,
            sender=SENDER,
            recipients=[RECIPIENT],
            hostname=server.hostname,
            port=server.port,
            use_tls=True,
            tls_context=client_context,
            timeout=10,
        )
    cause = failure.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert reason in cause.verify_message
    await server.all_closed()
    assert inbox.deliveries == []


async def test_wrong_hostname_by_name(
    start_server: StartServer,
    inbox: Inbox,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """A certificate valid for the address but not for the name the client expects
    (``starttls(server_hostname=...)``) is refused as well."""
    server = start_server(inbox, tls=server_context)
    client = make_client(server, start_tls=False, tls_context=client_context)
    await client.connect()
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        await client.starttls(server_hostname="mail.example.com")
    assert "Hostname mismatch" in failure.value.verify_message
    assert not client.is_connected
    await server.all_closed()
    assert inbox.deliveries == []


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
async def test_system_trust_store_does_not_know_the_test_ca(
    start_server: StartServer, inbox: Inbox, server_context: ssl.SSLContext, implicit: bool
) -> None:
    """Without a context or bundle the client uses the system's CAs, and verifies."""
    server = start_server(inbox, tls=server_context, implicit=implicit)
    client = make_client(server, use_tls=implicit, start_tls=None if implicit else True)
    with pytest.raises((ssl.SSLCertVerificationError, aiosmtplib.SMTPConnectError)) as failure:
        await client.connect()
    # STARTTLS raises the ssl module's error, implicit TLS wraps it in SMTPConnectError.
    error = failure.value.__cause__ if implicit else failure.value
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert "unable to get local issuer certificate" in error.verify_message
    assert not client.is_connected
    await server.all_closed()
    assert inbox.deliveries == []


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
async def test_validate_certs_false_is_the_explicit_way_out(
    start_server: StartServer, inbox: Inbox, certificates: Certificates, implicit: bool
) -> None:
    server = start_server(
        inbox, tls=certificates.server_context(certificates.untrusted), implicit=implicit
    )
    client = make_client(
        server, use_tls=implicit, start_tls=None if implicit else True, validate_certs=False
    )
    async with client:
        assert client.get_transport_info("sslcontext") is not None
        await send_one(client)
    await server.all_closed()
    assert [d.over_tls for d in inbox.deliveries] == [True]


# --- mutual TLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
async def test_mutual_tls_with_client_cert_and_key_files(
    start_server: StartServer, inbox: Inbox, certificates: Certificates, implicit: bool
) -> None:
    server = start_server(
        inbox,
        tls=certificates.server_context(require_client_cert=True),
        implicit=implicit,
        require_starttls=not implicit,
    )
    client = make_client(
        server,
        use_tls=implicit,
        start_tls=None if implicit else True,
        client_cert=str(certificates.client_cert_file),
        client_key=str(certificates.client_key_file),
        cert_bundle=str(certificates.ca_bundle),
    )
    async with client:
        await send_one(client)
    await server.all_closed()
    [delivery] = inbox.deliveries
    assert delivery.over_tls
    # The server saw, and checked, who the client is.
    assert ("email", CLIENT_IDENTITY) in alt_names(delivery.peercert)


async def test_mutual_tls_with_a_client_context(
    start_server: StartServer, inbox: Inbox, certificates: Certificates
) -> None:
    server = start_server(
        inbox, tls=certificates.server_context(require_client_cert=True), implicit=True
    )
    context = certificates.client_context()
    certificates.client.configure_cert(context)
    async with make_client(server, use_tls=True, tls_context=context) as client:
        await send_one(client)
    await server.all_closed()
    [delivery] = inbox.deliveries
    assert ("email", CLIENT_IDENTITY) in alt_names(delivery.peercert)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
@pytest.mark.parametrize("presented", ["none", "rogue"])
async def test_mutual_tls_refuses_a_missing_or_unknown_client_certificate(
    start_server: StartServer,
    inbox: Inbox,
    certificates: Certificates,
    implicit: bool,
    presented: str,
) -> None:
    """With TLS 1.3 the client's side of the handshake is done before the server
    judges its certificate: the refusal shows as the server hanging up at the next
    read (the greeting, or the EHLO after STARTTLS).  No command ever runs."""
    server = start_server(
        inbox,
        tls=certificates.server_context(require_client_cert=True),
        implicit=implicit,
    )
    options: dict[str, object] = {"cert_bundle": str(certificates.ca_bundle)}
    if presented == "rogue":
        options["client_cert"] = str(certificates.rogue_client_cert_file)
        options["client_key"] = str(certificates.rogue_client_key_file)
    client = make_client(server, use_tls=implicit, start_tls=None if implicit else True, **options)
    # Before the greeting (implicit TLS) aiosmtplib calls it a failure to connect.
    expected = aiosmtplib.SMTPConnectError if implicit else aiosmtplib.SMTPServerDisconnected
    with pytest.raises(expected):
        await connect_and_send(client)
    assert not client.is_connected
    await server.all_closed()
    assert inbox.deliveries == []
