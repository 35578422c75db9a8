"""What goes wrong while the command line serves, run as a real process: a handler
that raises, a TLS handshake that fails.  The client sees a bare reply (modern
mode) or aiosmtpd's text (``--classic``); the operator sees the traceback, or, for
a handshake, one WARNING line naming the peer and the reason, on stderr.

tests/server/test_logging.py checks the same through a Controller; these check
what the command line configures (its logging, its TLS contexts and sessions).
"""

from __future__ import annotations

import signal
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from support.cli import (
    MESSAGE,
    POSIX_ONLY,
    WAIT,
    CommandProcess,
    ServerProcess,
    python_m,
    write_certificate,
)

pytestmark = POSIX_ONLY

SPOOL_PATH = "/srv/secret/spool/tmp/1234"

FAILING_HANDLER = f"""
class Failing:
    async def handle_DATA(self, server, session, envelope):
        raise OSError("cannot write {SPOOL_PATH}")
"""


class InDirectory(CommandProcess):
    """``python -m smtpwire.server -n -l 127.0.0.1:0 ...`` run in ``cwd``, where
    ``-c module.Class`` finds the test's handler module."""

    def __init__(self, cwd: Path, *args: str) -> None:
        super().__init__(python_m("-n", "-l", "127.0.0.1:0", *args), cwd=cwd)

    def stderr_line(self, text: str) -> str:
        """The next line on stderr that contains ``text`` (a bounded wait)."""
        while True:
            line = self._next(self.stderr)
            self.stderr_seen.append(line)
            if text in line:
                return line


def stopped(server: ServerProcess) -> tuple[int, str, str]:
    try:
        return server.stop(signal.SIGTERM)
    finally:
        server.kill()


# -- a handler that raises -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        ((), (451, b"4.3.0 Error: internal server error")),
        (("--classic",), (500, f"Error: (OSError) cannot write {SPOOL_PATH}".encode())),
    ],
    ids=["modern", "classic"],
)
def test_a_failing_handler(tmp_path: Path, args: tuple[str, ...], reply: tuple[int, bytes]) -> None:
    (tmp_path / "failing.py").write_text(FAILING_HANDLER)
    server = InDirectory(tmp_path, "-c", "failing.Failing", *args)
    try:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.ehlo()
            assert smtp.mail("anne@example.com")[0] == 250
            assert smtp.rcpt("bart@example.com")[0] == 250
            answered = smtp.data(MESSAGE)
            assert smtp.noop()[0] == 250  # the session goes on
        # The operator's side, read before the stop.
        logged = server.stderr_line(" SMTP session exception")
        assert " mail.log ERROR " in logged
    finally:
        status, stdout, stderr = stopped(server)
    assert answered == reply
    if not args:  # modern: neither the exception's text nor the path reaches the client
        assert b"OSError" not in answered[1]
        assert b"cannot write" not in answered[1]
        assert SPOOL_PATH.encode() not in answered[1]
    assert status == 0, stderr
    assert stdout == ""
    # The whole story, once, after the ERROR line.
    traceback = stderr.partition(logged)[2]
    assert traceback.startswith("Traceback (most recent call last):\n"), stderr
    assert stderr.count("Traceback (most recent call last):") == 1, stderr
    assert f'raise OSError("cannot write {SPOOL_PATH}")' in traceback
    assert f"OSError: cannot write {SPOOL_PATH}\n" in traceback


# -- a failed TLS handshake ----------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    return write_certificate(tmp_path_factory.mktemp("tls"))


def send_garbage(sock: socket.socket) -> None:
    """Plain text where the ClientHello should be."""
    sock.sendall(b"EHLO plain text where TLS was expected\r\n" * 4)
    read_to_the_end(sock)


def refuse_the_certificate(sock: socket.socket) -> None:
    """A TLS client that does not trust the test CA: it ends the handshake with an
    alert (unknown CA)."""
    context = ssl.create_default_context()  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(sock, server_hostname="localhost")


def read_to_the_end(sock: socket.socket) -> None:
    """Until the server closes (what it sends, a TLS alert, is not read)."""
    while True:
        try:
            if not sock.recv(4096):
                return
        except ConnectionResetError:
            return


def starttls(sock: socket.socket) -> None:
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    sock.sendall(b"EHLO client.example\r\n")
    while not reader.readline().startswith(b"250 "):
        pass
    sock.sendall(b"STARTTLS\r\n")
    assert reader.readline().startswith(b"220 ")


CLIENTS = [send_garbage, refuse_the_certificate]


@pytest.mark.parametrize("client", CLIENTS, ids=["garbage", "refused certificate"])
@pytest.mark.parametrize("mode", ["implicit TLS", "STARTTLS"])
def test_a_failed_tls_handshake_is_one_warning(
    tmp_path: Path,
    certificate: tuple[trustme.CA, Path, Path],
    mode: str,
    client: Callable[[socket.socket], None],
) -> None:
    _, cert, key = certificate
    flags = ("--smtpscert", "--smtpskey") if mode == "implicit TLS" else ("--tlscert", "--tlskey")
    server = InDirectory(tmp_path, flags[0], str(cert), flags[1], str(key))
    try:
        [(host, port)] = server.addresses()
        with socket.create_connection((host, port), timeout=WAIT) as sock:
            client_port = sock.getsockname()[1]
            if mode == "STARTTLS":
                starttls(sock)
            client(sock)
        # Read before stopping the server, so that the stop cannot be what ended
        # the session.
        server.stderr_line("TLS handshake")
    finally:
        status, _, stderr = stopped(server)
    assert status == 0, stderr
    assert "Traceback" not in stderr
    [warning] = [text for text in stderr.splitlines() if "TLS handshake" in text]
    assert " mail.log WARNING " in warning
    assert f" 127.0.0.1:{client_port} TLS handshake failed: " in warning
    reason = warning.partition("TLS handshake failed: ")[2]
    assert reason.strip()
