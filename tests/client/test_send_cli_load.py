"""``smtpwire-send --count N --concurrency K`` (load generation through SMTPPool)
as a real process: every message arrives exactly once, the summary counts
right, a dead server stops the run; and a real peer, Postfix's smtp-sink."""

from __future__ import annotations

import email
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from smtpwire.server.lmtp import LMTP as ServerLMTP
from smtpwire.server.smtp import SMTP as ServerSMTP
from support.client_harness import Sink, free_port, smtp_server
from support.server import ServerThread

WAIT = 120.0  # bound on each child process (a thousand messages included)
ENVELOPE = ("--from", "anne@example.com", "--to", "bart@example.com")
SMTP_SINK = "/usr/sbin/smtp-sink"


def run_send(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, fixed module
        [sys.executable, "-m", "smtpwire.client", "send", *arguments],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip


def test_a_thousand_messages_ten_at_a_time_arrive_exactly_once(
    server: ServerThread, sink: Sink
) -> None:
    result = run_send(
        "--server", f"127.0.0.1:{server.port}", *ENVELOPE, "--count", "1000",
        "--concurrency", "10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress bar
    assert result.stdout.startswith("sent 1000, refused 0, failed 0 in ")
    assert result.stdout.endswith(" msg/s)\n")
    message_ids = {
        email.message_from_bytes(content)["Message-ID"] for _, _, content in sink.messages
    }
    assert len(sink.messages) == 1000
    assert len(message_ids) == 1000
    assert len(server.protocols) <= 10 * 10  # connections reused (100 messages each at most)


def test_refusals_are_counted_and_set_the_status(server: ServerThread, sink: Sink) -> None:
    result = run_send(
        "--server", f"127.0.0.1:{server.port}", "--from", "anne@example.com",
        "--to", "nobody@example.com", "--count", "20", "--concurrency", "4",
    )  # fmt: skip
    assert result.returncode == 5
    assert result.stdout.startswith("sent 0, refused 20, failed 0 in ")
    assert result.stderr.splitlines() == [
        "smtpwire-send: message 1: every recipient refused: "
        "nobody@example.com (550 5.1.1 No such user)"
    ]
    assert sink.messages == []


def test_lmtp_load_gets_every_recipients_result() -> None:
    """--count with --lmtp: the pool's connections speak LMTP, and no message is
    pipelined behind another (each ends with one reply per recipient)."""
    sink = Sink()
    with smtp_server(sink, cls=ServerLMTP, pipelining=True) as server:
        result = run_send(
            "--server", f"127.0.0.1:{server.port}", "--lmtp", *ENVELOPE,
            "--to", "carl@example.com", "--count", "60", "--concurrency", "4",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent 60, refused 0, failed 0 in ")
    assert [recipients for _, recipients, _ in sink.messages] == [
        ["bart@example.com", "carl@example.com"]
    ] * 60
    assert len({email.message_from_bytes(c)["Message-ID"] for _, _, c in sink.messages}) == 60


class SeesPipelining(ServerSMTP):
    """Counts the reads that hold more than one envelope command (MAIL, RCPT,
    DATA), i.e. commands the client did not wait to see answered."""

    pipelined_reads = 0

    def data_received(self, data: bytes) -> None:
        if len(re.findall(rb"^(?:MAIL|RCPT|DATA)\b", data, re.MULTILINE)) > 1:
            SeesPipelining.pipelined_reads += 1
        super().data_received(data)


@pytest.mark.parametrize("pipelining", [True, False], ids=["default", "--no-pipelining"])
def test_load_without_pipelining_sends_one_command_at_a_time(pipelining: bool) -> None:
    sink = Sink()
    SeesPipelining.pipelined_reads = 0
    flag = [] if pipelining else ["--no-pipelining"]
    with smtp_server(sink, cls=SeesPipelining, pipelining=True) as server:
        result = run_send(
            "--server", f"127.0.0.1:{server.port}", *ENVELOPE, *flag,
            "--count", "30", "--concurrency", "3",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(sink.messages) == 30
    # The default pipelines (so the count can see it); --no-pipelining never does.
    assert (SeesPipelining.pipelined_reads > 0) is pipelining


def test_a_dead_server_stops_the_run() -> None:
    port = free_port()
    result = run_send(
        "--server", f"127.0.0.1:{port}", *ENVELOPE, "--count", "500", "--concurrency", "5"
    )
    assert result.returncode == 3
    assert "skipped" in result.stdout  # not 500 attempts at a closed port
    assert result.stderr.splitlines() == [
        f"smtpwire-send: message 1: cannot connect to 127.0.0.1:{port}: Connection refused"
    ]


# --- Postfix's smtp-sink -------------------------------------------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[int]:
    if not os.access(SMTP_SINK, os.X_OK) or shutil.which("smtp-sink", path="/usr/sbin") is None:
        pytest.skip("Postfix's smtp-sink is not installed")
    port = free_port()
    # As root, smtp-sink insists on dropping privileges to a named user.
    privileges = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(  # noqa: S603 - a fixed system binary
        [SMTP_SINK, *privileges, f"127.0.0.1:{port}", "100"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_listening(process, port)
        yield port
    finally:
        process.terminate()
        process.wait(WAIT)
        if process.stderr is not None:
            process.stderr.close()


def wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    """smtp-sink has no readiness signal: try to connect until it answers, at most
    for WAIT seconds, between tries waiting on the process itself (so one that
    died is reported at once)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
        except ConnectionRefusedError:
            try:
                process.wait(0.05)
            except subprocess.TimeoutExpired:
                continue
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"smtp-sink exited with {process.returncode}: {stderr}")
        else:
            return
    pytest.fail("smtp-sink did not start listening")


def test_against_postfix_smtp_sink(smtp_sink: int) -> None:
    server = ("--server", f"127.0.0.1:{smtp_sink}")
    one = run_send(*server, *ENVELOPE, "--to", "carl@example.com", "--attach", __file__, "-v")
    assert one.returncode == 0, one.stderr
    assert "S: 220 " in one.stdout
    assert "S: 250-PIPELINING" in one.stdout
    assert one.stdout.endswith("sent: 2.0.0 Ok\n")
    many = run_send(*server, *ENVELOPE, "--count", "200", "--concurrency", "8")
    assert many.returncode == 0, many.stderr
    assert many.stdout.startswith("sent 200, refused 0, failed 0 in ")
