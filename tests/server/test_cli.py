"""The command line, run as a real process: ``python -m smtpwire.server``.

Each server listens on port 0 of a loopback address; the test learns the port
from the startup line on stderr, talks SMTP to it with smtplib, reads what the
handler printed on stdout, then stops it with a signal and checks that it
exits cleanly.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import mailbox
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from smtpwire.server import main as cli
from smtpwire.server._cli_serving import drop_privileges
from smtpwire.server.handlers import Sink
from support.cli import (
    MESSAGE,
    POSIX_ONLY,
    WAIT,
    ServerProcess,
    run_cli,
    server_process,
    write_certificate,
)


def local_port(smtp: smtplib.SMTP) -> int:
    assert smtp.sock is not None
    port: int = smtp.sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    return write_certificate(tmp_path_factory.mktemp("tls"))


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- serving and stopping ----------------------------------------------------------


@POSIX_ONLY
def test_default_handler_prints_messages_and_ctrl_c_stops_cleanly() -> None:
    with server_process() as server:
        [(host, port)] = server.addresses()
        assert host == "127.0.0.1"
        assert port != 0
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
            peer = ("127.0.0.1", local_port(smtp))
        assert server.message() == [
            "---------- MESSAGE FOLLOWS ----------",
            f"mail options: ['SIZE={len(MESSAGE)}']",
            "",
            "Subject: hello",
            "From: anne@example.com",
            f"X-Peer: {peer!r}",
            # The command line's Debugging shows the envelope (docs/server.md).
            "X-MailFrom: anne@example.com",
            "X-RcptTo: bart@example.com",
            "",
            "Hi Bart.",
            "------------ END MESSAGE ------------",
        ]
        status, stdout, stderr = server.stop(signal.SIGINT)
    assert status == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr


@POSIX_ONLY
def test_sigterm_closes_open_connections_and_exits_cleanly() -> None:
    with server_process() as server:
        [(host, port)] = server.addresses()
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            assert smtp.ehlo()[0] == 250
            status, _, stderr = server.stop(signal.SIGTERM)
            # The server told our idle session why, and closed it on its way out
            # (test_cli_deploy.py has more).
            assert smtp.getreply() == (421, b"4.3.2 Service shutting down, closing")
            with pytest.raises(smtplib.SMTPServerDisconnected):
                smtp.noop()
        finally:
            smtp.close()
    assert status == 0, stderr
    assert "Traceback" not in stderr


@POSIX_ONLY
def test_ctrl_c_with_a_message_in_progress() -> None:
    with server_process("--shutdown-grace", "1") as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.ehlo()
            smtp.mail("anne@example.com")
            smtp.rcpt("bart@example.com")
            assert smtp.docmd("DATA")[0] == 354
            assert smtp.sock is not None
            smtp.sock.sendall(b"Subject: half a message\r\n")
            status, stdout, stderr = server.stop(signal.SIGINT)
            # Still busy after the grace period: told so (test_cli_deploy.py has more).
            assert smtp.getreply() == (421, b"4.3.2 Service shutting down, closing")
    assert status == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr


@POSIX_ONLY
def test_listens_on_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server_process("-c", "smtpwire.server.handlers.Sink", listen="[::1]:0") as server:
        [(host, port)] = server.addresses()
        assert host == "::1"
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            assert smtp.noop() == (250, b"2.0.0 OK")  # the CLI's modern set by default
        status, _, stderr = server.stop()
    assert status == 0, stderr


def test_modern_extensions_by_default_and_classic_on_request() -> None:
    with server_process("-c", "smtpwire.server.handlers.Sink") as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.ehlo()
            for keyword in ("pipelining", "chunking", "binarymime", "dsn", "enhancedstatuscodes"):
                assert smtp.has_extn(keyword), keyword
            assert smtp.esmtp_features["limits"] == "RCPTMAX=1000"
        server.stop()
    with server_process("-c", "smtpwire.server.handlers.Sink", "--classic") as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            code, text = smtp.ehlo()
            assert code == 250
            # aiosmtpd's EHLO reply, keyword for keyword, and its texts.
            assert text.split(b"\n")[1:] == [b"SIZE 33554432", b"8BITMIME", b"HELP"]
            assert smtp.noop() == (250, b"OK")
        status, _, stderr = server.stop()
    assert status == 0, stderr


# -- handler selection ---------------------------------------------------------------


@POSIX_ONLY
def test_sink_handler() -> None:
    with server_process("-c", "smtpwire.server.handlers.Sink") as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        status, stdout, stderr = server.stop()
    assert status == 0, stderr
    assert stdout == ""


@POSIX_ONLY
def test_mailbox_handler(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with server_process("-c", "smtpwire.server.handlers.Mailbox", str(maildir)) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        # Delivered before the 250 reply: no waiting needed.
        [message] = list(mailbox.Maildir(maildir))
        assert message["Subject"] == "hello"
        assert message["X-MailFrom"] == "anne@example.com"
        status, _, stderr = server.stop()
    assert status == 0, stderr


@POSIX_ONLY
def test_debugging_to_stderr() -> None:
    with server_process("-c", "smtpwire.server.handlers.Debugging", "stderr") as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        status, stdout, stderr = server.stop()
    assert status == 0
    assert stdout == ""
    assert "---------- MESSAGE FOLLOWS ----------\n" in stderr
    assert "Subject: hello\n" in stderr


HANDLERS_MODULE = """
import sys


class Greeter:
    \"\"\"A user's handler with from_cli, importable from PYTHONPATH.\"\"\"

    def __init__(self, greeting):
        self.greeting = greeting

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("Greeter wants one word")
        return cls(args[0])

    async def handle_NOOP(self, server, session, envelope, arg):
        return "250 " + self.greeting


class BrokenEhlo:
    \"\"\"The SMTP class refuses this handler (a 3-argument EHLO hook).\"\"\"

    async def handle_EHLO(self, server, session, envelope):
        return "250 never"
"""


@pytest.fixture
def user_handlers(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "user_handlers.py").write_text(HANDLERS_MODULE)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@POSIX_ONLY
def test_a_users_handler_class_with_from_cli(user_handlers: dict[str, str]) -> None:
    with server_process("-c", "user_handlers.Greeter", "howdy", env=user_handlers) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            assert smtp.noop() == (250, b"2.0.0 howdy")
        status, _, stderr = server.stop()
    assert status == 0, stderr
    result = run_cli("-n", "-l", "127.0.0.1:0", "-c", "user_handlers.Greeter", env=user_handlers)
    assert result.returncode == 2
    assert "error: Greeter wants one word" in result.stderr


@POSIX_ONLY
def test_a_handler_the_smtp_class_refuses_is_logged(user_handlers: dict[str, str]) -> None:
    with server_process("-c", "user_handlers.BrokenEhlo", env=user_handlers) as server:
        [(host, port)] = server.addresses()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtplib.SMTP(host, port, timeout=WAIT)
        status, _, stderr = server.stop()
    assert status == 0
    # Not a silent hang-up: the reason is on stderr.
    assert "Cannot serve a new connection" in stderr
    assert "RuntimeError: Unsupported EHLO Hook" in stderr


# -- SMTP options ----------------------------------------------------------------------


@POSIX_ONLY
@pytest.mark.parametrize(
    ("args", "size", "smtputf8"),
    [
        ((), "33554432", True),  # the modern set, the CLI's default, includes SMTPUTF8
        (("--classic",), "33554432", False),
        (("--classic", "-s", "1000", "-u"), "1000", True),
        (("-s", "0"), None, True),
    ],
)
def test_size_and_smtputf8(args: tuple[str, ...], size: str | None, smtputf8: bool) -> None:
    with server_process("-c", "smtpwire.server.handlers.Sink", *args) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.ehlo()
            assert smtp.esmtp_features.get("size") == size
            assert smtp.has_extn("smtputf8") is smtputf8
            if size == "1000":
                with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                    smtp.sendmail("anne@example.com", ["bart@example.com"], b"x" * 2000)
                assert refused.value.smtp_code == 552
        status, _, _ = server.stop()
    assert status == 0


@POSIX_ONLY
def test_starttls_required(certificate: tuple[trustme.CA, Path, Path]) -> None:
    ca, cert, key = certificate
    with server_process("--tlscert", str(cert), "--tlskey", str(key)) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            assert smtp.docmd("MAIL FROM:<anne@example.com>") == (
                530,
                b"5.7.0 Must issue a STARTTLS command first",
            )
            smtp.starttls(context=client_context(ca))
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        assert "Subject: hello" in server.message()
        status, _, stderr = server.stop()
    assert status == 0, stderr


@POSIX_ONLY
def test_starttls_optional(certificate: tuple[trustme.CA, Path, Path]) -> None:
    _, cert, key = certificate
    args = ("-c", "smtpwire.server.handlers.Sink", "--no-requiretls")
    with server_process(*args, "--tlscert", str(cert), "--tlskey", str(key)) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        status, _, _ = server.stop()
    assert status == 0


@POSIX_ONLY
def test_smtps(certificate: tuple[trustme.CA, Path, Path]) -> None:
    ca, cert, key = certificate
    with server_process("--smtpscert", str(cert), "--smtpskey", str(key)) as server:
        [(host, port)] = server.addresses()
        context = client_context(ca)
        with smtplib.SMTP_SSL(host, port, timeout=WAIT, context=context) as smtp:
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        assert "Subject: hello" in server.message()
        status, _, stderr = server.stop()
    assert status == 0, stderr
    assert "Traceback" not in stderr


@POSIX_ONLY
def test_debug_logging_goes_to_stderr() -> None:
    with server_process("-dd", "-c", "smtpwire.server.handlers.Sink") as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.noop()
        status, _, stderr = server.stop()
    assert status == 0
    assert " mail.log " in stderr


# -- privileges ------------------------------------------------------------------------


@POSIX_ONLY
@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="needs root and /proc (Linux)"
)
def test_root_switches_to_nobody_after_binding() -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    server = ServerProcess("-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Sink")
    try:
        [(host, port)] = server.addresses()
        status_lines = Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
        ids = {line.split(":")[0]: line.split()[1:] for line in status_lines if ":" in line}
        assert ids["Uid"] == [str(nobody.pw_uid)] * 4
        assert ids["Gid"] == [str(nobody.pw_gid)] * 4
        assert ids["Groups"] == []
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        status, _, stderr = server.stop()
    finally:
        server.kill()
    assert status == 0, stderr
    assert "running as nobody" in stderr


@POSIX_ONLY
@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() != 0, reason="needs root")
def test_the_startup_line_of_a_root_started_server_names_the_version() -> None:
    """The version is looked up before the switch to nobody, who may not be able
    to read the installation's metadata (a Python under /root: "unknown")."""
    server = ServerProcess("-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Sink")
    try:
        line = server.startup_line()
        status, _, stderr = server.stop()
    finally:
        server.kill()
    assert status == 0, stderr
    release = importlib.metadata.version("smtpwire-server")
    assert line.startswith(f"smtpwire-server {release} listening on "), line
    assert "running as nobody" in line


def test_non_root_never_switches_user(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform == "win32":
        pytest.skip("no users to switch")

    def refuse(*args: object) -> None:
        raise AssertionError("tried to switch user")

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for name in ("setuid", "setgid", "setgroups"):
        monkeypatch.setattr(os, name, refuse)
    assert drop_privileges(argparse.ArgumentParser(), Sink()) is None


# -- usage -------------------------------------------------------------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"smtpwire-server {importlib.metadata.version('smtpwire-server')}\n"


def test_console_script() -> None:
    script = shutil.which("smtpwire-server", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the smtpwire-server script is not installed next to this Python")
    result = subprocess.run(  # noqa: S603 - the installed script, fixed arguments
        [script, "--version"], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("smtpwire-server ")


def test_help_documents_the_size_default() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "33,554,432" in result.stdout
    assert "aiosmtpd" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-c", "smtpwire.server.handlers.Sink", "x"), "Sink handler does not accept arguments"),
        (("-c", "smtpwire.server.handlers.Debugging", "x"), "Debugging usage: [stdout|stderr]"),
        (("-c", "smtpwire.server.handlers.Mailbox"), "The directory for the maildir is required"),
        (
            ("-c", "smtpwire.server.handlers.Mailbox", "a", "b"),
            "Too many arguments for Mailbox handler",
        ),
        (
            ("-c", "smtpwire.server.handlers.Queue", "x"),
            # aiosmtpd's text (it names the module, not the class).
            "Handler class smtpwire.server.handlers takes no arguments",
        ),
        (
            ("-c", "smtpwire.server.handlers.Message"),
            # Abstract: a TypeError's traceback, before.
            "Cannot use handler class smtpwire.server.handlers.Message: it is abstract "
            "(subclass it and implement handle_message)",
        ),
        (
            ("-c", "smtpwire.server.handlers.AsyncMessage"),
            "Cannot use handler class smtpwire.server.handlers.AsyncMessage: it is abstract "
            "(subclass it and implement handle_message)",
        ),
        (("-c", "no_such_module.Handler"), "Cannot import handler class no_such_module.Handler"),
        (("-c", "smtpwire.server.handlers.Nope"), "Cannot import handler class"),
        (("-c", "Handler"), "Invalid handler class path: Handler"),
        (("-l", ":abc"), "Invalid port number: abc"),
        (("-l", "127.0.0.1:65536"), "Invalid port number: 65536"),
        (("-l", "127.0.0.1:-1"), "Invalid port number: -1"),
        (("-l", "[::1"), "Invalid listen address: [::1"),
        (("-s", "-1"), "Invalid size: -1"),
        (("--error-limit", "0"), "--error-limit must be at least 1"),
        (("--max-connections", "0"), "--max-connections must be at least 1"),
        (("--rcpt-limit", "99"), "--rcpt-limit must be at least 100"),
        (("-s", "big"), "argument -s/--size: invalid int value: 'big'"),
        (("--smtpscert", "cert.pem"), "--smtpscert and --smtpskey must be specified together"),
        (("--smtpskey", "key.pem"), "--smtpscert and --smtpskey must be specified together"),
        (("--tlscert", "cert.pem"), "--tlscert and --tlskey must be specified together"),
        (("--tlskey", "key.pem"), "--tlscert and --tlskey must be specified together"),
        (
            ("--tlscert", "/nonexistent/c", "--tlskey", "/nonexistent/k"),
            "Cert file /nonexistent/c not found",
        ),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    # A later -l wins, so the cases that test -l override the safe default.
    result = run_cli("-n", "-l", "127.0.0.1:0", *args)
    assert result.returncode == 2, result.stderr
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: ")
    [line] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert message in line
    assert result.stdout == ""


def test_certificate_errors(
    certificate: tuple[trustme.CA, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, cert, key = certificate
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    smtps = ("--smtpscert", str(cert), "--smtpskey", str(key))
    starttls = ("--tlscert", str(cert), "--tlskey", str(key))
    cases = [
        (("--tlscert", str(cert), "--tlskey", str(missing)), f"Key file {missing} not found"),
        (("--smtpscert", str(missing), "--smtpskey", str(key)), f"Cert file {missing} not found"),
        (("--smtpscert", str(garbage), "--smtpskey", str(key)), "Cannot load certificate"),
        (("--tlscert", str(cert), "--tlskey", str(garbage)), "Cannot load certificate"),
        (
            (*smtps, *starttls),
            "--smtpscert and --tlscert cannot be used together",
        ),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.parseargs(["-n", "-l", "127.0.0.1:0", *args])
        assert exit_info.value.code == 2
        assert f"error: {message}" in capsys.readouterr().err


def test_address_in_use_is_reported_without_traceback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("-n", "-l", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        (None, ("localhost", 8025)),
        ("", ("localhost", 8025)),
        (":9025", ("localhost", 9025)),
        ("example.org", ("example.org", 8025)),
        ("example.org:0", ("example.org", 0)),
        ("[::1]:25", ("::1", 25)),
        ("[::1]", ("::1", 8025)),
        ("::1", ("::1", 8025)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),  # noqa: S104 - parsed, never bound
    ],
)
def test_listen_argument(listen: str | None, expected: tuple[str, int]) -> None:
    args = ["-l", listen] if listen is not None else []
    _, options = cli.parseargs(args)
    assert (options.host, options.port) == expected


def test_defaults() -> None:
    _, options = cli.parseargs([])
    assert options.size == 33554432
    assert options.smtputf8 is False
    assert options.setuid is True
    assert options.classpath == "smtpwire.server.handlers.Debugging"
    assert options.ssl_context is None
    assert options.tls_context is None
