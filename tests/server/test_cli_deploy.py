"""The command line as something to deploy: configuration by ``SMTPWIRE_*``
variables, ``-c`` finding a module in the current directory from the console
script too, ``-c ...Proxy HOST PORT``, and the Dockerfile's command line run for
real.  The graceful stop (``--shutdown-grace``, a second signal) is
test_cli_drain.py's.

Servers run as real processes on loopback; where the command line needs a fixed
port (the Dockerfile's ``-l``), a free one is found by binding port 0, and the
start is retried (a bounded number of times) if another process took it meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import smtplib
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    CommandProcess,
    python_m,
    run_cli,
    running,
)

pytestmark = POSIX_ONLY

REPOSITORY = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("smtpwire-server")
START_ATTEMPTS = 3


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
