"""The exceptions, with aiosmtplib's names, bases and attributes.

Code written for aiosmtplib catches these by name (``except SMTPRecipientsRefused``)
and reads ``.code``, ``.message``, ``.sender``, ``.recipient``, ``.recipients``;
the hierarchy is therefore aiosmtplib's, down to the ``ConnectionError`` and
``TimeoutError`` bases that let generic handlers catch them too.
"""

from __future__ import annotations

import asyncio
import sys

__all__ = [
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPConnectResponseError",
    "SMTPConnectTimeoutError",
    "SMTPDataError",
    "SMTPException",
    "SMTPHeloError",
    "SMTPNotSupported",
    "SMTPReadTimeoutError",
    "SMTPRecipientRefused",
    "SMTPRecipientsRefused",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTimeoutError",
]


class SMTPException(Exception):
    """Base of every error this client raises."""

    def __init__(self, message: str, /) -> None:
        super().__init__(message)
        self.message = message


class SMTPServerDisconnected(SMTPException, ConnectionError):
    """The connection is closed (or was never opened)."""


class SMTPConnectError(SMTPException, ConnectionError):
    """The connection could not be opened."""


if sys.version_info >= (3, 11):

    class SMTPTimeoutError(SMTPException, asyncio.TimeoutError):
        """An operation took longer than its timeout; the connection is closed."""

else:

    class SMTPTimeoutError(SMTPException, asyncio.TimeoutError, TimeoutError):
        """An operation took longer than its timeout; the connection is closed.

        On Python 3.10 asyncio's TimeoutError is not the built-in one; being both
        lets ``except TimeoutError`` catch it on every version."""


class SMTPConnectTimeoutError(SMTPTimeoutError, SMTPConnectError):
    """Connecting, or waiting for the greeting, timed out."""


class SMTPReadTimeoutError(SMTPTimeoutError):
    """The server's reply did not arrive in time."""


class SMTPNotSupported(SMTPException):
    """The server lacks an extension the operation needs."""


class SMTPResponseException(SMTPException):
    """The server answered with an error code."""

    def __init__(self, code: int, message: str, /) -> None:
        SMTPException.__init__(self, message)
        self.code = code
        self.args = (code, message)


class SMTPConnectResponseError(SMTPResponseException, SMTPConnectError):
    """The greeting was not ``220``."""


class SMTPHeloError(SMTPResponseException):
    """EHLO/HELO was refused."""


class SMTPDataError(SMTPResponseException):
    """DATA, or the message sent after it, was refused."""


class SMTPAuthenticationError(SMTPResponseException):
    """Authentication failed."""


class SMTPSenderRefused(SMTPResponseException):
    """MAIL FROM was refused; ``sender`` says for which address."""

    def __init__(self, code: int, message: str, sender: str, /) -> None:
        super().__init__(code, message)
        self.sender = sender
        self.args = (code, message, sender)


class SMTPRecipientRefused(SMTPResponseException):
    """RCPT TO was refused for ``recipient``."""

    def __init__(self, code: int, message: str, recipient: str, /) -> None:
        super().__init__(code, message)
        self.recipient = recipient
        self.args = (code, message, recipient)


class SMTPRecipientsRefused(SMTPException):
    """Every recipient was refused; ``recipients`` lists each refusal."""

    def __init__(self, recipients: list[SMTPRecipientRefused], /) -> None:
        SMTPException.__init__(self, str(recipients))
        self.recipients = recipients
        self.args = (recipients,)
