"""Per-connection and per-message state handed to handler hooks.

The attribute names are aiosmtpd's, because handlers read and write them
directly (``envelope.rcpt_tos.append(address)``); a hook that owns a state
change does so by mutating these objects.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from smtpwire.common.server_rules import RcptDSN

if TYPE_CHECKING:
    from .proxy_protocol import ProxyData

__all__ = [
    "MISSING",
    "AuthCallbackType",
    "AuthResult",
    "AuthenticatorType",
    "Envelope",
    "LoginPassword",
    "PeerType",
    "RecipientDSN",
    "Session",
]

log = logging.getLogger("mail.log")

PeerType = tuple[str, int] | tuple[str, int, int, int] | str | None


class _Missing(enum.Enum):
    """A hook is absent, or a legacy authentication hook gave no result."""

    MISSING = object()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing.MISSING


@dataclass(kw_only=True)
class AuthResult:
    """What an authenticator or an ``auth_MECH`` method decided.

    ``handled=False`` with ``success=False`` lets the server send its own
    ``535``; ``handled=True`` means the method already replied.  ``message``
    replaces the default reply text; ``auth_data`` is kept on the session.
    """

    success: bool
    handled: bool = True
    message: str | None = None
    auth_data: Any = None

    def __repr__(self) -> str:
        # auth_data may hold a password; never print it.
        data = "..." if self.auth_data is not None else "None"
        return (
            f"AuthResult(success={self.success}, handled={self.handled}, "
            f"message={self.message!r}, auth_data={data})"
        )


class LoginPassword(NamedTuple):
    """Credentials from AUTH PLAIN or LOGIN; the password never shows in str/repr."""

    login: bytes
    password: bytes

    def __str__(self) -> str:
        # As aiosmtpd 1.4.6, the login is shown as text (login='anne'); one that is
        # not UTF-8 shows replacement characters, where aiosmtpd's str() raises
        # UnicodeDecodeError (a log line must not fail on what a client sent).
        login = self.login
        shown = login.decode(errors="replace") if isinstance(login, bytes) else str(login)
        return f"LoginPassword(login='{shown}', password=...)"

    def __repr__(self) -> str:
        # As aiosmtpd: the repr is the str, so a log of a tuple of credentials
        # shows the login the same way and the password nowhere.
        return str(self)


AuthCallbackType = Callable[[str, bytes, bytes], bool]
# Called as authenticator(server, session, envelope, mechanism, auth_data), the
# server being the SMTP instance.  Its type is Any, not "SMTP": the engine imports
# this module, and naming SMTP here would close an import circle.  Any accepts an
# authenticator annotated ``server: SMTP`` all the same.
AuthenticatorType = Callable[[Any, "Session", "Envelope", str, Any], AuthResult]


class Session:
    """What the server knows about one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.peer: PeerType = None
        self.ssl: dict[str, Any] | None = None
        self.host_name: str | None = None
        self.extended_smtp = False
        self.loop = loop
        # With proxy_protocol_timeout: the PROXY header the load balancer sent.
        self.proxy_data: ProxyData | None = None
        self.auth_data: Any = None
        self.authenticated: bool | None = None
        self._login_data: Any = None

    @property
    def login_data(self) -> Any:
        """Deprecated by aiosmtpd in favour of :attr:`auth_data` (kept for old handlers)."""
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value

    def __repr__(self) -> str:
        return (
            f"<Session peer={self.peer!r} host_name={self.host_name!r} "
            f"extended_smtp={self.extended_smtp} tls={self.ssl is not None} "
            f"authenticated={self.authenticated}>"
        )


# A recipient's DSN parameters (NOTIFY's conditions and ORCPT, each None if absent):
# the sans-I/O core's type, under the name this module has always given it.
RecipientDSN = RcptDSN


@dataclass(eq=False)
class Envelope:
    """One mail transaction: the sender, the recipients, and after DATA the content.

    ``mail_from`` is ``"<>"`` for the null sender (as aiosmtpd stores it);
    ``mail_options``/``rcpt_options`` hold the parameters upper-cased, as sent.
    ``content`` is bytes, or str when the server decodes data;
    ``original_content`` is always the received bytes (dot-unstuffed).
    """

    mail_from: str | None = None
    mail_options: list[str] = field(default_factory=list)
    smtp_utf8: bool = False
    content: bytes | str | None = None
    original_content: bytes | None = None
    rcpt_tos: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)
    # DSN (RFC 3461), with the server's ``dsn`` on: RET and ENVID from MAIL (ENVID
    # xtext-decoded), and per recipient address its NOTIFY and ORCPT when given.
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    rcpt_dsn: dict[str, RecipientDSN] = field(default_factory=dict)
    # BODY= from MAIL, upper-cased ("7BIT", "8BITMIME", "BINARYMIME"), or None.
    body_type: str | None = None
