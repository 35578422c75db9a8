"""``smtpwire-server --web``: the SMTP server and the web inbox in one real
process, on free ports (found by binding port 0, then closing; retried a few
times should another process take one in between)."""

from __future__ import annotations

import json
import re
import signal
import smtplib
import socket
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from smtpwire.server.main import parseargs
from support.cli import POSIX_ONLY, WAIT, ServerProcess, run_cli

pytest.importorskip("aiohttp", reason="--web needs aiohttp")

WEB_URL = re.compile(r"web inbox (?P<url>http://\S+?)/?\)?;")
ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def web_server(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[ServerProcess, int, str]]:
    """The server on two free ports: it, its SMTP port and its web URL."""
    for _attempt in range(ATTEMPTS):
        smtp_port, web_port = free_port(), free_port()
        server = ServerProcess(
            "-n", "-l", f"127.0.0.1:{smtp_port}", "--web", f"127.0.0.1:{web_port}", *args, env=env
        )
        try:
            try:
                line = server.startup_line()
            except pytest.fail.Exception:
                if "cannot listen" in "".join(server.stderr_seen) + server._drain(server.stderr):
                    continue  # a port was taken meanwhile: new ports
                raise
            match = WEB_URL.search(line)
            assert match is not None, line
            assert match["url"] == f"http://127.0.0.1:{web_port}"
            yield server, smtp_port, match["url"]
            return
        finally:
            server.kill()
    pytest.fail(f"no free ports after {ATTEMPTS} attempts")


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body


def deliver(port: int, subject: str = "hello") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        client.sendmail(
            "ann@example.com",
            ["bob@example.com"],
            f"From: ann@example.com\r\nSubject: {subject}\r\n\r\nHi Bob\r\n".encode(),
        )


@POSIX_ONLY
def test_web_serves_the_inbox_of_the_smtp_server() -> None:
    with web_server() as (server, smtp_port, url):
        assert "handler smtpwire.server.inbox.Inbox" in server.stderr_seen[-1]
        deliver(smtp_port, "over the wire")
        listing = fetch(f"{url}/api/v1/messages")
        assert [m["Subject"] for m in listing["messages"]] == ["over the wire"]
        facts = fetch(f"{url}/api/smtpwire/message/{listing['messages'][0]['ID']}/session")
        assert facts["RcptTo"] == ["bob@example.com"]
        assert any(line.upper().startswith("C: RCPT") for line in facts["Transcript"])
        assert b"<html" in fetch(f"{url}/").lower()
        status, _, stderr = server.stop(signal.SIGTERM)
    assert status == 0, stderr


@POSIX_ONLY
def test_store_file_keeps_messages_across_restarts(tmp_path: Path) -> None:
    store = tmp_path / "inbox.sqlite"
    for number in range(3):
        with web_server("--store", str(store), "--max-messages", "2") as (server, smtp_port, url):
            deliver(smtp_port, f"run {number}")
            listing = fetch(f"{url}/api/v1/messages")
            status, _, stderr = server.stop()
        assert status == 0, stderr
    assert [m["Subject"] for m in listing["messages"]] == ["run 2", "run 1"]


@POSIX_ONLY
def test_web_auth_from_the_option_and_the_environment() -> None:
    import os

    for args, env in (
        (("--web-auth", "admin:pa ss"), None),
        ((), {**os.environ, "SMTPWIRE_WEB_AUTH": "admin:pa ss"}),
    ):
        with web_server(*args, env=env) as (server, _, url):
            with pytest.raises(urllib.error.HTTPError) as refused:
                fetch(f"{url}/api/v1/messages")
            assert refused.value.code == 401
            refused.value.close()
            token = b64encode(b"admin:pa ss").decode()
            listing = fetch(f"{url}/api/v1/messages", headers={"Authorization": f"Basic {token}"})
            assert listing["total"] == 0
            server.stop()


@POSIX_ONLY
def test_a_handler_named_with_c_still_decides() -> None:
    with web_server("-c", "smtpwire.server.handlers.Debugging") as (server, smtp_port, url):
        deliver(smtp_port, "printed and kept")
        assert server.message()[0] == "---------- MESSAGE FOLLOWS ----------"
        assert fetch(f"{url}/api/v1/messages")["total"] == 1
        server.stop()


@POSIX_ONLY
def test_warns_when_reachable_beyond_loopback_without_auth() -> None:
    smtp_port, web_port = free_port(), free_port()
    server = ServerProcess("-n", "-l", f"127.0.0.1:{smtp_port}", "--web", f"0.0.0.0:{web_port}")
    try:
        server.startup_line()
        # A request first: a signal right after the startup line can be missed by uvloop.
        assert fetch(f"http://127.0.0.1:{web_port}/api/v1/messages")["total"] == 0
        _, _, stderr = server.stop()
    finally:
        server.kill()
    assert "has no password" in stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("--store", "x.sqlite"), "need --web"),
        (("--web", "--workers", "2"), "single process"),
        (("--web", "--web-auth", "nopassword"), "USER:PASSWORD"),
        (("--web", "--max-messages", "0"), "at least 1"),
    ],
)
def test_usage_errors(args: tuple[str, ...], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parseargs(list(args))
    assert exit_info.value.code == 2
    assert text in capsys.readouterr().err


def test_parseargs_builds_the_inbox() -> None:
    _, options = parseargs(["--web", ":9999", "--max-messages", "5"])
    try:
        assert (options.web_host, options.web_port) == ("127.0.0.1", 9999)
        assert options.handler is options.inbox
        assert options.classpath == "smtpwire.server.inbox.Inbox"
    finally:
        options.inbox.close()
    _, options = parseargs(["--web"])
    try:
        assert (options.web_host, options.web_port) == ("127.0.0.1", 8026)
    finally:
        options.inbox.close()


def test_missing_aiohttp_is_one_line(tmp_path: Path) -> None:
    # A module named aiohttp that cannot be imported, first on the path.
    (tmp_path / "aiohttp.py").write_text("raise ImportError('no aiohttp here')\n")
    import os

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = run_cli("-n", "-l", "127.0.0.1:0", "--web", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "smtpwire-server: error: --web: aiohttp is not installed "
        "(pip install 'smtpwire-server[web]')"
    ]


def test_store_that_cannot_be_opened(tmp_path: Path) -> None:
    result = run_cli("-n", "--web", "--store", str(tmp_path / "missing-dir" / "x.sqlite"))
    assert result.returncode == 1
    assert "cannot open the store" in result.stderr
