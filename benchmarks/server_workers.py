"""S1 with workers: ``smtpwire-server --workers 2`` against ``--workers 1`` and
``python -m aiosmtpd`` (the anchor: pip install 'aiosmtpd==1.4.6'), each driven by Postfix's
``smtp-source -s 10 -m N -l 1024``, with each session's connection reused for
all its messages (``-d``) and with one message per connection.

The servers are the real command lines (handler ``Sink``, ``--loop asyncio``
unless ``--loop``), each on a free loopback port, started and stopped here.
Reported: messages per second (wall clock of the smtp-source run, median and
min-max over ``--repeat`` runs after one warm-up) and the CPU time each server
process used during the measured runs (user + system from /proc/<pid>/stat),
per worker, so an uneven spread of the connections over the workers shows.

On a 2-core machine smtp-source shares the cores with the workers: two workers
can then gain at most what the second core has left over.

    python benchmarks/server_workers.py [--messages 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _servers import (
    CLOCK_TICKS,
    SMTP_SOURCE,
    free_port,
    postfix_tool_missing,
    require_anchor,
    summary,
)

START_TIMEOUT = 30.0
RUN_TIMEOUT = 600.0
PIDS = re.compile(r" workers, pids (?P<pids>[\d, ]+);")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    process: subprocess.Popen[bytes] = field(init=False)
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own fixed commands
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        if self.name.startswith("aiosmtpd"):
            self.pids = [self.process.pid]
            self._await_connectable()
            return
        assert self.process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.process.stderr], [], [], 1.0)
            line = self.process.stderr.readline().decode() if readable else ""
            if " listening on " in line:
                found = PIDS.search(line)
                self.pids = (
                    [int(p) for p in found["pids"].split(", ")] if found else [self.process.pid]
                )
                return
            if self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{self.name} did not start")

    def _await_connectable(self) -> None:
        import socket  # noqa: PLC0415 - only aiosmtpd, which prints no startup line

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.01)  # polling a port in a benchmark helper, not a test
        self.stop()
        raise RuntimeError(f"{self.name} did not listen")

    def cpu(self) -> list[float]:
        return [cpu_seconds(pid) for pid in self.pids]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def servers(loop: str) -> list[Server]:
    found = []
    for workers in (1, 2):
        port = free_port()
        command = [
            sys.executable, "-m", "smtpwire.server", "-n", "-l", f"127.0.0.1:{port}",
            "-c", "smtpwire.server.handlers.Sink", "--loop", loop, "--workers", str(workers),
        ]  # fmt: skip
        found.append(Server(f"smtpwire --workers {workers}", command, port))
    # The anchor (main() checked that aiosmtpd is installed).
    port = free_port()
    command = [
        sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
        "-c", "aiosmtpd.handlers.Sink",
    ]  # fmt: skip
    found.append(Server("aiosmtpd (1 process)", command, port))
    return found


def drive(port: int, messages: int, *, reuse: bool) -> float:
    command = [
        str(SMTP_SOURCE), *(["-d"] if reuse else []), "-s", "10", "-m", str(messages),
        "-l", "1024", "-f", "a@example.org", "-t", "b@example.org", f"127.0.0.1:{port}",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, stdin=subprocess.DEVNULL, check=True, timeout=RUN_TIMEOUT)  # noqa: S603
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    options = parser.parse_args()
    require_anchor("aiosmtpd", "aiosmtpd==1.4.6")
    if not SMTP_SOURCE.exists():
        sys.exit(postfix_tool_missing(SMTP_SOURCE))
    runs = f"{options.repeat} runs; loop {options.loop}"
    print(f"smtp-source -s 10 -m {options.messages} -l 1024; {runs}")
    print(f"{'server':24} {'connections':12} {'msg/s median (min-max)':28} CPU s per process")
    for reuse in (True, False):
        for server in servers(options.loop):
            server.start()
            try:
                drive(server.port, min(options.messages, 500), reuse=reuse)  # warm-up
                before = server.cpu()
                rates = [
                    options.messages / drive(server.port, options.messages, reuse=reuse)
                    for _ in range(options.repeat)
                ]
                used = [after - start for start, after in zip(before, server.cpu(), strict=True)]
            finally:
                server.stop()
            stats = summary(rates)
            shown = f"{stats['median']:,.0f} ({stats['min']:,.0f}-{stats['max']:,.0f})"
            per_worker = ", ".join(f"{seconds:.2f}" for seconds in used)
            kind = "reused" if reuse else "one per msg"
            print(f"{server.name:24} {kind:12} {shown:28} {per_worker}")


if __name__ == "__main__":
    main()
