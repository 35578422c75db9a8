"""Logs an operator can read: one INFO line per transaction on ``mail.log`` with
its outcome, a failed TLS handshake as one WARNING without a traceback, commands
as text, no AUTH secret anywhere, ``--log-format json``, nothing printed by the
library unless logging is configured; and what a failing handler's client sees
(modern: a bare 451; classic: aiosmtpd's text)."""

from __future__ import annotations

import json
import logging
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpwire.server._cli_logging import JsonFormatter
from smtpwire.server._log_lines import TRANSACTION, command_text
from smtpwire.server.controller import Controller
from smtpwire.server.handlers import Sink
from smtpwire.server.smtp import AuthResult, LoginPassword
from support.cli import MESSAGE, POSIX_ONLY, WAIT, server_process

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test secret


class Records(logging.Handler):
    """The records of ``mail.log`` (and below), with a bounded wait for one that
    matches: the server logs in its own thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def wait_for(self, matches: Callable[[logging.LogRecord], bool]) -> logging.LogRecord:
        with self._changed:
            found: list[logging.LogRecord] = []

            def seen() -> bool:
                found[:] = [record for record in self.records if matches(record)]
                return bool(found)

            assert self._changed.wait_for(seen, WAIT), [r.getMessage() for r in self.records]
            return found[0]

    def transactions(self) -> list[dict[str, Any]]:
        return [getattr(r, TRANSACTION) for r in self.records if hasattr(r, TRANSACTION)]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("mail.log")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def serving(handler: Any, **parameters: Any) -> Iterator[Controller]:
    controller = Controller(handler, hostname="127.0.0.1", port=0, **parameters)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def is_transaction(record: logging.LogRecord) -> bool:
    return hasattr(record, TRANSACTION)


# -- the transaction line ----------------------------------------------------------------


def test_one_info_line_per_transaction(records: Records) -> None:
    with (
        serving(Sink(), modern=True) as controller,
        smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as smtp,
    ):
        smtp.sendmail("anne@example.com", ["bart@example.com", "cate@example.com"], MESSAGE)
        client_port = smtp.sock.getsockname()[1] if smtp.sock else 0
        record = records.wait_for(is_transaction)
    assert record.name == "mail.log"
    assert record.levelno == logging.INFO
    fields = getattr(record, TRANSACTION)
    assert fields["peer"] == f"127.0.0.1:{client_port}"
    assert fields["sender"] == "anne@example.com"
    assert fields["recipients"] == 2
    assert fields["size"] == len(MESSAGE)
    assert fields["reply"] == 250
    assert fields["tls"] is None
    assert fields["auth"] is None
    assert 0 <= fields["seconds"] < WAIT
    assert record.getMessage().startswith(
        f"127.0.0.1:{client_port} from=<anne@example.com> nrcpt=2 size={len(MESSAGE)} "
        "tls=- auth=- reply=250 time="
    )
    assert len(records.transactions()) == 1


def test_a_refused_message_is_logged_with_its_reply(records: Records) -> None:
    with (
        serving(Sink(), data_size_limit=100) as controller,
        smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as smtp,
    ):
        smtp.ehlo()
        smtp.mail("anne@example.com")
        smtp.rcpt("bart@example.com")
        assert smtp.data(b"x" * 500)[0] == 552
        record = records.wait_for(is_transaction)
    fields = getattr(record, TRANSACTION)
    assert (fields["reply"], fields["size"]) == (552, None)


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
    return AuthResult(success=ok, auth_data=data)


def test_tls_and_auth_facts_and_never_the_password(
    records: Records, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with serving(Sink(), tls_context=server_context, authenticator=authenticator) as controller:
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as smtp:
            smtp.starttls(context=client_context)
            smtp.login("anne", PASSWORD)  # AUTH PLAIN with the secret on the line
            smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
            record = records.wait_for(is_transaction)
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as smtp:
            smtp.starttls(context=client_context)
            smtp.ehlo()
            smtp.auth("LOGIN", lambda challenge=None: PASSWORD if challenge else "anne")
            smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
            records.wait_for(lambda r: is_transaction(r) and r is not record)
    fields = getattr(record, TRANSACTION)
    assert fields["tls"].startswith("TLSv1.")
    assert fields["auth"] == "anne"
    assert " auth=anne " in record.getMessage()
    import base64

    secrets = (PASSWORD, base64.b64encode(PASSWORD.encode()).decode())
    everything = [r.getMessage() for r in records.records]
    everything += [json.dumps(getattr(r, TRANSACTION, None)) for r in records.records]
    assert not [line for line in everything if any(secret in line for secret in secrets)]
    assert any("AUTH PLAIN ********" in line for line in everything)


# -- commands as text ----------------------------------------------------------------------


def test_commands_are_logged_as_text(records: Records) -> None:
    with (
        serving(Sink()) as controller,
        smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as smtp,
    ):
        smtp.command_encoding = "utf-8"
        smtp.docmd("NOOP caf\u00e9\x1b[31m")
        smtp.noop()
        record = records.wait_for(lambda r: ">> NOOP caf" in r.getMessage())
    line = record.getMessage()
    assert "b'" not in line
    assert line.endswith(">> NOOP caf\u00e9\\x1b[31m")  # the escape sequence cannot act


def test_command_text() -> None:
    assert command_text(b"MAIL FROM:<a@example.com>\r\n") == "MAIL FROM:<a@example.com>"
    assert command_text(b"AUTH PLAIN c2VjcmV0") == "AUTH PLAIN ********"
    assert command_text(b"NOOP \xff\rx") == "NOOP \\xff\\rx"


# -- failed TLS handshakes -------------------------------------------------------------------


def is_handshake_line(record: logging.LogRecord) -> bool:
    # Not the DEBUG line of the (unsent) reply to STARTTLS's failure.
    return record.levelno >= logging.INFO and "TLS handshake" in record.getMessage()


def assert_one_warning_without_traceback(records: Records, port: int) -> None:
    record = records.wait_for(is_handshake_line)
    assert record.levelno == logging.WARNING
    assert record.name == "mail.log"
    assert record.getMessage().startswith("127.0.0.1:")
    assert f":{port} TLS handshake failed: " in record.getMessage()
    assert [r for r in records.records if is_handshake_line(r)] == [record]
    assert not [r for r in records.records if r.exc_info]


def test_a_failed_starttls_handshake_is_one_warning(
    records: Records, server_context: ssl.SSLContext
) -> None:
    with (
        serving(Sink(), tls_context=server_context) as controller,
        socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT) as sock,
    ):
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO client.example\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"220")
        sock.sendall(b"this is not a TLS ClientHello\r\n" * 4)
        port = sock.getsockname()[1]
        assert_one_warning_without_traceback(records, port)


def test_a_failed_implicit_tls_handshake_is_one_warning(
    records: Records, server_context: ssl.SSLContext
) -> None:
    with (
        serving(Sink(), ssl_context=server_context) as controller,
        socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT) as sock,
    ):
        sock.sendall(b"EHLO plain text on a TLS port\r\n" * 4)
        port = sock.getsockname()[1]
        assert_one_warning_without_traceback(records, port)


# -- a failing handler ---------------------------------------------------------------------


class Failing:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raise OSError("cannot write /srv/secret/spool/tmp/1234")


class DecidesItself(Failing):
    async def handle_exception(self, error: Exception) -> str:
        return "554 5.3.0 decided by the handler"


@pytest.mark.parametrize(
    ("handler", "modern", "reply"),
    [
        (Failing(), True, (451, b"4.3.0 Error: internal server error")),
        (Failing(), False, (500, b"Error: (OSError) cannot write /srv/secret/spool/tmp/1234")),
        (DecidesItself(), True, (554, b"5.3.0 decided by the handler")),
    ],
    ids=["modern", "classic", "hook"],
)
def test_a_failing_handler(
    records: Records, handler: Any, modern: bool, reply: tuple[int, bytes]
) -> None:
    with (
        serving(handler, modern=modern) as controller,
        smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as smtp,
    ):
        smtp.ehlo()
        smtp.mail("anne@example.com")
        smtp.rcpt("bart@example.com")
        assert smtp.data(MESSAGE) == reply
        records.wait_for(is_transaction)
    logged = [r for r in records.records if r.exc_info]
    if isinstance(handler, DecidesItself):
        assert not logged
    else:
        [record] = logged  # server-side, with the traceback
        assert isinstance(record.exc_info[1], OSError)  # type: ignore[index]


# -- formats and defaults ------------------------------------------------------------------


def test_json_formatter_puts_the_transaction_fields_in_the_object() -> None:
    record = logging.LogRecord("mail.log", logging.INFO, __file__, 1, "a %s", ("line",), None)
    setattr(record, TRANSACTION, {"peer": "192.0.2.1:25", "reply": 250, "sender": "a@b"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "a line"
    assert (entry["level"], entry["logger"]) == ("INFO", "mail.log")
    assert (entry["peer"], entry["reply"], entry["sender"]) == ("192.0.2.1:25", 250, "a@b")
    assert entry["time"].endswith("+00:00")
    try:
        raise ValueError("two\nlines")
    except ValueError:
        failed = logging.LogRecord("mail.log", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    text = JsonFormatter().format(failed)
    assert "\n" not in text
    assert "ValueError: two" in json.loads(text)["exception"]


@POSIX_ONLY
def test_cli_log_format_json() -> None:
    with server_process("-d", "--log-format", "json", "-c", "smtpwire.server.handlers.Sink") as s:
        [(host, port)] = s.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        status, _, stderr = s.stop(signal.SIGTERM)
    assert status == 0, stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert entries
    # Every log line is a JSON object (the startup line is not a log line).
    assert all(line.startswith("{") or " listening on " in line for line in stderr.splitlines())
    [transaction] = [entry for entry in entries if "reply" in entry]
    assert transaction["logger"] == "mail.log"
    assert transaction["sender"] == "anne@example.com"
    assert (transaction["recipients"], transaction["reply"]) == (1, 250)


@POSIX_ONLY
def test_cli_text_logs_show_the_transaction_line() -> None:
    with server_process("-d", "-c", "smtpwire.server.handlers.Sink") as s:
        [(host, port)] = s.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        status, _, stderr = s.stop(signal.SIGTERM)
    assert status == 0, stderr
    assert " mail.log INFO 127.0.0.1:" in stderr
    assert " from=<anne@example.com> nrcpt=1 " in stderr
    assert "b'" not in stderr


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """``python -c script`` in a fresh interpreter (nothing configured logging)."""
    return subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        env={**os.environ},
    )


def test_the_library_prints_nothing_unless_logging_is_configured() -> None:
    script = (
        "import logging, smtpwire.server.smtp\n"
        "logging.getLogger('mail.log').warning('not for stderr')\n"
        "logging.getLogger('mail.debug').error('nor this')\n"
    )
    result = run_python(script)
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize(
    "module",
    [
        "smtpwire.server",
        "smtpwire.server.proxy_protocol",
        "smtpwire.server.session",
        "smtpwire.server.handlers",
        "smtpwire.server.auth_limits",
    ],
)
def test_importing_any_module_silences_the_loggers(module: str) -> None:
    """The NullHandlers come with the package, not with whichever module happens
    to install them: ``ProxyData(...).with_error()`` alone used to print
    ``PROXY error: bad`` through Python's last-resort handler."""
    script = (
        f"import logging, sys, {module}\n"
        "loaded = sorted(name for name in sys.modules if name.startswith('smtpwire.'))\n"
        "from smtpwire.server.proxy_protocol import ProxyData\n"
        "ProxyData(version=1).with_error('bad')\n"
        "logging.getLogger('mail.log').warning('not for stderr')\n"
        "logging.getLogger('mail.debug').error('nor this')\n"
        "print(loaded)\n"
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if module == "smtpwire.server":
        # Still light: the package itself imports none of its modules.
        assert result.stdout == "['smtpwire.server']\n"
