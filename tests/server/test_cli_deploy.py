"""The command line as something to deploy: configuration by ``SMTPWIRE_*``
variables, a graceful stop with ``--shutdown-grace`` (and a second signal that
stops it now, on asyncio and uvloop, with ``--workers`` too), ``-c`` finding a
module in the current directory from the console script too, ``-c ...Proxy HOST
PORT``, and the Dockerfile's command line run for real.

Servers run as real processes on loopback; where the command line needs a fixed
port (the Dockerfile's ``-l``), a free one is found by binding port 0, and the
start is retried (a bounded number of times) if another process took it meanwhile.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import mailbox
import os
import queue
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from smtpwire.server._cli_env import DOCS, apply_environment, variable_name
from smtpwire.server._cli_options import build_parser
from smtpwire.server.controller import Controller
from smtpwire.server.handlers import Debugging, Proxy
from support.cli import (
    MESSAGE,
    POSIX_ONLY,
    WAIT,
    ServerProcess,
    _pump,
    child_environment,
    run_cli,
)

pytestmark = POSIX_ONLY

REPOSITORY = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("smtpwire-server")
START_ATTEMPTS = 3


class CommandProcess(ServerProcess):
    """:class:`ServerProcess` for any command line and working directory (the
    console script, the Dockerfile's command)."""

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ):
        self.process = subprocess.Popen(  # noqa: S603 - the test's own command lines
            argv,
            cwd=cwd,
            env=child_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            # A process group of its own, as a shell gives a foreground job: the
            # test can signal the group as Ctrl-C at a terminal does.
            start_new_session=new_session,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: queue.Queue[str | None] = queue.Queue()
        self.stderr_seen: list[str] = []
        self._readers = [
            threading.Thread(target=_pump, args=(self.process.stdout, self.stdout), daemon=True),
            threading.Thread(target=_pump, args=(self.process.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()


@contextmanager
def running(
    argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[CommandProcess]:
    server = CommandProcess(argv, cwd=cwd, env=env)
    try:
        yield server
    finally:
        server.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def on_a_free_port(
    start: Callable[[str], CommandProcess],
) -> Iterator[tuple[CommandProcess, int]]:
    """``start(listen)`` on a free loopback port, retried if the port was taken
    between finding it and the server binding it."""
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        server = start(f"127.0.0.1:{port}")
        try:
            server.startup_line()
        except pytest.fail.Exception:
            server.kill()
            if "cannot listen" in "".join(server.stderr_seen) and attempt + 1 < START_ATTEMPTS:
                continue
            raise
        try:
            yield server, port
        finally:
            server.kill()
        return


def python_m(*args: str) -> list[str]:
    return [sys.executable, "-m", "smtpwire.server", *args]


def console_script(*args: str) -> list[str]:
    if not CONSOLE_SCRIPT.exists():
        pytest.skip("the smtpwire-server console script is not installed beside this python")
    return [str(CONSOLE_SCRIPT), *args]


# -- environment variables -------------------------------------------------------------


def parsed(environ: dict[str, str], *args: str) -> argparse.Namespace:
    parser = build_parser()
    apply_environment(parser, environ)
    return parser.parse_args(list(args))


def test_every_option_has_a_variable_named_after_its_long_form() -> None:
    parser = build_parser()
    names = {variable_name(action) for action in parser._actions} - {None}
    for expected in (
        "SMTPWIRE_LISTEN",
        "SMTPWIRE_TLSCERT",
        "SMTPWIRE_TLSKEY",
        "SMTPWIRE_CLASS",
        "SMTPWIRE_CLASSARGS",
        "SMTPWIRE_NOSETUID",
        "SMTPWIRE_MAX_CONNECTIONS",
        "SMTPWIRE_SHUTDOWN_GRACE",
        "SMTPWIRE_LOG_FORMAT",
    ):
        assert expected in names
    # Not options a user sets.
    assert "SMTPWIRE_HELP" not in names
    assert "SMTPWIRE_VERSION" not in names
    assert "SMTPWIRE_WORKER_SPEC" not in names


def test_variables_set_defaults_of_every_kind() -> None:
    options = parsed(
        {
            "SMTPWIRE_LISTEN": "127.0.0.1:2525",
            "SMTPWIRE_SIZE": "1000",
            "SMTPWIRE_NOSETUID": "yes",
            "SMTPWIRE_CLASSIC": "1",
            "SMTPWIRE_DEBUG": "2",
            "SMTPWIRE_BARE_LF": "reject",
            "SMTPWIRE_SHUTDOWN_GRACE": "2.5",
            "SMTPWIRE_WORKERS": "3",
            "SMTPWIRE_CLASS": "smtpwire.server.handlers.Proxy",
            "SMTPWIRE_CLASSARGS": "mx.example.com '25'",
        }
    )
    assert options.listen == "127.0.0.1:2525"
    assert options.size == 1000
    assert options.setuid is False
    assert options.modern is False
    assert options.debug == 2
    assert options.bare_lf == "reject"
    assert options.shutdown_grace == 2.5
    assert options.workers == 3
    assert options.classpath == "smtpwire.server.handlers.Proxy"
    assert options.classargs == ["mx.example.com", "25"]


def test_flags_win_over_variables() -> None:
    environ = {"SMTPWIRE_SIZE": "1000", "SMTPWIRE_LISTEN": "127.0.0.1:2525"}
    options = parsed(environ, "-s", "2000", "-l", "[::1]:25", "x")
    assert (options.size, options.listen, options.classargs) == (2000, "[::1]:25", ["x"])
    # A variable saying "no" leaves the flag's default.
    assert parsed({"SMTPWIRE_CLASSIC": "off"}).modern is True


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("SMTPWIRE_SIZE", "big", "invalid int value"),
        ("SMTPWIRE_LOOP", "tokio", "invalid choice"),
        ("SMTPWIRE_WORKERS", "0", "there must be at least 1 worker"),
        ("SMTPWIRE_SHUTDOWN_GRACE", "-1", "must be a positive number of seconds"),
        ("SMTPWIRE_CLASSIC", "maybe", "expected 1/0"),
        ("SMTPWIRE_LOG_FORMAT", "xml", "invalid choice"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(name: str, value: str, reason: str) -> None:
    result = run_cli(env={**os.environ, name: value})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"smtpwire-server: error: environment variable {name}={value!r}: ")
    assert reason in line


def test_variables_configure_a_running_server() -> None:
    environ = {
        **os.environ,
        "SMTPWIRE_NOSETUID": "1",
        "SMTPWIRE_LISTEN": "127.0.0.1:0",
        "SMTPWIRE_CLASS": "smtpwire.server.handlers.Sink",
        "SMTPWIRE_SIZE": "1000",
    }
    with running(python_m("-s", "2000"), env=environ) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            smtp.ehlo()
            assert smtp.esmtp_features["size"] == "2000"  # the flag won
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        status, stdout, stderr = server.stop(signal.SIGTERM)
    assert status == 0, stderr
    assert stdout == ""  # Sink, from SMTPWIRE_CLASS


def test_help_lists_the_variables_and_links_the_docs() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "SMTPWIRE_LISTEN" in result.stdout
    assert "SMTPWIRE_TLSCERT" in result.stdout
    assert f"{DOCS}server.md" in result.stdout
    assert f"{DOCS}deploy.md" in result.stdout
    # Every docs page is named by URL: pip users have no docs/ directory.
    unwrapped = re.sub(r"\s+", "", result.stdout)
    for found in re.finditer(r"docs/", unwrapped):
        assert unwrapped[: found.end()].endswith("blob/main/docs/"), unwrapped[found.start() - 60 :]


# -- a graceful stop ----------------------------------------------------------------------

SLOW_HANDLER = """
import asyncio


class Slow:
    def __init__(self, seconds):
        self.seconds = seconds

    @classmethod
    def from_cli(cls, parser, seconds):
        return cls(float(seconds))

    async def handle_DATA(self, server, session, envelope):
        print("RECEIVED", flush=True)
        await asyncio.sleep(self.seconds)  # slow storage, on purpose
        print("STORED", envelope.mail_from, flush=True)
        return "250 OK stored"
"""


def send_until_data_end(smtp: smtplib.SMTP) -> None:
    smtp.ehlo()
    assert smtp.mail("anne@example.com")[0] == 250
    assert smtp.rcpt("bart@example.com")[0] == 250
    assert smtp.docmd("DATA")[0] == 354
    smtp.send(MESSAGE + b".\r\n")


SHUTTING_DOWN = (421, b"4.3.2 Service shutting down, closing")


def refused_from_now_on(host: str, port: int) -> None:
    """Until a connection is refused: the listening socket is closed, so the drain
    has begun (both happen in one step of the server's loop)."""
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=WAIT).close()
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            pass  # queued on the socket as it closed: look again
        time.sleep(0.01)  # the poll's pace, not a wait for anything
    pytest.fail(f"{host}:{port} still accepted connections {WAIT} s after SIGTERM")


def read_to_the_end(smtp: smtplib.SMTP) -> None:
    """The server closed the connection: nothing more comes."""
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.getreply()


def test_a_transaction_finishing_within_the_grace_is_stored_and_answered(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_HANDLER)
    argv = python_m("-n", "-l", "127.0.0.1:0", "--shutdown-grace", "60", "-c", "slow.Slow", "1")
    with running(argv, cwd=tmp_path) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            send_until_data_end(smtp)
            assert server.line() == "RECEIVED"
            server.process.send_signal(signal.SIGTERM)  # while the handler works
            assert smtp.getreply() == (250, b"2.6.0 OK stored")
            # The transaction over, no new one: 421, and the server closes.
            assert smtp.getreply() == SHUTTING_DOWN
            read_to_the_end(smtp)
        status, stdout, stderr = finished(server)
    assert status == 0, stderr
    assert stdout == "STORED anne@example.com\n"


def test_a_transaction_beyond_the_grace_gets_421_and_is_not_stored(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_HANDLER)
    argv = python_m("-n", "-l", "127.0.0.1:0", "--shutdown-grace", "0.5", "-c", "slow.Slow", "3600")
    with running(argv, cwd=tmp_path) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            send_until_data_end(smtp)
            assert server.line() == "RECEIVED"
            server.process.send_signal(signal.SIGTERM)
            code, text = smtp.getreply()
        assert (code, text) == SHUTTING_DOWN
        status, stdout, stderr = finished(server)
    assert status == 0, stderr
    assert "STORED" not in stdout
    assert "still busy 0.5 s after the shutdown began" in stderr


def test_the_default_grace_is_ten_seconds() -> None:
    assert build_parser().parse_args([]).shutdown_grace == 10.0
    help_text = re.sub(r"\s+", " ", run_cli("--help").stdout)
    assert "finish for up to SECONDS (default 10)" in help_text


def test_a_transaction_begun_before_the_stop_sends_its_message(tmp_path: Path) -> None:
    """MAIL and RCPT were accepted before SIGTERM: the client may still send DATA
    and its message, which is stored whole and answered 250; then the session
    ends with 421 (no new transaction) and the server exits."""
    (tmp_path / "slow.py").write_text(SLOW_HANDLER)
    argv = python_m("-n", "-l", "127.0.0.1:0", "--shutdown-grace", "60", "-c", "slow.Slow", "0")
    with running(argv, cwd=tmp_path) as server:
        [(host, port)] = server.addresses()
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            smtp.ehlo()
            assert smtp.mail("anne@example.com")[0] == 250
            assert smtp.rcpt("bart@example.com")[0] == 250
            server.process.send_signal(signal.SIGTERM)
            refused_from_now_on(host, port)
            assert server.process.poll() is None  # draining: our transaction holds it
            assert smtp.docmd("DATA")[0] == 354
            smtp.send(MESSAGE + b".\r\n")
            assert smtp.getreply() == (250, b"2.6.0 OK stored")
            assert smtp.getreply() == SHUTTING_DOWN
            read_to_the_end(smtp)
        finally:
            smtp.close()
        status, stdout, stderr = finished(server)
    assert status == 0, stderr
    assert stdout == "RECEIVED\nSTORED anne@example.com\n"
    assert "still busy" not in stderr  # ended within the grace, not cut off


def test_bdat_chunks_begun_before_the_stop_end_their_message(tmp_path: Path) -> None:
    """The same with CHUNKING: a first chunk before SIGTERM, the last after; the
    message is stored whole."""
    maildir = tmp_path / "Maildir"
    argv = python_m(
        "-n", "-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Mailbox", str(maildir)
    )
    first, last = MESSAGE[:20], MESSAGE[20:]
    with running(argv) as server:
        [(host, port)] = server.addresses()
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            smtp.ehlo()
            assert smtp.mail("anne@example.com")[0] == 250
            assert smtp.rcpt("bart@example.com")[0] == 250
            smtp.send(b"BDAT %d\r\n%s" % (len(first), first))
            assert smtp.getreply()[0] == 250
            server.process.send_signal(signal.SIGTERM)
            refused_from_now_on(host, port)
            smtp.send(b"BDAT %d LAST\r\n%s" % (len(last), last))
            assert smtp.getreply()[0] == 250
            assert smtp.getreply() == SHUTTING_DOWN
            read_to_the_end(smtp)
        finally:
            smtp.close()
        status, _, stderr = finished(server)
    assert status == 0, stderr
    [stored] = mailbox.Maildir(maildir).values()
    assert stored.get_payload() == "Hi Bart.\n"
    assert stored["Subject"] == "hello"


@pytest.mark.parametrize("state", ["greeted", "after EHLO", "after a message"])
def test_an_idle_session_is_told_421_when_the_server_stops(state: str) -> None:
    with running(
        python_m("-n", "-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Sink")
    ) as server:
        [(host, port)] = server.addresses()
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            if state != "greeted":
                assert smtp.ehlo()[0] == 250
            if state == "after a message":
                assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
            server.process.send_signal(signal.SIGTERM)
            assert smtp.getreply() == SHUTTING_DOWN  # unasked, at once
            read_to_the_end(smtp)
        finally:
            smtp.close()
        status, _, stderr = finished(server)
    assert status == 0, stderr
    assert "still busy" not in stderr


def test_no_connection_is_accepted_while_sessions_drain(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_HANDLER)
    argv = python_m("-n", "-l", "127.0.0.1:0", "--shutdown-grace", "60", "-c", "slow.Slow", "0")
    with running(argv, cwd=tmp_path) as server:
        [(host, port)] = server.addresses()
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            smtp.ehlo()
            assert smtp.mail("anne@example.com")[0] == 250
            server.process.send_signal(signal.SIGTERM)
            refused_from_now_on(host, port)
            # Still draining (our transaction is open), and still refusing.
            assert smtp.noop() == (250, b"2.0.0 OK")
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, port), timeout=WAIT).close()
            assert smtp.rset() == (250, b"2.0.0 OK")  # the transaction ends here
            assert smtp.getreply() == SHUTTING_DOWN
            read_to_the_end(smtp)
        finally:
            smtp.close()
        status, _, stderr = finished(server)
    assert status == 0, stderr


def finished(server: ServerProcess) -> tuple[int, str, str]:
    """The exit status and the rest of the output of a server stopping by itself
    (signalled once already: a second signal while it drains would stop it now)."""
    status = server.process.wait(WAIT)
    for reader in server._readers:
        reader.join(WAIT)
    stderr = "".join(server.stderr_seen) + server._drain(server.stderr)
    return status, server._drain(server.stdout), stderr


# -- a second signal while draining: stop now -------------------------------------------

NEEDS_UVLOOP = pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
)
LOOPS = ["asyncio", pytest.param("uvloop", marks=NEEDS_UVLOOP)]
STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT]
WORKER_PIDS = re.compile(r" \d+ workers, pids (?P<pids>[\d, ]+);")

GATED_HANDLER = """
import asyncio
from pathlib import Path


class Gated:
    \"\"\"Stores a message once the file GATE exists (the test creates it).\"\"\"

    def __init__(self, gate):
        self.gate = Path(gate)

    @classmethod
    def from_cli(cls, parser, gate):
        return cls(gate)

    async def handle_DATA(self, server, session, envelope):
        print("RECEIVED", flush=True)
        while not self.gate.exists():
            await asyncio.sleep(0.01)  # the handler's own poll, bounded by the test
        print("STORED", envelope.mail_from, flush=True)
        return "250 OK stored"
"""


def in_data(smtp: smtplib.SMTP) -> None:
    """MAIL, RCPT and DATA accepted, half a message sent."""
    smtp.ehlo()
    assert smtp.mail("anne@example.com")[0] == 250
    assert smtp.rcpt("bart@example.com")[0] == 250
    assert smtp.docmd("DATA")[0] == 354
    smtp.send(b"Subject: half a message\r\n")


def stop_now_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "stopping now" in line]


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_second_signal_during_the_drain_stops_now(tmp_path: Path, loop: str, signum: int) -> None:
    """The first signal begins the drain; a second one while sessions are still busy
    cuts it short: every session left gets the 421 the end of the grace sends, no
    message is stored, and the process exits cleanly, long before the grace is over."""
    (tmp_path / "slow.py").write_text(SLOW_HANDLER)
    argv = python_m(
        "-n", "-l", "127.0.0.1:0", "--loop", loop, "--shutdown-grace", "60",
        "-c", "slow.Slow", "3600",
    )  # fmt: skip
    with running(argv, cwd=tmp_path) as server:
        [(host, port)] = server.addresses()
        storing = smtplib.SMTP(host, port, timeout=WAIT)
        receiving = smtplib.SMTP(host, port, timeout=WAIT)
        idle = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            send_until_data_end(storing)  # its handler sleeps for an hour
            assert server.line() == "RECEIVED"
            in_data(receiving)
            assert idle.ehlo()[0] == 250
            server.process.send_signal(signum)
            assert idle.getreply() == SHUTTING_DOWN  # the drain has begun
            read_to_the_end(idle)
            assert server.process.poll() is None  # held by the two busy sessions
            server.process.send_signal(signum)
            for smtp in (storing, receiving):
                assert smtp.getreply() == SHUTTING_DOWN
                read_to_the_end(smtp)
        finally:
            for smtp in (storing, receiving, idle):
                smtp.close()
        status, stdout, stderr = finished(server)  # within WAIT, far below the grace
    assert status == 0, stderr
    assert stdout == ""  # nothing stored (RECEIVED was read above)
    assert "Traceback" not in stderr
    [line] = stop_now_lines(stderr)
    assert f"second signal ({signal.Signals(signum).name})" in line
    assert " WARNING " in line
    assert "still busy" not in stderr  # not the end of the grace


@contextmanager
def supervising(
    argv: list[str], *, cwd: Path, new_session: bool = False
) -> Iterator[tuple[CommandProcess, tuple[str, int], list[int]]]:
    """``--workers``: the supervisor, the address it listens on and its workers'
    pids; the workers are killed too if the test fails."""
    server = CommandProcess(argv, cwd=cwd, new_session=new_session)
    pids: list[int] = []
    try:
        [address] = server.addresses()
        match = WORKER_PIDS.search(server.stderr_seen[-1])
        assert match is not None, server.stderr_seen
        pids = [int(pid) for pid in match["pids"].split(", ")]
        yield server, address, pids
    finally:
        server.kill()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_gone(pids: list[int]) -> None:
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive.append(pid)
        if not alive:
            return
        time.sleep(0.01)  # the poll's pace
    pytest.fail(f"workers {pids} still running {WAIT} s after the supervisor exited")


@pytest.mark.parametrize("loop", LOOPS)
def test_workers_a_second_signal_to_the_supervisor_stops_them_now(
    tmp_path: Path, loop: str
) -> None:
    """The supervisor passes the second signal on: its workers stop now, as one
    server does."""
    (tmp_path / "slow.py").write_text(SLOW_HANDLER)
    argv = python_m(
        "-n", "-l", "127.0.0.1:0", "--workers", "2", "--loop", loop,
        "--shutdown-grace", "60", "-c", "slow.Slow", "3600",
    )  # fmt: skip
    with supervising(argv, cwd=tmp_path) as (server, (host, port), pids):
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            send_until_data_end(smtp)
            assert server.line() == "RECEIVED"
            server.process.send_signal(signal.SIGTERM)
            refused_from_now_on(host, port)  # every worker drains
            assert server.process.poll() is None
            server.process.send_signal(signal.SIGTERM)
            assert smtp.getreply() == SHUTTING_DOWN
            read_to_the_end(smtp)
        finally:
            smtp.close()
        status, stdout, stderr = finished(server)
        wait_gone(pids)
    assert status == 0, stderr
    assert stdout == ""  # nothing stored
    assert "Traceback" not in stderr
    assert "smtpwire-server: second signal (SIGTERM): stopping the workers now" in stderr
    assert "still busy" not in stderr


def test_workers_ctrl_c_at_a_terminal_drains_gracefully(tmp_path: Path) -> None:
    """Ctrl-C signals the whole foreground process group: the supervisor and its
    workers.  The supervisor passes SIGTERM on; a worker must not take that for a
    second signal, so a message in progress is still stored and answered."""
    (tmp_path / "gated.py").write_text(GATED_HANDLER)
    gate = tmp_path / "gate"
    argv = python_m(
        "-n", "-d", "-l", "127.0.0.1:0", "--workers", "2", "--shutdown-grace", "60",
        "-c", "gated.Gated", str(gate),
    )  # fmt: skip
    with supervising(argv, cwd=tmp_path, new_session=True) as (server, (host, port), pids):
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            send_until_data_end(smtp)
            assert server.line() == "RECEIVED"
            os.killpg(server.process.pid, signal.SIGINT)  # Ctrl-C
            # The supervisor's SIGTERM has reached both workers (each says so with -d).
            heard = 0
            while heard < len(pids):
                seen = server._next(server.stderr)
                server.stderr_seen.append(seen)
                heard += " mail.log INFO SIGTERM received, shutting down" in seen
            gate.touch()
            assert smtp.getreply() == (250, b"2.6.0 OK stored")
            assert smtp.getreply() == SHUTTING_DOWN
            read_to_the_end(smtp)
        finally:
            smtp.close()
        status, stdout, stderr = finished(server)
        wait_gone(pids)
    assert status == 0, stderr
    assert stdout == "STORED anne@example.com\n"
    assert "stopping now" not in stderr
    assert "Traceback" not in stderr


# -- -c from the current directory, Proxy from the command line --------------------------

GREETER = """
class Greeter:
    async def handle_NOOP(self, server, session, envelope, arg):
        return "250 hello from the current directory"
"""


@pytest.mark.parametrize("launcher", [python_m, console_script], ids=["python -m", "script"])
def test_c_finds_a_module_in_the_current_directory(
    tmp_path: Path, launcher: Callable[..., list[str]]
) -> None:
    (tmp_path / "greeter_here.py").write_text(GREETER)
    argv = launcher("-n", "-l", "127.0.0.1:0", "-c", "greeter_here.Greeter")
    with running(argv, cwd=tmp_path) as server:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            assert smtp.noop() == (250, b"2.0.0 hello from the current directory")
        status, _, stderr = server.stop()
    assert status == 0, stderr


class Upstream:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK upstream has it"


def test_proxy_from_the_command_line() -> None:
    upstream = Upstream()
    controller = Controller(upstream, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        argv = python_m(
            "-n", "-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Proxy",
            "127.0.0.1", str(controller.port),
        )  # fmt: skip
        with running(argv) as server:
            [(host, port)] = server.addresses()
            with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
                assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
            status, _, stderr = server.stop()
        assert status == 0, stderr
    finally:
        controller.stop()
    [(sender, recipients, content)] = upstream.received
    assert (sender, recipients) == ("anne@example.com", ["bart@example.com"])
    assert b"X-Peer: 127.0.0.1\r\n" in content


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Proxy usage: HOST PORT"),
        (("mx.example.com",), "Proxy usage: HOST PORT"),
        (("mx.example.com", "25", "x"), "Proxy usage: HOST PORT"),
        (("mx.example.com", "smtp"), "Proxy: invalid port number: smtp"),
        (("mx.example.com", "0"), "Proxy: invalid port number: 0"),
        (("mx.example.com", "65536"), "Proxy: invalid port number: 65536"),
    ],
)
def test_proxy_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = run_cli("-c", "smtpwire.server.handlers.Proxy", *args)
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_proxy_from_cli_builds_the_relay() -> None:
    proxy = Proxy.from_cli(argparse.ArgumentParser(), "mx.example.com", "2525")
    assert (proxy._hostname, proxy._port) == ("mx.example.com", 2525)


def test_debugging_from_the_command_line_shows_the_envelope() -> None:
    assert Debugging.from_cli(argparse.ArgumentParser()).envelope is True
    assert Debugging().envelope is False  # aiosmtpd's layout, line for line


# -- the Dockerfile's command line -----------------------------------------------------------


def dockerfile_command() -> list[str]:
    """ENTRYPOINT + CMD of the repository's Dockerfile (exec form, JSON arrays)."""
    found: dict[str, list[str]] = {}
    for line in (REPOSITORY / "Dockerfile").read_text().splitlines():
        match = re.match(r"(CMD|ENTRYPOINT)\s+(\[.*\])\s*$", line)
        if match:
            found[match[1]] = json.loads(match[2])
    assert "CMD" in found, "the Dockerfile has no exec-form CMD"
    return found.get("ENTRYPOINT", []) + found["CMD"]


def test_the_dockerfile_runs_as_a_non_root_user_and_exposes_8025() -> None:
    text = (REPOSITORY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[0-9.]+-slim", text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user
    assert user[-1] not in ("root", "0")
    assert re.search(r"^EXPOSE\s+8025\b", text, re.MULTILINE)
    command = dockerfile_command()
    assert command[command.index("-l") + 1] == "0.0.0.0:8025"


def test_the_dockerfile_command_serves(tmp_path: Path) -> None:
    command = dockerfile_command()
    assert command[0] == "smtpwire-server"

    def start(listen: str) -> CommandProcess:
        argv = console_script(*command[1:])
        argv[argv.index("-l") + 1] = listen  # loopback, not the container's 0.0.0.0
        return CommandProcess(argv, cwd=tmp_path)

    with on_a_free_port(start) as (server, port):
        with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("smtputf8")  # the modern set
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        lines = server.message()
        assert "X-MailFrom: anne@example.com" in lines
        assert "X-RcptTo: bart@example.com" in lines
        status, _, stderr = server.stop(signal.SIGTERM)  # docker stop
    assert status == 0, stderr
