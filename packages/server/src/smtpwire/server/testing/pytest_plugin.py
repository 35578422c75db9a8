"""pytest fixtures for receiving mail in tests (registered through the ``pytest11``
entry point of smtpwire-server, so installing the package is enough).

``smtp_server`` (plaintext), ``smtp_server_starttls``, ``smtp_server_tls`` (implicit
TLS) and ``smtp_server_auth`` (STARTTLS, then AUTH PLAIN/LOGIN with one account) each
give an :class:`~smtpwire.server.testing.SMTPTestServer` whose inbox and fault rules
are empty when the test starts.  The server behind each runs for the scope set by the
``smtpwire_server_scope`` ini option (``session`` by default: one server, isolated
per test); ``smtp_server_factory`` starts servers set up otherwise, from a fixture of
any scope.  ``smtp_client_context`` is an ``SSLContext`` trusting the test CA.

``smtp_server`` is the one to configure: ini options (each overridden by an
environment variable) set its port, TLS mode and account, and every server's
address and name (see :mod:`smtpwire.server.testing._options` and docs/testing.md).
``smtpwire_web = true`` has the ``smtp_server*`` fixtures serve their inbox and
fault rules over HTTP too (``server.web_url``), for a sender in another process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._certs import TestCertificates, make_certificates
from ._options import PluginSettings, add_options, read_settings
from ._server import ListenError, SMTPTestServer, WebInboxUnavailable

SCOPE_OPTION = "smtpwire_server_scope"
_SCOPES = ("session", "package", "module", "class", "function")

ServerFactory = Callable[..., SMTPTestServer]
_SETTINGS = pytest.StashKey[PluginSettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        SCOPE_OPTION,
        "how long the servers behind smtp_server* fixtures live (session, package, "
        "module, class or function); their inbox and faults are emptied for every test",
        default="session",
    )
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    scope = _configured_scope(config)
    if scope not in _SCOPES:
        raise pytest.UsageError(f"{SCOPE_OPTION} must be one of {', '.join(_SCOPES)}: {scope!r}")
    config.stash[_SETTINGS] = read_settings(config)


def _settings(config: pytest.Config) -> PluginSettings:
    return config.stash.get(_SETTINGS, PluginSettings())


def _configured_scope(config: pytest.Config) -> str:
    return str(config.getini(SCOPE_OPTION)).strip() or "session"


def _server_scope(fixture_name: str, config: pytest.Config) -> Any:
    scope = _configured_scope(config)
    return scope if scope in _SCOPES else "session"  # pytest_configure reported it


@pytest.fixture(scope="session")
def smtp_certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A CA made for this test run and a certificate it issued for localhost,
    127.0.0.1 and ::1 (PEM files in a temporary directory)."""
    return make_certificates(Path(tmp_path_factory.mktemp("smtpwire-certificates")))


@pytest.fixture
def smtp_client_context(smtp_certificates: TestCertificates) -> Any:
    """A client ``ssl.SSLContext`` that trusts the test CA and checks host names."""
    return smtp_certificates.client_context()


@pytest.fixture(scope="session")
def smtp_server_factory(
    request: pytest.FixtureRequest,
) -> Iterator[ServerFactory]:
    """``smtp_server_factory(tls=..., auth=..., port=..., web=..., **smtp_kwargs)``
    starts a server (see :class:`~smtpwire.server.testing.SMTPTestServer`) on a free
    port, or on ``port``; those still running at the end of the session are stopped
    then.
    TLS servers share the session's test CA.  A port that is taken raises
    :class:`~smtpwire.server.testing.ListenError`."""
    started: list[SMTPTestServer] = []
    every_server = _settings(request.config).for_every_server()

    def start(*, _origin: str | None = None, **kwargs: Any) -> SMTPTestServer:
        kwargs = {**every_server, **kwargs}
        if kwargs.get("tls", "none") != "none":
            kwargs.setdefault("certificates", request.getfixturevalue("smtp_certificates"))
        if _origin is None and kwargs.get("port"):
            _origin = f"smtp_server_factory(port={kwargs['port']})"
        server = SMTPTestServer(**kwargs).start(origin=_origin)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _shared(factory: ServerFactory, **kwargs: Any) -> Iterator[SMTPTestServer]:
    failure: str | None = None
    try:
        server = factory(**kwargs)
    except (ListenError, WebInboxUnavailable) as error:
        failure = str(error)
    if failure is not None:  # outside the except block: one line, no chained traceback
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _isolated(server: SMTPTestServer) -> Iterator[SMTPTestServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope=_server_scope)
def _smtpwire_plain(
    smtp_server_factory: ServerFactory, request: pytest.FixtureRequest
) -> Iterator[SMTPTestServer]:
    settings = _settings(request.config)
    yield from _shared(
        smtp_server_factory, _origin=settings.listen_origin(), **settings.for_smtp_server()
    )


@pytest.fixture(scope=_server_scope)
def _smtpwire_starttls(
    smtp_server_factory: ServerFactory, request: pytest.FixtureRequest
) -> Iterator[SMTPTestServer]:
    web = _settings(request.config).for_fixtures()
    yield from _shared(smtp_server_factory, tls="starttls", **web)


@pytest.fixture(scope=_server_scope)
def _smtpwire_implicit(
    smtp_server_factory: ServerFactory, request: pytest.FixtureRequest
) -> Iterator[SMTPTestServer]:
    web = _settings(request.config).for_fixtures()
    yield from _shared(smtp_server_factory, tls="implicit", **web)


@pytest.fixture(scope=_server_scope)
def _smtpwire_auth(
    smtp_server_factory: ServerFactory, request: pytest.FixtureRequest
) -> Iterator[SMTPTestServer]:
    web = _settings(request.config).for_fixtures()
    yield from _shared(smtp_server_factory, tls="starttls", require_starttls=True, auth=True, **web)


@pytest.fixture
def smtp_server(_smtpwire_plain: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """A plaintext server with the modern ESMTP set, on 127.0.0.1."""
    yield from _isolated(_smtpwire_plain)


@pytest.fixture
def smtp_server_starttls(_smtpwire_starttls: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """A server offering STARTTLS with a certificate from the test CA."""
    yield from _isolated(_smtpwire_starttls)


@pytest.fixture
def smtp_server_tls(_smtpwire_implicit: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """A server speaking TLS from the first octet (implicit TLS, as on port 465)."""
    yield from _isolated(_smtpwire_implicit)


@pytest.fixture
def smtp_server_auth(_smtpwire_auth: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """A submission server: STARTTLS required, then AUTH PLAIN or LOGIN with
    ``server.username`` / ``server.password``."""
    yield from _isolated(_smtpwire_auth)
