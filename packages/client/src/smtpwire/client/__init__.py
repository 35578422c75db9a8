"""smtpwire.client: an asyncio SMTP client with the aiosmtplib public API.

``import smtpwire.client as aiosmtplib`` keeps aiosmtplib code running; beyond it
the client pipelines commands when the server allows (RFC 2920).
"""

from smtpwire.common.status import SMTPStatus

from .api import send
from .errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .response import SMTPResponse
from .smtp import SMTP
from .typing import SMTPTokenGenerator

__version__ = "0.1.0"

__all__ = [
    "SMTP",
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
    "SMTPResponse",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPStatus",
    "SMTPTimeoutError",
    "SMTPTokenGenerator",
    "send",
]
