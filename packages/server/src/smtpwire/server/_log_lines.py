"""The server's log lines an operator reads: one line per mail transaction with
its outcome (Postfix's smtpd writes one such line per message), a failed TLS
handshake as one WARNING, commands shown as text.

Logger names are aiosmtpd's: ``mail.log`` for sessions (and these lines),
``mail.debug`` for the ready-made handlers.  A library does not decide where
logs go, so both get a :class:`logging.NullHandler`, installed by the package
itself (``smtpwire/server/__init__.py``) so that importing any of its modules
does it.  The command line configures logging itself
(:mod:`smtpwire.server._cli_logging`).
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

from . import _LOGGER_NAMES
from ._observing import sanitize  # the engine's masking rule, written once
from .session import Envelope, PeerType, Session

__all__ = [
    "LOGGER_NAMES",
    "TRANSACTION",
    "command_text",
    "describe_peer",
    "log_handshake_failure",
    "log_transaction",
    "transaction_facts",
]

log = logging.getLogger("mail.log")

#: The documented loggers (docs/server.md, "Logging"), each with a NullHandler.
LOGGER_NAMES = _LOGGER_NAMES

#: The attribute of a transaction line's log record that holds its fields, for
#: formatters (``--log-format json`` puts them in the JSON object).
TRANSACTION = "transaction"


def describe_peer(peer: PeerType) -> str:
    """``host:port`` (``[v6]:port``) for an IP peer, else the peer's repr (a
    Unix socket's path, or None before the connection is made)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return repr(peer)


def command_text(line: bytes) -> str:
    """A received command line for a log: text, not a ``b'...'`` repr, with the
    credentials of an AUTH line masked and anything unprintable (a bare CR, an
    escape sequence meant for the operator's terminal) escaped."""
    text = sanitize(line).rstrip(b"\r\n").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def log_handshake_failure(peer: PeerType, error: BaseException) -> None:
    """One line, never a traceback: a client that cannot do TLS (or a scanner)
    is the client's problem, and the server goes on.  A connection closed before
    or during the handshake (a TCP health check) is only INFO."""
    if isinstance(error, ConnectionError) or (
        isinstance(error, ssl.SSLEOFError) and "EOF" in str(error)
    ):
        log.info("%s TLS handshake: connection closed (%s)", describe_peer(peer), _reason(error))
        return
    log.warning("%s TLS handshake failed: %s", describe_peer(peer), _reason(error))


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason)
    text = str(error)
    return text if text else type(error).__name__


def transaction_facts(
    session: Session, envelope: Envelope, started: float | None
) -> dict[str, Any]:
    """What the transaction line reports, taken before the envelope is reset."""
    tls = None
    facts = session.ssl
    if facts:
        ssl_object = facts.get("ssl_object")
        version = ssl_object.version() if ssl_object is not None else None
        cipher = facts.get("cipher")
        tls = " ".join(part for part in (version, cipher[0] if cipher else None) if part)
    content = envelope.original_content
    if content is None and isinstance(envelope.content, (bytes, bytearray)):
        content = bytes(envelope.content)
    return {
        "peer": describe_peer(session.peer),
        "tls": tls or None,
        "auth": _auth_name(session),
        "sender": envelope.mail_from,
        "recipients": len(envelope.rcpt_tos),
        "size": None if content is None else len(content),
        "started": started,
    }


def _auth_name(session: Session) -> str | None:
    """The authenticated login (not a secret: Postfix logs it as sasl_username);
    never the password, and nothing from an authenticator's own result type."""
    if not session.authenticated:
        return None
    login = getattr(session.auth_data, "login", None)
    if isinstance(login, bytes):
        return login.decode("utf-8", "backslashreplace")
    return login if isinstance(login, str) else "yes"


def log_transaction(facts: dict[str, Any], status: Any) -> None:
    """The INFO line for a transaction that ended with ``status`` (the reply to
    the message's end; for LMTP, the first recipient's)."""
    text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
    code = text[:3]
    started = facts.pop("started", None)
    seconds = None if started is None else round(time.monotonic() - started, 3)
    fields = {**facts, "reply": int(code) if code.isdigit() else text, "seconds": seconds}
    log.info(
        "%s from=<%s> nrcpt=%d size=%s tls=%s auth=%s reply=%s time=%s",
        fields["peer"],
        fields["sender"] if fields["sender"] not in (None, "<>") else "",
        fields["recipients"],
        "-" if fields["size"] is None else fields["size"],
        "-" if fields["tls"] is None else fields["tls"].replace(" ", "/"),
        "-" if fields["auth"] is None else fields["auth"],
        fields["reply"],
        "-" if seconds is None else f"{seconds:.3f}s",
        extra={TRANSACTION: fields},
    )
