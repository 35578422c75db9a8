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
stream, as aiosmtpd's function of that name does.  Problems are reported in
``ProxyData.error`` with aiosmtpd's texts, never raised.
"""

from __future__ import annotations

import logging
import struct
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Protocol, Union

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


class MalformedTLV(RuntimeError):
    """A TLV's length runs past the end of the header."""


class UnknownTypeTLV(KeyError):
    """In strict mode: a TLV type the PROXY v2 specification does not name."""


class AsyncReader(Protocol):
    """What :func:`get_proxy` reads from (an :class:`asyncio.StreamReader` fits)."""

    async def read(self, n: int = -1) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...

    async def readuntil(self, separator: bytes = b"\n") -> bytes: ...


# -- TLVs ---------------------------------------------------------------------------------

_SSL_TYPE = 0x20
_SSL_FIXED = struct.Struct("!BI")  # client flags, verify result


class ProxyTLV(dict[str, Any]):
    """The TLVs of a v2 header by name (``tlv["ALPN"]`` or ``tlv.ALPN``).  An SSL TLV
    adds ``SSL`` (True), ``SSL_CLIENT`` and ``SSL_VERIFY`` and its sub-TLVs
    (``SSL_VERSION``, ``SSL_CN``...); an unnamed type ``0xEE`` appears as ``"xEE"``.
    :attr:`tlv_loc` gives each TLV's offset within the TLV block."""

    PP2_TYPENAME: dict[int, str] = {  # noqa: RUF012 - aiosmtpd's public table
        0x01: "ALPN",
        0x02: "AUTHORITY",
        0x03: "CRC32C",
        0x04: "NOOP",
        0x05: "UNIQUE_ID",
        0x20: "SSL",
        0x21: "SSL_VERSION",
        0x22: "SSL_CN",
        0x23: "SSL_CIPHER",
        0x24: "SSL_SIG_ALG",
        0x25: "SSL_KEY_ALG",
        0x30: "NETNS",
    }

    def __init__(self, *args: Any, _locs: dict[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tlv_loc: dict[str, int] = dict(_locs or {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def same_attribs(self, **kwargs: Any) -> bool:
        """Whether every named TLV is present with the given value."""
        return all(name in self and self[name] == value for name, value in kwargs.items())

    @classmethod
    def name_to_num(cls, name: str) -> int | None:
        for number, known in cls.PP2_TYPENAME.items():
            if known == name:
                return number
        return None

    @classmethod
    def parse(
        cls, data: bytes | bytearray | memoryview, partial_ok: bool = True, strict: bool = False
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """Decode a TLV block into (values by name, offsets by name).  A TLV cut short
        raises :class:`MalformedTLV`, unless ``partial_ok`` and at least one TLV came
        before it (the rest is then ignored).  With ``strict``, an unnamed type raises
        :class:`UnknownTypeTLV`."""
        values: dict[str, Any] = {}
        locations: dict[str, int] = {}
        cls._parse_into(
            bytes(data),
            base=0,
            values=values,
            locations=locations,
            partial_ok=partial_ok,
            strict=strict,
        )
        return values, locations

    @classmethod
    def _parse_into(
        cls,
        data: bytes,
        *,
        base: int,
        values: dict[str, Any],
        locations: dict[str, int],
        partial_ok: bool,
        strict: bool,
    ) -> None:
        offset = 0
        while offset < len(data):
            if offset + 3 > len(data):
                cls._truncated(data[offset], values, partial_ok)
                return
            kind = data[offset]
            (length,) = struct.unpack_from("!H", data, offset + 1)
            value = data[offset + 3 : offset + 3 + length]
            if len(value) < length:
                cls._truncated(kind, values, partial_ok)
                return
            name = cls.PP2_TYPENAME.get(kind)
            if name is None:
                if strict:
                    raise UnknownTypeTLV(f"x{kind:02X}")
                name = f"x{kind:02X}"
            locations[name] = base + offset
            if kind == _SSL_TYPE:
                if len(value) < _SSL_FIXED.size:
                    raise MalformedTLV(f"TLV 0x{kind:02X} is malformed!")
                values["SSL_CLIENT"], values["SSL_VERIFY"] = _SSL_FIXED.unpack_from(value)
                cls._parse_into(
                    value[_SSL_FIXED.size :],
                    base=base + offset + 3 + _SSL_FIXED.size,
                    values=values,
                    locations=locations,
                    partial_ok=False,
                    strict=strict,
                )
                values[name] = True
            else:
                values[name] = value
            offset += 3 + length

    @staticmethod
    def _truncated(kind: int, values: dict[str, Any], partial_ok: bool) -> None:
        if not (partial_ok and values):
            raise MalformedTLV(f"TLV 0x{kind:02X} is malformed!")

    @classmethod
    def from_raw(
        cls, raw: bytes | bytearray | memoryview | None, strict: bool = False
    ) -> ProxyTLV | None:
        """A :class:`ProxyTLV` from a whole TLV block; None if there is none."""
        if not raw:
            return None
        values, locations = cls.parse(raw, partial_ok=False, strict=strict)
        return cls(values, _locs=locations)


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
        self._tlv: ProxyTLV | None = None

    @property
    def tlv(self) -> ProxyTLV | None:
        """The v2 TLVs by name (None without any, or when they are malformed)."""
        if self._tlv is None and self.tlv_start is not None:
            try:
                values, locations = ProxyTLV.parse(self.whole_raw[self.tlv_start :])
            except MalformedTLV:
                return None
            self._tlv = ProxyTLV(values, _locs=locations)
        return self._tlv

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
        """Whether the named attributes have the given values; with ``_raises``,
        a mismatch raises ValueError and an unknown name KeyError."""
        for name, expected in kwargs.items():
            if name not in _FIELDS:
                if _raises:
                    raise KeyError(f"notfound:{name}")
                return False
            actual = getattr(self, name)
            if actual != expected:
                if _raises:
                    raise ValueError(f"mismatch:{name} actual={actual} expect={expected}")
                return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProxyData):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"ProxyData({fields})"


# -- version 1 ----------------------------------------------------------------------------

_V1_FAMILIES: dict[bytes, tuple[AF, type[IPv4Address] | type[IPv6Address]]] = {
    b"TCP4": (AF.INET, IPv4Address),
    b"TCP6": (AF.INET6, IPv6Address),
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
    family_word, _, rest = line[6:].partition(b" ")
    if family_word == b"UNKNOWN":
        # The proxy could not tell (e.g. not TCP): the rest is to be ignored.
        data.family, data.protocol = AF.UNSPEC, PROTO.UNSPEC
        data.rest = line[6 + len(family_word) :]
        return data
    if family_word not in _V1_FAMILIES:
        return data.with_error("PROXYv1 unrecognized family")
    family, address_type = _V1_FAMILIES[family_word]
    data.family, data.protocol = family, PROTO.STREAM
    words = rest.split(b" ")
    if len(words) < 4:
        return data.with_error("PROXYv1 malformed")
    addresses = []
    for word in words[:2]:
        if not word or not _V1_ADDRESS_OCTETS.issuperset(word):
            return data.with_error("PROXYv1 address malformed")
        try:
            address = ip_address(word.decode("ascii"))
        except ValueError:
            return data.with_error("PROXYv1 address malformed")
        if not isinstance(address, address_type):
            return data.with_error(f"PROXYv1 address not IPv{4 if family is AF.INET else 6}")
        addresses.append(address)
    data.src_addr, data.dst_addr = addresses
    ports = []
    for word in words[2:4]:
        # Decimal, no sign, no leading zero (the specification's "0" excepted).
        if not word.isdigit() or not word.isascii() or (word[:1] == b"0" and len(word) > 1):
            return data.with_error("PROXYv1 port malformed")
        ports.append(int(word))
    data.src_port, data.dst_port = ports
    for which, port in (("src", data.src_port), ("dst", data.dst_port)):
        if port > 65535:
            return data.with_error(f"PROXYv1 {which} port out of bounds")
    if len(words) > 4:
        return data.with_error("PROXYv1 unrecognized extraneous data")
    return data


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
    """Read one PROXY header from ``reader`` (never past its end) and decode it.
    End of input before a whole header is reported as a ``PROXY exception``."""
    collector = HeaderCollector()
    try:
        while not collector.done:
            collector.feed(await reader.readexactly(collector.needed))
    except Exception as error:  # reported in the ProxyData, as aiosmtpd does
        return ProxyData(version=None).with_error(f"PROXY exception: {error}", log_prefix=False)
    return parse_header(collector.header)
