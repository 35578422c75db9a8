"""The command line's ``--loop {auto,asyncio,uvloop}``: which event loop serves.

The server runs as a real process (``support.cli``) with a handler that prints
the class of the loop running it, so each test sees the loop that really
serves.  uvloop's absence is simulated by a module named ``uvloop`` that fails
to import, first on the PYTHONPATH of the server process, or put in place of
uvloop in ``sys.modules`` for the parsing done in this process.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import smtplib
import sys
from pathlib import Path

import pytest

from smtpwire.server import main as cli
from support.cli import MESSAGE, POSIX_ONLY, WAIT, run_cli, server_process


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HAVE_UVLOOP = importable("uvloop")
NEEDS_UVLOOP = pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed")
NOT_INSTALLED = (
    "error: --loop uvloop: uvloop is not installed (pip install 'smtpwire-server[uvloop]')"
)

LOOP_REPORTER = """
import asyncio


class LoopReporter:
    \"\"\"Prints the class of the event loop that runs its hook.\"\"\"

    async def handle_DATA(self, server, session, envelope):
        loop = type(asyncio.get_running_loop())
        print(f"{loop.__module__}.{loop.__qualname__}", flush=True)
        return "250 OK"
"""

ABSENT_UVLOOP = 'raise ImportError("no uvloop here (the test hides it)")\n'


def environment(directory: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture
def with_reporter(tmp_path: Path) -> dict[str, str]:
    """The environment of a server process that can import ``loop_report``."""
    (tmp_path / "loop_report.py").write_text(LOOP_REPORTER)
    return environment(tmp_path)


@pytest.fixture
def without_uvloop(tmp_path: Path) -> dict[str, str]:
    """The same, with an ``uvloop`` module first on the path that fails to import."""
    (tmp_path / "loop_report.py").write_text(LOOP_REPORTER)
    (tmp_path / "uvloop.py").write_text(ABSENT_UVLOOP)
    return environment(tmp_path)


def serving_loop(*args: str, env: dict[str, str]) -> tuple[str, str]:
    """Serve one message on a server started with ``args``: the class of the loop
    that ran the hook, and the startup line."""
    with server_process("-c", "loop_report.LoopReporter", *args, env=env) as server:
        [(host, port)] = server.addresses()
        startup = server.stderr_seen[-1]  # the line addresses() read them from
        with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
            assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        loop_class = server.line()
        status, _, stderr = server.stop(signal.SIGINT)
    assert status == 0, stderr
    assert "Traceback" not in stderr
    return loop_class, startup


# -- parsing -------------------------------------------------------------------------


def test_auto_is_the_default() -> None:
    _, options = cli.parseargs([])
    assert options.loop == "auto"
    assert options.loop_name == ("uvloop" if HAVE_UVLOOP else "asyncio")


def test_asyncio_is_the_standard_librarys_loop() -> None:
    _, options = cli.parseargs(["--loop", "asyncio"])
    assert options.loop_name == "asyncio"
    assert options.loop_factory is asyncio.new_event_loop


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    _, options = cli.parseargs(["--loop", "auto"])
    assert options.loop_name == "asyncio"
    assert options.loop_factory is asyncio.new_event_loop


def test_uvloop_without_uvloop_is_a_one_line_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(SystemExit) as exit_info:
        cli.parseargs(["--loop", "uvloop"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.endswith(NOT_INSTALLED)


def test_an_unknown_loop_is_a_usage_error() -> None:
    result = run_cli("-n", "-l", "127.0.0.1:0", "--loop", "trio")
    assert result.returncode == 2
    assert "argument --loop: invalid choice: 'trio'" in result.stderr


def test_help_names_the_choices() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--loop {auto,asyncio,uvloop}" in result.stdout


@NEEDS_UVLOOP
def test_uvloop_when_installed() -> None:
    _, options = cli.parseargs(["--loop", "uvloop"])
    assert options.loop_name == "uvloop"
    loop = options.loop_factory()
    try:
        assert type(loop).__module__ == "uvloop"
    finally:
        loop.close()


# -- serving ---------------------------------------------------------------------------


@POSIX_ONLY
def test_asyncio_serves_on_the_default_loop(with_reporter: dict[str, str]) -> None:
    loop_class, startup = serving_loop("--loop", "asyncio", env=with_reporter)
    assert loop_class.startswith("asyncio.")
    assert "uvloop" not in startup


@POSIX_ONLY
def test_auto_serves_on_asyncio_without_uvloop(without_uvloop: dict[str, str]) -> None:
    loop_class, startup = serving_loop(env=without_uvloop)
    assert loop_class.startswith("asyncio.")
    assert "uvloop" not in startup


@POSIX_ONLY
def test_uvloop_missing_stops_the_server_process_with_one_line(
    without_uvloop: dict[str, str],
) -> None:
    result = run_cli("-n", "-l", "127.0.0.1:0", "--loop", "uvloop", env=without_uvloop)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.endswith(NOT_INSTALLED), line


@POSIX_ONLY
@NEEDS_UVLOOP
@pytest.mark.parametrize("choice", ["uvloop", "auto"])
def test_uvloop_serves_on_a_uvloop_loop(with_reporter: dict[str, str], choice: str) -> None:
    loop_class, startup = serving_loop("--loop", choice, env=with_reporter)
    assert loop_class == "uvloop.Loop"
    assert "; uvloop" in startup


@pytest.mark.parametrize("loop_kind", ["asyncio", pytest.param("uvloop", marks=NEEDS_UVLOOP)])
@POSIX_ONLY
def test_the_startup_line_is_said_once_the_loop_runs(loop_kind: str) -> None:
    """Regression: the startup line (or a worker's announcement to its supervisor)
    was said between the loop's run for start_serving() and run_forever().  uvloop
    drops a signal that arrives there, so a SIGTERM sent as soon as the line was
    seen was lost and a --workers worker never stopped (seen in CI, 1 run in ~20)."""
    from smtpwire.server._cli_serving import serve

    if loop_kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    said_while_running: list[bool] = []

    def announce(line: str) -> None:
        said_while_running.append(loop.is_running())
        loop.stop()  # as a signal would

    try:
        server = loop.run_until_complete(
            loop.create_server(asyncio.Protocol, "127.0.0.1", 0, start_serving=False)
        )
        serve(loop, server, "listening", announce)
        server.close()
        loop.run_until_complete(server.wait_closed())
    finally:
        loop.close()
    assert said_while_running == [True]
