"""Fixtures for the cross-tests (the scaffolding itself is in harness.py).

The trustme CA is made once per test session, and no certificate file is in the
repository; servers are started through ``start_server`` and stopped when the test
ends, whatever happened in it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from integration.harness import (
    Certificates,
    Inbox,
    Server,
    StartServer,
    TrackedLMTP,
    TrackedSMTP,
    make_certificates,
)
from smtpwire.server.smtp import SMTP


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server_context(certificates: Certificates) -> ssl.SSLContext:
    return certificates.server_context()


@pytest.fixture
def client_context(certificates: Certificates) -> ssl.SSLContext:
    return certificates.client_context()


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """``start_server(handler, host=, tls=, implicit=, lmtp=, protocol=, **SMTP_kwargs)``
    returns a running :class:`Server`: ``tls`` is the STARTTLS context, or with
    ``implicit=True`` the implicit-TLS one."""
    started: list[Server] = []

    def start(
        handler: Any,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        implicit: bool = False,
        lmtp: bool = False,
        protocol: type[SMTP] | None = None,
        **kwargs: Any,
    ) -> Server:
        if tls is not None:
            kwargs["ssl_context" if implicit else "tls_context"] = tls
        server = Server(
            handler,
            protocol=protocol or (TrackedLMTP if lmtp else TrackedSMTP),
            host=host,
            **kwargs,
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop(no_assert=True)


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """The ERROR records the server logs during the test (a crashed hook, a failed
    task), for a test to assert on."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.ERROR)
    logger = logging.getLogger("mail.log")
    logger.addHandler(keep)
    try:
        yield records
    finally:
        logger.removeHandler(keep)
