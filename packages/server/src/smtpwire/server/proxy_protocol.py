"""The PROXY protocol (HAProxy), versions 1 and 2, with aiosmtpd's public names.

A load balancer that passes TCP through (HAProxy, nginx's stream module, AWS NLB)
hides the client's address from the server.  With the PROXY protocol it sends one
header before the first SMTP byte that tells where the connection really comes from:

* version 1, text: ``PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\\r\\n`` (at most
  107 octets), or ``PROXY UNKNOWN ...\\r\\n``;
* version 2, binary: the 12-octet :data:`V2_SIGNATURE`, a version/command octet, a
  family/protocol octet, a 16-bit length, the addresses, then TLVs (ALPN, SSL
  facts, a unique ID...).

A server made with ``proxy_protocol_timeout`` (see :class:`~smtpwire.server.smtp.SMTP`)
withholds its greeting until a valid header has arrived within that many seconds,
stores it as ``session.proxy_data`` and asks the handler's ``handle_PROXY(server,
session, envelope, proxy_data)`` whether to go on; an invalid or late header, or a
handler without that hook or answering falsy, closes the connection without a reply.

The parser is sans-I/O (:class:`HeaderCollector` finds where the header ends,
:func:`parse_header` decodes it); :func:`get_proxy` reads one from an asyncio
stream (or any reader with an async ``read(n)``), as aiosmtpd's function of that
name does.  Problems are reported in ``ProxyData.error`` with aiosmtpd's texts,
never raised.
"""

from __future__ import annotations

import logging
import struct
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Protocol, Union

from ._proxy_tlv import MalformedTLV, ProxyTLV, UnknownTypeTLV, same_values

__all__ = [
    "AF",
    "PROTO",
    "V2_CMD",
    "V2_PARSE_ADDR_FAMPRO",
    "V2_SIGNATURE",
    "V2_VALID_CMDS",
    "V2_VALID_FAMS",
    "V2_VALID_PROS",
    "AsyncReader",
    "EndpointAddress",
    "HeaderCollector",
    "MalformedTLV",
    "ProxyData",
    "ProxyTLV",
    "UnknownTypeTLV",
    "get_proxy",
    "parse_header",
]

log = logging.getLogger("mail.debug")

V1_SIGNATURE = b"PROXY"
V1_MAX_LENGTH = 107  # "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16  # signature, version/command, family/protocol, length
_SIGNATURE_PREFIX = 5  # enough octets to tell v1 from v2 from anything else


class V2_CMD(IntEnum):
    LOCAL = 0  # a health check from the proxy itself: use the real endpoints
    PROXY = 1


class AF(IntEnum):
    UNSPEC = 0
    INET = 1
    INET6 = 2
    UNIX = 3


class PROTO(IntEnum):
    UNSPEC = 0
    STREAM = 1
    DGRAM = 2


V2_VALID_CMDS = frozenset(V2_CMD)
V2_VALID_FAMS = frozenset(AF)
V2_VALID_PROS = frozenset(PROTO)
#: family/protocol octets whose address block is decoded.
V2_PARSE_ADDR_FAMPRO = frozenset(
    family << 4 | protocol
    for family in (AF.INET, AF.INET6, AF.UNIX)
    for protocol in (PROTO.STREAM, PROTO.DGRAM)
)

# family -> (address block length, struct format of the two addresses and ports)
_V2_ADDRESS_BLOCKS: dict[int, tuple[int, str]] = {
    AF.INET: (12, "!4s4sHH"),
    AF.INET6: (36, "!16s16sHH"),
    AF.UNIX: (216, "!108s108s"),
}

EndpointAddress = Union[IPv4Address, IPv6Address, bytes]  # noqa: UP007 - a runtime alias


class AsyncReader(Protocol):
    """What :func:`get_proxy` reads from (an :class:`asyncio.StreamReader` fits)."""

    async def read(self, n: int = -1) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...

    async def readuntil(self, separator: bytes = b"\n") -> bytes: ...


# -- the header ---------------------------------------------------------------------------

_FIELDS = (
    "version",
    "command",
    "family",
    "protocol",
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "rest",
    "whole_raw",
    "tlv_start",
    "error",
)


class ProxyData:
    """One PROXY header, decoded.  True when valid; otherwise :attr:`error` says why.

    ``version`` is 1 or 2; ``command`` a :class:`V2_CMD` (None for v1); ``family`` an
    :class:`AF`, ``protocol`` a :class:`PROTO`; ``src_addr``/``dst_addr`` an
    :class:`~ipaddress.IPv4Address`/:class:`~ipaddress.IPv6Address` (bytes for a Unix
    socket path, None when not given); ``rest`` what follows the addresses (the TLV
    block in v2, the words after ``UNKNOWN`` in v1); ``whole_raw`` the header's octets.
    """

    __slots__ = (*_FIELDS, "_tlv", "__weakref__")

    def __init__(self, *, version: int | None) -> None:
        self.version = version
        self.command: int | None = None
        self.family: int | None = None
        self.protocol: int | None = None
        self.src_addr: EndpointAddress | None = None
        self.dst_addr: EndpointAddress | None = None
        self.src_port: int | None = None
        self.dst_port: int | None = None
        self.rest: bytes = b""
        self.whole_raw: bytes = b""
        self.tlv_start: int | None = None  # offset of the TLV block in whole_raw
        self.error = ""
        # (the rest it was decoded from, the result): decoded once, afresh if a
        # user assigns another rest (aiosmtpd never looked again once decoded).
        self._tlv: tuple[bytes, ProxyTLV | None] | None = None

    @property
    def tlv(self) -> ProxyTLV | None:
        """The TLVs in :attr:`rest` by name, as aiosmtpd decodes them (whatever the
        family, v1 included), on first use; None when there are none or they are
        malformed."""
        cached = self._tlv
        if cached is None or cached[0] is not self.rest:
            cached = self._tlv = (self.rest, _whole_tlvs(self.rest))
        return cached[1]

    @property
    def valid(self) -> bool:
        return not self.error and self.version is not None and self.protocol is not None

    def __bool__(self) -> bool:
        return self.valid

    def with_error(self, error_msg: str, log_prefix: bool = True) -> ProxyData:
        """Mark invalid (and log, as aiosmtpd does); returns self."""
        self.error = error_msg
        log.warning("PROXY error: %s" if log_prefix else "%s", error_msg)
        return self

    def same_attribs(self, _raises: bool = False, **kwargs: Any) -> bool:
        """Whether the named attributes, properties included (``valid=True``,
        ``tlv=None``), have the given values; with ``_raises``, a mismatch raises
        ValueError and an unknown name KeyError, in aiosmtpd's words."""
        return same_values(lambda name, default: getattr(self, name, default), kwargs, _raises)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProxyData):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"ProxyData({fields})"


def _whole_tlvs(rest: bytes) -> ProxyTLV | None:
    try:
        return ProxyTLV.from_raw(rest)
    except MalformedTLV:
        return None


# -- version 1 ----------------------------------------------------------------------------

# The last octet of the transport word names the family; the rest must say TCP
# (aiosmtpd's order of checks, so "UDP4" is an unrecognized protocol, not family).
_V1_FAMILIES: dict[bytes, tuple[AF, type[IPv4Address] | type[IPv6Address]]] = {
    b"4": (AF.INET, IPv4Address),
    b"6": (AF.INET6, IPv6Address),
}
_V1_ADDRESS_OCTETS = frozenset(b"0123456789abcdefABCDEF.:")


def _parse_v1(raw: bytes) -> ProxyData:
    data = ProxyData(version=1)
    data.whole_raw = raw
    if len(raw) > V1_MAX_LENGTH:
        return data.with_error("PROXYv1 header too long")
    if not raw.endswith(b"\r\n") or raw.count(b"\n") != 1 or raw.count(b"\r") != 1:
        return data.with_error("PROXYv1 malformed")
    line = raw[:-2]
    if not line.startswith(b"PROXY "):
        return data.with_error("PROXYv1 wrong signature")
    transport, _, rest = line[6:].partition(b" ")
    if transport == b"UNKNOWN":
        # The proxy could not tell (e.g. not TCP): the rest is to be ignored.
        data.family, data.protocol = AF.UNSPEC, PROTO.UNSPEC
        data.rest = line[6 + len(transport) :]
        return data
    if transport[-1:] not in _V1_FAMILIES:
        return data.with_error("PROXYv1 unrecognized family")
    family, address_type = _V1_FAMILIES[transport[-1:]]
    data.family = family
    if transport[:-1] != b"TCP":
        return data.with_error("PROXYv1 unrecognized protocol")
    data.protocol = PROTO.STREAM
    words = rest.split(b" ")
    if len(words) < 4:
        return data.with_error("PROXYv1 malformed")
    problem = _v1_endpoints(data, words, address_type)
    if problem is None and len(words) > 4:
        problem = "PROXYv1 unrecognized extraneous data"
    return data if problem is None else data.with_error(problem)


def _v1_endpoints(
    data: ProxyData, words: list[bytes], address_type: type[IPv4Address] | type[IPv6Address]
) -> str | None:
    """Store the two addresses and ports into ``data``; what is wrong, if anything."""
    addresses = []
    for word in words[:2]:
        if not word or not _V1_ADDRESS_OCTETS.issuperset(word):
            return "PROXYv1 address malformed"
        try:
            address = ip_address(word.decode("ascii"))
        except ValueError:
            return "PROXYv1 address malformed"
        if not isinstance(address, address_type):
            return f"PROXYv1 address not IPv{4 if address_type is IPv4Address else 6}"
        addresses.append(address)
    data.src_addr, data.dst_addr = addresses
    ports = []
    for word in words[2:4]:
        # Decimal, no sign, no leading zero (the specification's "0" excepted).
        if not word.isdigit() or not word.isascii() or (word[:1] == b"0" and len(word) > 1):
            return "PROXYv1 port malformed"
        ports.append(int(word))
    data.src_port, data.dst_port = ports
    for which, port in (("src", data.src_port), ("dst", data.dst_port)):
        if port > 65535:
            return f"PROXYv1 {which} port out of bounds"
    return None


# -- version 2 ----------------------------------------------------------------------------


def _v2_prefix_problem(head: bytes) -> str | None:
    """What is wrong with the fixed 16 octets, if anything."""
    if head[:12] != V2_SIGNATURE:
        return "PROXYv2 wrong signature"
    if head[12] >> 4 != 2:
        return "PROXYv2 illegal version"
    if head[12] & 0x0F not in V2_VALID_CMDS:
        return "PROXYv2 unsupported command"
    if head[13] >> 4 not in V2_VALID_FAMS:
        return "PROXYv2 unsupported family"
    if head[13] & 0x0F not in V2_VALID_PROS:
        return "PROXYv2 unsupported protocol"
    return None


def _parse_v2(raw: bytes) -> ProxyData:
    data = ProxyData(version=2)
    if len(raw) < V2_FIXED_LENGTH:
        return data.with_error("PROXYv2 truncated address")
    problem = _v2_prefix_problem(raw)
    if problem is not None:
        if problem not in ("PROXYv2 wrong signature", "PROXYv2 illegal version"):
            data.command, data.family, data.protocol = raw[12] & 0x0F, raw[13] >> 4, raw[13] & 0x0F
        return data.with_error(problem)
    data.whole_raw = raw
    data.command, data.family, data.protocol = (
        V2_CMD(raw[12] & 0x0F),
        AF(raw[13] >> 4),
        PROTO(raw[13] & 0x0F),
    )
    (length,) = struct.unpack_from("!H", raw, 14)
    body = raw[V2_FIXED_LENGTH:]
    if len(body) != length:
        return data.with_error("PROXYv2 truncated address")
    size = 0  # UNSPEC: no addresses the server could use; all of it is "rest"
    if raw[13] in V2_PARSE_ADDR_FAMPRO:
        size, layout = _V2_ADDRESS_BLOCKS[data.family]
        if length < size:
            return data.with_error("PROXYv2 truncated address")
        fields = struct.unpack_from(layout, body)
        if data.family is AF.UNIX:
            data.src_addr, data.dst_addr = fields
        else:
            data.src_addr, data.dst_addr = ip_address(fields[0]), ip_address(fields[1])
            data.src_port, data.dst_port = fields[2], fields[3]
    data.rest = body[size:]
    if data.rest and size:
        data.tlv_start = V2_FIXED_LENGTH + size
    return data


def parse_header(raw: bytes) -> ProxyData:
    """Decode a whole header as :class:`HeaderCollector` delimits it."""
    if raw.startswith(V1_SIGNATURE):
        return _parse_v1(raw)
    if raw.startswith(V2_SIGNATURE[:_SIGNATURE_PREFIX]):
        return _parse_v2(raw)
    return ProxyData(version=None).with_error("PROXY unrecognized signature")


# -- finding the end of the header ------------------------------------------------------


def _header_length(head: bytes) -> int | None:
    """How many octets the header that ``head`` starts has, or None if more octets
    are needed to tell.  Never more than needed: what follows is SMTP."""
    if len(head) < _SIGNATURE_PREFIX:
        return None
    if head.startswith(V1_SIGNATURE):
        end = head.find(b"\n", 0, V1_MAX_LENGTH + 1)
        if end >= 0:
            return end + 1
        # Too long for a v1 header: a line's worth is enough for parsing to say so.
        return V1_MAX_LENGTH + 1 if len(head) > V1_MAX_LENGTH else None
    if not head.startswith(V2_SIGNATURE[:_SIGNATURE_PREFIX]):
        return _SIGNATURE_PREFIX
    if len(head) < V2_FIXED_LENGTH:
        return None
    if _v2_prefix_problem(head) is not None:
        return V2_FIXED_LENGTH  # refused before its (untrusted) length is waited for
    length: int = struct.unpack_from("!H", head, 14)[0]
    return V2_FIXED_LENGTH + length


class HeaderCollector:
    """Sans-I/O: fed what a connection receives first, it collects exactly one PROXY
    header (:attr:`header`, once :attr:`done`); what came after it is
    :attr:`remainder`.  At most ``16 + 65535`` octets are buffered for the header."""

    __slots__ = ("_buffer", "done", "header", "remainder")

    violation = None  # the server's message readers ask this

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.done = False
        self.header = b""
        self.remainder = b""

    @property
    def needed(self) -> int:
        """Octets that surely still belong to the header (at least 1 until done)."""
        buffered = len(self._buffer)
        length = _header_length(bytes(self._buffer[: V1_MAX_LENGTH + 1]))
        if length is not None:
            return max(length - buffered, 0)
        if buffered < _SIGNATURE_PREFIX:
            return _SIGNATURE_PREFIX - buffered
        if self._buffer.startswith(V1_SIGNATURE):
            return 1  # a line: the CRLF could come with any octet
        return V2_FIXED_LENGTH - buffered

    @property
    def pending(self) -> bytes:
        """The octets of a header not yet whole (what to report if input ends)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        length = _header_length(bytes(self._buffer[: V1_MAX_LENGTH + 1]))
        if length is not None and len(self._buffer) >= length:
            self.done = True
            self.header = bytes(self._buffer[:length])
            self.remainder = bytes(self._buffer[length:])
            self._buffer.clear()
        return b""


# -- reading from a stream ----------------------------------------------------------------


async def get_proxy(reader: AsyncReader) -> ProxyData:
    """Read one PROXY header from ``reader`` and decode it, as aiosmtpd's function of
    that name does.  Only ``reader.read(n)`` is called, never for more octets than
    the header surely still has, so nothing after the header is consumed; an empty
    read (end of input) ends the wait, whatever kind of reader it is."""
    collector = HeaderCollector()
    try:
        while not collector.done:
            piece = await reader.read(collector.needed)
            if not piece:
                return _cut_short(collector.pending)
            collector.feed(piece)
    except Exception as error:  # reported in the ProxyData, as aiosmtpd does
        return ProxyData(version=None).with_error(f"PROXY exception: {error}", log_prefix=False)
    return parse_header(collector.header)


def _cut_short(pending: bytes) -> ProxyData:
    """The report on a header that the input ended inside of, in aiosmtpd's words:
    a v1 line without its end is malformed; for v2, the part that never came."""
    if pending.startswith(V1_SIGNATURE):
        return _parse_v1(pending)  # no CRLF: "PROXYv1 malformed"
    if len(pending) >= len(V2_SIGNATURE) and not pending.startswith(V2_SIGNATURE):
        return ProxyData(version=2).with_error("PROXYv2 wrong signature")
    if len(pending) < len(V2_SIGNATURE):
        part = "signature"
    elif len(pending) < V2_FIXED_LENGTH:
        part = "header"
    else:
        part = "tail part"
    lost = f"PROXY exception: Connection lost while waiting for {part}"
    return ProxyData(version=None).with_error(lost, log_prefix=False)
