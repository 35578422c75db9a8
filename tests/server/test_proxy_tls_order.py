"""Implicit TLS behind a proxy: the PROXY header may come in clear before the TLS
handshake (HAProxy passing TLS through: ``mode tcp`` with ``send-proxy-v2``) or
inside TLS (aiosmtpd's order); the server tells them apart by the first octet."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpwire.server.controller import Controller
from smtpwire.server.proxy_protocol import ProxyData

WAIT = 10.0
V1_HEADER = b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 25\r\n"
# v2: signature, PROXY command, TCP over IPv4, 12 octets: 192.0.2.7:40007 -> 192.0.2.2:25
V2_HEADER = (
    b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 7, 192, 0, 2, 2])
    + (40007).to_bytes(2, "big") + (25).to_bytes(2, "big")
)  # fmt: skip


class SeesProxy:
    def __init__(self) -> None:
        self.proxied: list[ProxyData] = []

    async def handle_PROXY(self, server: Any, session: Any, envelope: Any, data: ProxyData) -> bool:
        self.proxied.append(data)
        return True


@contextmanager
def tls_behind_proxy(server_context: ssl.SSLContext) -> Iterator[tuple[Controller, SeesProxy]]:
    handler = SeesProxy()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=0,
        ssl_context=server_context,
        proxy_protocol_timeout=WAIT,
    )
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


def greeting_and_quit(tls: ssl.SSLSocket) -> bytes:
    reader = tls.makefile("rb")
    greeting = reader.readline()
    tls.sendall(b"QUIT\r\n")
    assert reader.readline().startswith(b"221")
    return greeting


@pytest.mark.parametrize(
    ("header", "source"), [(V1_HEADER, "192.0.2.1"), (V2_HEADER, "192.0.2.7")], ids=["v1", "v2"]
)
def test_a_proxy_header_in_clear_before_the_handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, header: bytes, source: str
) -> None:
    with tls_behind_proxy(server_context) as (controller, handler):
        raw = socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT)
        raw.sendall(header)  # as HAProxy sends it, then the client's TLS bytes
        with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert greeting_and_quit(tls).startswith(b"220 ")
    [data] = handler.proxied
    assert (data.valid, str(data.src_addr)) == (True, source)


def test_a_proxy_header_inside_tls_still_works(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with tls_behind_proxy(server_context) as (controller, handler):
        raw = socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT)
        with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(V1_HEADER)
            assert greeting_and_quit(tls).startswith(b"220 ")
    [data] = handler.proxied
    assert (data.valid, str(data.src_addr)) == (True, "192.0.2.1")


def test_a_header_in_clear_with_the_handshake_in_the_same_write(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """The header and the ClientHello arrive together: what follows the header is
    the handshake's, not lost and not read as a command."""
    with tls_behind_proxy(server_context) as (controller, handler):
        raw = socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls_object = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls_object.do_handshake()
        raw.sendall(V1_HEADER + outgoing.read())  # header and ClientHello, one write
        raw.settimeout(WAIT)
        while True:  # bounded by the socket timeout and the handshake's few round trips
            try:
                tls_object.do_handshake()
                break
            except ssl.SSLWantReadError:
                if pending := outgoing.read():
                    raw.sendall(pending)
                data = raw.recv(65536)
                assert data, "the server closed during the handshake"
                incoming.write(data)
        if pending := outgoing.read():
            raw.sendall(pending)
        raw.close()
    [data] = handler.proxied
    assert str(data.src_addr) == "192.0.2.1"


def test_the_command_line_takes_a_header_in_clear_before_the_handshake(
    certificate_authority: Any, client_context: ssl.SSLContext, tmp_path: Any
) -> None:
    """``--smtpscert`` with ``--proxy-protocol``: HAProxy passing TLS through."""
    from support.cli import server_process

    certificate = certificate_authority.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    arguments = ("--smtpscert", str(cert_file), "--smtpskey", str(key_file))
    with server_process(*arguments, "--proxy-protocol", "5") as server:
        [(host, port)] = server.addresses()
        raw = socket.create_connection((host, port), timeout=WAIT)
        raw.sendall(V1_HEADER)
        with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
            reader = tls.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            tls.sendall(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n")
            tls.sendall(b"RCPT TO:<b@example.org>\r\nDATA\r\n")
            replies = []
            for _ in range(40):  # bounded: EHLO's lines, then MAIL, RCPT and DATA
                replies.append(reader.readline())
                if replies[-1][:3] in (b"354", b"") or replies[-1][:1] in (b"4", b"5"):
                    break
            assert replies[-1].startswith(b"354"), replies
            tls.sendall(b"Subject: through\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            assert reader.readline().startswith(b"250")
        lines = server.message()
    assert any("192.0.2.1" in line for line in lines if line.startswith("X-Peer"))
