"""Fixtures for the interop tests: the real peers (skipped where missing, failing
under CI, see :func:`interop.peers.require_tool`), a test CA, and smtpwire.server
controllers on free loopback ports, stopped after each test."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trustme

from interop.peers import SERVER_NAME, require_tool, run_peer, which_or
from smtpwire.server.controller import Controller


@pytest.fixture(scope="session")
def swaks() -> str:
    return require_tool(which_or("swaks", "/usr/bin/swaks"), "swaks")


@pytest.fixture(scope="session")
def swaks_with_tls(swaks: str) -> str:
    """swaks whose TLS works: it needs Net::SSLeay, which Debian packages apart."""
    support = run_peer([swaks, "--support"])
    lines = (support.stdout + support.stderr).splitlines()
    return require_tool(
        swaks,
        "libnet-ssleay-perl",
        works="=== TLS supported" in lines,
        why="swaks cannot do TLS: " + "; ".join(line for line in lines if "TLS" in line),
    )


@pytest.fixture(scope="session")
def smtp_source() -> str:
    return require_tool(which_or("smtp-source", "/usr/sbin/smtp-source"), "postfix")


@pytest.fixture(scope="session")
def smtp_sink() -> str:
    return require_tool(which_or("smtp-sink", "/usr/sbin/smtp-sink"), "postfix")


@pytest.fixture(scope="session")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(certificate_authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA's certificate as a PEM file, for peers that read files."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_tls_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_tls_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    """Verifies the server's certificate (chain and name) against the test CA only."""
    context = ssl.create_default_context()
    certificate_authority.configure_trust(context)
    return context


@pytest.fixture
def serve() -> Iterator[Callable[..., Controller]]:
    """``serve(handler, **SMTP_parameters)`` starts a Controller on 127.0.0.1, port
    0, and returns it (``.port`` is the port bound); every one is stopped after the
    test."""
    with ExitStack() as running:

        def start(handler: Any, **kwargs: Any) -> Controller:
            kwargs.setdefault("server_hostname", SERVER_NAME)
            controller = Controller(handler, hostname="127.0.0.1", port=0, **kwargs)
            controller.start()
            running.callback(controller.stop)
            return controller

        yield start
