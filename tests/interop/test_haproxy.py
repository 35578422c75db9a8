"""A real HAProxy (mode tcp, round robin) in front of two ``smtpwire-server
--proxy-protocol 5`` processes, run with the configurations docs/deploy.md gives:
each is read from that page and started as written but for the addresses and
ports (loopback), the ``log`` line (HAProxy's standard error) and, where a test
says so, the check interval and a stats socket.  So the page's configuration is
the one tested, and HAProxy's own limits (its ``global`` ``maxconn`` against the
file descriptors it may have) are tried for real, which ``haproxy -c`` does not.

- ``send-proxy-v2``: mail sent through HAProxy by swaks and by smtpwire.client,
  from the source address 127.0.0.2 and a source port the test chose, must arrive
  with that address and port as ``session.peer`` and in ``handle_PROXY``'s
  ``proxy_data`` (HAProxy itself reaches the servers from 127.0.0.1), spread over
  both servers.  Then one server is stopped with SIGTERM while clients keep
  sending: every message is delivered exactly once (counted by Message-ID), the
  clients sending again what was refused with 421 or lost with the connection.
- Implicit TLS passed through (``mode tcp``, ``send-proxy-v2``) to servers started
  with ``--smtpscert``/``--smtpskey``: HAProxy writes the PROXY header in clear and
  the client's TLS handshake follows; the server reads the header, then does the
  handshake itself: the message arrives over TLS (``session.ssl``) with the
  original client as the peer.
- Implicit TLS terminated at HAProxy (``bind ... ssl crt``) with
  ``send-proxy-v2-ssl`` to plaintext servers: the server sees no TLS, and the
  header's SSL TLV says what TLS there was (``proxy_data.tlv.SSL_VERSION`` is the
  version the client negotiated).
- Health checks: ``option smtpchk`` through ``send-proxy-v2`` (so each check
  carries a header) marks both servers UP with "Layer7 check passed", as HAProxy's
  stats socket reports; a server stopped is marked DOWN, and mail still flows
  through the other.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import pytest
import trustme

from interop.peers import CLIENT_NAME, WAIT, require_tool, run_peer, transcript
from smtpwire.client import SMTP
from support.cli import ServerProcess

HAPROXY = "/usr/sbin/haproxy"
T = TypeVar("T")
SOURCE = "127.0.0.2"  # the clients' address; HAProxy talks to the servers from 127.0.0.1
DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
# The first line of each HAProxy configuration docs/deploy.md gives.
MAIN_CONFIG = "# /etc/haproxy/haproxy.cfg"
TLS_TERMINATED = "# Implicit TLS terminated at HAProxy:"
TLS_PASSED_THROUGH = "# Implicit TLS passed through to the servers:"

PEER_LOG = '''
import email
import json
import os
from pathlib import Path


class PeerLog:
    """Each message as DIRECTORY/<uuid>.json: the worker's pid, session.peer, the
    PROXY header's source and SSL TLV, whether the session is over TLS, and the
    Message-ID."""

    def __init__(self, directory):
        self.directory = Path(directory)

    @classmethod
    def from_cli(cls, parser, directory):
        return cls(directory)

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        session.proxy_source = [str(proxy_data.src_addr), proxy_data.src_port]
        tlv = proxy_data.tlv
        if tlv is not None and tlv.SSL is not None:
            version = tlv.SSL_VERSION
            session.proxy_ssl = {
                "SSL": tlv.SSL,
                "SSL_CLIENT": tlv.SSL_CLIENT,
                "SSL_VERIFY": tlv.SSL_VERIFY,
                "SSL_VERSION": None if version is None else bytes(version).decode("ascii"),
            }
        return True

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content)
        record = {
            "pid": os.getpid(),
            "peer": list(session.peer[:2]),
            "proxy_source": session.proxy_source,
            "proxy_ssl": getattr(session, "proxy_ssl", None),
            "tls": session.ssl is not None,
            "message_id": message["Message-ID"],
        }
        name = f"{os.getpid()}-{message['Message-ID'].strip('<>')}-{id(session)}"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_text(json.dumps(record))
        temporary.rename(self.directory / f"{name}.json")
        return "250 OK"
'''


# -- the configurations of docs/deploy.md, on loopback ------------------------------------


def docs_block(first_line: str) -> str:
    """The fenced block of docs/deploy.md whose first line is ``first_line``."""
    text = DEPLOY.read_text(encoding="utf-8")
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        if block.startswith(first_line + "\n"):
            return str(block)
    pytest.fail(f"docs/deploy.md has no block starting {first_line!r}")


def substitute(
    pattern: str, replacement: str | Callable[[re.Match[str]], str], text: str, *, count: int = 0
) -> str:
    """``re.sub`` over lines that must match (``count`` times, when given): a page
    edited so that a substitution no longer applies fails here, not silently."""
    changed, made = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    changed_page = f"docs/deploy.md's HAProxy configuration changed: {pattern!r} matched"
    assert made, f"{changed_page} nothing"
    assert not count or made == count, f"{changed_page} {made} times, not {count}"
    return changed


def docs_config(
    frontend: int,
    ports: Sequence[int],
    *,
    variant: str = MAIN_CONFIG,
    crt: Path | None = None,
    inter: str | None = None,
    stats: Path | None = None,
) -> str:
    """docs/deploy.md's ``global`` and ``defaults``, then the ``frontend`` and
    ``backend`` of ``variant`` (the main block, or one of the port 465 blocks) on
    loopback: the first ``bind`` on 127.0.0.1:``frontend`` (the others dropped), the
    servers on 127.0.0.1:``ports`` in order, ``crt`` for the certificate, the log on
    stderr; ``inter`` replaces the check interval, ``stats`` adds an admin socket."""
    main = docs_block(MAIN_CONFIG)
    head, _, proxies = main.partition("\nfrontend ")
    proxies = "frontend " + proxies
    if variant != MAIN_CONFIG:
        proxies = docs_block(variant)
    head = substitute(
        r"^(\s+)log /dev/log local0$", r"\1log stderr format raw local0", head, count=1
    )
    if stats is not None:
        head = substitute(
            r"^global$", f"global\n    stats socket {stats} mode 600 level admin", head, count=1
        )
    binds: list[str] = []

    def bind(match: re.Match[str]) -> str:
        binds.append(match[0])
        return f"{match[1]}bind 127.0.0.1:{frontend}{match[2]}\n" if len(binds) == 1 else ""

    proxies = substitute(r"^(\s+)bind :\d+(.*)\n", bind, proxies)
    servers: list[str] = []

    def server(match: re.Match[str]) -> str:
        servers.append(match[0])
        if len(servers) > len(ports):
            return match[0]  # more servers than ports: the count below fails
        return f"{match[1]}127.0.0.1:{ports[len(servers) - 1]}"

    proxies = substitute(r"^(\s+server \S+ )\S+:\d+", server, proxies, count=len(ports))
    if crt is not None:
        proxies = substitute(r" crt \S+", f" crt {crt}", proxies, count=1)
    if inter is not None:
        proxies = substitute(r" inter 10s\b", f" inter {inter}", proxies)
    return f"{head}\n{proxies}"


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
def backend(
    inbox: Path, env: dict[str, str], *options: str
) -> Iterator[tuple[ServerProcess, int, int]]:
    """A server on a port of its own choosing: (process, port, pid)."""
    server = ServerProcess(
        "-n", "-l", "127.0.0.1:0", "--proxy-protocol", "5", *options,
        "-c", "peerlog.PeerLog", str(inbox), env=env,
    )  # fmt: skip
    try:
        [(_, port)] = server.addresses()
        yield server, port, server.process.pid
    finally:
        server.kill()


@contextmanager
def running_haproxy(
    haproxy: str, tmp_path: Path, render: Callable[[int], str]
) -> Iterator[tuple[int, Path]]:
    """HAProxy with the configuration ``render(frontend)`` on a free port (tried
    again, a few times, if it was taken meanwhile), accepting connections:
    (frontend port, its log).  Stopped (killed if need be) on the way out."""
    for attempt in range(5):
        frontend = free_port()
        config = tmp_path / f"haproxy-{attempt}.cfg"
        config.write_text(render(frontend))
        checked = run_peer([haproxy, "-c", "-f", str(config)])
        assert checked.returncode == 0, transcript(checked)
        log_path = tmp_path / f"haproxy-{attempt}.log"
        log = log_path.open("w+")
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
                yield frontend, log_path
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


@contextmanager
def two_backends_behind_haproxy(
    haproxy: str,
    tmp_path: Path,
    inbox: Path,
    peer_env: dict[str, str],
    *options: str,
    variant: str = MAIN_CONFIG,
    crt: Path | None = None,
) -> Iterator[tuple[int, set[int]]]:
    """Two servers (started with ``options``) behind HAProxy with docs/deploy.md's
    ``variant`` configuration: (the frontend port, the servers' pids)."""
    with ExitStack() as stack:
        _, port1, pid1 = stack.enter_context(backend(inbox, peer_env, *options))
        _, port2, pid2 = stack.enter_context(backend(inbox, peer_env, *options))
        frontend, _ = stack.enter_context(
            running_haproxy(
                haproxy,
                tmp_path,
                lambda port: docs_config(port, [port1, port2], variant=variant, crt=crt),
            )
        )
        yield frontend, {pid1, pid2}


def delivered(inbox: Path, sent: dict[str, T]) -> list[tuple[dict[str, object], T]]:
    """Every message ``sent`` (by Message-ID) arrived, once: each record with what
    the test kept about that message."""
    found = records(inbox)
    assert sorted(str(r["message_id"]).strip("<>") for r in found) == sorted(sent)
    return [(record, sent[str(record["message_id"]).strip("<>")]) for record in found]


def swaks_through(
    swaks: str, frontend: int, message_id: str, source_port: int, *options: str
) -> subprocess.CompletedProcess[str]:
    """swaks sending one message through HAProxy from SOURCE:``source_port``."""
    result = run_peer([
        swaks, "--server", "127.0.0.1", "--port", str(frontend), *options,
        "--local-interface", SOURCE, "--local-port", str(source_port),
        "--helo", CLIENT_NAME, "--from", "anne@example.org", "--to", "bart@example.org",
        "--header", f"Message-Id: <{message_id}>", "--timeout", str(int(WAIT)),
    ])  # fmt: skip
    assert result.returncode == 0, transcript(result)
    return result


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


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    directory = tmp_path / "inbox"
    directory.mkdir()
    return directory


@pytest.fixture
def certificate(certificate_authority: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    """The servers' certificate for "localhost" and 127.0.0.1, from the test CA, as
    files: "chain" and "key" (smtpwire's --smtpscert/--smtpskey), "pem" (both in
    one, HAProxy's ``crt``)."""
    leaf = certificate_authority.issue_cert("localhost", "127.0.0.1")
    files = {name: tmp_path / f"server-{name}.pem" for name in ("chain", "key", "pem")}
    files["chain"].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(files["pem"]))
    return files


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


async def send_over_tls(
    frontend: int, message_id: str, source_port: int, context: ssl.SSLContext
) -> str:
    """One message over implicit TLS (the server's certificate verified against the
    test CA); the TLS version the client negotiated."""
    client = SMTP(
        hostname="127.0.0.1",
        port=frontend,
        source_address=(SOURCE, source_port),
        local_hostname=CLIENT_NAME,
        timeout=WAIT,
        use_tls=True,
        tls_context=context,
    )
    async with client:
        tls = client.get_transport_info("ssl_object")
        assert isinstance(tls, ssl.SSLObject), tls
        refused, _ = await client.sendmail(
            "anne@example.org", ["bart@example.org"], message(message_id)
        )
        assert refused == {}
    return str(tls.version())


def haproxy_servers(stats: Path) -> dict[str, dict[str, str]]:
    """``show stat`` on HAProxy's stats socket: the backend smtpwire's servers by
    name, each its CSV row (status, check_status, check_desc...)."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(WAIT)
        connection.connect(str(stats))
        connection.sendall(b"show stat\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    rows = csv.DictReader(answer.decode().removeprefix("# ").splitlines())
    return {
        row["svname"]: row
        for row in rows
        if row["pxname"] == "smtpwire" and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def test_the_original_client_reaches_both_servers(
    haproxy: str, swaks: str, tmp_path: Path, inbox: Path, peer_env: dict[str, str]
) -> None:
    with two_backends_behind_haproxy(haproxy, tmp_path, inbox, peer_env) as (frontend, pids):
        sent: dict[str, int] = {}
        for n in range(4):
            message_id, source_port = f"swaks-{n}-{uuid.uuid4().hex}", free_port(SOURCE)
            swaks_through(swaks, frontend, message_id, source_port)
            sent[message_id] = source_port
        for n in range(4):
            message_id, source_port = f"client-{n}-{uuid.uuid4().hex}", free_port(SOURCE)
            assert asyncio.run(send_once(frontend, message_id, source_port))
            sent[message_id] = source_port
    arrived = delivered(inbox, sent)
    for record, source_port in arrived:
        assert record["peer"] == [SOURCE, source_port]
        assert record["proxy_source"] == [SOURCE, source_port]
        assert record["tls"] is False
        assert record["proxy_ssl"] is None
    assert {record["pid"] for record, _ in arrived} == pids  # round robin


def test_a_server_stopped_mid_run_loses_no_message(
    haproxy: str, tmp_path: Path, inbox: Path, peer_env: dict[str, str]
) -> None:
    total, senders = 60, 4
    with ExitStack() as stack:
        _, port1, _ = stack.enter_context(backend(inbox, peer_env))
        stopped, port2, pid2 = stack.enter_context(backend(inbox, peer_env))
        frontend, _ = stack.enter_context(
            running_haproxy(haproxy, tmp_path, lambda port: docs_config(port, [port1, port2]))
        )
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


# -- implicit TLS: passed through, or terminated at HAProxy -------------------------------


def test_implicit_tls_passed_through_reaches_smtps_servers_with_the_original_client(
    *,
    haproxy: str,
    swaks_with_tls: str,
    tmp_path: Path,
    inbox: Path,
    peer_env: dict[str, str],
    certificate: dict[str, Path],
    client_tls_context: ssl.SSLContext,
) -> None:
    smtps = ("--smtpscert", str(certificate["chain"]), "--smtpskey", str(certificate["key"]))
    with two_backends_behind_haproxy(
        haproxy, tmp_path, inbox, peer_env, *smtps, variant=TLS_PASSED_THROUGH
    ) as (frontend, pids):
        sent: dict[str, int] = {}
        for n in range(2):
            message_id, source_port = f"swaks-tls-{n}-{uuid.uuid4().hex}", free_port(SOURCE)
            result = swaks_through(
                swaks_with_tls, frontend, message_id, source_port, "--tls-on-connect"
            )
            assert "TLS started" in result.stdout + result.stderr, transcript(result)
            sent[message_id] = source_port
        for n in range(2):
            message_id, source_port = f"client-tls-{n}-{uuid.uuid4().hex}", free_port(SOURCE)
            # The client verifies the certificate: the TLS is the server's own.
            asyncio.run(send_over_tls(frontend, message_id, source_port, client_tls_context))
            sent[message_id] = source_port
    arrived = delivered(inbox, sent)
    for record, source_port in arrived:
        assert record["tls"] is True  # the handshake was the server's, after the header
        assert record["peer"] == [SOURCE, source_port]
        assert record["proxy_source"] == [SOURCE, source_port]
        assert record["proxy_ssl"] is None  # HAProxy saw no TLS, only bytes
    assert {record["pid"] for record, _ in arrived} == pids


def test_tls_terminated_at_haproxy_reaches_the_server_as_the_ssl_tlv(
    *,
    haproxy: str,
    tmp_path: Path,
    inbox: Path,
    peer_env: dict[str, str],
    certificate: dict[str, Path],
    client_tls_context: ssl.SSLContext,
) -> None:
    with two_backends_behind_haproxy(
        haproxy, tmp_path, inbox, peer_env, variant=TLS_TERMINATED, crt=certificate["pem"]
    ) as (frontend, pids):
        sent: dict[str, tuple[int, str]] = {}
        for n in range(4):
            message_id, source_port = f"terminated-{n}-{uuid.uuid4().hex}", free_port(SOURCE)
            version = asyncio.run(
                send_over_tls(frontend, message_id, source_port, client_tls_context)
            )
            sent[message_id] = (source_port, version)
    arrived = delivered(inbox, sent)
    for record, (source_port, version) in arrived:
        assert version.startswith("TLSv1.")
        assert record["tls"] is False  # HAProxy to the server: plaintext
        assert record["peer"] == [SOURCE, source_port]
        ssl_tlv = record["proxy_ssl"]
        assert isinstance(ssl_tlv, dict), record
        assert ssl_tlv["SSL"] is True  # the SSL TLV, whole
        assert ssl_tlv["SSL_VERSION"] == version
        assert ssl_tlv["SSL_CLIENT"] & 0x01  # PP2_CLIENT_SSL: the client came over TLS
    assert {record["pid"] for record, _ in arrived} == pids


# -- health checks ------------------------------------------------------------------------


def test_smtpchk_through_send_proxy_v2_marks_the_servers_up_and_a_stopped_one_down(
    haproxy: str, tmp_path: Path, inbox: Path, peer_env: dict[str, str]
) -> None:
    with ExitStack() as stack:
        # A short path: a Unix socket's must fit in 108 octets.
        stats = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="haproxy-")))
        stats /= "stats.sock"
        _, port1, pid1 = stack.enter_context(backend(inbox, peer_env))
        stopped, port2, _ = stack.enter_context(backend(inbox, peer_env))
        frontend, log = stack.enter_context(
            running_haproxy(
                haproxy,
                tmp_path,
                lambda port: docs_config(port, [port1, port2], inter="200ms", stats=stats),
            )
        )

        def checked(name: str, status: str, check: str) -> Callable[[], bool]:
            def holds() -> bool:
                try:
                    server = haproxy_servers(stats)[name]
                except (FileNotFoundError, ConnectionRefusedError):
                    # HAProxy may accept on the frontend before it made this socket.
                    return False
                return server["status"] == status and server["check_status"] == check

            return holds

        for _ in until("HAProxy's smtpchk to pass on both servers"):
            if checked("s1", "UP", "L7OK")() and checked("s2", "UP", "L7OK")():
                break
        servers = haproxy_servers(stats)
        # EHLO answered 250, then QUIT 221: the checks came with their PROXY header,
        # or the servers would have closed them unanswered.
        assert {name: servers[name]["check_desc"] for name in ("s1", "s2")} == {
            "s1": "Layer7 check passed",
            "s2": "Layer7 check passed",
        }
        assert stopped.stop(signal.SIGTERM)[0] == 0
        for _ in until("HAProxy to mark the stopped server DOWN"):
            if checked("s2", "DOWN", "L4CON")():
                break
        assert checked("s1", "UP", "L7OK")()
        assert "Server smtpwire/s2 is DOWN" in log.read_text()
        # Mail still flows, through the server left.
        message_id = f"after-{uuid.uuid4().hex}"
        assert asyncio.run(send_once(frontend, message_id))
    [record] = records(inbox)
    assert record["pid"] == pid1
    assert str(record["message_id"]).strip("<>") == message_id
