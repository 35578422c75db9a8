"""S2: client throughput into Postfix's smtp-sink and into smtpwire.server, side by
side with the anchors.

Every client sends the same 1 KiB message ``--messages`` times (five times as many
with ten connections) into one receiver started on a free loopback port in a
process of its own and stopped at the end: Postfix's ``smtp-sink`` (nothing else
of Postfix runs) and ``python -m smtpwire.server`` with the Sink handler (which
offers no PIPELINING by default, like aiosmtpd, so every client goes command by
command there).  Scenarios, each repeated ``--repeat`` times with the clients
alternating:

- one connection, messages one after another: smtpwire.client, aiosmtplib,
  smtplib, and Postfix's own ``smtp-source -s 1``;
- ten connections at once: ten smtpwire clients, smtpwire's
  SMTPPool(max_connections=10) with a task per message, ten aiosmtplib clients,
  and ``smtp-source -s 10``.

The Python clients run on asyncio's own event loop and, where uvloop is
installed, on uvloop's too (the rows marked "uvloop").

Each client first sends 200 messages unmeasured (a warm-up, as in S1).

Prints, per client, msg/s (median, min-max), the client's CPU time per message
(user + system of this process, or of smtp-source, over the run: the receiver's
is not counted) and the ratios of smtpwire to each anchor; ``--json`` also
writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from _servers import SMTP_SINK, postfix_tool_missing
from smtpwire.client import SMTP
from smtpwire.client.pool import SMTPPool

try:
    import aiosmtplib
except ImportError:  # the anchor: one clear line rather than a traceback
    raise SystemExit(
        "aiosmtplib is not installed: pip install aiosmtplib "
        "(or run the benchmarks with: python3 -m nox -s bench)"
    ) from None

new_uvloop: Callable[[], asyncio.AbstractEventLoop] | None
try:
    from uvloop import new_event_loop as new_uvloop
except ImportError:  # measured on asyncio's loop only
    new_uvloop = None

WARM_UP_MESSAGES = 200
# Ten connections send this many times --messages: at 20,000 msg/s a run of 2,000
# lasts a tenth of a second, too short for the host's jitter to average out.
TEN_CONNECTIONS_SCALE = 5
SENDER = "bench@example.org"
RECIPIENT = "sink@example.org"
BODY = b"Subject: benchmark\r\n\r\n" + (b"x" * 70 + b"\r\n") * 13


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sink_command(port: int) -> list[str]:
    # As root smtp-sink must be told whom to run as.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return [str(SMTP_SINK), *user, f"127.0.0.1:{port}", "1000"]


def server_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "smtpwire.server", "-n",
        "-c", "smtpwire.server.handlers.Sink", "-l", f"127.0.0.1:{port}",
    ]  # fmt: skip


RECEIVERS: dict[str, Callable[[int], list[str]]] = {
    "smtp-sink": sink_command,
    "smtpwire.server": server_command,
}


def start_receiver(command: list[str], port: int) -> subprocess.Popen[bytes]:
    receiver = subprocess.Popen(command)  # noqa: S603
    for _ in range(500):
        if receiver.poll() is not None:
            raise RuntimeError(f"{command} exited with {receiver.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return receiver
        except OSError:
            time.sleep(0.01)
    receiver.kill()
    raise RuntimeError(f"{command[0]} did not start")


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
    """Ten clients sending in turn, as the aiosmtplib figure is measured."""
    await asyncio.gather(*(smtpwire_one(port, count // 10) for _ in range(10)))


async def smtpwire_pool(port: int, count: int) -> None:
    """All messages at once through SMTPPool(max_connections=10): a task per send."""
    async with SMTPPool(
        hostname="127.0.0.1", port=port, start_tls=False,
        max_connections=10, max_messages_per_connection=count,
    ) as pool:  # fmt: skip
        await asyncio.gather(*(pool.sendmail(SENDER, [RECIPIENT], BODY) for _ in range(count)))


async def aiosmtplib_ten(port: int, count: int) -> None:
    async def worker(share: int) -> None:
        await aiosmtplib_one(port, share)

    await asyncio.gather(*(worker(count // 10) for _ in range(10)))


def smtp_source(sessions: int) -> Callable[[int, int], Coroutine[Any, Any, None]]:
    async def run(port: int, count: int) -> None:
        command = [
            "/usr/sbin/smtp-source", "-d", "-s", str(sessions), "-m", str(count), "-l", "1024",
            "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}",
        ]  # fmt: skip
        await asyncio.to_thread(subprocess.run, command, check=True)

    return run


Run = Callable[[int, int], Coroutine[Any, Any, None]]
Client = tuple[Run, str]  # the client's code, and the event loop it runs on


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (smtp-source)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def measure(client: Client, port: int, count: int) -> tuple[float, float]:
    """msg/s and the client's CPU µs per message of one run."""
    run, loop_name = client
    loop = new_uvloop() if loop_name == "uvloop" and new_uvloop else asyncio.new_event_loop()
    cpu, started = cpu_seconds(), time.perf_counter()
    try:
        loop.run_until_complete(run(port, count))
    finally:
        loop.close()
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return count / elapsed, cpu / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--into", choices=[*RECEIVERS, "all"], default="all")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    receivers = list(RECEIVERS) if options.into == "all" else [options.into]
    if "smtp-sink" in receivers and not SMTP_SINK.exists():
        raise SystemExit(postfix_tool_missing(SMTP_SINK))
    results: dict[str, Results] = {}
    for receiver in receivers:
        results[receiver] = run_scenarios(RECEIVERS[receiver], options.messages, options.repeat)
        report(receiver, results[receiver], options.messages)
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(results, indent=2))


# scenario -> client -> {"msg_per_s": [...], "cpu_us_per_msg": [...]}, one per repetition
Results = dict[str, dict[str, dict[str, list[float]]]]


def scenarios() -> dict[str, dict[str, Client]]:
    """The clients of each scenario; the Python ones on both loops where uvloop is."""
    python_clients = {
        "one connection": {"smtpwire": smtpwire_one, "aiosmtplib": aiosmtplib_one},
        "ten connections": {
            "smtpwire": smtpwire_ten, "smtpwire pool": smtpwire_pool, "aiosmtplib": aiosmtplib_ten,
        },
    }  # fmt: skip
    loops = ["asyncio", "uvloop"] if new_uvloop is not None else ["asyncio"]
    chosen: dict[str, dict[str, Client]] = {}
    for scenario, clients in python_clients.items():
        chosen[scenario] = {
            name if loop == "asyncio" else f"{name} uvloop": (run, loop)
            for loop in loops
            for name, run in clients.items()
        }
    chosen["one connection"]["smtplib"] = (smtplib_one, "asyncio")
    if Path("/usr/sbin/smtp-source").exists():
        chosen["one connection"]["smtp-source"] = (smtp_source(1), "asyncio")
        chosen["ten connections"]["smtp-source"] = (smtp_source(10), "asyncio")
    return chosen


def run_scenarios(command: Callable[[int], list[str]], messages: int, repeat: int) -> Results:
    port = free_port()
    receiver = start_receiver(command(port), port)
    results: Results = {}
    try:
        for scenario, clients in scenarios().items():
            runs: dict[str, dict[str, list[float]]] = {
                name: {"msg_per_s": [], "cpu_us_per_msg": []} for name in clients
            }
            # A warm-up run of every client, not measured (as S1 warms its servers up):
            # the first run of a client in this process pays for its imports' first
            # calls, the interpreter's specialisation and the allocator's growth.
            for client in clients.values():
                measure(client, port, min(messages, WARM_UP_MESSAGES))
            count = messages * (TEN_CONNECTIONS_SCALE if scenario == "ten connections" else 1)
            for _ in range(repeat):
                for name, client in clients.items():
                    rate, cpu = measure(client, port, count)
                    runs[name]["msg_per_s"].append(rate)
                    runs[name]["cpu_us_per_msg"].append(cpu)
            results[scenario] = runs
    finally:
        receiver.terminate()
        receiver.wait(10)
    return results


def report(receiver: str, results: Results, messages: int) -> None:
    print(f"\nS2 client throughput into {receiver}, messages of 1 KiB")
    for scenario, runs in results.items():
        count = messages * (TEN_CONNECTIONS_SCALE if scenario == "ten connections" else 1)
        print(f"\n{scenario}, {count} messages:")
        print(f"  {'client':20} {'msg/s':>8} {'(min-max)':>15}   client CPU µs/msg")
        medians = {name: statistics.median(run["msg_per_s"]) for name, run in runs.items()}
        for name, run in runs.items():
            rates, cpu = run["msg_per_s"], statistics.median(run["cpu_us_per_msg"])
            spread = f"({min(rates):.0f}-{max(rates):.0f})"
            print(f"  {name:20} {medians[name]:8.0f} {spread:>15}   {cpu:8.1f}")
        for ours in (name for name in runs if name.startswith("smtpwire")):
            ratios = "  ".join(
                f"/{anchor} {medians[ours] / medians[anchor]:.2f}x"
                for anchor in runs
                if not anchor.startswith("smtpwire")
            )
            print(f"  {ours:20} {ratios}")


if __name__ == "__main__":
    main()
