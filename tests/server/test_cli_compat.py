"""The command line as aiosmtpd 1.4.6's ``main``/``parseargs`` behave, for suites
that call them in-process: ``main()`` serves on the caller's current event loop
and returns once that loop is stopped; ``parseargs()`` builds the handler;
``-l`` splits at the last colon.

In-process servers listen on port 0 of 127.0.0.1; the test learns the port from
the startup line (``sys.stderr`` is a stream that reacts to it), talks to the
server from a task on the same loop, and stops the loop itself.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mailbox
import os
import shutil
import signal
import smtplib
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smtpwire.server._cli_serving import current_loop
from smtpwire.server.handlers import Debugging
from smtpwire.server.main import main, parseargs
from support.cli import ADDRESS, LISTENING, MESSAGE, POSIX_ONLY, WAIT, ServerProcess

SINK = "smtpwire.server.handlers.Sink"
LOGGERS = ("mail.log", "mail.debug", "asyncio")


class FromCliHandler:
    def __init__(self, called: str) -> None:
        self.called = called

    @classmethod
    def from_cli(cls, parser: object, *args: str) -> FromCliHandler:
        return cls(*args)  # too many arguments: a TypeError, as in aiosmtpd's test


class NullHandler:
    pass


@pytest.fixture
def callers_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop the test sets as current, as aiosmtpd's ``temp_event_loop`` does;
    the loggers' levels are put back afterwards."""
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


class StartupWatch(io.StringIO):
    """Stands in for stderr: calls ``on_listening(host, port)`` once the startup
    line has been written."""

    def __init__(self, on_listening: Callable[[str, int], object]) -> None:
        super().__init__()
        self.on_listening = on_listening
        self.seen = False

    def write(self, text: str) -> int:
        written = super().write(text)
        match = LISTENING.search(self.getvalue())
        if match and not self.seen:
            self.seen = True
            address = ADDRESS.fullmatch(match["where"])
            assert address is not None
            self.on_listening(address["host"], int(address["port"]))
        return written


def when_listening(
    monkeypatch: pytest.MonkeyPatch, on_listening: Callable[[str, int], object]
) -> list[int]:
    """Arrange ``on_listening``; the list gets the port the server listened on."""
    ports: list[int] = []

    def record(host: str, port: int) -> None:
        ports.append(port)
        on_listening(host, port)

    monkeypatch.setattr(sys, "stderr", StartupWatch(record))
    return ports


def refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def noop_reply(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await reader.readline()  # the greeting
        writer.write(b"NOOP\r\n")
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


# -- main(): the caller's event loop ---------------------------------------------------------


def test_main_serves_on_the_callers_loop_until_a_callback_stops_it(
    callers_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies: list[bytes] = []
    tasks: list[asyncio.Task[None]] = []

    async def talk_then_stop(host: str, port: int) -> None:
        try:
            replies.append(await asyncio.wait_for(noop_reply(host, port), WAIT))
        finally:
            callers_loop.stop()

    ports = when_listening(
        monkeypatch,
        lambda host, port: tasks.append(callers_loop.create_task(talk_then_stop(host, port))),
    )
    main(["-n", "-l", "127.0.0.1:0", "-c", SINK])
    assert replies == [b"250 2.0.0 OK\r\n"]
    # The loop is the caller's: still current, open, and no longer running.
    assert current_loop() is callers_loop
    assert not callers_loop.is_running()
    assert refused(ports[0])


def test_a_callback_raising_keyboard_interrupt_ends_main_cleanly(
    callers_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    ports = when_listening(monkeypatch, lambda host, port: callers_loop.call_soon(interrupt))
    main(["-n", "-l", "127.0.0.1:0", "-c", SINK])
    assert not callers_loop.is_running()
    assert current_loop() is callers_loop
    assert refused(ports[0])


@POSIX_ONLY
def test_sigint_stops_the_loop(
    callers_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "mail.log")
    ports = when_listening(
        monkeypatch, lambda host, port: callers_loop.call_soon(signal.raise_signal, signal.SIGINT)
    )
    main(["-n", "-d", "-l", "127.0.0.1:0", "-c", SINK])
    assert "SIGINT received, shutting down" in caplog.messages
    assert refused(ports[0])


@pytest.mark.parametrize(
    ("flag", "level", "loop_debug"),
    [("-d", logging.INFO, False), ("-dd", logging.DEBUG, False), ("-ddd", logging.DEBUG, True)],
)
def test_debug_levels(
    callers_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    level: int,
    loop_debug: bool,
) -> None:
    when_listening(monkeypatch, lambda host, port: callers_loop.call_soon(callers_loop.stop))
    main(["-n", flag, "-l", "127.0.0.1:0", "-c", SINK])
    assert logging.getLogger("mail.log").getEffectiveLevel() == level
    assert callers_loop.get_debug() is loop_debug


def stop_the_serving_loop(seen: list[asyncio.AbstractEventLoop]) -> Callable[[str, int], None]:
    def stop(host: str, port: int) -> None:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        seen.append(loop)
        loop.call_soon(loop.stop)

    return stop


def test_without_a_current_loop_main_makes_one_and_closes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asyncio.set_event_loop(None)
    seen: list[asyncio.AbstractEventLoop] = []
    when_listening(monkeypatch, stop_the_serving_loop(seen))
    main(["-n", "-l", "127.0.0.1:0", "-c", SINK, "--loop", "asyncio"])
    [made] = seen
    assert made.is_closed()
    assert current_loop() is None


def test_loop_uvloop_serves_on_uvloop_and_puts_the_callers_loop_back(
    callers_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("uvloop")
    seen: list[asyncio.AbstractEventLoop] = []
    when_listening(monkeypatch, stop_the_serving_loop(seen))
    main(["-n", "-l", "127.0.0.1:0", "-c", SINK, "--loop", "uvloop"])
    [serving] = seen
    assert type(serving).__module__.startswith("uvloop")
    if type(callers_loop).__module__.startswith("uvloop"):
        # The suite runs on uvloop (nox -s tests_uvloop): the caller's own loop fits,
        # so it is the one served on, and it stays open.
        assert serving is callers_loop
        assert not serving.is_closed()
    else:
        assert serving.is_closed()
    assert current_loop() is callers_loop


# -- parseargs(): the handler, and -l --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "host", "port"),
    [
        ((), "localhost", 8025),
        (("-l", "foo:25"), "foo", 25),
        (("--listen", "foo:25"), "foo", 25),
        (("-l", "foo"), "foo", 8025),
        (("-l", ":25"), "localhost", 25),
        (("-l", "::0:25"), "::0", 25),
        (("-l", "[::1]:25"), "::1", 25),
    ],
)
def test_listen_splits_at_the_last_colon(args: tuple[str, ...], host: str, port: int) -> None:
    _, options = parseargs(args)
    assert (options.host, options.port) == (host, port)


def test_parseargs_builds_the_default_handler() -> None:
    _, options = parseargs(())
    assert isinstance(options.handler, Debugging)


def test_parseargs_builds_a_handler_with_from_cli() -> None:
    _, options = parseargs(("-c", f"{__name__}.FromCliHandler", "--", "FOO"))
    assert isinstance(options.handler, FromCliHandler)
    assert options.handler.called == "FOO"


def test_parseargs_builds_a_handler_without_from_cli() -> None:
    _, options = parseargs(("-c", f"{__name__}.NullHandler"))
    assert isinstance(options.handler, NullHandler)


def test_a_type_error_from_from_cli_propagates() -> None:
    with pytest.raises(TypeError):
        parseargs(("-c", f"{__name__}.FromCliHandler", "FOO", "BAR"))


def test_arguments_for_a_class_without_from_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parseargs(("-c", f"{__name__}.NullHandler", "FOO", "BAR"))
    assert exit_info.value.code == 2
    # aiosmtpd 1.4.6's text exactly (it names the module, not the class).
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.endswith(f": error: Handler class {__name__} takes no arguments")


# -- switching to nobody -----------------------------------------------------------------------


@POSIX_ONLY
def test_a_failed_switch_is_one_line_naming_n(
    callers_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("pwd").getpwnam("nobody")

    def refuse(*args: Any) -> None:
        raise PermissionError("not allowed")

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    # Never really change this process's groups: the tests may run as root.
    monkeypatch.setattr(os, "setgroups", lambda groups: None)
    monkeypatch.setattr(os, "setgid", lambda gid: None)
    monkeypatch.setattr(os, "setuid", refuse)
    with pytest.raises(SystemExit) as exit_info:
        main(["-l", "127.0.0.1:0", "-c", SINK])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == 'Cannot setuid "nobody"; try running with -n option.\n'
    assert not callers_loop.is_closed()


@POSIX_ONLY
@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() != 0, reason="needs root")
def test_root_mailbox_still_delivers_as_nobody() -> None:
    nobody = pytest.importorskip("pwd").getpwnam("nobody")
    base = Path(tempfile.mkdtemp())
    base.chmod(0o755)  # nobody must reach the Maildir inside
    box = base / "box"
    server = ServerProcess("-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Mailbox", str(box))
    try:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as client:
            assert client.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        status, _, stderr = server.stop()
        assert status == 0, stderr
        assert "running as nobody" in stderr
        [message] = mailbox.Maildir(box).values()
        assert message["Subject"] == "hello"
        assert box.stat().st_uid == nobody.pw_uid
    finally:
        server.kill()
        shutil.rmtree(base)
