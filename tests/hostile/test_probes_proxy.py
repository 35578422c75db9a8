"""Attack probes on the PROXY protocol (HAProxy v1 and v2), over real sockets.

With ``proxy_protocol_timeout`` the server reads exactly one header, however it is
split into segments, then greets; what follows it is SMTP.  A second header is an
ordinary (unknown) command, never parsed again; a missing or endless header closes
the connection without a greeting.  Without ``proxy_protocol_timeout`` a PROXY
line is just an unknown command, and changes nothing about the session.

``session.peer`` is the real TCP peer in the library (aiosmtpd's behaviour: the
proxy's source address is in ``session.proxy_data``); the command line's server
swaps it for the original client, which is not probed here.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from smtpwire.server.proxy_protocol import V2_SIGNATURE, ProxyData
from smtpwire.server.smtp import SMTP
from support.server import (
    RawClient,
    ServerThread,
    read_until_eof,
    replies_until_close,
    serving,
    text,
)

HOST = "mx.test"
GREETING = f"220 {HOST} Python SMTP 1.4.6"
V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 25\r\n"
INET_ADDRESSES = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 40000, 25)
INET6_ADDRESSES = (
    IPv6Address("2001:db8::1").packed + IPv6Address("2001:db8::2").packed + struct.pack("!HH", 1, 2)
)
V2_MAX_BODY = 0xFFFF
CUSTOM_TLV = 0xE0  # PP2_TYPE_MIN_CUSTOM


def v2_header(body: bytes, *, family: int = 0x11, length: int | None = None) -> bytes:
    announced = len(body) if length is None else length
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", announced) + body


def tlv(kind: int, value: bytes, *, length: int | None = None) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value) if length is None else length) + value


V2_INET_TLV = v2_header(INET_ADDRESSES + tlv(0x01, b"smtp") + tlv(0x05, b"id-1"))
V2_INET6 = v2_header(INET6_ADDRESSES, family=0x21)
SHAPES = {"v1-tcp4": V1_TCP4, "v1-tcp6": V1_TCP6, "v2-tlv": V2_INET_TLV, "v2-inet6": V2_INET6}
SOURCES = {
    "v1-tcp4": IPv4Address("192.0.2.1"),
    "v1-tcp6": IPv6Address("2001:db8::1"),
    "v2-tlv": IPv4Address("192.0.2.1"),
    "v2-inet6": IPv6Address("2001:db8::1"),
}


class ProxyKeeper:
    """Accepts every PROXY header and keeps it, and the session's peer at that time."""

    def __init__(self) -> None:
        self.headers: list[ProxyData] = []
        self.peers: list[Any] = []
        self.messages: list[bytes] = []

    async def handle_PROXY(self, server: Any, session: Any, envelope: Any, data: Any) -> bool:
        self.headers.append(data)
        self.peers.append(session.peer)
        return True

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content)
        return "250 OK"


def proxied(handler: Any, **kwargs: Any) -> Callable[[], SMTP]:
    kwargs.setdefault("hostname", HOST)
    kwargs.setdefault("proxy_protocol_timeout", 5.0)
    return lambda: SMTP(handler, **kwargs)


def nodelay(client: RawClient) -> RawClient:
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def session_facts(server: ServerThread, index: int) -> tuple[Any, Any]:
    return server.call(
        lambda: (server.protocols[index].session.peer, server.protocols[index].session.proxy_data)
    )


def no_greeting_yet(client: RawClient) -> None:
    """Nothing to read within a short while (a bounded check of absence)."""
    client.sock.settimeout(0.2)
    try:
        with pytest.raises(TimeoutError):
            client.sock.recv(1)
    finally:
        client.sock.settimeout(10)


# -- headers split at every octet ------------------------------------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
def test_header_split_at_every_octet_is_read_whole_and_nothing_after_it_lost(
    shape: str,
) -> None:
    header = SHAPES[shape]
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server:
        for cut in range(1, len(header)):
            with nodelay(RawClient(server.port)) as client:
                client.send(header[:cut])
                if cut == len(header) - 1:
                    no_greeting_yet(client)  # one octet short: still waiting
                client.send(header[cut:] + b"NOOP\r\n")  # the first command rides along
                assert text(client.reply()) == GREETING
                assert text(client.reply()) == "250 OK"
                assert text(client.command("QUIT")) == "221 Bye"
    assert len(handler.headers) == len(header) - 1
    assert {data.whole_raw for data in handler.headers} == {header}
    assert {data.src_addr for data in handler.headers} == {SOURCES[shape]}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_header_sent_one_octet_per_segment(shape: str) -> None:
    header = SHAPES[shape]
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server, nodelay(RawClient(server.port)) as client:
        for octet in range(len(header)):
            client.send(header[octet : octet + 1])
        assert text(client.reply()) == GREETING
        assert text(client.command("HELO client.example")) == f"250 {HOST}"
        peer, data = session_facts(server, 0)
        own = client.sock.getsockname()
    assert data.src_addr == SOURCES[shape]
    assert peer == own  # the real peer: the library keeps it
    assert handler.peers == [peer]


# -- oversize TLVs and lying lengths ---------------------------------------------------------


def test_tlv_block_at_the_v2_length_limit_is_accepted_whole() -> None:
    value = bytes(range(256)) * 255 + bytes(range(240))  # 65520 octets: the block is 65535
    header = v2_header(INET_ADDRESSES + tlv(CUSTOM_TLV, value))
    assert len(header) == 16 + V2_MAX_BODY
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server, RawClient(server.port) as client:
        client.send(header + b"NOOP\r\n")
        assert text(client.reply()) == GREETING
        assert text(client.reply()) == "250 OK"
    (data,) = handler.headers
    assert data.valid
    assert data.tlv is not None
    assert data.tlv["xE0"] == value


def test_tlv_length_running_past_the_block_keeps_the_header_valid_without_tlvs() -> None:
    header = v2_header(INET_ADDRESSES + tlv(0x01, b"h2", length=0xFFFF))
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server, RawClient(server.port) as client:
        client.send(header)
        assert text(client.reply()) == GREETING
        assert text(client.command("NOOP")) == "250 OK"
    (data,) = handler.headers
    assert (data.valid, data.tlv, data.src_addr) == (True, None, IPv4Address("192.0.2.1"))


@pytest.mark.parametrize("announced", [len(INET_ADDRESSES) + 100, V2_MAX_BODY])
def test_header_length_longer_than_sent_swallows_commands_then_times_out(announced: int) -> None:
    handler = ProxyKeeper()
    with (
        serving(proxied(handler, proxy_protocol_timeout=0.5)) as server,
        RawClient(server.port) as client,
    ):
        client.send(v2_header(INET_ADDRESSES, length=announced))
        client.send(b"EHLO client.example\r\nNOOP\r\n")  # part of the "header"
        assert read_until_eof(client.sock) == b""  # no greeting, no reply
        assert any(server.tasks_pending() == 0 for _ in range(100))
    assert handler.headers == []


def test_header_length_shorter_than_sent_leaves_the_rest_to_be_read_as_a_command() -> None:
    # The TLV the length does not cover arrives after the header: it is a command line.
    header = v2_header(INET_ADDRESSES + tlv(CUSTOM_TLV, b"hello"), length=len(INET_ADDRESSES))
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server, RawClient(server.port) as client:
        client.send(header + b"\r\n")
        assert text(client.reply()) == GREETING
        assert text(client.reply()) == "500 Error: bad syntax"
        assert text(client.command("NOOP")) == "250 OK"
    (data,) = handler.headers
    assert (data.valid, data.rest, data.tlv) == (True, b"", None)


def test_header_length_shorter_than_sent_is_early_talk_for_a_modern_server() -> None:
    header = v2_header(INET_ADDRESSES + tlv(CUSTOM_TLV, b"hello"), length=len(INET_ADDRESSES))
    handler = ProxyKeeper()
    with (
        serving(proxied(handler, modern=True)) as server,
        RawClient(server.port) as client,
    ):
        client.send(header)
        assert replies_until_close(client) == ["554 5.5.1 Error: data sent before the greeting"]
    assert len(handler.headers) == 1


# -- a second header --------------------------------------------------------------------------


def test_second_v1_header_is_an_unknown_command_never_parsed() -> None:
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server, RawClient(server.port) as client:
        client.send(V1_TCP4)
        assert text(client.reply()) == GREETING
        spoof = b"PROXY TCP4 203.0.113.66 198.51.100.2 1234 25"
        assert text(client.command(spoof)) == '500 Error: command "PROXY" not recognized'
        assert text(client.command("NOOP")) == "250 OK"
        peer, data = session_facts(server, 0)
        own = client.sock.getsockname()
    assert data.src_addr == IPv4Address("192.0.2.1")
    assert peer == own
    assert len(handler.headers) == 1


def test_second_v2_header_is_read_as_lines_and_its_quit_ends_the_session() -> None:
    # The v2 signature is "\r\n\r\n\0\r\nQUIT\n" precisely so that a server reading
    # it as SMTP quits: two empty lines, a NUL line, then QUIT.
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server, RawClient(server.port) as client:
        client.send(V2_INET_TLV)
        assert text(client.reply()) == GREETING
        client.send(V2_INET_TLV)
        assert replies_until_close(client) == ["500 Error: bad syntax"] * 3 + ["221 Bye"]
    assert len(handler.headers) == 1


def test_header_sent_again_after_the_greeting_in_a_modern_session() -> None:
    handler = ProxyKeeper()
    with (
        serving(proxied(handler, modern=True)) as server,
        RawClient(server.port) as client,
    ):
        client.send(V1_TCP4)
        assert text(client.reply()) == GREETING
        assert text(client.command(V1_TCP6.rstrip())) == (
            '500 5.5.2 Error: command "PROXY" not recognized'
        )
        assert text(client.command("NOOP")) == "250 2.0.0 OK"
        _, data = session_facts(server, 0)
    assert data.src_addr == IPv4Address("192.0.2.1")


# -- no header at all -------------------------------------------------------------------------


def test_client_that_never_sends_a_header_is_closed_without_a_greeting() -> None:
    handler = ProxyKeeper()
    with (
        serving(proxied(handler, proxy_protocol_timeout=0.5)) as server,
        RawClient(server.port) as client,
    ):
        assert read_until_eof(client.sock) == b""
        assert any(server.tasks_pending() == 0 for _ in range(100))
    assert handler.headers == []


def test_smtp_instead_of_a_header_is_closed_without_a_reply() -> None:
    handler = ProxyKeeper()
    with serving(proxied(handler)) as server, RawClient(server.port) as client:
        client.send(b"EHLO client.example\r\nMAIL FROM:<a@x>\r\n")
        assert read_until_eof(client.sock) == b""
    assert handler.headers == []


# -- spoofing when PROXY is not enabled -------------------------------------------------------


@pytest.mark.parametrize("modern", [False, True], ids=["classic", "modern"])
def test_proxy_line_without_proxy_protocol_is_unknown_and_changes_nothing(modern: bool) -> None:
    handler = ProxyKeeper()
    factory = lambda: SMTP(handler, hostname=HOST, modern=modern)  # noqa: E731
    code = "5.5.2 " if modern else ""
    with serving(factory) as server, RawClient(server.port) as client:
        assert text(client.reply()) == GREETING
        assert text(client.command(V1_TCP4.rstrip())) == (
            f'500 {code}Error: command "PROXY" not recognized'
        )
        assert text(client.command("HELO client.example")) == f"250 {HOST}"
        peer, data = session_facts(server, 0)
        own = client.sock.getsockname()
    assert peer == own
    assert data is None
    assert handler.headers == []


def test_v2_signature_without_proxy_protocol_quits() -> None:
    handler = ProxyKeeper()
    with (
        serving(lambda: SMTP(handler, hostname=HOST)) as server,
        RawClient(server.port) as client,
    ):
        assert text(client.reply()) == GREETING
        client.send(V2_INET_TLV)
        assert replies_until_close(client) == ["500 Error: bad syntax"] * 3 + ["221 Bye"]
        peer, data = session_facts(server, 0)
        own = client.sock.getsockname()
    assert (peer, data) == (own, None)
