"""Running the command line as a real process, ``python -m smtpwire.server``, for
the CLI tests: its output is read by threads so that every wait on it is bounded,
and the startup line on stderr tells which addresses it listens on."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
import trustme

WAIT = 20.0  # the bound on every wait for the server process
LISTENING = re.compile(r" listening on (?P<where>.+?) \(")
ADDRESS = re.compile(r"\[?(?P<host>[^\[\]]+?)\]?:(?P<port>\d+)$")
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

MESSAGE = b"Subject: hello\r\nFrom: anne@example.com\r\n\r\nHi Bart.\r\n"


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: stdout a plain pipe, block-buffered as for a
    user piping the output (so a missing flush would show)."""
    environment = dict(os.environ if env is None else env)
    environment.pop("PYTHONUNBUFFERED", None)
    return environment


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class ServerProcess:
    """A running ``python -m smtpwire.server``, with its output read by threads so
    that every wait on it can be bounded."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self._start([sys.executable, "-m", "smtpwire.server", *args], env=env)

    def _start(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, or the test's own
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

    def startup_line(self) -> str:
        while True:
            line = self._next(self.stderr)
            self.stderr_seen.append(line)
            if LISTENING.search(line):
                return line

    def addresses(self) -> list[tuple[str, int]]:
        match = LISTENING.search(self.startup_line())
        assert match is not None
        found = []
        for part in match["where"].split(", "):
            address = ADDRESS.fullmatch(part)
            assert address is not None, part
            found.append((address["host"], int(address["port"])))
        return found

    def line(self) -> str:
        """The next line the server printed on stdout, without its newline."""
        return self._next(self.stdout).rstrip("\n")

    def message(self) -> list[str]:
        """The lines Debugging printed for the next message."""
        lines = []
        while True:
            line = self._next(self.stdout).rstrip("\n")
            lines.append(line)
            if line == "------------ END MESSAGE ------------":
                return lines

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str, str]:
        """Signal the server; its exit status and the rest of its output."""
        self.process.send_signal(signum)
        status = self.process.wait(WAIT)
        for reader in self._readers:
            reader.join(WAIT)
        return (
            status,
            self._drain(self.stdout),
            "".join(self.stderr_seen) + self._drain(self.stderr),
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        for reader in self._readers:
            reader.join(WAIT)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()

    def _next(self, lines: queue.Queue[str | None]) -> str:
        try:
            line = lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"the server said nothing for {WAIT} s; stderr so far: {self.stderr_seen}")
        if line is None:
            status = self.process.wait(WAIT)
            rest = self._drain(self.stderr)
            pytest.fail(f"the server ended (status {status}): {''.join(self.stderr_seen)}{rest}")
        return line

    @staticmethod
    def _drain(lines: queue.Queue[str | None]) -> str:
        collected: list[str] = []
        while True:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                return "".join(collected)
            if line is not None:
                collected.append(line)


@contextmanager
def server_process(
    *args: str, listen: str = "127.0.0.1:0", env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess("-n", "-l", listen, *args, env=env)
    try:
        yield server
    finally:
        server.kill()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, fixed module
        [sys.executable, "-m", "smtpwire.server", *args],
        env=child_environment(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def python_m(*args: str) -> list[str]:
    """The command line ``python -m smtpwire.server ARGS`` with this interpreter."""
    return [sys.executable, "-m", "smtpwire.server", *args]


class CommandProcess(ServerProcess):
    """:class:`ServerProcess` for any command line, working directory and process
    group: the console script, the Dockerfile's command, a handler module the test
    wrote in ``cwd`` for ``-c``, Ctrl-C to a process group of its own."""

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ):
        self._start(argv, cwd=cwd, env=env, new_session=new_session)


@contextmanager
def running(
    argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[CommandProcess]:
    """:class:`CommandProcess`, killed on the way out."""
    server = CommandProcess(argv, cwd=cwd, env=env)
    try:
        yield server
    finally:
        server.kill()


def write_certificate(directory: Path) -> tuple[trustme.CA, Path, Path]:
    """A throw-away CA and a certificate it issued for 127.0.0.1 and localhost,
    written to ``directory`` for ``--tlscert``/``--smtpscert`` (the chain) and
    ``--tlskey``/``--smtpskey``: (the CA, the chain's file, the key's file)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "cert.pem", directory / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for pem in issued.cert_chain_pems[1:]:
        pem.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    return ca, cert, key
