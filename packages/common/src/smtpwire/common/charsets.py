"""Character classes shared by the address, parameter and command grammars.

Kept in one place so that the server's parser and the client's formatter agree on
exactly which characters are dangerous.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import NonASCIIError, ProtocolError, UnsafeCharacterError

# Characters that must never reach the wire inside a command argument: C0 controls
# (CR, LF, NUL, ...), DEL, C1 controls, Unicode line/paragraph separators, and the
# invisible format characters used to disguise addresses (zero-width, bidi overrides),
# and lone surrogates (undecodable octets kept by surrogateescape: not text).
UNSAFE_TEXT: Final = re.compile(
    "[\x00-\x1f\x7f\x80-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ud800-\udfff\ufeff]"
)

# What UTF-8 (RFC 6531) adds to atext, qtext and esmtp-value: any non-ASCII
# character except the unsafe ones above (surrogates too: they are not text).
UTF8_NON_ASCII: Final = (
    "\u00a0-\u200a\u2010-\u2027\u202f-\u205f\u2070-\ud7ff\ue000-\ufefe\uff00-\U0010ffff"
)


def find_unsafe(text: str) -> str | None:
    """The first unsafe character in ``text``, or None."""
    match = UNSAFE_TEXT.search(text)
    return None if match is None else match.group()


def check_text(
    text: str,
    *,
    utf8: bool,
    what: str,
    unsafe_error: type[ProtocolError] = UnsafeCharacterError,
) -> None:
    """Refuse unsafe characters (``unsafe_error``: the client's formatters raise
    :class:`UnsafeCharacterError`, the server's parsers a syntax error) and, without
    ``utf8``, non-ASCII text (:class:`NonASCIIError`)."""
    unsafe = find_unsafe(text)
    if unsafe is not None:
        raise unsafe_error(f"{what} holds the control character {unsafe!r}: {text[:80]!r}")
    if not utf8 and not text.isascii():
        raise NonASCIIError(f"{what} is not ASCII and SMTPUTF8 is not in use: {text[:80]!r}")
