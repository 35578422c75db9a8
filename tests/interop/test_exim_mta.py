"""Exim 4, a real MTA, on both sides of smtpwire (see interop/_exim.py for how it
runs here without being installed; skipped, saying why, where it cannot, and
failed instead under CI).

- Exim relaying into smtpwire.server: a modern Controller (PIPELINING, CHUNKING)
  with STARTTLS required is Exim's smarthost (``manualroute``, TLS required and the
  certificate verified against the test CA, CHUNKING tried).  A hundred messages of
  varied shape (up to about 1 MiB, one to four recipients, lone dots, long lines,
  8-bit text) are submitted with ``exim -odf -i``, each delivered before Exim exits.
  Exim ends each delivery with ``BDAT n LAST`` and ``QUIT`` in one flight, then
  closes TLS: the case the server's own TLS layer is for.  Each message must be
  stored exactly once with its envelope and body, and Exim's log must show one
  delivery per recipient, over verified TLS, by BDAT, and no deferral.
- smtpwire.client into Exim: Exim's daemon on loopback with ``smtp_enforce_sync``,
  PIPELINING, CHUNKING and STARTTLS offered, accepting for a test domain into
  ``:blackhole:``.  Two pools send 100 messages each at the same time: one
  pipelining across messages in plaintext, one by BDAT over verified STARTTLS.
  Exim must log no synchronisation error and no rejection, and receive and
  complete every message exactly once.
"""

from __future__ import annotations

import asyncio
import email.parser
import logging
import os
import random
import re
import shutil
import ssl
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from interop import _exim
from interop.peers import CLIENT_NAME, WAIT, Inbox
from smtpwire.client.pool import SMTPPool
from smtpwire.server.controller import Controller

Serve = Callable[..., Controller]

SUBMISSIONS = 100  # messages relayed by Exim into smtpwire.server
PER_POOL = 100  # messages each pool sends into Exim
PARALLEL = 8  # Exim submissions running at once
DOMAIN = "test.example"  # the domain Exim's daemon accepts mail for

_DELIVERY = re.compile(r"^\S+ \S+ (\S+) (=>|->) (\S+) (.*)$", re.MULTILINE)
_ARRIVAL = re.compile(r"^\S+ \S+ (\S+) <= (\S+) (.*)$", re.MULTILINE)
_COMPLETED = re.compile(r"^\S+ \S+ (\S+) Completed$", re.MULTILINE)
_MESSAGE_ID = re.compile(r" id=(\S+)")  # as Exim logs it: without the angle brackets


def obtain_or_skip(directory: Path) -> _exim.Exim:
    """Exim from :func:`interop._exim.obtain`; where it cannot be had the test is
    skipped, saying why, and fails under CI (the ``CI`` environment variable set),
    whose .ci/run makes it obtainable (root, apt-get's package lists): as
    :func:`interop.peers.require_tool` does for the other peers."""
    try:
        return _exim.obtain(directory)
    except _exim.Unavailable as reason:
        message = f"Exim unavailable: {reason}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: CI must be able to fetch it)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def exim() -> Iterator[_exim.Exim]:
    # Under /tmp, not tmp_path_factory's private directory: Exim's user re-executes
    # the binary, so the path to it must be open to all.
    directory = Path(tempfile.mkdtemp(prefix="smtpwire-exim-debs-", dir="/tmp"))
    try:
        found = obtain_or_skip(directory)
        yield found
        _exim.reap_strays(found)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("ci", ["", "true"], ids=["locally", "under-CI"])
def test_exim_unavailable_is_a_skip_locally_and_a_failure_under_ci(
    ci: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def unavailable(directory: Path) -> _exim.Exim:
        raise _exim.Unavailable("apt-get download exim4-daemon-light failed: no lists")

    monkeypatch.setattr(_exim, "obtain", unavailable)
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="Exim unavailable: apt-get download"):
        obtain_or_skip(tmp_path)


@pytest.fixture
def work(exim: _exim.Exim) -> Iterator[_exim.Workdir]:
    with _exim.workdir(exim) as directory:
        yield directory


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    sender: str
    recipients: tuple[str, ...]
    message_id: str
    headers: bytes  # LF line endings, as given to Exim
    body: bytes

    @property
    def text(self) -> bytes:
        return self.headers + b"\n" + self.body

    @property
    def logged_id(self) -> str:
        return self.message_id.strip("<>")

    def wire_body(self) -> bytes:
        return self.body.replace(b"\n", b"\r\n")


_TRICKY_LINES = [
    b".",  # a lone dot: with -i not an end, with DATA it would need stuffing
    b"..two dots",
    b".leading dot",
    b"From the start of a line",
    b"",
    b"trailing spaces   ",
    "8-bit: caf\u00e9 \u00fcber \u65e5\u672c".encode(),
    b"x" * 998,  # the longest line RFC 5321 allows
]


def body_of(size: int, rng: random.Random) -> bytes:
    lines: list[bytes] = []
    length = 0
    while length < size:
        if rng.random() < 0.1:
            line = rng.choice(_TRICKY_LINES)
        else:
            width = rng.choice([0, 20, 72, 76, 200, 500])
            line = bytes(rng.choice(b"abcdefghij klmnopqrstuvwxyz0123456789") for _ in range(width))
        lines.append(line)
        length += len(line) + 1
    return b"\n".join(lines) + b"\n"


def submission(n: int, size: int, recipients: int, rng: random.Random, domain: str) -> Submission:
    message_id = f"<{n}.{uuid.uuid4().hex}@smtpwire.test>"
    rcpts = tuple(f"user{n}-{k}@{domain}" for k in range(recipients))
    headers = (
        f"From: Sender {n} <sender{n}@example.org>\n"
        f"To: {', '.join(rcpts)}\n"
        f"Subject: message {n} of {size} octets\n"
        f"Message-ID: {message_id}\n"
        f"X-Number: {n}\n"
    ).encode()
    return Submission(f"sender{n}@example.org", rcpts, message_id, headers, body_of(size, rng))


def shapes(count: int, rng: random.Random, domain: str, largest: int) -> list[Submission]:
    """``count`` messages: a few near ``largest``, some tens of KiB, most small."""
    sizes = [largest - 1000 * k for k in range(3)]
    sizes += [rng.randrange(16_000, 256_000) for _ in range(count // 5)]
    sizes += [rng.randrange(50, 8_000) for _ in range(count - len(sizes))]
    return [
        submission(n, size, rng.choice([1, 1, 2, 3, 4]), rng, domain)
        for n, size in enumerate(sizes[:count])
    ]


def logged_id(details: str) -> str:
    """The Message-ID on an Exim ``<=`` line."""
    found = _MESSAGE_ID.search(details)
    assert found is not None, details
    return found[1]


def header(content: bytes, name: str) -> str | None:
    parsed = email.parser.BytesHeaderParser().parsebytes(content)
    value = parsed[name]
    return None if value is None else str(value)


# -- Exim relaying into smtpwire.server -------------------------------------------------


def smarthost_config(exim: _exim.Exim, work: _exim.Workdir, port: int, ca: Path) -> str:
    return (
        _exim.settings(exim, work)
        + f"""
begin routers
smarthost:
  driver = manualroute
  route_list = * 127.0.0.1::{port} byname
  transport = to_smtpwire
  # 127.0.0.1 is this host: deliver there all the same.
  self = send
  no_more

begin transports
to_smtpwire:
  driver = smtp
  allow_localhost
  helo_data = {CLIENT_NAME}
  hosts_require_tls = *
  tls_verify_hosts = *
  tls_verify_certificates = {ca}
  hosts_try_chunking = *
  connect_timeout = {int(WAIT)}s
  command_timeout = {int(WAIT)}s
  data_timeout = {int(WAIT)}s
"""
    )


@pytest.fixture
def smarthost(serve: Serve, server_tls_context: ssl.SSLContext) -> tuple[Inbox, Controller]:
    """smtpwire.server as Exim's smarthost: modern (PIPELINING, CHUNKING), STARTTLS
    required, every message kept in the Inbox."""
    inbox = Inbox()
    controller = serve(inbox, modern=True, tls_context=server_tls_context, require_starttls=True)
    return inbox, controller


def test_exim_relays_into_smtpwire_over_tls_with_chunking(
    exim: _exim.Exim,
    work: _exim.Workdir,
    smarthost: tuple[Inbox, Controller],
    ca_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mail.log")
    inbox, controller = smarthost
    ca = work.file("ca.pem", ca_file.read_bytes())
    work.config.write_text(smarthost_config(exim, work, controller.port, ca))
    sent = shapes(SUBMISSIONS, random.Random(19), "example.net", largest=1024 * 1024)

    def submit(message: Submission) -> tuple[Submission, int, bytes]:
        arguments = ["-odf", "-i", "-f", message.sender, "--", *message.recipients]
        result = exim.run(work.config, *arguments, message=message.text)
        return message, result.returncode, result.stdout + result.stderr

    with ThreadPoolExecutor(PARALLEL) as pool:
        for message, status, output in pool.map(submit, sent):
            assert status == 0, f"{message.message_id}: exim said {output!r}"

    # smtpwire stored each message exactly once, with its envelope and body.
    by_id = {message.message_id: message for message in sent}
    stored = Counter(header(received.content, "Message-ID") for received in inbox.messages)
    assert stored == Counter(list(by_id)), "missing or duplicated messages"
    for received in inbox.messages:
        message = by_id[str(header(received.content, "Message-ID"))]
        assert received.tls
        assert received.helo == CLIENT_NAME
        assert received.mail_from == message.sender
        assert sorted(received.rcpt_tos) == sorted(message.recipients)
        assert received.content.endswith(b"\r\n\r\n" + message.wire_body())
        assert header(received.content, "X-Number") == header(message.text, "X-Number")
        assert header(received.content, "Subject") == header(message.text, "Subject")

    # Exim: one delivery per recipient, over verified TLS, by BDAT, nothing deferred.
    log = work.log("mainlog")
    assert " == " not in log, "a delivery was deferred"
    assert " ** " not in log, "a delivery failed"
    assert "defer" not in log.lower()
    assert work.panics() == []
    arrivals = {exim_id: sender for exim_id, sender, _ in _ARRIVAL.findall(log)}
    assert len(arrivals) == SUBMISSIONS
    deliveries = Counter((exim_id, rcpt) for exim_id, _, rcpt, _ in _DELIVERY.findall(log))
    assert all(count == 1 for count in deliveries.values()), "a recipient delivered twice"
    expected = Counter(
        (exim_id, rcpt)
        for exim_id, sender in arrivals.items()
        for message in sent
        if message.sender == sender
        for rcpt in message.recipients
    )
    assert deliveries == expected
    for _, _, _, details in _DELIVERY.findall(log):
        assert " X=TLS" in details, details
        assert " CV=yes" in details, details  # the certificate was verified
        assert " K " in details, details  # CHUNKING was used
    assert set(_COMPLETED.findall(log)) == set(arrivals)
    assert inbox.sessions == SUBMISSIONS  # one connection per -odf delivery
    # And the server saw nothing wrong: no failed handshake, no lost connection.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- smtpwire.client into Exim's daemon --------------------------------------------------


def server_config(exim: _exim.Exim, work: _exim.Workdir, cert: Path, key: Path) -> str:
    return (
        _exim.settings(exim, work)
        + f"""
local_interfaces = 127.0.0.1
domainlist local_domains = {DOMAIN}
acl_smtp_rcpt = check_rcpt
smtp_enforce_sync = true
pipelining_advertise_hosts = *
chunking_advertise_hosts = *
tls_advertise_hosts = *
tls_certificate = {cert}
tls_privatekey = {key}
smtp_accept_max = 50
smtp_accept_queue_per_connection = 0
smtp_receive_timeout = {int(WAIT)}s
# On <= lines, L.: the client pipelined (L-: it did not); K: it sent by BDAT.
log_selector = +pipelining +smtp_connection

begin acl
check_rcpt:
  accept domains = +local_domains
  deny message = relay not permitted

begin routers
blackhole:
  driver = redirect
  domains = +local_domains
  data = :blackhole:
"""
    )


async def send_all(
    port: int, plain: list[Submission], tls: list[Submission], context: ssl.SSLContext
) -> list[tuple[str, dict[str, object]]]:
    """The plain pool pipelines across messages; the TLS pool sends by BDAT after
    STARTTLS.  Both at once; every message's refused-recipients dict, by
    Message-ID."""
    common = {"hostname": "127.0.0.1", "port": port, "local_hostname": CLIENT_NAME}
    results: list[tuple[str, dict[str, object]]] = []

    async def one(pool: SMTPPool, message: Submission) -> None:
        refused, _ = await pool.sendmail(
            message.sender, list(message.recipients), message.text.replace(b"\n", b"\r\n")
        )
        results.append((message.message_id, dict(refused)))

    async with (
        SMTPPool(**common, start_tls=False, max_connections=4, timeout=WAIT) as piped,
        SMTPPool(
            **common, start_tls=True, tls_context=context, chunking=True,
            max_connections=4, timeout=WAIT,
        ) as chunked,
    ):  # fmt: skip
        await asyncio.gather(
            *(one(piped, message) for message in plain),
            *(one(chunked, message) for message in tls),
        )
    return results


def test_smtpwire_client_into_exim_with_smtp_enforce_sync(
    exim: _exim.Exim,
    work: _exim.Workdir,
    certificate_authority: trustme.CA,
    client_tls_context: ssl.SSLContext,
) -> None:
    issued = certificate_authority.issue_cert("localhost", "127.0.0.1")
    cert = work.file("cert.pem", b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key = work.file("key.pem", issued.private_key_pem.bytes())
    work.config.write_text(server_config(exim, work, cert, key))
    rng = random.Random(2920)
    plain = shapes(PER_POOL, rng, DOMAIN, largest=200_000)
    tls = [
        submission(PER_POOL + n, rng.randrange(50, 60_000), rng.choice([1, 2, 3]), rng, DOMAIN)
        for n in range(PER_POOL)
    ]
    with _exim.daemon(exim, work) as port:
        results = asyncio.run(send_all(port, plain, tls, client_tls_context))
        assert sorted(results) == sorted((m.message_id, {}) for m in plain + tls)

        def all_completed() -> bool:
            return len(_COMPLETED.findall(work.log("mainlog"))) >= 2 * PER_POOL

        _exim.wait_for(all_completed, "Exim to complete every message", 3 * WAIT)

    log = work.log("mainlog")
    assert "synchronization error" not in log
    assert "synchronization error" not in work.log("rejectlog")
    assert work.log("rejectlog") == ""
    assert work.panics() == []
    arrivals = _ARRIVAL.findall(log)
    received = Counter(logged_id(details) for _, _, details in arrivals)
    assert received == Counter(m.logged_id for m in plain + tls), "missing or duplicated"
    senders = {m.logged_id: m.sender for m in plain + tls}
    over_tls = {m.logged_id for m in tls}
    for _, sender, details in arrivals:
        message_id = logged_id(details)
        assert sender == senders[message_id]
        assert (" X=TLS" in details) == (message_id in over_tls), details
        assert " L. " in details, details  # the client pipelined (L-: offered, unused)
        assert (" K " in details) == (message_id in over_tls), details  # BDAT
    # Messages went after each other on a few connections (at most 4 per pool),
    # each ended by QUIT.
    opened = log.count("(TCP/IP connection count = ")
    assert 2 <= opened <= 8
    assert log.count("closed by QUIT") == opened
    completed = _COMPLETED.findall(log)
    assert len(completed) == len(set(completed)) == 2 * PER_POOL
    assert " ** " not in log
    assert " == " not in log
