"""From an :mod:`email` message to an SMTP envelope and DATA bytes (aiosmtplib's ``email``).

``send_message`` takes its envelope from the message headers, as smtplib and
aiosmtplib do, so the header rules (Resent- blocks, Sender before From, Bcc kept
out of the transmitted copy) follow them exactly: code written for either must
reach the same recipients.

Addresses are checked here, by smtpwire's own grammar, rather than trusted to
:func:`email.utils.parseaddr`: how strictly that parses depends on the Python
patch level (older ones silently truncate ``a@b> AUTH=<x@y>`` to ``a@b``), and
an address that reaches ``MAIL FROM:<...>`` with a space, an angle bracket or a
line break in it smuggles a parameter or a whole command.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Iterable, Sequence
from email.generator import BytesGenerator
from email.headerregistry import AddressHeader
from email.message import EmailMessage, Message
from email.policy import SMTP, SMTPUTF8, EmailPolicy, Policy, compat32
from email.utils import getaddresses, parseaddr
from typing import Any, Final

from smtpwire.common.addresses import check_mailbox
from smtpwire.common.charsets import find_unsafe
from smtpwire.common.errors import AddressSyntaxError, ProtocolError

from .errors import SMTPNotSupported

__all__ = [
    "extract_recipients",
    "extract_sender",
    "flatten_message",
    "message_needs_smtputf8",
    "parse_address",
    "prepare_message",
    "quote_address",
]

_QUOTED_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
# What would let an address end its ``<...>`` early or add a parameter; ``\s`` is
# Unicode-aware, so no-break and ideographic spaces count too.
_SMUGGLING: Final = re.compile(r'[\s<>"]')
_DISPLAY_SPECIALS: Final = re.compile(r"[<>@,;]")
_LIST_OR_ESCAPE: Final = re.compile(r"[,\\]")
_ANGLE: Final = re.compile(r"[<>]")
_TRAILING_COMMENT: Final = re.compile(r"\s*\((?:[^()\\]|\\.)*\)\s*")
_CTE_TYPES: Final = ("7bit", "8bit")
_SMTPUTF8_NOT_SUPPORTED: Final = (
    "An address containing non-ASCII characters was provided, but SMTPUTF8 is not "
    "supported by this server"
)


# --- addresses -------------------------------------------------------------------------


def parse_address(address: str) -> str:
    """The bare address of ``"Name <a@b>"`` or ``"a@b"``, refused with :class:`ValueError`
    if it could not travel safely as a single ``<path>``.

    The empty string stays empty: it is the null reverse-path (``MAIL FROM:<>``).
    """
    unsafe = find_unsafe(address)
    if unsafe is not None:
        # Checked on the raw text, before any parser can drop what follows a line break.
        raise ValueError(
            f"invalid address {address!r}: it holds the control character {unsafe!r}, "
            "which could end the command line and start another"
        )
    text = address.strip()
    if not text:
        return ""
    angle = _split_angle_form(text)
    if angle is not None:
        # "Name <addr>" or "<addr>", split here: the standard library's parsers
        # treat quoted local parts differently from one Python version to the next.
        name, path = angle
        unquoted = _QUOTED_STRING.sub("", name)
        # An angle bracket is the likelier smuggling attempt: name it first.
        stray = _ANGLE.search(unquoted) or _DISPLAY_SPECIALS.search(unquoted)
        if stray is not None:
            raise ValueError(
                f"invalid address {address!r}: {stray.group()!r} before the path could "
                "smuggle an ESMTP parameter or a second path"
            )
        return _checked_mailbox(path, address)
    try:
        return _checked_mailbox(text, address)
    except ValueError:
        inner = _display_form_address(text)
        if inner is None:
            raise
    return _checked_mailbox(inner, address)


def quote_address(address: str) -> str:
    """``<address>`` for MAIL FROM / RCPT TO; ``<>`` for the null path."""
    return f"<{parse_address(address)}>"


def message_needs_smtputf8(sender: str | None, recipients: Iterable[str]) -> bool:
    """Whether any envelope address is non-ASCII (RFC 6531).

    Display names do not count: they travel RFC 2047-encoded in the headers, so
    ``"Jösé <jose@example.com>"`` needs no SMTPUTF8 (aiosmtplib issue #94).
    """
    addresses = [*([] if sender is None else [sender]), *recipients]
    return any(not parse_address(address).isascii() for address in addresses)


def _checked_mailbox(candidate: str, original: str) -> str:
    quoted = _QUOTED_STRING.match(candidate)
    outside = candidate[quoted.end() :] if quoted else candidate
    stray = _SMUGGLING.search(outside)
    if stray is not None:
        raise ValueError(
            f"invalid address {original!r}: {stray.group()!r} outside a quoted local part "
            "could smuggle an ESMTP parameter or a second path"
        )
    try:
        # No domain needed (``<postmaster>``, local ``root``), no local-part cap:
        # real MTAs accept both, and the server decides.
        check_mailbox(candidate, utf8=True, require_domain=False, max_local_part=None)
    except AddressSyntaxError as error:
        # Malformed (``@@``) but with nothing that could inject, as checked above
        # and by the caller: aiosmtplib sends it and reports the server's refusal.
        # Not an empty path in brackets, nor a comma (a list, of which aiosmtplib
        # would silently keep the first address) or a backslash (which a server
        # might read as escaping the closing bracket) outside a quoted local part.
        if not candidate or _LIST_OR_ESCAPE.search(outside):
            raise ValueError(f"invalid address {original!r}: {error}") from None
    except ProtocolError as error:
        raise ValueError(f"invalid address {original!r}: {error}") from None
    return candidate


def _split_angle_form(text: str) -> tuple[str, str] | None:
    """(name, addr) when ``text`` is ``name <addr>`` with the first ``<`` outside
    quotes opening a path that runs to the end; None otherwise."""
    if "<" not in text:
        return None  # the common bare address: no scan
    in_quotes = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and in_quotes:
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "<" and not in_quotes:
            return (text[:index], text[index + 1 : -1]) if text.endswith(">") else None
    return None


def _display_form_address(text: str) -> str | None:
    """The addr-spec of ``Name <addr>`` or ``addr (comment)``, or None.

    parseaddr's answer is taken only when the text has exactly that shape: older
    patch levels return the first of several addresses, or glue ``a@b c`` into
    ``a@bc``, and such text must be refused rather than silently shortened.
    """
    parsed = parseaddr(text)[1]
    if not parsed or len(getaddresses([text])) != 1:
        return None
    if text.endswith(f"<{parsed}>"):
        # Outside quotes, these in the name mean another address hides there.
        display = _QUOTED_STRING.sub("", text[: -len(parsed) - 2])
        return None if _DISPLAY_SPECIALS.search(display) else parsed
    if text.startswith(parsed) and _TRAILING_COMMENT.fullmatch(text, len(parsed)):
        return parsed
    return None


# --- headers ---------------------------------------------------------------------------


def extract_sender(message: EmailMessage | Message[Any, Any]) -> str | None:
    """The envelope sender smtplib would use: (Resent-)Sender if present, else (Resent-)From.

    The Resent- headers win when the message was resent (one Resent-Date): the
    resender, not the original author, is responsible for this delivery (RFC 5322
    section 3.6.6).
    """
    prefix = _resent_prefix(message)
    name = f"{prefix}Sender" if f"{prefix}Sender" in message else f"{prefix}From"
    value = message.get(name)
    if value is None:
        return None
    addresses = _header_addresses(value)
    return addresses[0] if addresses else None


def extract_recipients(message: EmailMessage | Message[Any, Any]) -> list[str]:
    """Every address in the (Resent-)To, Cc and Bcc headers, each occurrence, in order."""
    prefix = _resent_prefix(message)
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for value in message.get_all(f"{prefix}{name}", []):
            recipients.extend(_header_addresses(value))
    return recipients


def _resent_prefix(message: EmailMessage | Message[Any, Any]) -> str:
    dates = message.get_all("Resent-Date", [])
    if len(dates) > 1:
        # Which block is the current delivery is ambiguous; smtplib refuses too.
        raise ValueError("Message has more than one 'Resent-' header block")
    return "Resent-" if dates else ""


def _header_addresses(value: object) -> list[str]:
    """The addr-specs in one header value, display names dropped."""
    if isinstance(value, AddressHeader):
        # policy.default: already parsed; encoded words stay in the display name.
        return [item.addr_spec for item in value.addresses if item.addr_spec != "<>"]
    # compat32: a str, or a Header whose str() is the decoded text.  Encoded words
    # in a str are deliberately not decoded: "=?..?= <b@x>" must not grow an address.
    return [address for _name, address in getaddresses([str(value)]) if address]


# --- the DATA payload ------------------------------------------------------------------


def flatten_message(
    message: EmailMessage | Message[Any, Any], *, utf8: bool = False, cte_type: str = "8bit"
) -> bytes:
    """The message as DATA octets (CRLF line endings), without Bcc or Resent-Bcc.

    ``cte_type="7bit"`` is for servers without 8BITMIME: 8-bit parts are then
    re-encoded.  ``utf8`` (SMTPUTF8 in use) keeps UTF-8 headers raw instead of
    RFC 2047-encoding them; a compat32 message has no such mode and ignores it.
    """
    if cte_type not in _CTE_TYPES:
        raise ValueError(f"cte_type must be '7bit' or '8bit', not {cte_type!r}")
    # Deleting from a shallow copy rebinds the copy's header list, so the caller's
    # message keeps its Bcc: it may be sent again, stored, or shown.
    stripped = copy.copy(message)
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]
    policy: Policy[Any]
    if isinstance(message, EmailMessage) or isinstance(message.policy, EmailPolicy):
        policy = (SMTPUTF8 if utf8 else SMTP).clone(cte_type=cte_type)
    else:
        policy = compat32.clone(linesep="\r\n", cte_type=cte_type)
    buffer = io.BytesIO()
    # mangle_from_=False: ">From " quoting is for mbox files; over SMTP it would
    # alter the body (compat32 and smtplib would do it).
    BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(stripped)
    return buffer.getvalue()


# --- all together, for send_message ----------------------------------------------------


def prepare_message(
    message: EmailMessage | Message[Any, Any],
    *,
    sender: str | None = None,
    recipients: str | Sequence[str] | None = None,
    server_supports_smtputf8: bool,
    server_supports_8bitmime: bool,
) -> tuple[str, list[str], list[str], bytes]:
    """``(sender, recipients, extra MAIL options, DATA bytes)`` for ``send_message``.

    Sender and recipients are returned as given (or as found in the headers), not
    reduced to bare addresses, so refusals are reported under the caller's own
    strings as aiosmtplib does; each one has been checked with :func:`parse_address`.
    The extra options come in aiosmtplib's order (``SMTPUTF8``, ``BODY=8BITMIME``),
    for the caller to append after its own.
    """
    if sender is None:
        sender = extract_sender(message)
        if sender is None:
            raise ValueError("No From header provided in message")
    if recipients is None:
        recipient_list = extract_recipients(message)
    elif isinstance(recipients, str):
        recipient_list = [recipients]
    else:
        recipient_list = list(recipients)
    if not recipient_list:
        raise ValueError("No recipient headers provided in message")

    utf8 = message_needs_smtputf8(sender, recipient_list)
    options: list[str] = []
    if utf8:
        if not server_supports_smtputf8:
            raise SMTPNotSupported(_SMTPUTF8_NOT_SUPPORTED)
        options.append("SMTPUTF8")
    if server_supports_8bitmime:
        options.append("BODY=8BITMIME")
    cte_type = "8bit" if server_supports_8bitmime else "7bit"
    return sender, recipient_list, options, flatten_message(message, utf8=utf8, cte_type=cte_type)
