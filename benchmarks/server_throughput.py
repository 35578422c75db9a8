"""S1: server throughput, Postfix's smtp-source driving smtpwire.server, aiosmtpd
and Postfix's smtp-sink side by side.

Each server runs in a process of its own, started on a free loopback port and
stopped at the end: smtpwire and aiosmtpd on a plain asyncio server
(``_receiver.py``), and ``smtp-sink``.  The Python servers are measured with two
handlers each:

- ``handle_DATA`` (the target): the smallest handler users write,
  ``async def handle_DATA(self, server, session, envelope): return "250 OK"``,
  the same class for both libraries;
- ``Sink``: each library's own hookless ``handlers.Sink``;

and on two event loops each: asyncio's own and uvloop's (``--loop uvloop`` of
``_receiver.py``; left out, with a note, where uvloop is not installed).

``smtp-source -s 10`` sends the messages over ten parallel sessions, in four
scenarios: payloads of 1 KiB and 100 KiB (``-l``), with each session's
connection reused for all its messages (``-d``) and with one message per
connection.  (smtp-source has no "messages per connection" option: ``-r`` is
the recipients per message.)  Within each repetition the servers take turns, in
an order rotated from one repetition to the next, after one warm-up run each.

Reported for every row: messages per second (wall clock of the smtp-source
run) and the server's CPU time per message (user + system, from
/proc/<pid>/stat before and after the run), median and min-max over
``--repeat`` runs; then the ratios between medians of the same run: smtpwire
to aiosmtpd with the same handler on the same loop, uvloop to asyncio for the
same server and handler, and smtpwire to smtp-sink.

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
    postfix_tool_left_out,
    postfix_tool_missing,
    ratio,
    split_cores,
    start_python_server,
    start_smtp_sink,
    summary,
    uvloop_installed,
    write_json,
)

SENDER = "bench@example.org"
RECIPIENT = "sink@example.org"
SESSIONS = 10
RUN_TIMEOUT = 300.0
WARM_UP_MESSAGES = 200
SERVERS = ("smtpwire", "aiosmtpd", "smtp-sink")
PYTHON_SERVERS = ("smtpwire", "aiosmtpd")
# _receiver.py's --handler names, and the names the tables give them.
HANDLERS = {"data": "handle_DATA", "sink": "Sink"}
LOOPS = ("asyncio", "uvloop")
RATIO_TITLES = {
    "smtpwire/aiosmtpd": "smtpwire / aiosmtpd, same handler and loop",
    "uvloop/asyncio": "uvloop / asyncio, same server and handler",
    "smtpwire/smtp-sink": "smtpwire / smtp-sink",
}


@dataclass(frozen=True)
class Variant:
    """One row of the tables: a server, and for the Python ones a handler and a loop."""

    implementation: str
    handler: str = ""
    loop: str = ""

    @property
    def label(self) -> str:
        if not self.handler:
            return self.implementation
        return f"{self.implementation} {HANDLERS[self.handler]} {self.loop}"

    def start(self) -> ServerProcess:
        if not self.handler:
            server = start_smtp_sink()
        else:
            server = start_python_server(self.implementation, self.handler, loop=self.loop)
        server.name = self.label
        return server


def variants(names: list[str], handlers: list[str], loops: list[str]) -> list[Variant]:
    """The rows in table order: by handler, then loop, smtpwire before aiosmtpd;
    smtp-sink last."""
    rows = [
        Variant(name, handler, loop)
        for handler in handlers
        for loop in loops
        for name in PYTHON_SERVERS
        if name in names
    ]
    return rows + [Variant(name) for name in names if name not in PYTHON_SERVERS]


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
    servers: list[tuple[Variant, ServerProcess]],
    scenario: Scenario,
    messages: int,
    repeat: int,
    load_cores: set[int] | None,
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {variant.label: [] for variant, _ in servers}
    cpu: dict[str, list[float]] = {variant.label: [] for variant, _ in servers}
    for repetition in range(repeat):
        shift = repetition % len(servers)
        for variant, server in servers[shift:] + servers[:shift]:
            rate, cpu_per_message = measure(server, scenario, messages, load_cores)
            rates[variant.label].append(rate)
            cpu[variant.label].append(cpu_per_message)
    results = {
        variant.label: {
            "implementation": variant.implementation,
            "handler": HANDLERS.get(variant.handler),
            "loop": variant.loop or None,
            "msg_per_s": summary(rates[variant.label]),
            "cpu_us_per_msg": summary(cpu[variant.label]),
        }
        for variant, _ in servers
    }
    return {
        "scenario": scenario.name, "size": scenario.size, "reuse": scenario.reuse,
        "messages": messages, "servers": results,
        "ratios": ratios([variant for variant, _ in servers], results),
    }  # fmt: skip


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    """Of the medians: msg/s (above 1: the first is faster) and CPU per message
    (below 1: the first needs less)."""
    return {
        "msg_per_s": ratio(ours["msg_per_s"]["median"], theirs["msg_per_s"]["median"]),
        "cpu_us_per_msg": ratio(
            ours["cpu_us_per_msg"]["median"], theirs["cpu_us_per_msg"]["median"]
        ),
    }


def ratios(
    rows: list[Variant], results: dict[str, dict[str, Any]]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """smtpwire / aiosmtpd with the same handler on the same loop, uvloop /
    asyncio for the same server and handler, smtpwire / smtp-sink."""
    measured = {row.label: row for row in rows}
    found: dict[str, dict[str, dict[str, float | None]]] = {
        "smtpwire/aiosmtpd": {}, "uvloop/asyncio": {}, "smtpwire/smtp-sink": {},
    }  # fmt: skip
    for row in rows:
        if not row.handler:
            continue
        handler = HANDLERS[row.handler]
        anchor = Variant("aiosmtpd", row.handler, row.loop).label
        if row.implementation == "smtpwire" and anchor in measured:
            found["smtpwire/aiosmtpd"][f"{handler}, {row.loop}"] = compare(
                results[row.label], results[anchor]
            )
        if row.implementation == "smtpwire" and "smtp-sink" in measured:
            found["smtpwire/smtp-sink"][f"{handler}, {row.loop}"] = compare(
                results[row.label], results["smtp-sink"]
            )
        on_asyncio = Variant(row.implementation, row.handler, "asyncio").label
        if row.loop == "uvloop" and on_asyncio in measured:
            found["uvloop/asyncio"][f"{row.implementation} {handler}"] = compare(
                results[row.label], results[on_asyncio]
            )
    return {pair: values for pair, values in found.items() if values}


def report(result: dict[str, Any], repeat: int) -> None:
    print(
        f"\nS1 {result['scenario']}: {result['messages']} messages over {SESSIONS} "
        f"smtp-source sessions, median (min-max) of {repeat}"
    )
    print(f"  {'server':34} {'msg/s':>22} {'server CPU µs/msg':>24}")
    for name, values in result["servers"].items():
        print(
            f"  {name:34} {describe(values['msg_per_s']):>22} "
            f"{describe(values['cpu_us_per_msg']):>24}"
        )
    for pair, compared in result["ratios"].items():
        print(f"  {RATIO_TITLES[pair]}:")
        for what, values in compared.items():
            print(
                f"    {what:30} msg/s {values['msg_per_s']:.2f}x, "
                f"CPU per message {values['cpu_us_per_msg']:.2f}x"
            )


def warm_up(servers: list[tuple[Variant, ServerProcess]], load_cores: set[int] | None) -> None:
    for _, server in servers:
        drive(server.port, Scenario(1024, reuse=True, messages=0), WARM_UP_MESSAGES, load_cores)


def chosen(
    parser: argparse.ArgumentParser, option: str, value: str, known: tuple[str, ...]
) -> list[str]:
    names = [name for name in value.split(",") if name]
    if not names or not set(names) <= set(known):
        parser.error(f"{option}: unknown {sorted(set(names) - set(known))}; known: {known}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, help="repetitions (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="a quarter of the messages")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument(
        "--handlers",
        default=",".join(HANDLERS),
        help="of the Python servers, comma-separated: data (handle_DATA), sink (Sink)",
    )
    parser.add_argument(
        "--loops",
        help="of the Python servers, comma-separated: asyncio, uvloop "
        "(default: both where uvloop is installed, else asyncio)",
    )
    parser.add_argument("--pin", action="store_true", help="server and load on separate cores")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    if not SMTP_SOURCE.exists():
        raise SystemExit(postfix_tool_missing(SMTP_SOURCE))
    names = chosen(parser, "--servers", options.servers, SERVERS)
    handlers = chosen(parser, "--handlers", options.handlers, tuple(HANDLERS))
    have_uvloop = uvloop_installed()
    if options.loops is None:
        loops = list(LOOPS) if have_uvloop else ["asyncio"]
        if not have_uvloop:
            print("uvloop not installed (pip install uvloop): the uvloop rows are left out")
    else:
        loops = chosen(parser, "--loops", options.loops, LOOPS)
        if "uvloop" in loops and not have_uvloop:
            parser.error("--loops uvloop: uvloop is not installed (pip install uvloop)")
    if "smtp-sink" in names and not SMTP_SINK.exists():
        print(postfix_tool_left_out(SMTP_SINK))
        names.remove("smtp-sink")
    repeat = options.repeat or (2 if options.quick else 5)
    server_cores, load_cores = split_cores(options.pin)
    servers: list[tuple[Variant, ServerProcess]] = []
    results = []
    try:
        for variant in variants(names, handlers, loops):
            servers.append((variant, variant.start()))
            pin(servers[-1][1].pid, server_cores)
        warm_up(servers, load_cores)
        for scenario in SCENARIOS:
            messages = scenario.messages // 4 if options.quick else scenario.messages
            results.append(run_scenario(servers, scenario, messages, repeat, load_cores))
            report(results[-1], repeat)
    finally:
        for _, server in servers:
            server.stop()
    write_json(options.json, {
        "benchmark": "S1 server throughput", "repeat": repeat, "sessions": SESSIONS,
        "pinned": server_cores is not None, "handlers": [HANDLERS[name] for name in handlers],
        "loops": loops, "scenarios": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
