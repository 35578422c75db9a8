"""``smtpwire-send`` (issue 16) run as a real process, ``python -m smtpwire.client
send ...``, against smtpwire.server on a loopback port 0: what arrives, the exit
status of each kind of failure, and what is printed (one line per error, a
transcript with -v that never shows a secret)."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme

from smtpwire.client._send_cli import main
from smtpwire.client._send_errors import ExitStatus
from smtpwire.client._send_options import build_parser, split_server
from smtpwire.client._send_output import Output
from smtpwire.server.controller import Controller
from smtpwire.server.lmtp import LMTP as ServerLMTP
from smtpwire.server.smtp import SMTP as ServerSMTP
from smtpwire.server.smtp import AuthResult, LoginPassword
from support.client_harness import HOST, UTF8_ADDRESS, SilentServer, Sink, free_port, smtp_server
from support.server import ServerThread, serving

WAIT = 60.0  # bound on each child process
PASSWORD = "s3cr3t-pw"  # noqa: S105 - a test credential
ENVELOPE = ("--from", "anne@example.com", "--to", "bart@example.com")


def run_send(
    *arguments: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    environment.pop("SMTPWIRE_PASSWORD", None)  # only what a test gives
    environment.update(env or {})
    completed = subprocess.run(  # noqa: S603 - this interpreter, fixed module
        [sys.executable, "-m", "smtpwire.client", "send", *arguments],
        input=stdin,
        capture_output=True,
        timeout=WAIT,
        check=False,
        env=environment,
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8"),
        completed.stderr.decode("utf-8"),
    )


def at(server: ServerThread | Controller) -> tuple[str, str]:
    return ("--server", f"127.0.0.1:{server.port}")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, checked to be one line and no traceback."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("smtpwire-send: ")
    return lines[0]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def parsed(content: bytes) -> EmailMessage:
    # As received over SMTP, with CRLF line ends; a mail reader's view has LF.
    message = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


# --- TLS and AUTH servers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class Authenticator:
    """Accepts "anne" with PASSWORD; records the mechanisms used."""

    def __init__(self) -> None:
        self.mechanisms: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.mechanisms.append(mechanism)
        if auth_data == (b"anne", PASSWORD.encode()):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


@pytest.fixture
def smtps(server_context: ssl.SSLContext, sink: Sink) -> Iterator[Controller]:
    controller = Controller(
        sink, hostname="127.0.0.1", port=0, ssl_context=server_context, server_hostname=HOST
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


# --- plain sending -------------------------------------------------------------------------------


def test_plain_message_is_built_and_delivered(server: ServerThread, sink: Sink) -> None:
    result = run_send(
        *at(server), *ENVELOPE, "--to", "carl@example.com", "--cc", "dora@example.com",
        "--bcc", "eve@example.com", "--subject", "Hello", "--body", "Hi there.",
        "--header", "X-Test: yes", "--no-tls",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sent: OK\n"
    assert result.stderr == ""
    [(sender, recipients, content)] = sink.messages
    assert sender == "anne@example.com"
    assert recipients == [
        "bart@example.com", "carl@example.com", "dora@example.com", "eve@example.com",
    ]  # fmt: skip
    message = parsed(content)
    assert message["Subject"] == "Hello"
    assert message["To"] == "bart@example.com, carl@example.com"
    assert message["Cc"] == "dora@example.com"
    assert message["Bcc"] is None  # envelope only
    assert message["X-Test"] == "yes"
    assert message["Message-ID"] is not None
    assert message.get_content() == "Hi there.\n"


def test_an_empty_from_is_the_null_sender(server: ServerThread, sink: Sink) -> None:
    result = run_send(*at(server), "--from", "", "--to", "bart@example.com", "--no-tls", "-v")
    assert result.returncode == 0, result.stderr
    assert "C: MAIL FROM:<> " in result.stdout
    [(sender, recipients, _)] = sink.messages
    assert (sender, recipients) == ("<>", ["bart@example.com"])


def test_raw_data_from_a_file_and_from_stdin(
    server: ServerThread, sink: Sink, tmp_path: Path
) -> None:
    raw = b"Subject: raw\r\nFrom: anne@example.com\r\n\r\nAs given.\r\n"
    path = tmp_path / "message.eml"
    path.write_bytes(raw)
    assert run_send(*at(server), *ENVELOPE, "--data", str(path)).returncode == 0
    result = run_send(*at(server), *ENVELOPE, "--header", "X-Extra: 1", "-", stdin=raw)
    assert result.returncode == 0, result.stderr
    assert [content for _, _, content in sink.messages] == [raw, b"X-Extra: 1\r\n" + raw]


def test_attachments_and_html_arrive_as_mime_parts(
    server: ServerThread, sink: Sink, tmp_path: Path
) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 not really\x00\xff")
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\n")
    page = tmp_path / "page.html"
    page.write_text("<p>Hi</p>\n")
    result = run_send(
        *at(server), *ENVELOPE, "--body", "See attached.", "--html", str(page),
        "--attach", str(report), "--attach", str(notes),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    message = parsed(sink.messages[0][2])
    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(("html", "plain"))
    assert body is not None
    assert body.get_content() == "<p>Hi</p>\n"
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert set(attachments) == {"report.pdf", "notes.txt"}
    assert attachments["report.pdf"].get_content_type() == "application/pdf"
    assert attachments["report.pdf"].get_content() == b"%PDF-1.4 not really\x00\xff"
    assert attachments["notes.txt"].get_content_type() == "text/plain"
    assert attachments["notes.txt"].get_content() == "line one\n"


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_server_address(sink: Sink) -> None:
    with serving(lambda: ServerSMTP(sink, hostname=HOST), host="::1") as server:
        result = run_send("--server", f"[::1]:{server.port}", *ENVELOPE, "-v")
    assert result.returncode == 0, result.stderr
    assert f"=== Connecting to [::1]:{server.port}" in result.stdout
    assert len(sink.messages) == 1


def test_lmtp(sink: Sink) -> None:
    with smtp_server(sink, cls=ServerLMTP) as server:
        result = run_send(*at(server), "--lmtp", *ENVELOPE, "--to", "nobody@example.com", "-v")
    assert result.returncode == ExitStatus.RECIPIENT_REFUSED
    assert "C: LHLO " in result.stdout
    assert "nobody@example.com" in one_error_line(result)
    assert [recipients for _, recipients, _ in sink.messages] == [["bart@example.com"]]


def test_smtputf8(sink: Sink) -> None:
    with smtp_server(sink, enable_SMTPUTF8=True) as server:
        result = run_send(
            *at(server), "--from", "anne@example.com", "--to", UTF8_ADDRESS, "--smtputf8",
            "--subject", "Gr\u00fc\u00dfe",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [(_, recipients, content)] = sink.messages
    assert recipients == [UTF8_ADDRESS]
    assert parsed(content)["Subject"] == "Gr\u00fc\u00dfe"


def test_smtputf8_required_but_not_offered(server: ServerThread, sink: Sink) -> None:
    result = run_send(*at(server), *ENVELOPE, "--smtputf8")
    assert result.returncode == ExitStatus.UNSUPPORTED
    assert "SMTPUTF8" in one_error_line(result)
    assert sink.messages == []


def test_bdat_and_pipelining(sink: Sink) -> None:
    with smtp_server(sink, pipelining=True, chunking=True) as server:
        result = run_send(*at(server), *ENVELOPE, "--bdat", "--pipelining", "-v")
    assert result.returncode == 0, result.stderr
    assert "C: BDAT " in result.stdout
    assert len(sink.messages) == 1


def test_no_pipelining_sends_one_command_at_a_time(sink: Sink) -> None:
    with smtp_server(sink, pipelining=True) as server:
        result = run_send(*at(server), *ENVELOPE, "--no-pipelining", "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    mail = next(i for i, line in enumerate(lines) if line.startswith("C: MAIL FROM"))
    assert lines[mail + 1].startswith("S: 250")  # answered before RCPT is written


# --- refusals and failures -----------------------------------------------------------------------


def test_a_refused_recipient(server: ServerThread, sink: Sink) -> None:
    result = run_send(*at(server), *ENVELOPE, "--to", "nobody@example.com")
    assert result.returncode == ExitStatus.RECIPIENT_REFUSED == 5
    line = one_error_line(result)
    assert line == "smtpwire-send: recipient refused: nobody@example.com (550 5.1.1 No such user)"
    assert [recipients for _, recipients, _ in sink.messages] == [["bart@example.com"]]


def test_every_recipient_refused(server: ServerThread, sink: Sink) -> None:
    result = run_send(*at(server), "--from", "anne@example.com", "--to", "nobody@example.com")
    assert result.returncode == ExitStatus.RECIPIENT_REFUSED
    assert "every recipient refused" in one_error_line(result)
    assert sink.messages == []


def test_a_refused_message_and_sender(server: ServerThread, sink: Sink) -> None:
    refused = run_send(*at(server), *ENVELOPE, "--body", "REJECT-ME")
    assert refused.returncode == ExitStatus.MESSAGE_REFUSED == 6
    assert "554 5.6.0 Message refused" in one_error_line(refused)
    sender = run_send(*at(server), "--from", "refused@example.com", "--to", "bart@example.com")
    assert sender.returncode == ExitStatus.MESSAGE_REFUSED
    assert "sender refused: 553" in one_error_line(sender)
    assert sink.messages == []


def test_connection_refused_is_one_line() -> None:
    port = free_port()
    result = run_send("--server", f"127.0.0.1:{port}", *ENVELOPE)
    assert result.returncode == ExitStatus.CONNECTION == 3
    assert result.stdout == ""
    assert one_error_line(result) == (
        f"smtpwire-send: cannot connect to 127.0.0.1:{port}: Connection refused"
    )


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ((), "--from"),
        (("--from", "a@example.com"), "no recipient"),
        ((*ENVELOPE, "--server", "[::1"), "[IPV6]:PORT"),
        ((*ENVELOPE, "--server", "host:99999"), "port"),
        ((*ENVELOPE, "--to", "x@y> NOTIFY=NEVER"), "--to"),
        ((*ENVELOPE, "--attach", "/nonexistent/file"), "--attach"),
        ((*ENVELOPE, "--auth", "DIGEST-MD5", "--user", "u", "--password", "p"), "--auth"),
        ((*ENVELOPE, "--user", "anne"), "no password"),
        ((*ENVELOPE, "--header", "no colon"), "--header"),
        ((*ENVELOPE, "--count", "0"), "--count"),
        ((*ENVELOPE, "--tls", "--no-tls"), "not allowed with"),
    ],
)
def test_usage_errors(arguments: tuple[str, ...], complaint: str) -> None:
    result = run_send("--server", f"127.0.0.1:{free_port()}", *arguments)
    assert result.returncode == ExitStatus.USAGE == 2
    line = one_error_line(result)
    assert "usage error" in line
    assert complaint in line


def test_quiet_prints_nothing(server: ServerThread, sink: Sink) -> None:
    ok = run_send(*at(server), *ENVELOPE, "-q")
    refused = run_send(*at(server), *ENVELOPE, "--to", "nobody@example.com", "-q")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    assert (refused.returncode, refused.stdout, refused.stderr) == (5, "", "")
    assert len(sink.messages) == 2


# --- TLS ----------------------------------------------------------------------------------------


def test_starttls_with_the_test_ca(server_context: ssl.SSLContext, ca_file: str) -> None:
    sink = Sink()
    with smtp_server(sink, tls_context=server_context) as server:
        result = run_send(*at(server), *ENVELOPE, "--starttls", "--cacert", ca_file, "-v")
    assert result.returncode == 0, result.stderr
    assert "C: STARTTLS" in result.stdout
    assert "=== TLS started: TLSv1." in result.stdout
    assert len(sink.messages) == 1


def test_starttls_with_an_untrusted_certificate(server_context: ssl.SSLContext) -> None:
    sink = Sink()
    with smtp_server(sink, tls_context=server_context) as server:
        result = run_send(*at(server), *ENVELOPE, "--starttls")
        insecure = run_send(*at(server), *ENVELOPE, "--starttls", "--insecure")
    assert result.returncode == ExitStatus.CONNECTION
    assert "certificate verify failed" in one_error_line(result)
    assert insecure.returncode == 0, insecure.stderr
    assert "warning: --insecure" in one_error_line(insecure)
    assert len(sink.messages) == 1


def test_starttls_required_but_not_offered(server: ServerThread, sink: Sink) -> None:
    result = run_send(*at(server), *ENVELOPE, "--starttls")
    assert result.returncode == ExitStatus.CONNECTION
    assert "STARTTLS" in one_error_line(result)
    assert sink.messages == []


def test_implicit_tls(smtps: Controller, sink: Sink, ca_file: str) -> None:
    result = run_send(*at(smtps), *ENVELOPE, "--tls", "--cacert", ca_file, "-v")
    assert result.returncode == 0, result.stderr
    assert "=== TLS started: TLSv1." in result.stdout
    assert len(sink.messages) == 1


# --- AUTH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms_with_the_secret_masked(sink: Sink, mechanism: str) -> None:
    authenticator = Authenticator()
    with smtp_server(sink, auth_require_tls=False, authenticator=authenticator) as server:
        result = run_send(
            *at(server), *ENVELOPE, "--auth", mechanism, "--user", "anne",
            "--password", PASSWORD, "-v",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert authenticator.mechanisms == [mechanism]
    assert f"C: AUTH {mechanism} ********" in result.stdout
    assert "S: 235 " in result.stdout
    secrets = [PASSWORD, "anne\0", b64("anne"), b64(PASSWORD), b64(f"\0anne\0{PASSWORD}")]
    assert not [secret for secret in secrets if secret in result.stdout]
    if mechanism == "LOGIN":
        # The password answers the server's 334 challenge: masked whole.
        assert re.search(r"^S: 334 \S+\nC: \*{8}$", result.stdout, re.MULTILINE)
    assert len(sink.messages) == 1


def test_auth_password_from_the_environment(sink: Sink) -> None:
    authenticator = Authenticator()
    with smtp_server(sink, auth_require_tls=False, authenticator=authenticator) as server:
        result = run_send(
            *at(server), *ENVELOPE, "--auth", "--user", "anne",
            env={"SMTPWIRE_PASSWORD": PASSWORD},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(authenticator.mechanisms) == 1


def test_auth_wrong_password(sink: Sink) -> None:
    authenticator = Authenticator()
    with smtp_server(sink, auth_require_tls=False, authenticator=authenticator) as server:
        result = run_send(
            *at(server), *ENVELOPE, "--auth", "PLAIN", "--user", "anne", "--password", "wrong"
        )
    assert result.returncode == ExitStatus.AUTHENTICATION == 4
    assert one_error_line(result) == (
        "smtpwire-send: authentication failed: 535 5.7.8 Authentication credentials invalid"
    )
    assert sink.messages == []


def test_auth_mechanism_not_offered(server: ServerThread, sink: Sink) -> None:
    result = run_send(
        *at(server), *ENVELOPE, "--auth", "CRAM-MD5", "--user", "anne", "--password", "x"
    )
    assert result.returncode == ExitStatus.AUTHENTICATION
    assert "does not offer AUTH CRAM-MD5" in one_error_line(result)


def test_auth_cram_md5(sink: Sink) -> None:
    secrets = {b"anne": PASSWORD}
    with smtp_server(sink, auth_require_tls=False, cram_md5_secret=secrets.get) as server:
        result = run_send(
            *at(server), *ENVELOPE, "--auth", "cram-md5", "--user", "anne",
            "--password", PASSWORD, "-v",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "C: AUTH CRAM-MD5\n" in result.stdout
    assert "C: ********\n" in result.stdout  # the digest answer to the challenge


# --- the entry point, in this process -----------------------------------------------------------


def test_entry_point_function(
    server: ServerThread, sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    """``smtpwire-send`` (the console script calls main() with no arguments)."""
    status = main(["--server", f"127.0.0.1:{server.port}", *ENVELOPE, "--body", "direct"])
    assert status == 0
    assert capsys.readouterr().out == "sent: OK\n"
    assert parsed(sink.messages[0][2]).get_content() == "direct\n"


def test_bare_module_keeps_the_interactive_usage() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smtpwire.client", "--bogus"],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "python -m smtpwire.client send --help" in result.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    assert Output(0, stderr=io.StringIO()).progress(10) is None
    assert Output(-1, stderr=Terminal()).progress(10) is None  # -q
    terminal = Terminal()
    progress = Output(0, stderr=terminal).progress(4)
    assert progress is not None
    progress.update(4)
    progress.finish()
    assert terminal.getvalue() == "\r[" + "#" * 30 + "] 4/4\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail.example.org", ("mail.example.org", None)),
        ("mail.example.org:2525", ("mail.example.org", 2525)),
        ("[::1]:2525", ("::1", 2525)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_server_address_forms(text: str, expected: tuple[str, int | None]) -> None:
    assert split_server(text) == expected


class SilentNoticedServer(SilentServer):
    """Never greets; sets ``connected`` once a client is in (to wait for that
    without sleeping)."""

    connected = threading.Event()

    async def _open_session(self) -> bool:
        SilentNoticedServer.connected.set()
        return await super()._open_session()


def test_ctrl_c_while_waiting_for_the_server_is_one_line() -> None:
    SilentNoticedServer.connected.clear()
    with smtp_server(Sink(), cls=SilentNoticedServer) as server:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed module
            [sys.executable, "-m", "smtpwire.client", "send", *at(server), *ENVELOPE],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert SilentNoticedServer.connected.wait(WAIT)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=WAIT)
        finally:
            process.kill()
            process.wait(WAIT)
    assert (process.returncode, stdout, stderr) == (130, "", "smtpwire-send: interrupted\n")


def test_every_option_says_what_it_does() -> None:
    undocumented = [
        "/".join(action.option_strings) or action.dest
        for action in build_parser()._actions
        if not action.help
    ]
    assert undocumented == []


def test_help_exits_zero() -> None:
    result = run_send("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m smtpwire.client send ")
    assert "Exit status: 0 every recipient accepted" in result.stdout
