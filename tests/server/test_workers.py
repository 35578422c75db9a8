"""``smtpwire-server --workers N`` and ``--proxy-protocol``, run as real processes.

A handler module written into tmp_path records each message as a file named
after the pid of the worker that received it, so the tests see which worker
served what.  Each server gets a free loopback port chosen by the test; every
wait is bounded by a deadline and polls what it waits for (no fixed sleeps).
The last tests check the systemd unit docs/deploy.md gives for stopping workers
(``KillMode=mixed``, the stop timeout) and with ``systemd-analyze verify``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from smtpwire.server._workers import stop_timeout
from support.cli import MESSAGE, WAIT, ServerProcess, run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and processes")

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
WORKERS = re.compile(r" (?P<count>\d+) workers, pids (?P<pids>[\d, ]+);")
RESTARTED = re.compile(r"worker (?P<slot>\d+) restarted as pid (?P<pid>\d+)")

RECORDER = '''
import os
from pathlib import Path


class Recorder:
    """Each message into DIRECTORY/<pid>-<n>.eml, written whole (tmp, then rename)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.count = 0

    @classmethod
    def from_cli(cls, parser, directory):
        return cls(directory)

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = f"{os.getpid()}-{self.count}"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(envelope.original_content)
        temporary.rename(self.directory / f"{name}.eml")
        return "250 OK"
'''

CRASHING = """
import os

if os.environ.get("SMTPWIRE_WORKER"):
    raise ImportError("this handler cannot be imported in a worker")


class Handler:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def deadline_loop(what: str, timeout: float = WAIT) -> Iterator[int]:
    """Yields until ``timeout`` has passed, then fails naming ``what``."""
    end = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < end:
        yield attempt
        attempt += 1
    pytest.fail(f"gave up after {timeout} s waiting for {what}")


def gone(pid: int) -> bool:
    """No such process (or only its zombie, which a container's init may leave)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:  # no /proc here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state == "Z"


class Workers:
    def __init__(self, server: ServerProcess, port: int, line: str) -> None:
        self.server, self.port, self.line = server, port, line
        match = WORKERS.search(line)
        assert match is not None, line
        self.pids = [int(pid) for pid in match["pids"].split(", ")]
        assert len(self.pids) == int(match["count"])

    def stderr_line(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The next line on stderr matching ``pattern`` (bounded by the harness)."""
        while True:
            line = self.server._next(self.server.stderr)
            self.server.stderr_seen.append(line)
            found = pattern.search(line)
            if found:
                return found


@contextmanager
def workers(
    *args: str, env: dict[str, str] | None = None, nosetuid: bool = True
) -> Iterator[Workers]:
    """A supervisor with its workers on a free port (another try, a few times, if
    the port was taken meanwhile); killed with its workers if the test fails.
    ``nosetuid=False`` leaves out ``-n``: started as root, the workers then switch
    to nobody."""
    for _ in range(5):
        port = free_port()
        stay = ["-n"] if nosetuid else []
        server = ServerProcess(*stay, "-l", f"127.0.0.1:{port}", *args, env=env)
        try:
            line = server.startup_line()
        except pytest.fail.Exception:
            server.kill()
            if "cannot listen" in "".join(server.stderr_seen) + server._drain(server.stderr):
                continue
            raise
        running = Workers(server, port, line)
        try:
            yield running
        finally:
            server.kill()
            for pid in running.pids:
                if not gone(pid):
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        return
    pytest.fail("no free port found in 5 tries")


@pytest.fixture
def handler_env(tmp_path: Path) -> dict[str, str]:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "recorder.py").write_text(RECORDER)
    (modules / "crashing.py").write_text(CRASHING)
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


def delivered_by(inbox: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for path in inbox.glob("*.eml"):
        pid = int(path.name.partition("-")[0])
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def send(port: int, body: bytes = MESSAGE) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        assert client.sendmail("anne@example.com", ["bart@example.com"], body) == {}


def send_until(port: int, inbox: Path, done: Callable[[dict[int, int]], bool], what: str) -> None:
    """One message per connection until ``done(delivered_by(inbox))``."""
    for _ in deadline_loop(what):
        send(port)
        if done(delivered_by(inbox)):
            return


# -- serving ------------------------------------------------------------------------------


@pytest.mark.parametrize("sockets", ["reuseport", "inherit"])
def test_two_workers_both_serve(sockets: str, handler_env: dict[str, str], inbox: Path) -> None:
    if sockets == "inherit":
        handler_env["SMTPWIRE_WORKER_SOCKETS"] = "inherit"
    with workers("--workers", "2", "-c", "recorder.Recorder", str(inbox), env=handler_env) as run:
        assert len(set(run.pids)) == 2
        assert ("SO_REUSEPORT" if sockets == "reuseport" else "inherited socket") in run.line
        if sockets == "reuseport":
            # The kernel spreads connections over the workers' sockets.
            send_until(run.port, inbox, lambda seen: len(seen) == 2, "mail from both workers")
        else:
            # Both workers wait on one socket: whichever wakes first accepts.
            send_until(run.port, inbox, lambda seen: sum(seen.values()) >= 20, "20 messages")
        assert set(delivered_by(inbox)) <= set(run.pids)
        status, _, stderr = run.server.stop(signal.SIGTERM)
        assert status == 0, stderr
        assert all(gone(pid) for pid in run.pids)


def test_a_killed_worker_is_restarted(handler_env: dict[str, str], inbox: Path) -> None:
    with workers("--workers", "2", "-c", "recorder.Recorder", str(inbox), env=handler_env) as run:
        victim, survivor = run.pids
        os.kill(victim, signal.SIGKILL)
        restarted = run.stderr_line(RESTARTED)
        new = int(restarted["pid"])
        assert restarted["slot"] == "1"
        assert new not in run.pids
        run.pids.append(new)
        assert gone(victim)
        exited = f"worker 1 (pid {victim}) exited with signal SIGKILL"
        assert exited in "".join(run.server.stderr_seen)
        # Mail flows, and the new worker takes its share.
        send_until(run.port, inbox, lambda seen: new in seen, "mail from the restarted worker")
        status, _, stderr = run.server.stop(signal.SIGTERM)
        assert status == 0, stderr
        assert gone(new)
        assert gone(survivor)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_worker_and_the_supervisor_exits_0(
    signum: int, handler_env: dict[str, str], inbox: Path
) -> None:
    with workers("--workers", "3", "-c", "recorder.Recorder", str(inbox), env=handler_env) as run:
        send(run.port)
        status, _, stderr = run.server.stop(signum)
        assert status == 0, stderr
        assert "Traceback" not in stderr
        assert all(gone(pid) for pid in run.pids)
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", run.port), timeout=WAIT),
        ):
            pass


def test_stopping_lets_a_message_in_progress_finish(
    handler_env: dict[str, str], inbox: Path
) -> None:
    with workers("--workers", "2", "-c", "recorder.Recorder", str(inbox), env=handler_env) as run:
        client = smtplib.SMTP("127.0.0.1", run.port, timeout=WAIT)
        try:
            client.ehlo()
            client.mail("anne@example.com")
            client.rcpt("bart@example.com")
            assert client.docmd("DATA")[0] == 354
            assert client.sock is not None
            client.sock.sendall(b"Subject: half a message\r\n")
            run.server.process.send_signal(signal.SIGTERM)
            # Once no worker accepts any more, the drain has begun everywhere.
            for _ in deadline_loop("the workers to stop accepting"):
                try:
                    socket.create_connection(("127.0.0.1", run.port), timeout=WAIT).close()
                except ConnectionRefusedError:
                    break
                except ConnectionResetError:
                    continue  # queued on a socket closed meanwhile: look again
            # The end of the message with the next transaction's MAIL pipelined
            # behind it, in one write, so that the worker reads the MAIL while the
            # session is still open (a command sent only after the 250 could find
            # the session already ended).
            client.sock.sendall(b"\r\nthe rest\r\n.\r\nMAIL FROM:<anne@example.com>\r\n")
            assert client.getreply()[0] == 250  # delivered, and the client knows it
            # No new transaction while draining: 421, then the connection closed.
            assert client.getreply() == (421, b"4.3.2 Service shutting down, closing")
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.getreply()
        finally:
            client.close()
        assert run.server.process.wait(WAIT) == 0
        [delivered] = inbox.glob("*.eml")
        assert b"the rest" in delivered.read_bytes()
        assert all(gone(pid) for pid in run.pids)


def process_ids(pid: int) -> dict[str, list[str]]:
    """The Uid, Gid and Groups lines of /proc/PID/status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    found = {line.split(":")[0]: line.split()[1:] for line in lines if ":" in line}
    return {name: found[name] for name in ("Uid", "Gid", "Groups")}


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="needs root and /proc (Linux)"
)
def test_root_workers_switch_to_nobody_after_binding() -> None:
    import pwd  # POSIX only: the module is imported on Windows too

    nobody = pwd.getpwnam("nobody")
    as_nobody = {
        "Uid": [str(nobody.pw_uid)] * 4,
        "Gid": [str(nobody.pw_gid)] * 4,
        "Groups": [],
    }
    sink = ("-c", "smtpwire.server.handlers.Sink")
    with workers("--workers", "2", *sink, nosetuid=False) as run:
        assert "running as nobody" in run.line
        # The supervisor stays root: the workers it restarts bind as root first.
        assert process_ids(run.server.process.pid)["Uid"] == ["0"] * 4
        for pid in run.pids:
            assert process_ids(pid) == as_nobody, pid
        for _ in range(4):
            send(run.port)
        # A restarted worker binds its SO_REUSEPORT socket as root, then switches.
        os.kill(run.pids[0], signal.SIGKILL)
        new = int(run.stderr_line(RESTARTED)["pid"])
        run.pids.append(new)
        assert process_ids(new) == as_nobody
        for _ in range(4):
            send(run.port)
        status, _, stderr = run.server.stop(signal.SIGTERM)
        assert status == 0, stderr
        assert "Traceback" not in stderr
        assert all(gone(pid) for pid in run.pids)


def test_workers_stop_when_the_supervisor_is_killed(
    handler_env: dict[str, str], inbox: Path
) -> None:
    with workers("--workers", "2", "-c", "recorder.Recorder", str(inbox), env=handler_env) as run:
        run.server.process.kill()
        run.server.process.wait(WAIT)
        for _ in deadline_loop("the orphaned workers to exit"):
            if all(gone(pid) for pid in run.pids):
                break


def test_a_crash_loop_ends_with_one_line_and_status_1(handler_env: dict[str, str]) -> None:
    port = free_port()
    result = run_cli(
        "-n", "-l", f"127.0.0.1:{port}", "--workers", "2", "-c", "crashing.Handler",
        env=handler_env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    giving_up = [line for line in result.stderr.splitlines() if "giving up" in line]
    assert len(giving_up) == 1, result.stderr
    assert giving_up[0].startswith("smtpwire-server: error: workers keep exiting (6 exits")
    assert "status 2" in giving_up[0]  # the workers' own usage error
    assert "listening on" not in result.stderr


@pytest.mark.parametrize(
    ("option", "error"),
    [
        (["--workers", "0"], "there must be at least 1 worker"),
        (["--workers", "many"], "not a number of workers"),
        (["--proxy-protocol", "0"], "must be a positive number of seconds"),
        (["--proxy-protocol", "soon"], "not a number of seconds"),
    ],
)
def test_usage_errors(option: list[str], error: str) -> None:
    result = run_cli("-n", "-l", "127.0.0.1:0", *option)
    assert result.returncode == 2
    assert error in result.stderr


def test_workers_auto_is_one_per_cpu(handler_env: dict[str, str], inbox: Path) -> None:
    count = os.cpu_count() or 1
    if count < 2:
        pytest.skip("one CPU: auto is the one-process server")
    with workers(
        "--workers", "auto", "-c", "recorder.Recorder", str(inbox), env=handler_env
    ) as run:
        assert len(run.pids) == count
        send(run.port)
        assert run.server.stop(signal.SIGTERM)[0] == 0


# -- --proxy-protocol ---------------------------------------------------------------------


def test_proxy_protocol_makes_the_original_client_the_peer() -> None:
    server = ServerProcess("-n", "-l", "127.0.0.1:0", "--proxy-protocol", "5")
    try:
        match = re.search(r":(\d+) \(", server.startup_line())
        assert match is not None
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=WAIT) as raw:
            raw.sendall(b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\n")
            reader = raw.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            for command in (
                b"HELO client",
                b"MAIL FROM:<a@example.org>",
                b"RCPT TO:<b@example.org>",
            ):
                raw.sendall(command + b"\r\n")
                assert reader.readline().startswith(b"250")
            raw.sendall(b"DATA\r\n")
            assert reader.readline().startswith(b"354")
            raw.sendall(b"Subject: proxied\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            assert reader.readline().startswith(b"250")
        printed: list[str] = []
        while not printed or printed[-1] != "------------ END MESSAGE ------------":
            printed.append(server.line())
        assert "X-Peer: ('192.0.2.1', 40000)" in printed
        # Without a header, nothing is said and the connection is closed.
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=WAIT) as raw:
            raw.sendall(b"EHLO client\r\n")
            assert raw.makefile("rb").read() == b""
        assert server.stop(signal.SIGTERM)[0] == 0
    finally:
        server.kill()


# -- the systemd unit of docs/deploy.md ---------------------------------------------------


def docs_unit() -> str:
    """The systemd unit docs/deploy.md gives (its one ``ini`` block)."""
    text = DEPLOY.read_text(encoding="utf-8")
    [unit] = re.findall(r"^```ini\n(\[Unit\]\n.*?)^```", text, re.MULTILINE | re.DOTALL)
    return str(unit)


def service_settings(unit: str) -> dict[str, list[str]]:
    """The [Service] section's settings, each name with its values in order."""
    section = unit.partition("[Service]\n")[2].partition("\n[")[0]
    settings: dict[str, list[str]] = {}
    for line in section.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings.setdefault(name, []).append(value)
    return settings


def test_the_docs_systemd_unit_lets_workers_drain() -> None:
    """SIGTERM for the supervisor alone (which passes it on: a worker signalled by
    systemd as well would get it twice, and a second SIGTERM cuts its drain short),
    and a stop timeout past the supervisor's own limit for the workers."""
    service = service_settings(docs_unit())
    assert service.get("KillSignal") == ["SIGTERM"]
    assert service.get("KillMode") == ["mixed"]
    environment = dict(value.partition("=")[::2] for value in service["Environment"])
    grace = float(environment["SMTPWIRE_SHUTDOWN_GRACE"])
    [timeout] = service["TimeoutStopSec"]
    assert float(timeout.removesuffix("s")) > stop_timeout(grace)


def test_the_docs_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    systemd_analyze = shutil.which("systemd-analyze")
    if systemd_analyze is None:
        pytest.skip("systemd-analyze not found (Debian package systemd)")
    unit = docs_unit()
    # The unit's program must exist for verify: this interpreter runs the server.
    written = "ExecStart=/opt/smtpwire/bin/smtpwire-server\n"
    assert written in unit
    unit = unit.replace(written, f"ExecStart={sys.executable} -m smtpwire.server\n")
    path = tmp_path / "smtpwire.service"
    path.write_text(unit, encoding="utf-8")
    result = subprocess.run(  # noqa: S603 - systemd-analyze on a file of ours
        [systemd_analyze, "verify", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    # Unknown or misspelt settings are only warned about ("ignoring"): no output at all.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
