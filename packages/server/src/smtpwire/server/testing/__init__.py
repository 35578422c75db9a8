"""Receiving mail in tests: a test SMTP server with an inbox to wait on, fault rules
to exercise a sender's error handling, and TLS with a throw-away CA.

The pytest plugin (:mod:`smtpwire.server.testing.pytest_plugin`, registered when the
package is installed) gives these as fixtures; the classes work without pytest too::

    with SMTPTestServer() as server:
        smtplib.SMTP(*server.address).sendmail("a@example.com", ["b@example.com"], "hi")
        [message] = server.inbox.wait_for(1)
"""

from ._certs import CertificatesUnavailable, TestCertificates, make_certificates
from ._faults import Drop, Fault, FaultRuleError, FaultRules
from ._inbox import Inbox, InboxTimeout, ReceivedMessage
from ._server import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    ListenError,
    SMTPTestServer,
    TestingObserver,
    TestingSMTP,
    TLSMode,
    WebInboxUnavailable,
)

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "CertificatesUnavailable",
    "Drop",
    "Fault",
    "FaultRuleError",
    "FaultRules",
    "Inbox",
    "InboxTimeout",
    "ListenError",
    "ReceivedMessage",
    "SMTPTestServer",
    "TLSMode",
    "TestCertificates",
    "TestingObserver",
    "TestingSMTP",
    "WebInboxUnavailable",
    "make_certificates",
]
