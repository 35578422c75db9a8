"""ESMTP parameters (``KEY[=VALUE]`` after MAIL and RCPT) and xtext (RFC 3461 section 4).

Parameters are where smuggling hides now that addresses are checked: a value such
as ``ENVID=a+0D+0Ab`` decodes to a CR LF.  :func:`decode_xtext` refuses control
characters after decoding, and :func:`format_parameters` refuses anything that
would split one parameter into two or end the command line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from .charsets import UTF8_NON_ASCII, find_unsafe
from .errors import NonASCIIError, ParameterSyntaxError, UnsafeCharacterError

__all__ = [
    "Parameter",
    "decode_xtext",
    "encode_xtext",
    "format_parameters",
    "parameters_to_dict",
    "parse_parameters",
]

_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_VALUE: Final = {
    False: re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z"),
    True: re.compile(rf"[\x21-\x3c\x3e-\x7e{UTF8_NON_ASCII}]+\Z"),
}
_XTEXT: Final = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_XTEXT_HEX: Final = re.compile(r"\+([0-9A-F]{2})")
_XTEXT_UNSAFE: Final = re.compile(r"[^\x21-\x2a\x2c-\x3c\x3e-\x7e]")


class Parameter(NamedTuple):
    """One ESMTP parameter; ``keyword`` is upper-cased, ``value`` None when absent."""

    keyword: str
    value: str | None = None

    def __str__(self) -> str:
        return self.keyword if self.value is None else f"{self.keyword}={self.value}"


def parse_parameters(text: str, *, utf8: bool = False) -> tuple[Parameter, ...]:
    """Parse the space-separated parameters after a path.

    Keywords are case-insensitive (returned upper-cased); a keyword given twice
    is refused, because two receivers could disagree on which one wins.
    """
    parameters: list[Parameter] = []
    seen: set[str] = set()
    for item in text.split(" "):
        if not item:
            continue  # tolerate runs of spaces
        keyword, equals, value = item.partition("=")
        if not _KEYWORD.match(keyword):
            raise ParameterSyntaxError(f"malformed parameter keyword: {item!r}")
        if equals:
            if not value.isascii() and not utf8:
                raise NonASCIIError(f"parameter value is not ASCII: {item!r}")
            if not _VALUE[utf8].match(value):
                raise ParameterSyntaxError(f"malformed parameter value: {item!r}")
        keyword = keyword.upper()
        if keyword in seen:
            raise ParameterSyntaxError(f"parameter {keyword} given more than once")
        seen.add(keyword)
        parameters.append(Parameter(keyword, value if equals else None))
    return tuple(parameters)


def parameters_to_dict(parameters: Iterable[Parameter]) -> dict[str, str | None]:
    return {parameter.keyword: parameter.value for parameter in parameters}


def format_parameters(
    parameters: Mapping[str, str | None] | Iterable[str | Parameter | tuple[str, str | None]],
    *,
    utf8: bool = False,
) -> str:
    """Format parameters for MAIL/RCPT: ``" KEY=VALUE KEY"`` (leading space), or ``""``.

    Accepts a mapping, :class:`Parameter` tuples, or ready strings such as
    ``"SIZE=100"`` (aiosmtplib's ``mail_options``).  Every keyword and value is
    checked, so nothing can add a parameter, a path or a line.
    """
    items: Iterable[str | Parameter | tuple[str, str | None]]
    items = parameters.items() if isinstance(parameters, Mapping) else parameters
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            keyword, equals, raw_value = item.partition("=")
            value = raw_value if equals else None
        else:
            keyword, value = item
        out.append(str(_checked_parameter(keyword, value, utf8=utf8)))
    return "".join(f" {item}" for item in out)


def _checked_parameter(keyword: str, value: str | None, *, utf8: bool) -> Parameter:
    for part in (keyword, value or ""):
        unsafe = find_unsafe(part)
        if unsafe is not None:
            raise UnsafeCharacterError(f"parameter holds {unsafe!r}: {keyword}={value}")
    if not _KEYWORD.match(keyword):
        raise UnsafeCharacterError(f"malformed parameter keyword: {keyword!r}")
    if value is not None:
        if not utf8 and not value.isascii():
            raise NonASCIIError(f"parameter value is not ASCII: {value!r}")
        if not _VALUE[utf8].match(value):
            raise UnsafeCharacterError(f"malformed parameter value: {keyword}={value!r}")
        hidden = _hidden_in_xtext(value)
        if hidden is not None:
            raise UnsafeCharacterError(f"parameter value decodes (as xtext) to {hidden!r}")
    return Parameter(keyword.upper(), value)


def _hidden_in_xtext(value: str) -> str | None:
    """The unsafe character an xtext value (ENVID, ORCPT, AUTH=) hides, if any:
    ``a+0D+0Ab`` is harmless on this wire but becomes CR LF wherever it is decoded."""
    if "+" not in value or not _XTEXT.match(value):
        return None
    raw = _XTEXT_HEX.sub(lambda match: chr(int(match[1], 16)), value).encode("latin-1")
    return find_unsafe(raw.decode("utf-8", "replace"))


def encode_xtext(text: str) -> str:
    """xtext-encode: ``+``, ``=``, controls, space and non-ASCII (as UTF-8) become ``+XX``."""
    return _XTEXT_UNSAFE.sub(
        lambda match: "".join(f"+{byte:02X}" for byte in match.group().encode()), text
    )


def decode_xtext(value: str, *, allow_utf8: bool = True) -> str:
    """Decode xtext, refusing malformed hex and any control character in the
    result (``+0D+0A`` must not smuggle a line break into a DSN or a log)."""
    if not _XTEXT.match(value):
        raise ParameterSyntaxError(f"malformed xtext: {value!r}")
    raw = _XTEXT_HEX.sub(lambda match: chr(int(match[1], 16)), value)
    try:
        decoded = raw.encode("latin-1").decode("utf-8" if allow_utf8 else "ascii")
    except UnicodeError:
        raise ParameterSyntaxError(f"xtext does not decode to text: {value!r}") from None
    unsafe = find_unsafe(decoded)
    if unsafe is not None:
        raise ParameterSyntaxError(f"xtext decodes to the control character {unsafe!r}")
    return decoded
