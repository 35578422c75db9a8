"""A real HAProxy (mode tcp, ``send-proxy-v2``, round robin) in front of two
``smtpwire-server --proxy-protocol 5`` processes.

Mail sent through HAProxy by swaks and by smtpwire.client, from the source
address 127.0.0.2 and a source port the test chose, must arrive with that
address and port as ``session.peer`` and in ``handle_PROXY``'s ``proxy_data``
(HAProxy itself reaches the servers from 127.0.0.1), spread over both
servers.  Then one server is stopped with SIGTERM while clients keep sending:
every message is delivered exactly once (counted by Message-ID), the clients
sending again what was refused with 421 or lost with the connection.

Not covered: a TLS-passthrough frontend.  With passthrough HAProxy writes the
PROXY header in clear before the client's TLS handshake, while the command
line's implicit TLS (``--smtpscert``) does the handshake first and expects the
header inside TLS (aiosmtpd's order), so the two cannot be put together.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest

from interop.peers import CLIENT_NAME, WAIT, require_tool, run_peer, transcript
from smtpwire.client import SMTP
from support.cli import ServerProcess

HAPROXY = "/usr/sbin/haproxy"
SOURCE = "127.0.0.2"  # the clients' address; HAProxy talks to the servers from 127.0.0.1

PEER_LOG = '''
import email
import json
import os
from pathlib import Path


class PeerLog:
    """Each message as DIRECTORY/<uuid>.json: the worker's pid, session.peer, the
    PROXY header's source and the Message-ID."""

    def __init__(self, directory):
        self.directory = Path(directory)

    @classmethod
    def from_cli(cls, parser, directory):
        return cls(directory)

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        session.proxy_source = [str(proxy_data.src_addr), proxy_data.src_port]
        return True

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content)
        record = {
            "pid": os.getpid(),
            "peer": list(session.peer[:2]),
            "proxy_source": session.proxy_source,
            "message_id": message["Message-ID"],
        }
        name = f"{os.getpid()}-{message['Message-ID'].strip('<>')}-{id(session)}"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_text(json.dumps(record))
        temporary.rename(self.directory / f"{name}.json")
        return "250 OK"
'''

CONFIG = """\
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch 1

frontend smtp
    bind 127.0.0.1:{frontend}
    default_backend smtpwire

backend smtpwire
    balance roundrobin
    server s1 127.0.0.1:{port1} send-proxy-v2
    server s2 127.0.0.1:{port2} send-proxy-v2
"""


@pytest.fixture(scope="module")
def haproxy() -> str:
    return require_tool(HAPROXY, "haproxy")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def until(what: str, timeout: float = 2 * WAIT) -> Iterator[None]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        yield
    pytest.fail(f"gave up after {timeout} s waiting for {what}")


def records(inbox: Path) -> list[dict[str, object]]:
    return [json.loads(path.read_text()) for path in sorted(inbox.glob("*.json"))]


@contextmanager
def backend(inbox: Path, env: dict[str, str]) -> Iterator[tuple[ServerProcess, int, int]]:
    """A server on a port of its own choosing: (process, port, pid)."""
    server = ServerProcess(
        "-n", "-l", "127.0.0.1:0", "--proxy-protocol", "5", "-c", "peerlog.PeerLog", str(inbox),
        env=env,
    )  # fmt: skip
    try:
        [(_, port)] = server.addresses()
        yield server, port, server.process.pid
    finally:
        server.kill()


@contextmanager
def running_haproxy(haproxy: str, tmp_path: Path, port1: int, port2: int) -> Iterator[int]:
    """HAProxy on a free port (tried again, a few times, if it was taken meanwhile),
    accepting connections; stopped (killed if need be) on the way out."""
    for attempt in range(5):
        frontend = free_port()
        config = tmp_path / f"haproxy-{attempt}.cfg"
        config.write_text(CONFIG.format(frontend=frontend, port1=port1, port2=port2))
        checked = run_peer([haproxy, "-c", "-f", str(config)])
        assert checked.returncode == 0, transcript(checked)
        log = (tmp_path / f"haproxy-{attempt}.log").open("w+")
        process = subprocess.Popen(  # noqa: S603 - the system's haproxy, our config
            [haproxy, "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in until("HAProxy to listen"):
                if process.poll() is not None:
                    break
                with suppress(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", frontend), timeout=WAIT).close()
                    break
            if process.poll() is None:
                yield frontend
                return
            log.seek(0)
            output = log.read()
            if "Address already in use" not in output and "cannot bind" not in output:
                pytest.fail(f"HAProxy did not start: {output}")
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(WAIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(WAIT)
            log.close()
    pytest.fail("no free port for HAProxy in 5 tries")


@pytest.fixture
def peer_env(tmp_path: Path) -> dict[str, str]:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "peerlog.py").write_text(PEER_LOG)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(modules), *filter(None, [environment.get("PYTHONPATH")])]
    )
    return environment


def message(message_id: str) -> str:
    return (
        f"From: anne@example.org\r\nTo: bart@example.org\r\nMessage-ID: <{message_id}>\r\n"
        f"Subject: through HAProxy\r\n\r\nHello.\r\n"
    )


async def send_once(frontend: int, message_id: str, source_port: int = 0) -> bool:
    """True once the server answered 250 to the message; False when it was refused
    or the connection failed before (then it may be sent again)."""
    accepted = False
    try:
        client = SMTP(
            hostname="127.0.0.1",
            port=frontend,
            source_address=(SOURCE, source_port),
            local_hostname=CLIENT_NAME,
            timeout=WAIT,
        )
        async with client:
            await client.sendmail("anne@example.org", ["bart@example.org"], message(message_id))
            accepted = True
    except Exception:  # 421, a reset, a refused connection: all mean "try again"
        return accepted  # an error after the 250 (at QUIT) still means accepted
    return True


def test_the_original_client_reaches_both_servers(
    haproxy: str, swaks: str, tmp_path: Path, peer_env: dict[str, str]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with ExitStack() as stack:
        _, port1, pid1 = stack.enter_context(backend(inbox, peer_env))
        _, port2, pid2 = stack.enter_context(backend(inbox, peer_env))
        frontend = stack.enter_context(running_haproxy(haproxy, tmp_path, port1, port2))
        sent: dict[str, int] = {}
        for n in range(4):
            message_id, source_port = f"swaks-{n}-{uuid.uuid4().hex}", free_port(SOURCE)
            result = run_peer([
                swaks, "--server", "127.0.0.1", "--port", str(frontend),
                "--local-interface", SOURCE, "--local-port", str(source_port),
                "--helo", CLIENT_NAME, "--from", "anne@example.org", "--to", "bart@example.org",
                "--header", f"Message-Id: <{message_id}>", "--timeout", str(int(WAIT)),
            ])  # fmt: skip
            assert result.returncode == 0, transcript(result)
            sent[message_id] = source_port
        for n in range(4):
            message_id, source_port = f"client-{n}-{uuid.uuid4().hex}", free_port(SOURCE)
            assert asyncio.run(send_once(frontend, message_id, source_port))
            sent[message_id] = source_port
    found = records(inbox)
    assert sorted(str(r["message_id"]).strip("<>") for r in found) == sorted(sent)
    for record in found:
        source_port = sent[str(record["message_id"]).strip("<>")]
        assert record["peer"] == [SOURCE, source_port]
        assert record["proxy_source"] == [SOURCE, source_port]
    assert {r["pid"] for r in found} == {pid1, pid2}  # round robin


def test_a_server_stopped_mid_run_loses_no_message(
    haproxy: str, tmp_path: Path, peer_env: dict[str, str]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    total, senders = 60, 4
    with ExitStack() as stack:
        _, port1, _ = stack.enter_context(backend(inbox, peer_env))
        stopped, port2, pid2 = stack.enter_context(backend(inbox, peer_env))
        frontend = stack.enter_context(running_haproxy(haproxy, tmp_path, port1, port2))
        ids = [f"run-{n}-{uuid.uuid4().hex}" for n in range(total)]
        accepted: list[str] = []
        attempts = 0

        async def sender(mine: list[str]) -> None:
            nonlocal attempts
            for message_id in mine:
                for _ in range(20):
                    attempts += 1
                    if await send_once(frontend, message_id):
                        accepted.append(message_id)
                        break
                else:
                    pytest.fail(f"{message_id} refused 20 times")
                if len(accepted) == total // 3 and stopped.process.poll() is None:
                    stopped.process.send_signal(signal.SIGTERM)  # in the middle of the run

        async def run_all() -> None:
            await asyncio.gather(*(sender(ids[n::senders]) for n in range(senders)))

        asyncio.run(run_all())
        assert stopped.process.wait(WAIT) == 0
    found = [str(r["message_id"]).strip("<>") for r in records(inbox)]
    assert sorted(found) == sorted(ids)  # each exactly once
    assert sorted(accepted) == sorted(ids)
    by_stopped = sum(1 for r in records(inbox) if r["pid"] == pid2)
    assert 0 < by_stopped < total // 2  # it served until it was stopped, mid-run
