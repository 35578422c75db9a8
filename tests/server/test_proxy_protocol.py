"""PROXY protocol v1 and v2: the parser (aiosmtpd's names and error texts) and a
server behind a load balancer, over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from smtpwire.server import proxy_protocol
from smtpwire.server.controller import Controller
from smtpwire.server.proxy_protocol import (
    AF,
    PROTO,
    V2_CMD,
    V2_SIGNATURE,
    HeaderCollector,
    MalformedTLV,
    ProxyData,
    ProxyTLV,
    UnknownTypeTLV,
    get_proxy,
    parse_header,
)
from smtpwire.server.smtp import SMTP
from support.server import RawClient, Recorder, read_until_eof

V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\n"


def v2_header(
    command: int = 1,
    family_protocol: int = 0x11,
    addresses: bytes = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 40000, 25),
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    body = addresses + tlvs
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, family_protocol])
        + struct.pack("!H", len(body))
        + body
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


async def read_proxy(data: bytes) -> ProxyData:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await get_proxy(reader)


# --- version 1 ---------------------------------------------------------------------------


async def test_v1_tcp4_header_is_decoded_and_nothing_after_it_is_read() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(V1_TCP4 + b"EHLO client\r\n")
    reader.feed_eof()
    data = await get_proxy(reader)
    assert data.valid
    assert bool(data)
    assert (data.version, data.command, data.family, data.protocol) == (
        1,
        None,
        AF.INET,
        PROTO.STREAM,
    )
    assert (data.src_addr, data.dst_addr) == (
        IPv4Address("192.0.2.1"),
        IPv4Address("198.51.100.2"),
    )
    assert (data.src_port, data.dst_port) == (40000, 25)
    assert data.whole_raw == V1_TCP4
    assert await reader.read() == b"EHLO client\r\n"


def test_v1_tcp6_and_unknown() -> None:
    six = parse_header(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
    assert six.valid
    assert (six.family, six.src_addr, six.dst_addr, six.dst_port) == (
        AF.INET6,
        IPv6Address("2001:db8::1"),
        IPv6Address("::1"),
        65535,
    )
    unknown = parse_header(b"PROXY UNKNOWN ffff::1 whatever\r\n")
    assert unknown.valid
    assert (unknown.family, unknown.protocol, unknown.src_addr) == (AF.UNSPEC, PROTO.UNSPEC, None)
    assert unknown.rest == b" ffff::1 whatever"
    assert parse_header(b"PROXY UNKNOWN\r\n").valid


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (b"PROXY TCP4 " + b"1" * 120 + b"\r\n", "PROXYv1 header too long"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\n", "PROXYv1 malformed"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 40000\r\n", "PROXYv1 malformed"),
        (b"PROXY TCP4 192.0.2.1\r198.51.100.2 40000 25\r\n", "PROXYv1 malformed"),
        (b"PROXYTCP4 192.0.2.1 198.51.100.2 40000 25\r\n", "PROXYv1 wrong signature"),
        (b"PROXY TCP5 192.0.2.1 198.51.100.2 40000 25\r\n", "PROXYv1 unrecognized family"),
        (b"PROXY  TCP4 192.0.2.1 198.51.100.2 40000 25\r\n", "PROXYv1 unrecognized family"),
        (b"PROXY TCP4 192.0.2.999 198.51.100.2 40000 25\r\n", "PROXYv1 address malformed"),
        (b"PROXY TCP4 192.0.2.1 x 40000 25\r\n", "PROXYv1 address malformed"),
        (b"PROXY TCP4 ::1 198.51.100.2 40000 25\r\n", "PROXYv1 address not IPv4"),
        (b"PROXY TCP6 192.0.2.1 ::1 40000 25\r\n", "PROXYv1 address not IPv6"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 040000 25\r\n", "PROXYv1 port malformed"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n", "PROXYv1 port malformed"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n", "PROXYv1 src port out of bounds"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 70000\r\n", "PROXYv1 dst port out of bounds"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 25 x\r\n", "PROXYv1 unrecognized extraneous data"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 25 \r\n", "PROXYv1 unrecognized extraneous data"),
        (b"HELO x\r\n", "PROXY unrecognized signature"),
    ],
)
async def test_v1_errors_have_aiosmtpds_texts(header: bytes, error: str) -> None:
    data = await read_proxy(header)
    assert data.error == error
    assert not data.valid
    assert not data


async def test_extraneous_data_still_reports_the_endpoints() -> None:
    data = await read_proxy(b"PROXY TCP4 192.0.2.1 198.51.100.2 1 25 x\r\n")
    assert (data.src_port, data.dst_port) == (1, 25)


async def test_v1_line_longer_than_the_limit_is_refused_without_reading_on() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"PROXY TCP4 " + b"9" * 10_000)  # no end of line: must not wait for one
    data = await asyncio.wait_for(get_proxy(reader), 5)
    assert data.error == "PROXYv1 header too long"
    assert len(data.whole_raw) == 108


# --- version 2 ---------------------------------------------------------------------------


async def test_v2_inet_with_tlvs() -> None:
    ssl_tlv = tlv(0x20, b"\x07" + struct.pack("!I", 0) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"cn"))
    header = v2_header(tlvs=tlv(0x01, b"smtp") + ssl_tlv + tlv(0xEE, b"z") + tlv(0x05, b"id-1"))
    data = await read_proxy(header + b"EHLO x\r\n")
    assert data.valid
    assert (data.version, data.command, data.family, data.protocol) == (
        2,
        V2_CMD.PROXY,
        AF.INET,
        PROTO.STREAM,
    )
    assert (data.src_addr, data.src_port, data.dst_addr, data.dst_port) == (
        IPv4Address("192.0.2.1"),
        40000,
        IPv4Address("198.51.100.2"),
        25,
    )
    assert data.whole_raw == header
    assert data.tlv_start == 28
    assert data.tlv is not None
    assert data.tlv.ALPN == b"smtp"
    assert data.tlv["UNIQUE_ID"] == b"id-1"
    assert data.tlv.xEE == b"z"
    assert (data.tlv.SSL, data.tlv.SSL_CLIENT, data.tlv.SSL_VERIFY) == (True, 7, 0)
    assert (data.tlv.SSL_VERSION, data.tlv.SSL_CN) == (b"TLSv1.3", b"cn")
    assert data.tlv.same_attribs(ALPN=b"smtp", SSL_CN=b"cn")
    assert not data.tlv.same_attribs(ALPN=b"h2")
    assert data.tlv.tlv_loc["ALPN"] == 0
    assert data.tlv.AUTHORITY is None  # absent, as in aiosmtpd


def test_v2_inet6_unix_local_and_unspec() -> None:
    six = parse_header(
        v2_header(
            family_protocol=0x21,
            addresses=bytes(15) + b"\x01" + bytes(15) + b"\x02" + b"\x00\x01\x00\x02",
        )
    )
    assert (six.family, six.src_addr, six.dst_addr, six.src_port) == (
        AF.INET6,
        IPv6Address("::1"),
        IPv6Address("::2"),
        1,
    )
    unix = parse_header(
        v2_header(family_protocol=0x31, addresses=b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0"))
    )
    assert unix.family is AF.UNIX
    assert isinstance(unix.src_addr, bytes)
    assert unix.src_addr.rstrip(b"\0") == b"/a"
    local = parse_header(v2_header(command=0, family_protocol=0x00, addresses=b""))
    assert local.valid
    assert (local.command, local.family, local.src_addr) == (V2_CMD.LOCAL, AF.UNSPEC, None)
    unspec = parse_header(v2_header(family_protocol=0x00, addresses=b"abc"))
    assert (unspec.rest, unspec.tlv_start, unspec.tlv) == (b"abc", None, None)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (V2_SIGNATURE[:5] + b"xxxxxxx" + bytes(4), "PROXYv2 wrong signature"),
        (v2_header(version=1), "PROXYv2 illegal version"),
        (v2_header(command=2), "PROXYv2 unsupported command"),
        (v2_header(family_protocol=0x41), "PROXYv2 unsupported family"),
        (v2_header(family_protocol=0x13), "PROXYv2 unsupported protocol"),
        (v2_header(addresses=bytes(8)), "PROXYv2 truncated address"),
        (v2_header(family_protocol=0x21, addresses=bytes(12)), "PROXYv2 truncated address"),
    ],
)
async def test_v2_errors_have_aiosmtpds_texts(header: bytes, error: str) -> None:
    data = await read_proxy(header)
    assert data.error == error
    assert not data


@pytest.mark.parametrize(
    "data",
    [b"", b"PROX", V2_SIGNATURE[:9], v2_header()[:-3]],
)
async def test_end_of_input_inside_a_header_is_a_proxy_exception(data: bytes) -> None:
    # A v1 line cut short is "PROXYv1 malformed" instead: see test_proxy_compat.py.
    result = await read_proxy(data)
    assert result.error.startswith("PROXY exception: ")
    assert result.version is None


def test_malformed_tlvs_make_tlv_none_but_keep_the_header_valid() -> None:
    data = parse_header(v2_header(tlvs=tlv(0x01, b"h2")[:-1]))  # claims 2 octets, has 1
    assert data.valid
    assert data.tlv is None
    assert data.rest == tlv(0x01, b"h2")[:-1]


def test_tlv_parse_modes() -> None:
    block = tlv(0x01, b"h2") + tlv(0x05, b"abc")[:-1]
    values, locations = ProxyTLV.parse(block)  # partial_ok: the cut-off TLV is dropped
    assert values == {"ALPN": b"h2"}
    assert locations == {"ALPN": 0}
    with pytest.raises(MalformedTLV):
        ProxyTLV.parse(block, partial_ok=False)
    with pytest.raises(UnknownTypeTLV):
        ProxyTLV.parse(tlv(0xEE, b""), strict=True)
    assert ProxyTLV.from_raw(b"") is None
    assert ProxyTLV.name_to_num("SSL_CN") == 0x22
    assert ProxyTLV.name_to_num("nothing") is None


def test_proxy_data_helpers() -> None:
    data = parse_header(V1_TCP4)
    assert data.same_attribs(version=1, src_port=40000)
    assert not data.same_attribs(src_port=1)
    assert not data.same_attribs(nonexistent=1)
    with pytest.raises(ValueError, match="mismatch:src_port"):
        data.same_attribs(_raises=True, src_port=1)
    with pytest.raises(KeyError, match="notfound:nonexistent"):
        data.same_attribs(_raises=True, nonexistent=1)
    assert data == parse_header(V1_TCP4)
    assert data != parse_header(V1_TCP4.replace(b"40000", b"40001"))
    assert "src_port=40000" in repr(data)
    assert data.with_error("made up") is data
    assert not data
    assert not ProxyData(version=1)  # nothing decoded yet


def test_public_names_match_aiosmtpd() -> None:
    for name in ("ProxyData", "ProxyTLV", "get_proxy", "V2_SIGNATURE", "AF", "PROTO", "V2_CMD"):
        assert name in proxy_protocol.__all__
    assert V2_SIGNATURE == b"\r\n\r\n\x00\r\nQUIT\n"
    assert [member.value for member in AF] == [0, 1, 2, 3]
    assert ProxyTLV.PP2_TYPENAME[0x20] == "SSL"


@pytest.mark.parametrize(
    "stream",
    [V1_TCP4 + b"EHLO x\r\n", v2_header(tlvs=tlv(0x01, b"h2")) + b"EHLO x\r\n"],
)
def test_collector_stops_exactly_at_the_end_of_the_header_whatever_the_segments(
    stream: bytes,
) -> None:
    header_length = len(stream) - len(b"EHLO x\r\n")
    for size in (1, 2, 3, 7, 16, len(stream)):
        collector = HeaderCollector()
        fed = 0
        while not collector.done:
            collector.feed(stream[fed : fed + size])
            fed += size
        assert collector.header == stream[:header_length]
        assert collector.remainder + stream[fed:] == b"EHLO x\r\n"


# --- a server behind a proxy, over sockets -----------------------------------------------


class ProxyRecorder(Recorder):
    def __init__(self, verdict: Any = True) -> None:
        super().__init__()
        self.verdict = verdict
        self.proxied: list[tuple[ProxyData, Any]] = []
        self.delivered_proxy_data: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered_proxy_data.append(session.proxy_data)
        return await super().handle_DATA(server, session, envelope)

    async def handle_PROXY(self, server: Any, session: Any, envelope: Any, data: Any) -> Any:
        self.proxied.append((data, session.proxy_data))
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict


@contextmanager
def behind_proxy(handler: Any, **kwargs: Any) -> Iterator[Controller]:
    kwargs.setdefault("proxy_protocol_timeout", 5.0)
    server = Controller(handler, hostname="127.0.0.1", port=0, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@pytest.mark.parametrize(
    "header",
    [V1_TCP4, v2_header(tlvs=tlv(0x01, b"smtp"))],
    ids=["v1", "v2"],
)
def test_greeting_only_after_the_header_then_a_normal_session(header: bytes) -> None:
    handler = ProxyRecorder()
    with behind_proxy(handler) as server, RawClient(server.port) as client:
        client.send(header[:7])  # split: the rest arrives in a second segment
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.sock.recv(1)  # no greeting yet
        client.sock.settimeout(10)
        client.send(header[7:])
        assert client.reply().code == 220
        assert client.command("HELO client").code == 250
        assert client.command("MAIL FROM:<a@example.com>").code == 250
        assert client.command("RCPT TO:<b@example.com>").code == 250
        assert client.command("DATA").code == 354
        assert client.command(b"Subject: x\r\n\r\nbody\r\n.").code == 250
    ((data, stored),) = handler.proxied
    assert data is stored
    assert data.src_addr == IPv4Address("192.0.2.1")
    assert data.src_port == 40000
    assert data.whole_raw == header
    assert len(handler.messages) == 1
    assert handler.delivered_proxy_data == [data]


def test_modern_server_counts_only_bytes_after_the_header_as_early_talk() -> None:
    handler = ProxyRecorder()
    with behind_proxy(handler, modern=True) as server, RawClient(server.port) as client:
        client.send(V1_TCP4)
        assert client.reply().code == 220
        assert client.command("EHLO client").code == 250
    with behind_proxy(handler, modern=True) as server, connect(server.port) as sock:
        sock.sendall(V1_TCP4 + b"EHLO client\r\n")  # the client did not wait
        assert read_until_eof(sock).startswith(b"554 ")


@pytest.mark.parametrize(
    "sent",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 040000 25\r\n",
        v2_header(version=1),
        v2_header(addresses=bytes(8)),
        b"EHLO client\r\n",
        b"PROXY TCP4 " + b"1" * 300,
    ],
    ids=["v1-leading-zero", "v2-illegal-version", "v2-truncated", "plain-smtp", "v1-too-long"],
)
def test_invalid_header_closes_without_a_reply(sent: bytes) -> None:
    handler = ProxyRecorder()
    with behind_proxy(handler) as server, connect(server.port) as sock:
        sock.sendall(sent)
        assert read_until_eof(sock) == b""
    assert handler.proxied == []


@pytest.mark.parametrize("verdict", [False, None, "", RuntimeError("no")])
def test_handler_refusing_or_failing_closes_without_a_reply(verdict: Any) -> None:
    handler = ProxyRecorder(verdict)
    with behind_proxy(handler) as server, connect(server.port) as sock:
        sock.sendall(V1_TCP4)
        assert read_until_eof(sock) == b""
    assert len(handler.proxied) == 1


def test_handler_without_handle_proxy_closes_as_aiosmtpd_does() -> None:
    with behind_proxy(Recorder()) as server, connect(server.port) as sock:
        sock.sendall(V1_TCP4)
        assert read_until_eof(sock) == b""


def test_no_header_within_the_timeout_closes_silently() -> None:
    handler = ProxyRecorder()
    with behind_proxy(handler, proxy_protocol_timeout=0.3) as server, connect(server.port) as sock:
        sock.sendall(b"PROXY TCP4 192.0.2.1")  # and then nothing
        assert read_until_eof(sock) == b""
    assert handler.proxied == []


async def test_proxy_protocol_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="proxy_protocol_timeout must be > 0"):
        SMTP(Recorder(), proxy_protocol_timeout=0)
