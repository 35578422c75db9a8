"""MAIL FROM / RCPT TO lines as aiosmtplib sends them, without its injection holes.

aiosmtplib encodes an envelope address with the ``encoding`` its caller gives
(ASCII unless told otherwise) and lets the server judge its syntax; it refuses
only what could inject.  The same here: an address that could end the line or
smuggle a parameter is a ValueError, a non-ASCII one without a UTF-8 encoding a
UnicodeEncodeError, and a merely malformed one (``@@``) is sent, so the caller
gets the server's refusal (SMTPRecipientsRefused, or an entry in the refused
dictionary) exactly as with aiosmtplib.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Iterable

from smtpwire.common.commands import format_mail_from, format_rcpt_to
from smtpwire.common.errors import AddressSyntaxError, ProtocolError
from smtpwire.common.parameters import format_parameters

from .email import parse_address

__all__ = ["bare_mailbox", "envelope_line", "is_utf8"]


@functools.lru_cache(maxsize=4096)
def bare_mailbox(address: str) -> str:
    """The mailbox alone: callers pass ``a@b``, ``<a@b>`` or ``Name <a@b>``;
    anything that could smuggle a parameter or a command raises ValueError.
    Cached, being a pure function: addresses sent to again are not re-parsed."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return parse_address(text)


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def envelope_line(verb: str, address: str, options: Iterable[str], encoding: str) -> bytes:
    """``MAIL FROM:<address> options`` (``verb`` "MAIL") or ``RCPT TO:...`` ("RCPT")."""
    given = tuple(options)
    try:
        hash(given)
    except TypeError:  # an option of a type no one can send: refused uncached
        return _envelope_line.__wrapped__(verb, address, given, encoding)
    return _envelope_line(verb, address, given, encoding)


# A pure function of its arguments, like bare_mailbox: a bulk sender repeats its
# sender (and often its recipients and options) on every message.  Refusals are
# exceptions, which lru_cache does not keep: they are raised again each time.
@functools.lru_cache(maxsize=4096)
def _envelope_line(verb: str, address: str, given: tuple[str, ...], encoding: str) -> bytes:
    what = "sender" if verb == "MAIL" else "recipient"
    mailbox = bare_mailbox(address)
    # aiosmtplib's check, whatever the options hold: SMTPUTF8 among them does not
    # make a non-ASCII address encodable in ASCII.
    mailbox.encode(encoding)
    utf8 = is_utf8(encoding)
    try:
        if verb == "MAIL":
            return format_mail_from(mailbox, given, utf8=utf8)
        return format_rcpt_to(mailbox, given, utf8=utf8)
    except AddressSyntaxError:
        # Malformed but unable to inject (bare_mailbox saw to that): the server
        # judges it.  The options are still checked as for any other address.
        prefix = "MAIL FROM" if verb == "MAIL" else "RCPT TO"
        try:
            parameters = format_parameters(given, utf8=utf8)
        except ProtocolError as error:
            raise ValueError(f"invalid {what} options {list(given)!r}: {error}") from error
        return f"{prefix}:<{mailbox}>{parameters}\r\n".encode()
    except ProtocolError as error:
        raise ValueError(f"invalid {what} {address!r}: {error}") from error
