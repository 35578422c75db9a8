"""smtpwire.client sending into Postfix's test server, smtp-sink: one connection
(pipelined, as smtp-sink offers PIPELINING), the pool from many tasks, ``send()``,
the LMTP client into ``smtp-sink -L``, SMTPUTF8 refused (smtp-sink lacks it), and
the ``smtpwire-send`` command line.

STARTTLS: smtp-sink never offers it (it has no TLS code at all, whatever the
options), so the opportunistic default (``start_tls=None``) sends in plaintext and
``start_tls=True`` refuses to send; TLS with a real peer is covered by smtplib and
swaks against smtpwire.server.

smtp-sink dumps each transaction it accepted to a file of its own (``-d``), with
its line endings as LF and the dot-stuffing undone, closed before its reply to the
final dot; the tests compare those files with what was sent.  smtp-sink cannot be
told to bind port 0 and report it, so it gets a free port found just before (and
another if that one was taken meanwhile).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

import smtpwire.client
from interop.peers import CLIENT_NAME, WAIT, run_peer, transcript
from smtpwire.client import SMTP, SMTPException, SMTPNotSupported
from smtpwire.client.lmtp import LMTP
from smtpwire.client.pool import SMTPPool

SENDER = "sender@example.org"
RECIPIENTS = ["one@example.org", "two@example.org"]
BIND_ATTEMPTS = 5  # free ports tried, in case another process takes one first
POLL = 0.02  # seconds between attempts to connect while smtp-sink starts


@dataclass
class Sink:
    port: int
    dumps: Path

    def received(self) -> dict[bytes, bytes]:
        """Every dumped message by its Message-Id: smtp-sink's own header lines, then
        the message with LF line endings."""
        messages: dict[bytes, bytes] = {}
        for path in self.dumps.iterdir():
            dump = path.read_bytes()
            [message_id] = [
                line.split(b":", 1)[1].strip()
                for line in dump.split(b"\n\n", 1)[0].split(b"\n")
                if line.lower().startswith(b"message-id:")
            ]
            messages[message_id] = dump
        return messages


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once ``port`` accepts connections; False if smtp-sink exited (a port
    taken meanwhile).  Bounded by WAIT; waits on the process, not with sleep."""
    for _ in range(int(WAIT / POLL)):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT):
                return True
        except ConnectionRefusedError:
            pass
        try:
            process.wait(timeout=POLL)
        except subprocess.TimeoutExpired:
            continue
        return False
    raise AssertionError(f"smtp-sink did not listen on port {port} within {WAIT} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ends smtp-sink and reaps it."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=WAIT)


@contextmanager
def running_sink(smtp_sink: str, *options: str) -> Iterator[Sink]:
    """smtp-sink with ``options`` on a free loopback port, dumping to a directory of
    its own; stopped, reaped and its dumps removed on exit."""
    user: list[str] = []
    parent = None
    if os.geteuid() == 0:
        # As root smtp-sink must drop to another user, who must be able to write
        # the dumps: a directory of /tmp, open to all, for this test only.
        user = ["-u", "nobody"]
        parent = "/tmp"  # noqa: S108 - not $TMPDIR, which nobody may not reach
    dumps = Path(tempfile.mkdtemp(prefix="smtp-sink-", dir=parent))
    if user:
        dumps.chmod(0o777)
    # stderr to a file, not a pipe: a pipe nobody reads could fill and stall smtp-sink.
    with tempfile.TemporaryFile() as errors:
        try:
            for _ in range(BIND_ATTEMPTS):
                port = free_port()
                dump = ["-d", f"{dumps}/message."]
                command = [smtp_sink, *user, *options, *dump, f"127.0.0.1:{port}", "100"]
                process = subprocess.Popen(  # noqa: S603 - fixed program and arguments
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
                )
                try:
                    listening = wait_until_listening(process, port)
                    if listening:
                        yield Sink(port, dumps)
                finally:
                    stop(process)
                if listening:
                    break
            else:
                errors.seek(0)
                raise AssertionError(f"smtp-sink never started: {errors.read().decode()}")
            errors.seek(0)
            complaints = errors.read().decode(errors="replace")
            assert complaints == "", f"smtp-sink complained: {complaints}"
        finally:
            shutil.rmtree(dumps)


@pytest.fixture
def sink(smtp_sink: str) -> Iterator[Sink]:
    with running_sink(smtp_sink) as running:
        yield running


@pytest.fixture
def lmtp_sink(smtp_sink: str) -> Iterator[Sink]:
    with running_sink(smtp_sink, "-L") as running:
        yield running


def message(number: int) -> bytes:
    """A message with the places a DATA section goes wrong: a leading dot, a lone
    dot, a line that is only two dots, an empty last line."""
    return (
        f"From: {SENDER}\r\n"
        f"To: {', '.join(RECIPIENTS)}\r\n"
        f"Subject: interop {number}\r\n"
        f"Message-Id: <{number}@client.example>\r\n"
        "\r\n"
        f"message {number}\r\n"
        ".leading dot\r\n"
        ".\r\n"
        "..\r\n"
        "\r\n"
    ).encode()


def dumped(number: int, protocol: str) -> bytes:
    """What smtp-sink writes for ``message(number)`` sent by this test (without its
    Received: header): its own header lines, the message, and an empty line."""
    header = (
        f"X-Client-Addr: 127.0.0.1\n"
        f"X-Client-Proto: {protocol}\n"
        f"X-Helo-Args: {CLIENT_NAME}\n"
        f"X-Mail-Args: <{SENDER}>\n"
        + "".join(f"X-Rcpt-Args: <{recipient}>\n" for recipient in RECIPIENTS)
    ).encode()
    return header + message(number).replace(b"\r\n", b"\n") + b"\n"


def assert_dumps(sink: Sink, numbers: range, protocol: str = "ESMTP") -> None:
    received = sink.received()
    assert sorted(received) == sorted(f"<{number}@client.example>".encode() for number in numbers)
    for number in numbers:
        dump = received[f"<{number}@client.example>".encode()]
        # smtp-sink's Received: header (with its id and the time) comes between.
        head, _, rest = dump.partition(b"Received: from ")
        _, _, body = rest.partition(b"\n\t")
        _, _, body = body.partition(b"\n\t")
        _, _, body = body.partition(b"\n")
        assert head + body == dumped(number, protocol)


def client(sink: Sink, **options: object) -> SMTP:
    return SMTP(
        hostname="127.0.0.1",
        port=sink.port,
        local_hostname=CLIENT_NAME,
        timeout=WAIT,
        **options,  # type: ignore[arg-type]
    )


async def test_one_connection_many_messages(sink: Sink) -> None:
    count = 500
    async with client(sink, start_tls=False) as smtp:
        for number in range(count):
            refused, reply = await smtp.sendmail(SENDER, RECIPIENTS, message(number))
            assert (refused, reply) == ({}, "2.0.0 Ok")
        assert smtp.supports_extension("pipelining")
    assert_dumps(sink, range(count))


async def test_pool_from_many_tasks(sink: Sink) -> None:
    count = 500
    async with SMTPPool(
        hostname="127.0.0.1",
        port=sink.port,
        local_hostname=CLIENT_NAME,
        timeout=WAIT,
        start_tls=False,
        max_connections=10,
        max_messages_per_connection=50,
    ) as pool:
        results = await asyncio.gather(
            *(pool.sendmail(SENDER, RECIPIENTS, message(number)) for number in range(count))
        )
    assert results == [({}, "2.0.0 Ok")] * count
    assert_dumps(sink, range(count))


async def test_send_function(sink: Sink) -> None:
    refused, reply = await smtpwire.client.send(
        message(0),
        sender=SENDER,
        recipients=RECIPIENTS,
        hostname="127.0.0.1",
        port=sink.port,
        local_hostname=CLIENT_NAME,
        timeout=WAIT,
    )
    assert (refused, reply) == ({}, "2.0.0 Ok")
    assert_dumps(sink, range(1))


async def test_opportunistic_starttls_sends_in_plaintext_when_not_offered(sink: Sink) -> None:
    async with client(sink) as smtp:  # start_tls=None: upgrade only when offered
        assert not smtp.supports_extension("starttls")
        assert smtp.get_transport_info("sslcontext") is None
        refused, reply = await smtp.sendmail(SENDER, RECIPIENTS, message(0))
        assert (refused, reply) == ({}, "2.0.0 Ok")
    assert_dumps(sink, range(1))


async def test_required_starttls_refuses_to_send_when_not_offered(sink: Sink) -> None:
    smtp = client(sink, start_tls=True)
    with pytest.raises(SMTPException, match="STARTTLS extension not supported"):
        await smtp.connect()
    assert not smtp.is_connected
    assert sink.received() == {}


async def test_lmtp_client_into_smtp_sink_speaking_lmtp(lmtp_sink: Sink) -> None:
    """smtp-sink -L answers LHLO and gives one reply per recipient after the data."""
    count = 50
    lmtp = LMTP(hostname="127.0.0.1", port=lmtp_sink.port, local_hostname=CLIENT_NAME, timeout=WAIT)
    async with lmtp:
        for number in range(count):
            refused, reply = await lmtp.sendmail(SENDER, RECIPIENTS, message(number))
            assert (refused, reply) == ({}, "2.2.0 Ok")
    assert_dumps(lmtp_sink, range(count), protocol="LMTP")


async def test_utf8_address_refused_as_smtp_sink_lacks_smtputf8(sink: Sink) -> None:
    email = EmailMessage()
    email["From"] = "jos\u00e9@example.org"
    email["To"] = ", ".join(RECIPIENTS)
    email.set_content("caf\u00e9\n")
    async with client(sink) as smtp:
        assert not smtp.supports_extension("smtputf8")
        with pytest.raises(SMTPNotSupported, match="SMTPUTF8"):
            await smtp.send_message(email)
        # Refused before MAIL: the connection is still good for the next message.
        refused, reply = await smtp.sendmail(SENDER, RECIPIENTS, message(0))
        assert (refused, reply) == ({}, "2.0.0 Ok")
    assert_dumps(sink, range(1))


def test_smtpwire_send_one_message_and_a_load(sink: Sink, tmp_path: Path) -> None:
    """The command line, verbose, with an attachment; then 200 messages over 8
    connections, each dumped exactly once."""
    attachment = tmp_path / "report.txt"
    attachment.write_bytes(b"figures\n.\n")
    send = [sys.executable, "-m", "smtpwire.client", "send", "--server",
            f"127.0.0.1:{sink.port}", "--from", SENDER, "--ehlo", CLIENT_NAME]  # fmt: skip
    one = run_peer([*send, "--to", RECIPIENTS[0], "--attach", str(attachment), "-v"])
    assert one.returncode == 0, transcript(one)
    assert "S: 220 " in one.stdout
    assert "S: 250-PIPELINING" in one.stdout
    assert one.stdout.endswith("sent: 2.0.0 Ok\n")
    [dump] = sink.received().values()
    assert f"X-Rcpt-Args: <{RECIPIENTS[0]}>\n".encode() in dump
    assert b'filename="report.txt"' in dump

    many = run_peer([*send, "--to", RECIPIENTS[1], "--count", "200", "--concurrency", "8"])
    assert many.returncode == 0, transcript(many)
    assert many.stdout.startswith("sent 200, refused 0, failed 0 in ")
    assert len(list(sink.dumps.iterdir())) == 201
    assert len(sink.received()) == 201  # each Message-Id once
