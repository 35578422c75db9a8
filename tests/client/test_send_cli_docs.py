"""docs/sender.md stays true: every ``smtpwire-send`` command in its ``sh`` blocks
runs (as ``python -m smtpwire.client send``) against a local server chosen by
its options, with ``--server`` replaced by that server's address and the files
it names made in a scratch directory; and its exit status table is the code's."""

from __future__ import annotations

import os
import re
import shlex
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from smtpwire.client._send_errors import ExitStatus
from smtpwire.server.controller import Controller
from smtpwire.server.lmtp import LMTP as ServerLMTP
from smtpwire.server.smtp import AuthResult, LoginPassword
from support.client_harness import HOST, Sink, smtp_server

WAIT = 60.0
DOC = Path(__file__).resolve().parents[2] / "docs" / "sender.md"
PROGRAM = "smtpwire-send"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
USER, PASSWORD = b"anne", b"secret"


@dataclass(frozen=True)
class Example:
    environment: dict[str, str]
    arguments: list[str]
    stdin_file: str | None

    def __str__(self) -> str:
        return shlex.join(self.arguments)


def examples() -> list[Example]:
    found = []
    for block in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line)
            assignments = [word for word in words if re.fullmatch(r"[A-Z_]+=.*", word)]
            command = words[len(assignments) :]
            if not command or command[0] != PROGRAM:
                continue  # the swaks (or smtp-source) equivalent
            stdin_file = None
            if "<" in command:
                at = command.index("<")
                stdin_file, command = command[at + 1], command[:at]
            environment = dict(word.split("=", 1) for word in assignments)
            found.append(Example(environment, command[1:], stdin_file))
    return found


EXAMPLES = examples()


def test_the_document_has_examples() -> None:
    assert len(EXAMPLES) >= 15


def test_the_exit_status_table_is_the_code() -> None:
    section = DOC.read_text(encoding="utf-8").split("## Exit status", 1)[1]
    documented = {int(n) for n in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {int(status) for status in ExitStatus} | {130}


# --- the servers the examples run against --------------------------------------------------------


class Authenticator:
    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        return AuthResult(success=auth_data == (USER, PASSWORD), auth_data=auth_data)


@dataclass
class Servers:
    plain: int
    starttls: int
    smtps: int
    lmtp: int
    sinks: dict[str, Sink]

    def pick(self, arguments: list[str]) -> str:
        if "--tls" in arguments:
            return "smtps"
        if "--lmtp" in arguments:
            return "lmtp"
        if "--starttls" in arguments or "--cacert" in arguments:
            return "starttls"
        return "plain"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def servers(ca: trustme.CA) -> Iterator[Servers]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    sinks = {name: Sink() for name in ("plain", "starttls", "smtps", "lmtp")}
    with ExitStack() as stack:
        plain = stack.enter_context(
            smtp_server(sinks["plain"], enable_SMTPUTF8=True, pipelining=True, chunking=True)
        )
        starttls = stack.enter_context(
            smtp_server(sinks["starttls"], tls_context=context, authenticator=Authenticator())
        )
        lmtp = stack.enter_context(smtp_server(sinks["lmtp"], cls=ServerLMTP))
        smtps = Controller(
            sinks["smtps"], hostname="127.0.0.1", port=0, ssl_context=context,
            server_hostname=HOST,
        )  # fmt: skip
        smtps.start()
        stack.callback(smtps.stop)
        yield Servers(plain.port, starttls.port, smtps.port, lmtp.port, sinks)


@pytest.fixture(scope="module")
def scratch(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the examples name, in the directory they run in."""
    directory = tmp_path_factory.mktemp("sender-doc")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    client = ca.issue_cert("client.example.org")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    (directory / "report.pdf").write_bytes(b"%PDF-1.4\n")
    (directory / "body.txt").write_text("Hello from a file.\n")
    (directory / "page.html").write_text("<p>Hello</p>\n")
    (directory / "message.eml").write_bytes(b"Subject: ready-made\r\n\r\nAs given.\r\n")
    return directory


def with_server(arguments: list[str], port: int) -> list[str]:
    at = arguments.index("--server")
    return [*arguments[: at + 1], f"127.0.0.1:{port}", *arguments[at + 2 :]]


@pytest.mark.parametrize("example", EXAMPLES, ids=[str(e)[:60] for e in EXAMPLES])
def test_example_runs(example: Example, servers: Servers, scratch: Path) -> None:
    name = servers.pick(example.arguments)
    sink = servers.sinks[name]
    before = len(sink.messages)
    arguments = with_server(example.arguments, getattr(servers, name))
    environment = {**os.environ, **example.environment}
    if "SMTPWIRE_PASSWORD" not in example.environment:
        environment.pop("SMTPWIRE_PASSWORD", None)
    stdin = (scratch / example.stdin_file).read_bytes() if example.stdin_file else b""
    result = subprocess.run(  # noqa: S603 - this interpreter, fixed module
        [sys.executable, "-m", "smtpwire.client", "send", *arguments],
        input=stdin, capture_output=True, cwd=scratch, env=environment, timeout=WAIT,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    count = int(arguments[arguments.index("--count") + 1]) if "--count" in arguments else 1
    assert len(sink.messages) == before + count
