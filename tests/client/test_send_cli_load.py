"""``smtpwire-send --count N --concurrency K`` (load generation through SMTPPool)
as a real process: every message arrives exactly once, the summary counts
right, a dead server stops the run.  Into a real peer, Postfix's smtp-sink:
tests/interop/test_smtp_sink.py."""

from __future__ import annotations

import email
import re
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from smtpwire.server.lmtp import LMTP as ServerLMTP
from smtpwire.server.smtp import SMTP as ServerSMTP
from support.client_harness import Sink, free_port, smtp_server
from support.server import ServerThread

WAIT = 120.0  # bound on each child process (a thousand messages included)
ENVELOPE = ("--from", "anne@example.com", "--to", "bart@example.com")


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


class CountingSink(Sink):
    """A Sink that says when it has stored ``enough`` messages."""

    def __init__(self, enough: int) -> None:
        super().__init__()
        self.enough = enough
        self.reached = threading.Event()

    def record(self, envelope: Any) -> None:
        super().record(envelope)
        if len(self.messages) >= self.enough:
            self.reached.set()


def test_ctrl_c_stops_the_run_and_still_prints_the_summary() -> None:
    """SIGINT, as Ctrl-C sends it, in the middle of a long run: status 130, and a
    summary in which every message is counted once and every one counted as sent
    did arrive."""
    sink = CountingSink(enough=50)
    with smtp_server(sink) as server:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed module
            [sys.executable, "-m", "smtpwire.client", "send",
             "--server", f"127.0.0.1:{server.port}", *ENVELOPE,
             "--count", "1000000", "--concurrency", "4"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sink.reached.wait(WAIT), "the run never got going"
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=WAIT)
        finally:
            process.kill()
            process.wait(WAIT)
        received = len(sink.messages)
    assert process.returncode == 130, stderr
    assert stderr == "smtpwire-send: interrupted\n"
    summary = re.fullmatch(
        r"sent (\d+), refused 0, failed 0, skipped (\d+)(?:, unfinished (\d+))? "
        r"in [\d.]+ s \([\d.]+ msg/s\)\n",
        stdout,
    )
    assert summary is not None, stdout
    sent, skipped, unfinished = (int(group or 0) for group in summary.groups())
    assert sent + skipped + unfinished == 1_000_000
    assert unfinished <= 4  # at most one per connection was under way
    assert received >= 50
    assert sent <= received <= sent + unfinished
