"""What the server-side benchmarks (S1 server_throughput, S3 server_big_message,
S4 server_idle_connections) share: starting a receiving server in a process of
its own (smtpwire.server or aiosmtpd through ``_receiver.py``, or Postfix's
``smtp-sink``), reading that process's CPU time and memory from /proc, pinning
processes to cores, and summarising repetitions (median, min-max) for the
printed tables and the JSON files.

Every server is started in a new session (process group) and stopped by
:meth:`ServerProcess.stop` -- SIGTERM, then SIGKILL to the whole group if it has
not gone within a few seconds -- which the ``with`` block guarantees even when
a measurement fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

SMTP_SINK = Path("/usr/sbin/smtp-sink")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
#: Of the postfix package, the benchmarks run only smtp-sink and smtp-source.
POSTFIX_NOTE = "(Debian, Ubuntu; only this tool of it runs)"
RECEIVER = Path(__file__).with_name("_receiver.py")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def have_postfix_tools() -> bool:
    return SMTP_SINK.exists() and SMTP_SOURCE.exists()


def raise_open_files_limit() -> int:
    """Take the hard limit of file descriptors (S4 holds thousands); the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def split_cores(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(server cores, load generator cores): one core each when two or more are
    allowed and pinning is wanted, otherwise no pinning at all."""
    allowed = sorted(os.sched_getaffinity(0))
    if not pin or len(allowed) < 2:
        return None, None
    return {allowed[0]}, {allowed[1]}


def pin(pid: int, cores: set[int] | None) -> None:
    if cores is not None:
        os.sched_setaffinity(pid, cores)


class ServerProcess:
    """A receiving server in its own process group, with its /proc readings."""

    def __init__(self, name: str, command: Sequence[str], *, port: int | None = None) -> None:
        """``port=None``: the server picks one and announces it as ``READY <port>``
        on its standard output; otherwise it listens on ``port`` once connectable."""
        self.name = name
        self.command = list(command)
        self.process = subprocess.Popen(  # noqa: S603 -- our own fixed commands
            self.command,
            stdout=subprocess.PIPE if port is None else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self.port = self._await_announced_port() if port is None else self._await_port(port)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _await_announced_port(self) -> int:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        line = self.process.stdout.readline() if readable else b""
        if not line.startswith(b"READY "):
            raise RuntimeError(f"{self.name} did not start: {line!r}")
        return int(line.split()[1])

    def _await_port(self, port: int) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not listen on port {port} in {START_TIMEOUT} s")

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far (fields 14 and 15 of /proc/<pid>/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory(self, field: str) -> int:
        """A Vm* line of /proc/<pid>/status in bytes: VmRSS now, VmHWM the peak."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def rss(self) -> int:
        return self.memory("VmRSS")

    def peak(self) -> int:
        return self.memory("VmHWM")

    def reset_peak(self) -> bool:
        """Set VmHWM back to the current RSS (``5`` into clear_refs, Linux 4.0+);
        False where the kernel or the container refuses it."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return self.peak() <= self.rss() + 64 * 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_python_server(
    implementation: str,
    handler: str = "sink",
    *,
    data_size_limit: int | None = None,
    loop: str = "asyncio",
) -> ServerProcess:
    """smtpwire.server or aiosmtpd served by ``_receiver.py`` (see there), on
    asyncio's event loop or (``loop="uvloop"``) uvloop's."""
    if implementation == "aiosmtpd":
        require_anchor("aiosmtpd", "aiosmtpd==1.4.6")
    command = [
        sys.executable, str(RECEIVER), "--implementation", implementation, "--handler", handler,
        "--loop", loop,
    ]  # fmt: skip
    if data_size_limit is not None:
        command += ["--data-size-limit", str(data_size_limit)]
    variant = [part for part in (handler, loop) if part not in {"sink", "asyncio"}]
    name = f"{implementation} ({', '.join(variant)})" if variant else implementation
    return ServerProcess(name, command)


def require_anchor(module: str, requirement: str) -> None:
    """Stop with one clear line when an anchor the benchmark compares with is missing
    (``nox -s bench`` installs them all)."""
    if importlib.util.find_spec(module) is None:
        raise SystemExit(
            f"{module} is not installed: pip install {shlex.quote(requirement)} "
            "(or run the benchmarks with: python3 -m nox -s bench)"
        )


def postfix_tool_missing(tool: Path) -> str:
    """The one line that stops a benchmark needing Postfix's smtp-sink or
    smtp-source where it is not installed."""
    return f"{tool.name} is not installed ({tool}): apt-get install postfix {POSTFIX_NOTE}"


def postfix_tool_left_out(tool: Path) -> str:
    """The one line that says a Postfix tool's rows are left out of a benchmark."""
    return (
        f"{tool.name} is not installed ({tool}; apt-get install postfix {POSTFIX_NOTE}): "
        "its rows are left out"
    )


def uvloop_installed() -> bool:
    """Whether this interpreter (the one that runs ``_receiver.py``) has uvloop."""
    try:
        import uvloop  # noqa: F401, PLC0415 -- only asked
    except ImportError:
        return False
    return True


def start_smtp_sink() -> ServerProcess:
    """Postfix's smtp-sink (nothing else of Postfix runs); as root it must be told
    whom to run as.  Its backlog is 1000 and it takes messages of any size."""
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return ServerProcess(
        "smtp-sink", [str(SMTP_SINK), *user, f"127.0.0.1:{port}", "1000"], port=port
    )


def start_server(name: str, handler: str = "sink", **options: Any) -> ServerProcess:
    """By the names the scripts use: ``smtpwire``, ``aiosmtpd`` or ``smtp-sink``."""
    if name == "smtp-sink":
        return start_smtp_sink()
    return start_python_server(name, handler, **options)


def summary(values: Iterable[float]) -> dict[str, Any]:
    listed = list(values)
    return {
        "median": statistics.median(listed), "min": min(listed), "max": max(listed),
        "values": listed,
    }  # fmt: skip


def describe(values: dict[str, Any], fmt: str = ".0f") -> str:
    """``median (min-max)`` as the tables print it."""
    median, low, high = values["median"], values["min"], values["max"]
    return f"{median:{fmt}} ({low:{fmt}}-{high:{fmt}})"


def ratio(ours: float, anchor: float) -> float | None:
    return ours / anchor if anchor else None


def write_json(path: Path | None, document: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def mib(octets: float) -> float:
    return octets / MIB
