"""Fixtures for the tests of smtpwire.server.testing (the test server, its inbox and
fault rules, the test CA) used directly, without the pytest plugin in between; the
plugin's fixtures are tested as a user would use them, with pytester, in
test_fixtures.py.

``pytester`` is enabled by ``pytest_plugins`` in test_fixtures.py, not here: pytest
refuses ``pytest_plugins`` in a conftest below the rootdir when the whole suite runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugin.helpers import StartServer
from smtpwire.server.testing import SMTPTestServer, TestCertificates, make_certificates


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """One test CA for these tests (the plugin's own is ``smtp_certificates``)."""
    return make_certificates(tmp_path_factory.mktemp("plugin-certificates"))


@pytest.fixture
def start_server(certificates: TestCertificates) -> Iterator[StartServer]:
    """``start_server(**SMTPTestServer_kwargs)``: a running test server, stopped when
    the test ends whatever happened in it.  TLS servers use :func:`certificates`."""
    started: list[SMTPTestServer] = []

    def start(**kwargs: object) -> SMTPTestServer:
        if kwargs.get("tls", "none") != "none":
            kwargs.setdefault("certificates", certificates)
        server = SMTPTestServer(**kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> SMTPTestServer:
    """A plaintext test server of its own for this test."""
    return start_server()
