"""The throw-away CA of the test servers.  Both ways of making it (the cryptography
package, the openssl command) give a chain that a default client context, trusting
only that CA, accepts for localhost, 127.0.0.1 and ::1 and refuses for any other
name; with neither available, CertificatesUnavailable says what to install.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from plugin.helpers import WAIT
from smtpwire.server.testing import (
    CertificatesUnavailable,
    SMTPTestServer,
    TestCertificates,
    _certs,
    make_certificates,
)

DAY = 24 * 3600


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _no_openssl(directory: Path) -> None:
    raise AssertionError("the openssl path was taken although cryptography is installed")


@pytest.fixture(scope="module", params=["cryptography", "openssl"])
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> TestCertificates:
    """Certificates made one way or the other, the other way made unavailable."""
    directory = tmp_path_factory.mktemp(f"certificates-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "cryptography":
            pytest.importorskip("cryptography")
            patch.setattr(_certs, "_make_with_openssl", _no_openssl)
        else:
            if shutil.which("openssl") is None:
                pytest.skip("no openssl command")
            no_cryptography = SimpleNamespace(find_spec=lambda name: None)
            patch.setattr(_certs, "importlib", SimpleNamespace(util=no_cryptography))
        return make_certificates(directory)


@pytest.fixture(scope="module")
def servers(generated: TestCertificates) -> Iterator[dict[str, SMTPTestServer]]:
    """Implicit-TLS servers with those certificates, on the IPv4 and IPv6 loopbacks."""
    started = {"127.0.0.1": SMTPTestServer(tls="implicit", certificates=generated).start()}
    try:
        if _ipv6_loopback():
            started["::1"] = SMTPTestServer(
                tls="implicit", certificates=generated, host="::1"
            ).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _handshake(server: SMTPTestServer, context: ssl.SSLContext, name: str) -> dict[str, object]:
    """TLS to ``server`` checking the certificate for ``name``; its greeting must follow.
    The server's certificate, as the client decoded it."""
    with (
        socket.create_connection(server.address, timeout=WAIT) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        assert tls.recv(1024).startswith(b"220 ")
        certificate = tls.getpeercert()
    assert certificate is not None
    return dict(certificate)


def test_the_files(generated: TestCertificates) -> None:
    for path in (generated.ca_file, generated.cert_file, generated.key_file):
        assert path.parent == generated.directory
        assert path.is_file()
    assert generated.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert generated.cert_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY-----" in generated.key_file.read_text()
    assert generated.ca_file.read_bytes() != generated.cert_file.read_bytes()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1"])
def test_a_default_client_context_accepts_the_loopback_names(
    generated: TestCertificates, servers: dict[str, SMTPTestServer], name: str
) -> None:
    host = "::1" if name == "::1" else "127.0.0.1"
    if host not in servers:
        pytest.skip("no IPv6 loopback")
    context = ssl.create_default_context(cafile=str(generated.ca_file))
    certificate = _handshake(servers[host], context, name)
    alternative_names = certificate["subjectAltName"]
    assert isinstance(alternative_names, tuple)
    assert ("DNS", "localhost") in alternative_names
    assert ("IP Address", "127.0.0.1") in alternative_names
    assert any(
        kind == "IP Address" and value in ("::1", "0:0:0:0:0:0:0:1")
        for kind, value in alternative_names
    )
    now = time.time()
    not_before = ssl.cert_time_to_seconds(str(certificate["notBefore"]))
    not_after = ssl.cert_time_to_seconds(str(certificate["notAfter"]))
    assert not_before <= now < not_after <= now + 2 * DAY  # throw-away: about a day


def test_the_client_context_checks_the_name(
    generated: TestCertificates, servers: dict[str, SMTPTestServer]
) -> None:
    context = generated.client_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    _handshake(servers["127.0.0.1"], context, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(servers["127.0.0.1"], context, "mail.example.com")


@pytest.mark.parametrize("name", ["mail.example.com", "127.0.0.2", "localhost.localdomain"])
def test_another_name_is_refused(
    generated: TestCertificates, servers: dict[str, SMTPTestServer], name: str
) -> None:
    context = ssl.create_default_context(cafile=str(generated.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(servers["127.0.0.1"], context, name)


def test_a_client_not_trusting_the_test_ca_refuses(
    servers: dict[str, SMTPTestServer], tmp_path: Path
) -> None:
    other_ca = make_certificates(tmp_path)  # another run's CA
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(servers["127.0.0.1"], other_ca.client_context(), "localhost")


@pytest.mark.skipif(not hasattr(ssl, "VERIFY_X509_STRICT"), reason="no strict X.509 checks")
def test_the_chain_passes_strict_x509_checks(
    generated: TestCertificates, servers: dict[str, SMTPTestServer]
) -> None:
    """What Python 3.13's default context demands on every version: the CA's key
    usage and basic constraints, key identifiers, and no trusting a leaf as a root."""
    context = ssl.create_default_context(cafile=str(generated.ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    _handshake(servers["127.0.0.1"], context, "localhost")
    context = ssl.create_default_context(cafile=str(generated.cert_file))  # the leaf only
    context.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(servers["127.0.0.1"], context, "localhost")


def test_neither_cryptography_nor_openssl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    looked_up: list[str] = []

    def find_spec(name: str) -> None:
        looked_up.append(name)

    monkeypatch.setattr(
        _certs, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=find_spec))
    )
    monkeypatch.setattr(_certs, "shutil", SimpleNamespace(which=lambda name: None))
    with pytest.raises(CertificatesUnavailable) as caught:
        make_certificates(tmp_path)
    assert looked_up == ["cryptography"]
    assert isinstance(caught.value, RuntimeError)
    assert "cryptography" in str(caught.value)
    assert "openssl" in str(caught.value)
    with pytest.raises(CertificatesUnavailable):
        SMTPTestServer(tls="starttls")  # a TLS server without certificates makes some
    SMTPTestServer()  # a plaintext one needs none
