"""The soak's servers: smtpwire's command line in processes of their own, each
restartable on its port, with its store file, its log, and its memory and file
descriptors read from /proc.

Two command-line servers share the soak (the command line serves STARTTLS or
implicit TLS, not both): ``starttls`` offers STARTTLS without requiring it
(plain clients and STARTTLS clients on one port) and runs on asyncio's loop;
``smtps`` is implicit TLS on uvloop (when installed), so both loops are soaked.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from _servers import MIB

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0  # the drain gives sessions 5 s, twice, then cuts them off
BENCHMARKS = Path(__file__).parent
# A traceback's last line: "module.ExceptionType: message" at the start of a line.
EXCEPTION_LINE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Fault|Exit|Interrupt))\b", re.MULTILINE
)


def rss(pid: int) -> int | None:
    """VmRSS in bytes, or None once the process has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Incarnation:
    """One process of a server: started, sampled, stopped."""

    pid: int
    store: Path
    started: float
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (age, bytes)
    fds_at_start: int | None = None
    returncode: int | None = None
    stop_seconds: float | None = None

    def growth_after(self, warm_up: float) -> float | None:
        """RSS growth in MiB from the first sample after ``warm_up`` seconds to
        the highest after it; None if the process did not live that long."""
        after = [value for age, value in self.rss_samples if age >= warm_up]
        return (max(after) - after[0]) / MIB if after else None


class SoakServer:
    def __init__(
        self, name: str, port: int, *, tls_options: list[str], loop: str, size_limit: int,
        workdir: Path,
    ) -> None:  # fmt: skip
        self.name = name
        self.port = port
        self.loop = loop
        self.workdir = workdir
        self.command = [
            sys.executable, "-m", "smtpwire.server", "-n", "-l", f"127.0.0.1:{port}",
            *tls_options, "-s", str(size_limit), "--loop", loop, "-c", "_soak_server.SoakStore",
        ]  # fmt: skip
        self.incarnations: list[Incarnation] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] = (workdir / f"{name}.log").open("ab")

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]

    def start(self) -> None:
        """Start a process on the port and return once it accepts connections
        (the command line writes its startup line once it listens)."""
        store = self.workdir / f"{self.name}-{len(self.incarnations) + 1}.store"
        environment = {**os.environ, "PYTHONPATH": str(BENCHMARKS)}
        process = subprocess.Popen(  # noqa: S603 -- our own fixed command
            [*self.command, str(store)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=environment, start_new_session=True,
        )  # fmt: skip
        listening = threading.Event()
        threading.Thread(
            target=self._copy_log, args=(process, listening), name=f"{self.name}-log", daemon=True
        ).start()
        if not listening.wait(START_TIMEOUT):
            self._kill(process)
            raise RuntimeError(f"{self.name} did not start (see {self._log.name})")
        self.process = process
        self.incarnations.append(Incarnation(process.pid, store, time.monotonic()))
        self.current.fds_at_start = open_fds(process.pid)

    def _copy_log(self, process: subprocess.Popen[bytes], listening: threading.Event) -> None:
        """The server's stderr into its log file; the startup line says it listens.
        (A thread: it ends when the process's stderr does.)"""
        assert process.stderr is not None
        for line in process.stderr:
            self._log.write(line)
            self._log.flush()
            if b" listening on " in line:
                listening.set()
        process.stderr.close()

    def stop(self) -> int | None:
        """SIGTERM, the graceful stop; its exit status, None if it had to be killed."""
        process = self.process
        if process is None:
            return None
        self.process = None
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            returncode: int | None = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill(process)
            returncode = None
        self.current.returncode = returncode
        self.current.stop_seconds = time.monotonic() - started
        return returncode

    def kill(self) -> None:
        """On the way out after an error or Ctrl-C: nothing may be left running."""
        if self.process is not None:
            self._kill(self.process)
            self.process = None
        self._log.close()

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)

    def log_exceptions(self) -> collections.Counter[str]:
        """The exception types of the tracebacks in the server's log (the
        injected ``HandlerFault`` among them), by the traceback's last line."""
        found: collections.Counter[str] = collections.Counter()
        log = Path(self._log.name)
        if log.exists():
            for match in EXCEPTION_LINE.finditer(log.read_text(errors="replace")):
                found[match.group(1)] += 1
        return found

    def sample(self) -> None:
        if self.process is None:
            return
        value = rss(self.process.pid)
        if value is not None:
            self.current.rss_samples.append((time.monotonic() - self.current.started, value))
