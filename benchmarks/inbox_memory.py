"""The web inbox holding 10,000 messages: the server's memory and the API's speed.

Starts ``python -m smtpwire.server -n -l 127.0.0.1:<port> --web 127.0.0.1:<port>``
(the inbox in memory, the defaults otherwise) on two free loopback ports in a
process of its own, reads its resident memory (VmRSS in /proc/<pid>/status), sends
``--messages`` 1 KiB messages over SMTP through smtpwire.client's SMTPPool (the
server offers PIPELINING), waits until the API's total says they are all stored,
reads the memory again, then times the list (first page, last page) and the
search (``from:``, ``subject:``, free text) through one kept-alive HTTP
connection: the median of ``--repeat`` requests each.  Prints a small table and
stops the server (SIGTERM).  Not a test: nothing is asserted beyond the counts.

    python3 benchmarks/inbox_memory.py [--messages 10000] [--connections 4]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from smtpwire.client.pool import SMTPPool

KiB = 1024
MiB = 1024 * KiB
#: Upper bound of every wait for the server, in seconds.
START_TIMEOUT = 30.0
STORE_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def message(number: int) -> bytes:
    """Message ``number``, exactly 1 KiB: 50 senders, a subject and a word of its own."""
    head = (
        f"From: Sender {number % 50} <sender{number % 50}@example.com>\r\n"
        f"To: user{number}@example.org\r\n"
        f"Subject: Message {number}\r\n"
        f"Message-ID: <m{number}@example.com>\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"Body of message {number}, word{number}: lorem ipsum dolor sit amet.\r\n"
    ).encode()
    line = b"consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore\r\n"
    filler = (line * (KiB // len(line) + 1))[: KiB - len(head) - 2]
    raw = head + filler + b"\r\n"
    assert len(raw) == KiB, len(raw)
    return raw


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of ``pid``, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            assert unit == "kB", line
            found[key] = int(number) * KiB
    return found


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


class Api:
    """GET requests over one kept-alive HTTP connection."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> tuple[float, Any]:
        started = time.perf_counter()
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return elapsed, json.loads(body)

    def close(self) -> None:
        self.connection.close()


def start_server(smtp_port: int, web_port: int, log: Any) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "smtpwire.server", "-n",
        "-l", f"127.0.0.1:{smtp_port}", "--web", f"127.0.0.1:{web_port}",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)  # noqa: S603
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{command} exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", smtp_port), timeout=1).close()
            api = Api(web_port)
            try:
                api.get("/api/v1/messages?limit=1")
            finally:
                api.close()
            return server
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)  # polling, bounded by the deadline
    server.kill()
    server.wait()
    raise RuntimeError(f"the server did not start within {START_TIMEOUT:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> int:
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


async def send_all(port: int, count: int, connections: int) -> float:
    """Send ``count`` messages; the seconds it took (all accepted)."""
    started = time.perf_counter()
    async with SMTPPool(
        hostname="127.0.0.1", port=port, start_tls=False,
        max_connections=connections, max_messages_per_connection=count,
    ) as pool:  # fmt: skip
        for batch in range(0, count, 1000):
            results = await asyncio.gather(
                *(
                    pool.sendmail(
                        f"sender{number % 50}@example.com", [f"user{number}@example.org"],
                        message(number),
                    )
                    for number in range(batch, min(batch + 1000, count))
                )
            )  # fmt: skip
            refused = [errors for errors, _ in results if errors]
            if refused:
                raise RuntimeError(f"refused: {refused[:3]}")
    return time.perf_counter() - started


def wait_for_total(api: Api, count: int) -> float:
    """Poll the API until its total is ``count``; the seconds waited."""
    started = time.monotonic()
    while True:
        _, listing = api.get("/api/v1/messages?limit=1")
        if listing["total"] == count:
            return time.monotonic() - started
        if time.monotonic() - started > STORE_TIMEOUT:
            raise RuntimeError(f"only {listing['total']} of {count} stored")
        time.sleep(0.05)  # polling, bounded by STORE_TIMEOUT


def time_queries(
    api: Api, queries: list[tuple[str, str, int]], repeat: int, total: int
) -> dict[str, tuple[float, float, float]]:
    """Each query ``repeat`` times: its median, fastest and slowest, in seconds."""
    timings = {}
    for name, path, matched in queries:
        seconds = []
        for _ in range(repeat):
            elapsed, result = api.get(path)
            seconds.append(elapsed)
            if (result["messages_count"], result["total"]) != (matched, total):
                raise RuntimeError(f"{path}: {result['messages_count']}, {result['total']}")
        timings[name] = (statistics.median(seconds), min(seconds), max(seconds))
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4, help="SMTPPool connections")
    parser.add_argument("--repeat", type=int, default=5, help="requests per timing")
    args = parser.parse_args()
    count = args.messages
    last = count - 1
    subject = quote(f'subject:"Message {last}"')

    # (name, path, how many messages it matches)
    queries = [
        ("list, first page", "/api/v1/messages?limit=50", count),
        ("list, last page", f"/api/v1/messages?start={max(count - 50, 0)}&limit=50", count),
        ("search from: (1 in 50)", "/api/v1/search?query=from:sender7@example.com",
         len(range(7, count, 50))),
        ("search subject: (1 hit)", f"/api/v1/search?query={subject}", 1),
        ("search free text (1 hit)", f"/api/v1/search?query=word{last}", 1),
        ("search free text (all)", "/api/v1/search?query=ipsum", count),
    ]  # fmt: skip

    smtp_port, web_port = free_port(), free_port()
    with tempfile.TemporaryFile() as log:
        server = start_server(smtp_port, web_port, log)
        try:
            if children(server.pid):
                print(f"note: the server has child processes {children(server.pid)}")
            before = rss(server.pid)
            sent = asyncio.run(send_all(smtp_port, count, args.connections))
            api = Api(web_port)
            try:
                waited = wait_for_total(api, count)
                after = rss(server.pid)
                timings = time_queries(api, queries, args.repeat, count)
                queried = rss(server.pid)
            finally:
                api.close()
        finally:
            code = stop_server(server)
        if code != 0:
            log.seek(0)
            print(log.read().decode(errors="replace"), file=sys.stderr)
            print(f"the server exited with {code}", file=sys.stderr)

    print(f"smtpwire.server --web, inbox in memory, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"sent {count:,} x 1 KiB over SMTP (SMTPPool, {args.connections} pipelining "
        f"connections) in {sent:.2f} s: {count / sent:,.0f} msg/s; "
        f"all listed {waited * 1000:.0f} ms after the last reply"
    )
    print()
    print(f"{'server memory':<28}{'VmRSS':>10}{'VmHWM':>10}")
    for name, facts in (
        ("after start", before),
        (f"holding {count:,}", after),
        ("after the queries", queried),
    ):
        print(f"{name:<28}{facts['VmRSS'] / MiB:>7.1f} MiB{facts['VmHWM'] / MiB:>6.1f} MiB")
    grown = (after["VmRSS"] - before["VmRSS"]) / count
    print(f"{'growth per message':<28}{grown / KiB:>7.2f} KiB")
    print()
    print(f"{'request (' + str(args.repeat) + ' each)':<28}{'median':>10}{'min':>10}{'max':>10}")
    for name, (median, low, high) in timings.items():
        print(f"{name:<28}{median * 1000:>7.1f} ms{low * 1000:>7.1f} ms{high * 1000:>7.1f} ms")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
