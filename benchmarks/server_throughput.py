"""S1: server throughput, Postfix's smtp-source driving smtpwire.server, aiosmtpd
and Postfix's smtp-sink side by side.

Each server runs in a process of its own, started on a free loopback port and
stopped at the end: smtpwire and aiosmtpd with their ``Sink`` handler on a plain
asyncio server (``_receiver.py``), and ``smtp-sink``.  ``smtp-source -s 10``
sends the messages over ten parallel sessions, in four scenarios: payloads of
1 KiB and 100 KiB (``-l``), with each session's connection reused for all its
messages (``-d``) and with one message per connection.  (smtp-source has no
"messages per connection" option: ``-r`` is the recipients per message.)
Within each repetition the servers take turns, in an order rotated from one
repetition to the next, after one warm-up run each.

Reported: messages per second (wall clock of the smtp-source run) and the
server's CPU time per message (user + system, from /proc/<pid>/stat before and
after the run), median and min-max over ``--repeat`` runs, and the ratios of
smtpwire to each anchor measured in the same run.

Pinning: not by default.  ``--pin`` puts the server on the first allowed core
and smtp-source on the second (``os.sched_setaffinity``), but on the 2-core
benchmark machine (a shared Firecracker VM) that made every server slower and
no steadier: 1 KiB reused, six alternating runs each, smtpwire 2,210 msg/s
pinned against 2,329 unpinned (424 against 370 CPU µs/msg), aiosmtpd 1,258
against 1,495.  Waking a process on the other vCPU is expensive there, a
pinned server cannot move away from the core another job is using, and left
together the two sides batch more per system call.  So the scheduler places
them; ``--pin`` is there for machines where separating them helps.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _servers import (
    SMTP_SINK,
    SMTP_SOURCE,
    ServerProcess,
    describe,
    pin,
    ratio,
    split_cores,
    start_server,
    summary,
    write_json,
)

SENDER = "bench@example.org"
RECIPIENT = "sink@example.org"
SESSIONS = 10
RUN_TIMEOUT = 300.0
WARM_UP_MESSAGES = 200
SERVERS = ("smtpwire", "aiosmtpd", "smtp-sink")


@dataclass(frozen=True)
class Scenario:
    size: int
    reuse: bool
    messages: int

    @property
    def name(self) -> str:
        size = f"{self.size // 1024} KiB"
        return f"{size}, {'connections reused' if self.reuse else 'one message per connection'}"


# About 2-3 s per smtpwire run on the 2-core benchmark machine (aiosmtpd takes
# two to five times as long).
SCENARIOS = (
    Scenario(1024, reuse=True, messages=6_000),
    Scenario(100 * 1024, reuse=True, messages=2_000),
    Scenario(1024, reuse=False, messages=2_500),
    Scenario(100 * 1024, reuse=False, messages=1_200),
)


def smtp_source_command(port: int, size: int, messages: int, *, reuse: bool) -> list[str]:
    return [
        str(SMTP_SOURCE), *(["-d"] if reuse else []), "-s", str(SESSIONS),
        "-m", str(messages), "-l", str(size), "-f", SENDER, "-t", RECIPIENT,
        f"127.0.0.1:{port}",
    ]  # fmt: skip


def drive(port: int, scenario: Scenario, messages: int, cores: set[int] | None) -> float:
    """Run smtp-source to completion; its wall-clock seconds."""
    command = smtp_source_command(port, scenario.size, messages, reuse=scenario.reuse)
    started = time.perf_counter()
    source = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603
    try:
        pin(source.pid, cores)
        returncode = source.wait(RUN_TIMEOUT)
    finally:
        if source.poll() is None:
            source.kill()
            source.wait()
    elapsed = time.perf_counter() - started
    if returncode != 0:
        raise RuntimeError(f"smtp-source exited with {returncode}: {command}")
    return elapsed


def measure(
    server: ServerProcess, scenario: Scenario, messages: int, cores: set[int] | None
) -> tuple[float, float]:
    """(messages per second, server CPU microseconds per message) for one run."""
    cpu_before = server.cpu_seconds()
    seconds = drive(server.port, scenario, messages, cores)
    cpu = server.cpu_seconds() - cpu_before
    return messages / seconds, cpu / messages * 1e6


def run_scenario(
    servers: list[ServerProcess],
    scenario: Scenario,
    messages: int,
    repeat: int,
    load_cores: set[int] | None,
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {server.name: [] for server in servers}
    cpu: dict[str, list[float]] = {server.name: [] for server in servers}
    for repetition in range(repeat):
        shift = repetition % len(servers)
        for server in servers[shift:] + servers[:shift]:
            rate, cpu_per_message = measure(server, scenario, messages, load_cores)
            rates[server.name].append(rate)
            cpu[server.name].append(cpu_per_message)
    results = {
        name: {"msg_per_s": summary(rates[name]), "cpu_us_per_msg": summary(cpu[name])}
        for name in rates
    }
    return {
        "scenario": scenario.name, "size": scenario.size, "reuse": scenario.reuse,
        "messages": messages, "servers": results, "ratios": ratios(results),
    }  # fmt: skip


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """smtpwire / anchor, of the medians: msg/s (above 1: smtpwire is faster) and
    CPU per message (below 1: smtpwire needs less)."""
    if "smtpwire" not in results:
        return {}
    ours = results["smtpwire"]
    return {
        f"smtpwire/{anchor}": {
            "msg_per_s": ratio(ours["msg_per_s"]["median"], theirs["msg_per_s"]["median"]),
            "cpu_us_per_msg": ratio(
                ours["cpu_us_per_msg"]["median"], theirs["cpu_us_per_msg"]["median"]
            ),
        }
        for anchor, theirs in results.items()
        if anchor != "smtpwire"
    }


def report(result: dict[str, Any], repeat: int) -> None:
    print(
        f"\nS1 {result['scenario']}: {result['messages']} messages over {SESSIONS} "
        f"smtp-source sessions, median (min-max) of {repeat}"
    )
    print(f"  {'server':12} {'msg/s':>22} {'server CPU µs/msg':>24}")
    for name, values in result["servers"].items():
        print(
            f"  {name:12} {describe(values['msg_per_s']):>22} "
            f"{describe(values['cpu_us_per_msg']):>24}"
        )
    for pair, values in result["ratios"].items():
        print(
            f"  {pair:22} msg/s {values['msg_per_s']:.2f}x, "
            f"CPU per message {values['cpu_us_per_msg']:.2f}x"
        )


def warm_up(servers: list[ServerProcess], load_cores: set[int] | None) -> None:
    for server in servers:
        drive(server.port, Scenario(1024, reuse=True, messages=0), WARM_UP_MESSAGES, load_cores)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, help="repetitions (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="a quarter of the messages")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--pin", action="store_true", help="server and load on separate cores")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    if not SMTP_SOURCE.exists():
        raise SystemExit("smtp-source not found: install Debian's postfix (see DESIGN.md)")
    names = [name for name in options.servers.split(",") if name]
    if not set(names) <= set(SERVERS):
        parser.error(f"unknown servers {sorted(set(names) - set(SERVERS))}; known: {SERVERS}")
    if "smtp-sink" in names and not SMTP_SINK.exists():
        print("smtp-sink not found (Debian package postfix): left out")
        names.remove("smtp-sink")
    repeat = options.repeat or (2 if options.quick else 5)
    server_cores, load_cores = split_cores(options.pin)
    servers: list[ServerProcess] = []
    results = []
    try:
        for name in names:
            servers.append(start_server(name))
            pin(servers[-1].pid, server_cores)
        warm_up(servers, load_cores)
        for scenario in SCENARIOS:
            messages = scenario.messages // 4 if options.quick else scenario.messages
            results.append(run_scenario(servers, scenario, messages, repeat, load_cores))
            report(results[-1], repeat)
    finally:
        for server in servers:
            server.stop()
    write_json(options.json, {
        "benchmark": "S1 server throughput", "repeat": repeat, "sessions": SESSIONS,
        "pinned": server_cores is not None, "scenarios": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
