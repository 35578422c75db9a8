"""A throw-away certificate authority and a server certificate for the loopback
names, made in a temporary directory for a test run: no certificate in the repo.

Made with the ``cryptography`` package when it is installed, otherwise with the
``openssl`` command; with neither, :class:`CertificatesUnavailable` says what to
install.  Both give ECDSA P-256 keys and certificates valid for one day.
"""

from __future__ import annotations

import datetime
import importlib.util
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["LOOPBACK_NAMES", "CertificatesUnavailable", "TestCertificates", "make_certificates"]

LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")
_VALID_FOR: Final = datetime.timedelta(days=1)
_OPENSSL_TIMEOUT: Final = 30.0


class CertificatesUnavailable(RuntimeError):
    """Neither ``cryptography`` nor ``openssl`` is there to make the test certificates."""


@dataclass(frozen=True)
class TestCertificates:
    """PEM files of a test CA and of a server certificate it issued."""

    __test__ = False  # not a test class, whatever pytest's naming rules say

    directory: Path
    ca_file: Path  # the CA certificate: what a client must trust
    cert_file: Path  # the server's certificate (for LOOPBACK_NAMES)
    key_file: Path  # the server's private key

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server's certificate and name against the test CA, as an
        application's context would against the public ones."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certificates(directory: Path | None = None) -> TestCertificates:
    target = Path(tempfile.mkdtemp(prefix="smtpwire-certs-")) if directory is None else directory
    if importlib.util.find_spec("cryptography") is not None:
        # Imported only here: cryptography is an optional dependency.
        from ._certs_cryptography import make_with_cryptography  # noqa: PLC0415

        make_with_cryptography(target, valid_for=_VALID_FOR)
    elif shutil.which("openssl") is not None:
        _make_with_openssl(target)
    else:
        raise CertificatesUnavailable(
            "TLS test servers need certificates: install the 'cryptography' package "
            "(pip install 'smtpwire-server[tls]') or the openssl command"
        )
    return TestCertificates(
        target, target / "ca.pem", target / "server.pem", target / "server-key.pem"
    )


def _make_with_openssl(directory: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["openssl", *args],  # noqa: S607 - found on PATH on purpose
            cwd=directory, check=True, capture_output=True, timeout=_OPENSSL_TIMEOUT,
        )  # fmt: skip

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *curve, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=smtpwire test CA",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    openssl(
        "req", "-new", *curve, "-keyout", "server-key.pem", "-out", "server.csr",
        "-subj", "/CN=localhost",
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-sha256",
        "-extfile", "server.ext",
    )  # fmt: skip
