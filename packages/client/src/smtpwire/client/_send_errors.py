"""``smtpwire-send``'s exit statuses, and the client's exceptions mapped to them.

A script branches on the status (retry later on 3, fix the credentials on 4,
clean the list on 5), so each cause has its own, documented in docs/sender.md.
The mapping depends on the step that failed: an ``SMTPException`` while
connecting is a connection problem, the same class while logging in is an
authentication problem.
"""

from __future__ import annotations

import enum
import os
import ssl

from .errors import (
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .response import SMTPResponse

__all__ = ["ExitStatus", "SendFailure", "auth_failure", "connect_failure", "send_failure"]


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything else: EHLO refused, an unexpected reply
    USAGE = 2
    CONNECTION = 3  # connecting, the greeting, TLS, or the connection lost or timed out
    AUTHENTICATION = 4
    RECIPIENT_REFUSED = 5  # at least one recipient refused (the others may have it)
    MESSAGE_REFUSED = 6  # MAIL FROM, DATA or the message itself refused
    UNSUPPORTED = 7  # the server lacks what --pipelining/--bdat/--smtputf8 require


class SendFailure(Exception):
    """A failed step, as the one line printed and the exit status."""

    def __init__(self, status: ExitStatus, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


_LOST = (SMTPServerDisconnected, SMTPTimeoutError, ssl.SSLError, OSError)


def connect_failure(error: Exception, where: str) -> SendFailure:
    # The client wraps the OS's or TLS's error in its own, repeating the address.
    if isinstance(error, SMTPConnectError) and isinstance(error.__cause__, OSError):
        error = error.__cause__
    if isinstance(error, SMTPHeloError):
        return SendFailure(ExitStatus.ERROR, f"{where}: EHLO refused: {_reply(error)}")
    if isinstance(error, ssl.SSLError):
        return SendFailure(ExitStatus.CONNECTION, f"{where}: TLS failed: {_ssl_text(error)}")
    if isinstance(error, SMTPResponseException):
        return SendFailure(ExitStatus.CONNECTION, f"{where}: refused: {_reply(error)}")
    if isinstance(error, OSError) and error.errno is not None:
        text = os.strerror(error.errno)
        return SendFailure(ExitStatus.CONNECTION, f"cannot connect to {where}: {text}")
    if isinstance(error, (SMTPException, OSError)):
        return SendFailure(ExitStatus.CONNECTION, f"{where}: {_text(error)}")
    if isinstance(error, ValueError):
        return SendFailure(ExitStatus.USAGE, str(error))
    return SendFailure(ExitStatus.ERROR, f"{where}: {_text(error)}")


def auth_failure(error: Exception) -> SendFailure:
    if isinstance(error, _LOST):
        return lost(error)
    if isinstance(error, SMTPResponseException):
        return SendFailure(ExitStatus.AUTHENTICATION, f"authentication failed: {_reply(error)}")
    if isinstance(error, ValueError):
        return SendFailure(ExitStatus.USAGE, str(error))
    return SendFailure(ExitStatus.AUTHENTICATION, f"authentication failed: {_text(error)}")


def send_failure(error: Exception) -> SendFailure:
    if isinstance(error, SMTPRecipientsRefused):
        refused = {e.recipient: SMTPResponse(e.code, e.message) for e in error.recipients}
        return refused_recipients(refused, every=True)
    if isinstance(error, SMTPSenderRefused):
        return SendFailure(ExitStatus.MESSAGE_REFUSED, f"sender refused: {_reply(error)}")
    if isinstance(error, SMTPDataError):
        return SendFailure(ExitStatus.MESSAGE_REFUSED, f"message refused: {_reply(error)}")
    if isinstance(error, SMTPNotSupported):
        return SendFailure(ExitStatus.UNSUPPORTED, _text(error))
    if isinstance(error, _LOST):
        return lost(error)
    if isinstance(error, SMTPResponseException):
        return SendFailure(ExitStatus.MESSAGE_REFUSED, f"refused: {_reply(error)}")
    if isinstance(error, ValueError):
        return SendFailure(ExitStatus.USAGE, str(error))
    return SendFailure(ExitStatus.ERROR, _text(error))


def refused_recipients(refused: dict[str, SMTPResponse], *, every: bool = False) -> SendFailure:
    """All refusals on one line: ``recipient refused: a@x (550 ...), b@y (...)``."""
    listed = ", ".join(f"{address} ({r.code} {r.message})" for address, r in refused.items())
    subject = "every recipient refused" if every else "recipient refused"
    return SendFailure(ExitStatus.RECIPIENT_REFUSED, f"{subject}: {listed}")


def lost(error: Exception) -> SendFailure:
    return SendFailure(ExitStatus.CONNECTION, f"connection failed: {_text(error)}")


def _reply(error: SMTPResponseException) -> str:
    return f"{error.code} {error.message}"


def _text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())  # one line, whatever the server or the OS said


def _ssl_text(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    return _text(error)
