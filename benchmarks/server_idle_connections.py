"""S4: memory per idle connection, smtpwire.server beside aiosmtpd.

Each repetition starts a fresh server in a process of its own (``_receiver.py``,
the ``Sink`` handler), opens and closes one warm-up connection, reads the
server's VmRSS, then opens ``--connections`` (2,000) connections from this
process, each reading the greeting, sending EHLO and reading the whole reply
before it is left idle.  Memory per connection = (VmRSS with all of them open -
VmRSS before) / connections.  Kernel socket buffers are not part of RSS, so this
is the memory of the server's own objects (protocol, session, timers, buffers).

Both processes raise their soft limit of open files to the hard limit.  The
connections are opened 50 at a time so the server's accept backlog never
overflows.  No pinning by default, as in S1 (``--pin``: the server on the first
allowed core, this process on the second; memory does not depend on it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from _servers import (
    describe,
    pin,
    raise_open_files_limit,
    ratio,
    split_cores,
    start_python_server,
    summary,
    write_json,
)

SERVERS = ("smtpwire", "aiosmtpd")
OPENING_AT_ONCE = 50
STEP_TIMEOUT = 30.0
SETTLE_SECONDS = 0.5


async def open_after_ehlo(port: int) -> asyncio.StreamWriter:
    """A connection that has been greeted and has had its EHLO answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await read_reply(reader)
        writer.write(b"EHLO bench.example.org\r\n")
        await read_reply(reader)
    except BaseException:
        writer.close()
        raise
    return writer


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    reply = b""
    while True:
        line = await reader.readuntil(b"\r\n")
        reply += line
        if line[3:4] != b"-":
            if not line.startswith(b"2"):
                raise RuntimeError(f"unexpected reply {reply!r}")
            return reply


async def open_many(port: int, count: int) -> list[asyncio.StreamWriter]:
    limit = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one() -> asyncio.StreamWriter:
        async with limit:
            return await asyncio.wait_for(open_after_ehlo(port), STEP_TIMEOUT)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    writers = [result for result in results if isinstance(result, asyncio.StreamWriter)]
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        await close_all(writers)
        raise RuntimeError(f"{len(failures)} of {count} connections failed: {failures[0]!r}")
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(
        *(asyncio.wait_for(writer.wait_closed(), STEP_TIMEOUT) for writer in writers),
        return_exceptions=True,
    )


async def measure_connections(server: Any, count: int) -> dict[str, float]:
    await close_all([await open_after_ehlo(server.port)])
    await asyncio.sleep(SETTLE_SECONDS)
    before = server.rss()
    writers = await open_many(server.port, count)
    try:
        await asyncio.sleep(SETTLE_SECONDS)
        after = server.rss()
    finally:
        await close_all(writers)
    return {"before": before, "after": after, "per_connection": (after - before) / count}


def measure(name: str, count: int, server_cores: set[int] | None) -> dict[str, float]:
    with start_python_server(name) as server:
        pin(server.pid, server_cores)
        return asyncio.run(measure_connections(server, count))


def run(names: list[str], count: int, repeat: int, pinned: bool) -> dict[str, Any]:
    server_cores, client_cores = split_cores(pinned)
    if client_cores is not None:
        os.sched_setaffinity(0, client_cores)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repetition in range(repeat):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(measure(name, count, server_cores))
    results: dict[str, Any] = {
        name: {
            "kib_per_connection": summary(one["per_connection"] / 1024 for one in measured),
            "rss_before_mib": summary(one["before"] / 2**20 for one in measured),
            "rss_after_mib": summary(one["after"] / 2**20 for one in measured),
        }
        for name, measured in runs.items()
    }
    if "smtpwire" in results:
        ours = results["smtpwire"]["kib_per_connection"]["median"]
        for anchor in (name for name in results if name != "smtpwire"):
            theirs = results[anchor]["kib_per_connection"]["median"]
            results["smtpwire"][f"ratio_to_{anchor}"] = ratio(ours, theirs)
    return results


def report(results: dict[str, Any], count: int, repeat: int) -> None:
    print(
        f"\nS4 {count} idle connections after EHLO, server memory, "
        f"median (min-max) of {repeat}, a fresh server each time"
    )
    print(f"  {'server':10} {'KiB per connection':>24} {'RSS before MiB':>18} {'after MiB':>18}")
    for name, values in results.items():
        print(
            f"  {name:10} {describe(values['kib_per_connection'], '.2f'):>24} "
            f"{describe(values['rss_before_mib'], '.1f'):>18} "
            f"{describe(values['rss_after_mib'], '.1f'):>18}"
        )
    for key, value in results.get("smtpwire", {}).items():
        if key.startswith("ratio_to_"):
            print(f"  smtpwire / {key.removeprefix('ratio_to_')}: {value:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--repeat", type=int, help="repetitions (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="two repetitions")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--pin", action="store_true", help="server and client on separate cores")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    names = [name for name in options.servers.split(",") if name]
    if not set(names) <= set(SERVERS):
        parser.error(f"unknown servers {sorted(set(names) - set(SERVERS))}; known: {SERVERS}")
    repeat = options.repeat or (2 if options.quick else 5)
    limit = raise_open_files_limit()
    if limit < options.connections + 100:
        raise SystemExit(f"{options.connections} connections need more than {limit} files")
    results = run(names, options.connections, repeat, pinned=options.pin)
    report(results, options.connections, repeat)
    write_json(options.json, {
        "benchmark": "S4 idle connections", "connections": options.connections,
        "repeat": repeat, "pinned": options.pin, "servers": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
