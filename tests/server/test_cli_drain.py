"""The command line's graceful stop (SIGTERM, SIGINT), run as real processes on
loopback: the listening socket closes at once; an idle session is told ``421
4.3.2`` at once; a transaction begun before the stop (DATA, BDAT chunks) ends
within ``--shutdown-grace``, its message stored and answered, then 421; one
beyond the grace gets 421 and nothing is stored.  A second signal during the
drain stops it now (asyncio and uvloop, with ``--workers`` too), and Ctrl-C at a
terminal drains a ``--workers`` server once.
"""

from __future__ import annotations

import importlib.util
import mailbox
import os
import re
import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from smtpwire.server._cli_options import build_parser
from support.cli import (
    MESSAGE,
    POSIX_ONLY,
    WAIT,
    CommandProcess,
    ServerProcess,
    python_m,
    run_cli,
    running,
)

pytestmark = POSIX_ONLY


# -- a graceful stop ----------------------------------------------------------------------

HANDLERS = """
import asyncio
from pathlib import Path


class Slow:
    \"\"\"Stores a message SECONDS after its end arrived: slow storage, on purpose.\"\"\"

    def __init__(self, seconds):
        self.seconds = float(seconds)

    @classmethod
    def from_cli(cls, parser, argument):
        return cls(argument)

    async def handle_DATA(self, server, session, envelope):
        print("RECEIVED", flush=True)
        await self.store()
        print("STORED", envelope.mail_from, flush=True)
        return "250 OK stored"

    async def store(self):
        await asyncio.sleep(self.seconds)


class Gated(Slow):
    \"\"\"Stores a message once the file GATE exists (the test creates it).\"\"\"

    def __init__(self, gate):
        self.gate = Path(gate)

    async def store(self):
        while not self.gate.exists():
            await asyncio.sleep(0.01)  # the handler's own poll, bounded by the test
"""


def with_handlers(directory: Path, *args: str) -> list[str]:
    """``python -m smtpwire.server -n -l 127.0.0.1:0 ARGS``, for a server started in
    ``directory``: the handlers above are written there for ``-c slow.Slow SECONDS``
    and ``-c slow.Gated GATE``."""
    (directory / "slow.py").write_text(HANDLERS)
    return python_m("-n", "-l", "127.0.0.1:0", *args)


@contextmanager
def slow_server(
    directory: Path, grace: str, seconds: str, *options: str
) -> Iterator[tuple[CommandProcess, str, int]]:
    """A server with ``--shutdown-grace GRACE`` whose handler takes SECONDS to store
    a message (``-c slow.Slow SECONDS``), running in ``directory``: it, and the
    address it listens on."""
    argv = with_handlers(directory, *options, "--shutdown-grace", grace, "-c", "slow.Slow", seconds)
    with running(argv, cwd=directory) as server:
        [(host, port)] = server.addresses()
        yield server, host, port


def in_transaction(smtp: smtplib.SMTP) -> None:
    """EHLO, MAIL and RCPT accepted."""
    smtp.ehlo()
    assert smtp.mail("anne@example.com")[0] == 250
    assert smtp.rcpt("bart@example.com")[0] == 250


def in_data(smtp: smtplib.SMTP, content: bytes = b"Subject: half a message\r\n") -> None:
    """MAIL, RCPT and DATA accepted, then ``content`` sent (by default, half a
    message)."""
    in_transaction(smtp)
    assert smtp.docmd("DATA")[0] == 354
    smtp.send(content)


def storing(server: ServerProcess, smtp: smtplib.SMTP) -> None:
    """A whole message sent, and its handler at work on it."""
    in_data(smtp, MESSAGE + b".\r\n")
    assert server.line() == "RECEIVED"


SHUTTING_DOWN = (421, b"4.3.2 Service shutting down, closing")
STORED = (250, b"2.6.0 OK stored")


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


def shut_out(smtp: smtplib.SMTP) -> None:
    """421 4.3.2, and the server closes the connection."""
    assert smtp.getreply() == SHUTTING_DOWN
    read_to_the_end(smtp)


def test_a_transaction_finishing_within_the_grace_is_stored_and_answered(tmp_path: Path) -> None:
    with slow_server(tmp_path, "60", "1") as (server, host, port):
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            storing(server, smtp)
            server.process.send_signal(signal.SIGTERM)  # while the handler works
            assert smtp.getreply() == STORED
            # The transaction over, no new one: 421, and the server closes.
            shut_out(smtp)
        status, stdout, stderr = finished(server)
    assert status == 0, stderr
    assert stdout == "STORED anne@example.com\n"


def test_a_transaction_beyond_the_grace_gets_421_and_is_not_stored(tmp_path: Path) -> None:
    with slow_server(tmp_path, "0.5", "3600") as (server, host, port):
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            storing(server, smtp)
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
    with slow_server(tmp_path, "60", "0") as (server, host, port):
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            in_transaction(smtp)
            server.process.send_signal(signal.SIGTERM)
            refused_from_now_on(host, port)
            assert server.process.poll() is None  # draining: our transaction holds it
            assert smtp.docmd("DATA")[0] == 354
            smtp.send(MESSAGE + b".\r\n")
            assert smtp.getreply() == STORED
            shut_out(smtp)
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
            in_transaction(smtp)
            smtp.send(b"BDAT %d\r\n%s" % (len(first), first))
            assert smtp.getreply()[0] == 250
            server.process.send_signal(signal.SIGTERM)
            refused_from_now_on(host, port)
            smtp.send(b"BDAT %d LAST\r\n%s" % (len(last), last))
            assert smtp.getreply()[0] == 250
            shut_out(smtp)
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
            shut_out(smtp)  # unasked, at once
        finally:
            smtp.close()
        status, _, stderr = finished(server)
    assert status == 0, stderr
    assert "still busy" not in stderr


def test_no_connection_is_accepted_while_sessions_drain(tmp_path: Path) -> None:
    with slow_server(tmp_path, "60", "0") as (server, host, port):
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
            shut_out(smtp)
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


def stop_now_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "stopping now" in line]


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_second_signal_during_the_drain_stops_now(tmp_path: Path, loop: str, signum: int) -> None:
    """The first signal begins the drain; a second one while sessions are still busy
    cuts it short: every session left gets the 421 the end of the grace sends, no
    message is stored, and the process exits cleanly, long before the grace is over."""
    with slow_server(tmp_path, "60", "3600", "--loop", loop) as (server, host, port):
        busy = smtplib.SMTP(host, port, timeout=WAIT)
        receiving = smtplib.SMTP(host, port, timeout=WAIT)
        idle = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            storing(server, busy)  # its handler sleeps for an hour
            in_data(receiving)
            assert idle.ehlo()[0] == 250
            server.process.send_signal(signum)
            shut_out(idle)  # the drain has begun
            assert server.process.poll() is None  # held by the two busy sessions
            server.process.send_signal(signum)
            for smtp in (busy, receiving):
                shut_out(smtp)
        finally:
            for smtp in (busy, receiving, idle):
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


def workers_finished(server: ServerProcess, pids: list[int]) -> tuple[str, str]:
    """:func:`finished` for ``--workers``: the supervisor exited with status 0,
    without a traceback, and its workers are gone; the rest of its output."""
    status, stdout, stderr = finished(server)
    wait_gone(pids)
    assert status == 0, stderr
    assert "Traceback" not in stderr
    return stdout, stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_workers_a_second_signal_to_the_supervisor_stops_them_now(
    tmp_path: Path, loop: str
) -> None:
    """The supervisor passes the second signal on: its workers stop now, as one
    server does."""
    argv = with_handlers(
        tmp_path, "--workers", "2", "--loop", loop,
        "--shutdown-grace", "60", "-c", "slow.Slow", "3600",
    )  # fmt: skip
    with supervising(argv, cwd=tmp_path) as (server, (host, port), pids):
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            storing(server, smtp)
            server.process.send_signal(signal.SIGTERM)
            refused_from_now_on(host, port)  # every worker drains
            assert server.process.poll() is None
            server.process.send_signal(signal.SIGTERM)
            shut_out(smtp)
        finally:
            smtp.close()
        stdout, stderr = workers_finished(server, pids)
    assert stdout == ""  # nothing stored
    assert "smtpwire-server: second signal (SIGTERM): stopping the workers now" in stderr
    assert "still busy" not in stderr


def test_workers_ctrl_c_at_a_terminal_drains_gracefully(tmp_path: Path) -> None:
    """Ctrl-C signals the whole foreground process group: the supervisor and its
    workers.  The supervisor passes SIGTERM on; a worker must not take that for a
    second signal, so a message in progress is still stored and answered."""
    gate = tmp_path / "gate"
    argv = with_handlers(
        tmp_path, "-d", "--workers", "2", "--shutdown-grace", "60", "-c", "slow.Gated", str(gate)
    )
    with supervising(argv, cwd=tmp_path, new_session=True) as (server, (host, port), pids):
        smtp = smtplib.SMTP(host, port, timeout=WAIT)
        try:
            storing(server, smtp)
            os.killpg(server.process.pid, signal.SIGINT)  # Ctrl-C
            # The supervisor's SIGTERM has reached both workers (each says so with -d).
            heard = 0
            while heard < len(pids):
                seen = server._next(server.stderr)
                server.stderr_seen.append(seen)
                heard += " mail.log INFO SIGTERM received, shutting down" in seen
            gate.touch()
            assert smtp.getreply() == STORED
            shut_out(smtp)
        finally:
            smtp.close()
        stdout, stderr = workers_finished(server, pids)
    assert stdout == "STORED anne@example.com\n"
    assert "stopping now" not in stderr
