"""Values of the standard MAIL/RCPT parameters and of the BDAT and AUTH arguments.

Each ``parse_*`` function takes what :func:`~smtpwire.common.parameters.parse_parameters`
returned for one keyword (``None`` for a keyword given without ``=value``) and
returns the typed value, or raises :class:`ParameterSyntaxError` (a server answers
501).  The ``format_*`` functions build the client's side.

- SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531);
- RET, ENVID, NOTIFY, ORCPT (RFC 3461, with RFC 6533's utf-8-addr-xtext);
- AUTH= on MAIL (RFC 4954 section 5);
- BDAT's ``chunk-size [LAST]`` (RFC 3030) and AUTH's ``mechanism [initial-response]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, NamedTuple

from .charsets import find_unsafe
from .errors import ParameterSyntaxError, UnsafeCharacterError
from .limits import ENVID_MAX, ORCPT_MAX
from .parameters import decode_xtext, encode_xtext

__all__ = [
    "BODY_TYPES",
    "NOTIFY_CONDITIONS",
    "AuthCommand",
    "BdatCommand",
    "OriginalRecipient",
    "format_notify",
    "format_orcpt",
    "parse_auth_command",
    "parse_auth_parameter",
    "parse_bdat",
    "parse_body",
    "parse_envid",
    "parse_notify",
    "parse_orcpt",
    "parse_ret",
    "parse_size",
]

BODY_TYPES: Final = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})
NOTIFY_CONDITIONS: Final = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_DIGITS: Final = re.compile(r"[0-9]{1,20}\Z")  # 20 digits hold any 64-bit size
_ADDR_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_MECHANISM: Final = re.compile(r"[A-Za-z0-9_-]{1,20}\Z")  # RFC 4422 section 3.1
# RFC 6533 utf-8-addr-xtext / -unitext: printable ASCII but "+", "=" and "\\", any
# non-ASCII character, and EmbeddedUnicodeChar escapes "\\x{HEX}".
_UNITEXT_ESCAPE: Final = re.compile(r"\\x\{([0-9A-F]{2,6})\}")
_UTF8_ADDR_TEXT: Final = re.compile(
    r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\x\{[0-9A-F]{2,6}\})+\Z"
)
_QCHAR: Final = re.compile(r"[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]")  # ASCII sent as itself


def _require_value(keyword: str, value: str | None) -> str:
    if value is None or value == "":
        raise ParameterSyntaxError(f"{keyword} needs a value")
    return value


def parse_size(value: str | None) -> int:
    """SIZE=octets: ASCII digits only, at most 20 of them."""
    value = _require_value("SIZE", value)
    if not _DIGITS.match(value):
        raise ParameterSyntaxError(f"SIZE is not a number: {value[:30]!r}")
    return int(value)


def parse_body(value: str | None) -> str:
    """BODY=7BIT|8BITMIME|BINARYMIME, returned upper-cased."""
    body = _require_value("BODY", value).upper()
    if body not in BODY_TYPES:
        raise ParameterSyntaxError(f"BODY must be one of 7BIT, 8BITMIME, BINARYMIME: {value!r}")
    return body


def parse_ret(value: str | None) -> str:
    """RET=FULL|HDRS (RFC 3461 section 4.3), returned upper-cased."""
    ret = _require_value("RET", value).upper()
    if ret not in {"FULL", "HDRS"}:
        raise ParameterSyntaxError(f"RET must be FULL or HDRS: {value!r}")
    return ret


def parse_envid(value: str | None) -> str:
    """ENVID=xtext (RFC 3461 section 4.4): at most 100 octets, decoded, printable."""
    envid = _require_value("ENVID", value)
    if len(envid) > ENVID_MAX:
        raise ParameterSyntaxError(f"ENVID longer than {ENVID_MAX} characters")
    return decode_xtext(envid, allow_utf8=False)


def parse_notify(value: str | None) -> frozenset[str]:
    """NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 section
    4.1).  NEVER comes back as an empty set; NEVER with anything else is refused."""
    items = [item.upper() for item in _require_value("NOTIFY", value).split(",")]
    if items == ["NEVER"]:
        return frozenset()
    if len(set(items)) != len(items) or not set(items) <= NOTIFY_CONDITIONS:
        raise ParameterSyntaxError(f"NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY: {value!r}")
    return frozenset(items)


def format_notify(conditions: Iterable[str]) -> str:
    """The NOTIFY value for ``conditions`` (empty means NEVER)."""
    chosen = sorted({condition.upper() for condition in conditions})
    if not set(chosen) <= NOTIFY_CONDITIONS:
        raise ValueError(f"NOTIFY conditions are SUCCESS, FAILURE and DELAY: {chosen}")
    return ",".join(chosen) if chosen else "NEVER"


class OriginalRecipient(NamedTuple):
    """ORCPT=addr-type;address (RFC 3461 section 4.2), ``address`` decoded."""

    address_type: str
    address: str


def parse_orcpt(value: str | None) -> OriginalRecipient:
    """Decode ORCPT.  ``rfc822`` addresses are xtext; ``utf-8`` addresses are
    RFC 6533 utf-8-addr-xtext (xtext plus ``\\x{HEX}`` escapes and raw UTF-8).
    Control characters in the decoded address are refused."""
    orcpt = _require_value("ORCPT", value)
    if len(orcpt) > ORCPT_MAX:
        raise ParameterSyntaxError(f"ORCPT longer than {ORCPT_MAX} characters")
    address_type, semicolon, encoded = orcpt.partition(";")
    if not semicolon or not _ADDR_TYPE.match(address_type) or not encoded:
        raise ParameterSyntaxError(f"ORCPT is not addr-type;address: {orcpt[:60]!r}")
    if address_type.lower() == "utf-8":
        address = _decode_utf8_addr_xtext(encoded)
    else:
        address = decode_xtext(encoded)
    return OriginalRecipient(address_type.lower(), address)


def _decode_utf8_addr_xtext(encoded: str) -> str:
    if not _UTF8_ADDR_TEXT.match(encoded):
        raise ParameterSyntaxError(f"malformed utf-8 ORCPT address: {encoded[:60]!r}")

    def unescape(match: re.Match[str]) -> str:
        code_point = int(match[1], 16)
        if (
            code_point > 0x10FFFF
            or 0xD800 <= code_point <= 0xDFFF
            or (code_point < 0x80 and _QCHAR.match(chr(code_point)))
        ):
            raise ParameterSyntaxError(f"bad escape in utf-8 ORCPT address: {match[0]!r}")
        return chr(code_point)

    decoded = _UNITEXT_ESCAPE.sub(unescape, encoded)
    unsafe = find_unsafe(decoded)
    if unsafe is not None:
        raise ParameterSyntaxError(f"ORCPT decodes to the control character {unsafe!r}")
    return decoded


def format_orcpt(address: str, address_type: str = "rfc822") -> str:
    """The ORCPT value for ``address``: xtext for ``rfc822`` (non-ASCII as UTF-8
    octets), utf-8-addr-xtext (``\\x{HEX}`` for space, ``+ = \\`` and non-ASCII) for
    ``utf-8``."""
    if find_unsafe(address) is not None or not address or not _ADDR_TYPE.match(address_type):
        raise UnsafeCharacterError(f"cannot encode ORCPT for {address!r}")
    if address_type.lower() == "utf-8":
        escaped = "".join(
            char if _QCHAR.match(char) else f"\\x{{{ord(char):X}}}" for char in address
        )
        value = f"utf-8;{escaped}"
    else:
        value = f"{address_type};{encode_xtext(address)}"
    if len(value) > ORCPT_MAX:
        raise ValueError(f"ORCPT would be longer than {ORCPT_MAX} characters")
    return value


def parse_auth_parameter(value: str | None) -> str | None:
    """AUTH=<mailbox> on MAIL (RFC 4954 section 5): the decoded identity, or None
    for ``<>`` (the submitter is unknown or not trusted)."""
    auth = _require_value("AUTH", value)
    if auth == "<>":
        return None
    return decode_xtext(auth)


class BdatCommand(NamedTuple):
    """``BDAT chunk-size [LAST]`` (RFC 3030 section 2)."""

    size: int
    last: bool


def parse_bdat(argument: str) -> BdatCommand:
    """Parse BDAT's argument; ``LAST`` is case-insensitive."""
    words = argument.split()
    if not 1 <= len(words) <= 2 or not _DIGITS.match(words[0]):
        raise ParameterSyntaxError(f"BDAT needs chunk-size [LAST]: {argument[:40]!r}")
    if len(words) == 2 and words[1].upper() != "LAST":
        raise ParameterSyntaxError(f"BDAT needs chunk-size [LAST]: {argument[:40]!r}")
    return BdatCommand(int(words[0]), len(words) == 2)


class AuthCommand(NamedTuple):
    """``AUTH mechanism [initial-response]``; ``initial_response`` is the base64 text
    as sent (``"="`` for an empty one) or None when absent."""

    mechanism: str
    initial_response: str | None


def parse_auth_command(argument: str) -> AuthCommand:
    """Parse AUTH's argument; the mechanism is upper-cased (names are
    case-insensitive, RFC 4422), at most 20 characters of ``A-Z 0-9 - _``."""
    words = argument.split()
    if not 1 <= len(words) <= 2:
        raise ParameterSyntaxError(f"AUTH needs mechanism [initial-response]: {argument[:40]!r}")
    if not _MECHANISM.match(words[0]):
        raise ParameterSyntaxError(f"malformed SASL mechanism name: {words[0][:40]!r}")
    return AuthCommand(words[0].upper(), words[1] if len(words) == 2 else None)
