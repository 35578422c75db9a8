"""The TLVs (type, length, value records) that may end a PROXY v2 header.

Public through :mod:`smtpwire.server.proxy_protocol`, under aiosmtpd's names;
kept apart because decoding them is a job of its own (nested SSL records,
partial and strict modes) that the header parser only hands bytes to.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["MalformedTLV", "ProxyTLV", "UnknownTypeTLV", "same_values"]

_TLV_HEAD = struct.Struct("!BH")  # type, length of the value
_SSL_TYPE = 0x20
_SSL_FIXED = struct.Struct("!BI")  # client flags, verify result; sub-TLVs follow
_NOT_FOUND: Any = object()


class MalformedTLV(RuntimeError):
    """A TLV's length runs past the end of its block."""


class UnknownTypeTLV(KeyError):
    """In strict mode: a TLV type the PROXY v2 specification does not name."""


def same_values(
    lookup: Callable[[str, Any], Any], expected: Mapping[str, Any], raises: bool
) -> bool:
    """aiosmtpd's ``same_attribs`` rule, shared by :class:`ProxyTLV` and ``ProxyData``
    so that users' assertions read the same on both: every name is present with an
    equal value.  With ``raises`` the first failure says which, in aiosmtpd's words
    (users' tests match them): ``KeyError("notfound:<name>")`` or
    ``ValueError("mismatch:<name> actual=<repr> expect=<repr>")``."""
    for name, value in expected.items():
        actual = lookup(name, _NOT_FOUND)
        if actual is _NOT_FOUND:
            if raises:
                raise KeyError(f"notfound:{name}")
            return False
        if actual != value:
            if raises:
                raise ValueError(f"mismatch:{name} actual={actual!r} expect={value!r}")
            return False
    return True


def _records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(offset, type, value) of each TLV of a block, in order; MalformedTLV where one
    is cut short (a generator, so that the records before it are already decoded)."""
    offset = 0
    while offset < len(data):
        if offset + _TLV_HEAD.size > len(data):
            raise MalformedTLV(f"TLV 0x{data[offset]:02X} is malformed!")
        kind, length = _TLV_HEAD.unpack_from(data, offset)
        start = offset + _TLV_HEAD.size
        if start + length > len(data):
            raise MalformedTLV(f"TLV 0x{kind:02X} is malformed!")
        yield offset, kind, data[start : start + length]
        offset = start + length


class _Decoding:
    """The state of one :meth:`ProxyTLV.parse`: what was found, and where."""

    def __init__(self, names: Mapping[int, str], *, partial_ok: bool, strict: bool) -> None:
        self.names = names
        self.partial_ok = partial_ok
        self.strict = strict
        self.values: dict[str, Any] = {}
        self.locations: dict[str, int] = {}

    def block(self, data: bytes, base: int) -> None:
        for offset, kind, value in _records(data):
            name = self._name(kind)
            self.locations[name] = base + offset
            if kind == _SSL_TYPE:
                self._ssl(value, base + offset + _TLV_HEAD.size)
            else:
                self.values[name] = value

    def _name(self, kind: int) -> str:
        name = self.names.get(kind)
        if name is not None:
            return name
        if self.strict:
            raise UnknownTypeTLV(f"x{kind:02X}")
        return f"x{kind:02X}"

    def _ssl(self, value: bytes, base: int) -> None:
        # SSL says whether the record was whole: with partial_ok a damaged one still
        # yields what came before the damage, and SSL=False tells the reader so.
        # Its own length was sound, so the records after it are decoded as usual.
        try:
            if len(value) < _SSL_FIXED.size:
                raise MalformedTLV(f"TLV 0x{_SSL_TYPE:02X} is malformed!")
            self.values["SSL_CLIENT"], self.values["SSL_VERIFY"] = _SSL_FIXED.unpack_from(value)
            self.block(value[_SSL_FIXED.size :], base + _SSL_FIXED.size)
        except MalformedTLV:
            self.values["SSL"] = False
            if not self.partial_ok:
                raise
        else:
            self.values["SSL"] = True


class ProxyTLV(dict[str, Any]):
    """The TLVs of a v2 header by name (``tlv["ALPN"]`` or ``tlv.ALPN``; an absent
    one reads as None, as in aiosmtpd).  An SSL TLV adds ``SSL`` (True when whole),
    ``SSL_CLIENT`` and ``SSL_VERIFY`` and its sub-TLVs (``SSL_VERSION``,
    ``SSL_CN``...); an unnamed type ``0xEE`` appears as ``"xEE"``.  :attr:`tlv_loc`
    gives each TLV's offset within the TLV block."""

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

    def __init__(
        self, *args: Any, _tlv_loc: Mapping[str, int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.tlv_loc: dict[str, int] = dict(_tlv_loc or {})

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not real attributes.  TLV names never
        # start with "_": refusing those keeps hasattr() probes honest (copy,
        # pickle, IPython's _repr_*_, templates' __html__ would otherwise find None).
        if name.startswith("_"):
            raise AttributeError(name)
        return self.get(name)

    def same_attribs(self, _raises: bool = False, **kwargs: Any) -> bool:
        """Whether every named TLV is present with the given value (see
        :func:`same_values` for what ``_raises`` raises)."""
        return same_values(self.get, kwargs, _raises)

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
        raises :class:`MalformedTLV`, unless ``partial_ok``: then decoding stops there
        and what came before is kept (a damaged SSL TLV reads ``SSL=False``).  With
        ``strict``, an unnamed type raises :class:`UnknownTypeTLV`."""
        decoding = _Decoding(cls.PP2_TYPENAME, partial_ok=partial_ok, strict=strict)
        try:
            decoding.block(bytes(data), base=0)
        except MalformedTLV:
            if not partial_ok:
                raise
        return decoding.values, decoding.locations

    @classmethod
    def from_raw(
        cls, raw: bytes | bytearray | memoryview | None, strict: bool = False
    ) -> ProxyTLV | None:
        """A :class:`ProxyTLV` from a whole TLV block; None if there is none.  Any
        damage raises :class:`MalformedTLV`."""
        if not raw:
            return None
        values, locations = cls.parse(raw, partial_ok=False, strict=strict)
        return cls(values, _tlv_loc=locations)
