"""aiosmtpd 1.4.6 compatibility of the PROXY protocol module: the helpers users
call in their own tests (``same_attribs``, attribute access to TLVs), lazy TLV
decoding, partial TLV parsing, and how :func:`get_proxy` ends on a short read."""

from __future__ import annotations

import asyncio
import logging
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.server.proxy_protocol import (
    AF,
    V2_SIGNATURE,
    MalformedTLV,
    ProxyData,
    ProxyTLV,
    get_proxy,
    parse_header,
)

V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\n"
ADDRESSES = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 40000, 25)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2_header(family_protocol: int = 0x11, body: bytes = ADDRESSES) -> bytes:
    return V2_SIGNATURE + bytes([0x21, family_protocol]) + struct.pack("!H", len(body)) + body


class ShortReader:
    """Reads like aiosmtpd's test double: at the end of its data ``read`` returns
    b"", ``readexactly`` and ``readuntil`` return what is left, however short."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    async def _take(self, n: int) -> bytes:
        await asyncio.sleep(0)  # a real reader suspends: lets wait_for end a loop that never ends
        piece = bytes(self.data[:n])
        del self.data[:n]
        return piece

    async def read(self, n: int = -1) -> bytes:
        return await self._take(len(self.data) if n < 0 else n)

    async def readexactly(self, n: int) -> bytes:
        return await self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        end = self.data.find(separator)
        return await self._take(len(self.data) if end < 0 else end + len(separator))


def stream_reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


# -- ProxyTLV -------------------------------------------------------------------------


def test_an_absent_tlv_reads_as_none() -> None:
    parsed = ProxyTLV.from_raw(tlv(0x01, b"h2"))
    assert parsed is not None
    assert parsed.ALPN == b"h2"
    assert parsed.AUTHORITY is None
    assert parsed.xEE is None
    assert "AUTHORITY" not in parsed


def test_private_and_special_names_still_raise_attribute_error() -> None:
    # Deliberate: hasattr() probes (copy, pickle, IPython, templates) must not see None.
    parsed = ProxyTLV.from_raw(tlv(0x01, b"h2"))
    assert parsed is not None
    assert not hasattr(parsed, "_repr_html_")
    assert not hasattr(parsed, "__html__")


def test_tlv_same_attribs_raises_with_aiosmtpds_texts() -> None:
    parsed = ProxyTLV.from_raw(tlv(0x01, b"h2"))
    assert parsed is not None
    assert parsed.same_attribs(ALPN=b"h2")
    assert not parsed.same_attribs(ALPN=b"h3")
    assert not parsed.same_attribs(NOPE=None)  # absent is not "equal to None"
    with pytest.raises(ValueError, match=r"^mismatch:ALPN actual=b'h2' expect=b'h3'$"):
        parsed.same_attribs(_raises=True, ALPN=b"h3")
    with pytest.raises(KeyError) as missing:
        parsed.same_attribs(_raises=True, NOPE=None)
    assert missing.value.args == ("notfound:NOPE",)


SSL_CUT_INSIDE = (  # aiosmtpd's sample: the SSL TLV is whole, its second sub-TLV is not
    b"\x20\x00\x17\x01\x02\x03\x04\x05\x21\x00\x07version\x22\x00\x09trunc"
)


def test_partial_parse_of_a_cut_ssl_sub_tlv_keeps_what_was_decoded() -> None:
    values, locations = ProxyTLV.parse(SSL_CUT_INSIDE, partial_ok=True)
    assert values["SSL"] is False
    assert (values["SSL_CLIENT"], values["SSL_VERIFY"]) == (1, 0x02030405)
    assert values["SSL_VERSION"] == b"version"
    assert "SSL_CN" not in values
    assert locations["SSL"] == 0
    with pytest.raises(MalformedTLV):
        ProxyTLV.parse(SSL_CUT_INSIDE, partial_ok=False)
    assert ProxyTLV.from_raw(b"\x01" + SSL_CUT_INSIDE[1:]) is not None  # not SSL: opaque


def test_partial_parse_goes_on_after_a_damaged_ssl_tlv() -> None:
    # Deliberate: the outer framing is intact, so later TLVs are still decoded.
    values, _ = ProxyTLV.parse(SSL_CUT_INSIDE + tlv(0x05, b"id"))
    assert (values["SSL"], values["UNIQUE_ID"]) == (False, b"id")


def test_partial_parse_never_raises_malformed() -> None:
    assert ProxyTLV.parse(tlv(0x01, b"h2")[:-1]) == ({}, {})
    assert ProxyTLV.parse(b"\x01\x00") == ({}, {})
    values, _ = ProxyTLV.parse(tlv(0x20, b"\x01\x00"))  # shorter than its fixed part
    assert values == {"SSL": False}
    with pytest.raises(MalformedTLV):
        ProxyTLV.parse(tlv(0x20, b"\x01\x00"), partial_ok=False)


# -- ProxyData ------------------------------------------------------------------------


def test_proxy_data_same_attribs_compares_properties_too() -> None:
    data = parse_header(V1_TCP4)
    assert data.same_attribs(valid=True, version=1, family=AF.INET, tlv=None)
    assert not data.same_attribs(valid=False)
    assert not data.same_attribs(nonexistent=1)
    with pytest.raises(ValueError, match=r"^mismatch:valid actual=True expect=False$"):
        data.same_attribs(_raises=True, valid=False)
    expected = r"^mismatch:src_addr actual=IPv4Address\('192.0.2.1'\) expect='192.0.2.1'$"
    with pytest.raises(ValueError, match=expected):
        data.same_attribs(_raises=True, src_addr="192.0.2.1")
    with pytest.raises(KeyError) as missing:
        data.same_attribs(_raises=True, nonexistent=1)
    assert missing.value.args == ("notfound:nonexistent",)
    assert data.same_attribs(src_addr=IPv4Address("192.0.2.1"))


def test_tlv_is_decoded_from_rest_lazily_and_cached() -> None:
    data = ProxyData(version=2)
    assert data.tlv is None
    data.rest = tlv(0x01, b"h2") + tlv(0x05, b"id")
    first = data.tlv
    assert first is not None
    assert first.same_attribs(ALPN=b"h2", UNIQUE_ID=b"id")
    assert data.tlv is first
    data.rest = tlv(0x02, b"example.com")  # a new block is decoded afresh
    assert data.tlv is not None
    assert data.tlv.AUTHORITY == b"example.com"


@pytest.mark.parametrize(
    "rest",
    [b"", b"fake_tlv", tlv(0x01, b"h2") + tlv(0x05, b"abc")[:-1], SSL_CUT_INSIDE],
    ids=["empty", "garbage", "second-cut", "ssl-sub-cut"],
)
def test_tlv_is_none_when_empty_or_malformed(rest: bytes) -> None:
    data = ProxyData(version=2)
    data.rest = rest
    assert data.tlv is None


def test_unspec_v2_header_decodes_its_tlvs_as_aiosmtpd_does() -> None:
    data = parse_header(v2_header(family_protocol=0x00, body=tlv(0x05, b"id")))
    assert data.valid
    assert data.tlv_start is None  # no address block: aiosmtpd gives no offset either
    assert data.tlv is not None
    assert data.tlv.UNIQUE_ID == b"id"


# -- version 1 family and protocol -----------------------------------------------------


@pytest.mark.parametrize(
    ("word", "error"),
    [
        (b"UDP4", "PROXYv1 unrecognized protocol"),
        (b"UDP6", "PROXYv1 unrecognized protocol"),
        (b"TCP", "PROXYv1 unrecognized family"),
        (b"TCP5", "PROXYv1 unrecognized family"),
    ],
)
def test_v1_family_then_protocol_are_checked(word: bytes, error: str) -> None:
    data = parse_header(b"PROXY " + word + b" 192.0.2.1 198.51.100.2 1 2\r\n")
    assert data.error == error
    assert not data


def test_v1_udp_reports_its_family() -> None:
    data = parse_header(b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n")
    assert (data.version, data.family, data.protocol) == (1, AF.INET, None)


# -- get_proxy on a short read ------------------------------------------------------------


@pytest.mark.parametrize("make_reader", [ShortReader, stream_reader], ids=["short", "stream"])
async def test_v1_cut_short_is_malformed_and_logged(
    make_reader: type[ShortReader], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = await asyncio.wait_for(get_proxy(make_reader(V1_TCP4[:20])), 5)
    assert data.error == "PROXYv1 malformed"
    assert data.version == 1
    assert data.whole_raw == V1_TCP4[:20]
    assert ("mail.debug", logging.WARNING, "PROXY error: PROXYv1 malformed") in caplog.record_tuples


@pytest.mark.parametrize("make_reader", [ShortReader, stream_reader], ids=["short", "stream"])
@pytest.mark.parametrize(
    ("length", "field"),
    [(2, "signature"), (9, "signature"), (14, "header"), (20, "tail part")],
)
async def test_v2_cut_short_is_a_connection_lost_exception(
    make_reader: type[ShortReader], length: int, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = await asyncio.wait_for(get_proxy(make_reader(v2_header()[:length])), 5)
    message = f"PROXY exception: Connection lost while waiting for {field}"
    assert data.error == message
    assert data.version is None
    assert ("mail.debug", logging.WARNING, message) in caplog.record_tuples


async def test_a_wrong_v2_signature_is_reported_even_when_the_input_ends_there() -> None:
    data = await asyncio.wait_for(get_proxy(ShortReader(V2_SIGNATURE[:11] + b"X")), 5)
    assert data.error == "PROXYv2 wrong signature"


async def test_whole_headers_still_read_through_a_short_reader() -> None:
    v1 = await asyncio.wait_for(get_proxy(ShortReader(V1_TCP4 + b"EHLO x\r\n")), 5)
    assert v1.valid
    assert v1.src_port == 40000
    header = v2_header(body=ADDRESSES + tlv(0x01, b"h2"))
    reader = ShortReader(header + b"EHLO x\r\n")
    v2 = await asyncio.wait_for(get_proxy(reader), 5)
    assert v2.valid
    assert v2.tlv is not None
    assert v2.tlv.ALPN == b"h2"
    assert reader.data == b"EHLO x\r\n"  # nothing past the header was read


# -- properties -----------------------------------------------------------------------

named_records = st.lists(
    st.tuples(
        st.sampled_from([kind for kind in ProxyTLV.PP2_TYPENAME if kind != 0x20]),
        st.binary(max_size=40),
    ),
    max_size=6,
    unique_by=lambda record: record[0],
)


@given(named_records)
def test_whole_blocks_decode_to_their_records(records: list[tuple[int, bytes]]) -> None:
    block = b"".join(tlv(kind, value) for kind, value in records)
    parsed = ProxyTLV.from_raw(block)
    expected = {ProxyTLV.PP2_TYPENAME[kind]: value for kind, value in records}
    assert (parsed or {}) == expected
    if parsed is not None:
        assert parsed.same_attribs(_raises=True, **expected)


@given(st.binary(max_size=200))
def test_partial_parse_of_any_octets_never_raises(data: bytes) -> None:
    values, locations = ProxyTLV.parse(data)
    assert set(locations) <= set(values) | {"SSL"}
    try:
        whole = ProxyTLV.from_raw(data)
    except MalformedTLV:
        return
    assert whole is None or dict(whole) == values


@settings(deadline=None)
@given(st.binary(max_size=120), st.sampled_from([b"", b"PROXY ", V2_SIGNATURE]))
def test_get_proxy_ends_on_any_input(data: bytes, start: bytes) -> None:
    reader = ShortReader(start + data)
    result = asyncio.run(asyncio.wait_for(get_proxy(reader), 5))
    assert isinstance(result, ProxyData)
    assert result.valid or result.error
