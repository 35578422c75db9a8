"""S2: client throughput into Postfix's smtp-sink, side by side with the anchors.

Every client sends the same 1 KiB message ``--messages`` times into one
``smtp-sink`` started on a free loopback port (stopped at the end; nothing else of
Postfix runs).  Scenarios, each repeated ``--repeat`` times with the clients
alternating:

- one connection, messages one after another: smtpwire.client, aiosmtplib,
  smtplib, and Postfix's own ``smtp-source -s 1``;
- ten connections at once: smtpwire's SMTPPool(max_connections=10), ten
  aiosmtplib clients, and ``smtp-source -s 10``.

Prints msg/s (median, min-max) and the ratios of smtpwire to each anchor;
``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosmtplib

from smtpwire.client import SMTP
from smtpwire.client.pool import SMTPPool

SENDER = "bench@example.org"
RECIPIENT = "sink@example.org"
BODY = b"Subject: benchmark\r\n\r\n" + (b"x" * 70 + b"\r\n") * 13


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    # As root smtp-sink must be told whom to run as.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    command = ["/usr/sbin/smtp-sink", *user, f"127.0.0.1:{port}", "1000"]
    sink = subprocess.Popen(command)  # noqa: S603
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink
        except OSError:
            time.sleep(0.01)
    sink.kill()
    raise RuntimeError("smtp-sink did not start")


async def smtpwire_one(port: int, count: int) -> None:
    async with SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        for _ in range(count):
            await client.sendmail(SENDER, [RECIPIENT], BODY)


async def aiosmtplib_one(port: int, count: int) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        for _ in range(count):
            await client.sendmail(SENDER, [RECIPIENT], BODY)


async def smtplib_one(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        for _ in range(count):
            client.sendmail(SENDER, [RECIPIENT], BODY)


async def smtpwire_ten(port: int, count: int) -> None:
    async with SMTPPool(
        hostname="127.0.0.1", port=port, start_tls=False,
        max_connections=10, max_messages_per_connection=count,
    ) as pool:  # fmt: skip
        await asyncio.gather(*(pool.sendmail(SENDER, [RECIPIENT], BODY) for _ in range(count)))


async def aiosmtplib_ten(port: int, count: int) -> None:
    async def worker(share: int) -> None:
        await aiosmtplib_one(port, share)

    await asyncio.gather(*(worker(count // 10) for _ in range(10)))


def smtp_source(sessions: int) -> Callable[[int, int], Awaitable[None]]:
    async def run(port: int, count: int) -> None:
        command = [
            "/usr/sbin/smtp-source", "-d", "-s", str(sessions), "-m", str(count), "-l", "1024",
            "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}",
        ]  # fmt: skip
        await asyncio.to_thread(subprocess.run, command, check=True)

    return run


def measure(run: Callable[[int, int], Awaitable[None]], port: int, count: int) -> float:
    started = time.perf_counter()
    asyncio.run(run(port, count))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    if shutil.which("smtp-sink", path="/usr/sbin") is None:
        raise SystemExit("smtp-sink not found: install Debian's postfix (see DESIGN.md)")
    scenarios: dict[str, dict[str, Callable[[int, int], Awaitable[None]]]] = {
        "one connection": {
            "smtpwire": smtpwire_one, "aiosmtplib": aiosmtplib_one,
            "smtplib": smtplib_one, "smtp-source": smtp_source(1),
        },
        "ten connections": {
            "smtpwire": smtpwire_ten, "aiosmtplib": aiosmtplib_ten,
            "smtp-source": smtp_source(10),
        },
    }  # fmt: skip
    port = free_port()
    sink = start_sink(port)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for scenario, clients in scenarios.items():
            rates: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(options.repeat):
                for name, run in clients.items():
                    rates[name].append(measure(run, port, options.messages))
            results[scenario] = rates
    finally:
        sink.terminate()
        sink.wait(10)
    report(results, options.messages)
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(results, indent=2))


def report(results: dict[str, dict[str, list[float]]], messages: int) -> None:
    print(f"S2 client throughput into smtp-sink, {messages} messages of 1 KiB, msg/s")
    for scenario, rates in results.items():
        print(f"\n{scenario}:")
        ours = statistics.median(rates["smtpwire"])
        for name, values in rates.items():
            median = statistics.median(values)
            ratio = "" if name == "smtpwire" else f"   smtpwire/{name} = {ours / median:.2f}x"
            print(f"  {name:12} {median:8.0f}  ({min(values):.0f}-{max(values):.0f}){ratio}")


if __name__ == "__main__":
    main()
