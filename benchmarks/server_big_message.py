"""S3: one big message (50 MiB) into the server: how long it takes and how much
the server process's memory grows, smtpwire beside aiosmtpd and smtp-sink.

Receivers, each in a process of its own (see ``_receiver.py``), with no size
limit:

- smtpwire with a classic ``handle_DATA`` that keeps the content and hashes it;
- smtpwire with the ``handle_DATA_STREAM`` hook, hashing the chunks as they come;
- aiosmtpd with the same ``handle_DATA`` handler;
- Postfix's ``smtp-sink``, which throws the data away (the speed reference).

The client is this process: a plain socket that sends EHLO, MAIL, RCPT and DATA,
then the whole dot-stuffed message in one ``sendall`` (prepared beforehand:
lines of 0-76 characters, 1% starting with a dot).  "Seconds" run from the first
octet of the message to the server's reply after the final dot.

Memory: every repetition starts a fresh server, sends it one small message
(so that the code paths are loaded), reads its VmRSS (idle) and sets its VmHWM
back to that with ``echo 5 > /proc/<pid>/clear_refs``; after the big message,
growth = VmHWM - idle VmRSS.  Where clear_refs cannot be written, VmHWM still
holds the start-up peak, which is reported as such (``peak_reset: false`` in the
JSON) and can only make the growth look larger.

Pinning: none by default, as in S1 (where it is explained); ``--pin`` runs the
server on the first allowed core and this client on the second, which made no
difference to this scenario's figures on the benchmark machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path
from typing import Any

from _servers import (
    MIB,
    SMTP_SINK,
    ServerProcess,
    describe,
    mib,
    pin,
    postfix_tool_left_out,
    ratio,
    split_cores,
    start_python_server,
    start_smtp_sink,
    summary,
    write_json,
)

SOCKET_TIMEOUT = 300.0
RECEIVERS = {
    "smtpwire handle_DATA": ("smtpwire", "keep"),
    "smtpwire handle_DATA_STREAM": ("smtpwire", "stream"),
    "aiosmtpd handle_DATA": ("aiosmtpd", "keep"),
    "smtp-sink": ("smtp-sink", ""),
}
SMALL_MESSAGE = b"Subject: warm-up\r\n\r\n" + (b"x" * 70 + b"\r\n") * 15 + b".\r\n"


def message_lines() -> list[bytes]:
    """A hundred lines of 0-76 characters, one of them starting with a dot."""
    lines = [b"Subject: a big message", b"From: bench@example.org", b""]
    for number in range(97):
        text = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
        lines.append(text[: (number * 7) % 77])
    lines[50] = b"." + lines[50][1:]
    return lines


def stuffed_message(size: int) -> tuple[int, bytes]:
    """(content size, the DATA octets): at least ``size`` octets of content,
    dot-stuffed, CRLF line endings, with the terminating dot."""
    lines = message_lines()
    block = b"\r\n".join(lines) + b"\r\n"
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    copies = -(-size // len(block))
    return len(block) * copies, (stuffed + b"\r\n") * copies + b".\r\n"


class Conversation:
    """A lock-step SMTP client over a plain socket: enough to send one message."""

    def __init__(self, port: int) -> None:
        self.connection = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.pending = b""
        self.expect(220)

    def expect(self, code: int) -> None:
        reply = self.read_reply()
        if not reply.startswith(str(code).encode()):
            raise RuntimeError(f"expected {code}, got {reply!r}")

    def read_reply(self) -> bytes:
        """Lines up to and including the last of one reply (``NNN `` then text)."""
        reply = b""
        while True:
            while b"\r\n" not in self.pending:
                received = self.connection.recv(65536)
                if not received:
                    raise RuntimeError(f"connection closed after {reply + self.pending!r}")
                self.pending += received
            line, self.pending = self.pending.split(b"\r\n", 1)
            reply += line + b"\r\n"
            if line[3:4] != b"-":
                return reply

    def command(self, line: str, code: int) -> None:
        self.connection.sendall(line.encode() + b"\r\n")
        self.expect(code)

    def send(self, data: bytes) -> float:
        """One message; seconds from its first octet to the reply after the dot."""
        self.command("MAIL FROM:<bench@example.org>", 250)
        self.command("RCPT TO:<sink@example.org>", 250)
        self.command("DATA", 354)
        started = time.perf_counter()
        self.connection.sendall(data)
        self.expect(250)
        return time.perf_counter() - started

    def close(self) -> None:
        """QUIT if the server still answers; the socket is closed either way."""
        try:
            self.command("QUIT", 221)
        except (OSError, RuntimeError):
            pass
        finally:
            self.connection.close()


def start_receiver(name: str) -> ServerProcess:
    implementation, handler = RECEIVERS[name]
    if implementation == "smtp-sink":
        return start_smtp_sink()
    server = start_python_server(implementation, handler, data_size_limit=0)
    server.name = name
    return server


def measure(name: str, data: bytes, server_cores: set[int] | None) -> dict[str, Any]:
    """One repetition against a fresh server: seconds, idle RSS, peak growth."""
    with start_receiver(name) as server:
        pin(server.pid, server_cores)
        conversation = Conversation(server.port)
        try:
            conversation.command("EHLO bench.example.org", 250)
            conversation.send(SMALL_MESSAGE)
            idle = server.rss()
            peak_reset = server.reset_peak()
            seconds = conversation.send(data)
            peak = server.peak()
        finally:
            conversation.close()
    return {"seconds": seconds, "idle": idle, "growth": peak - idle, "peak_reset": peak_reset}


def run(
    names: list[str], data: bytes, repeat: int, pinned: bool
) -> dict[str, list[dict[str, Any]]]:
    server_cores, client_cores = split_cores(pinned)
    if client_cores is not None:
        os.sched_setaffinity(0, client_cores)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repetition in range(repeat):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(measure(name, data, server_cores))
    return runs


def summarise(runs: dict[str, list[dict[str, Any]]], content_size: int) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {
        name: {
            "seconds": summary(one["seconds"] for one in measured),
            "growth_mib": summary(mib(one["growth"]) for one in measured),
            "idle_rss_mib": summary(mib(one["idle"]) for one in measured),
            "peak_reset": all(one["peak_reset"] for one in measured),
        }
        for name, measured in runs.items()
    }
    for values in results.values():
        values["growth_per_message_size"] = values["growth_mib"]["median"] / mib(content_size)
    sink = results.get("smtp-sink")
    for name, values in results.items():
        if name.startswith("smtpwire"):
            values["time_ratios"] = {
                anchor: ratio(values["seconds"]["median"], results[anchor]["seconds"]["median"])
                for anchor in results
                if not anchor.startswith("smtpwire")
            }
    if sink is not None:
        sink["note"] = "smtp-sink discards the data"
    return results


def report(results: dict[str, Any], content_size: int, repeat: int) -> None:
    print(
        f"\nS3 one message of {mib(content_size):.0f} MiB into the server, "
        f"median (min-max) of {repeat}, a fresh server each time"
    )
    print(f"  {'receiver':28} {'seconds':>20} {'peak growth MiB':>22} {'/ size':>7}")
    for name, values in results.items():
        print(
            f"  {name:28} {describe(values['seconds'], '.2f'):>20} "
            f"{describe(values['growth_mib'], '.1f'):>22} "
            f"{values['growth_per_message_size']:6.2f}x"
        )
    for name, values in results.items():
        for anchor, value in values.get("time_ratios", {}).items():
            print(f"  time {name} / {anchor}: {value:.2f}x")
    if not all(values["peak_reset"] for values in results.values()):
        print("  (VmHWM could not be reset: growth includes the start-up peak)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--repeat", type=int, help="repetitions (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="two repetitions")
    parser.add_argument("--receivers", default=",".join(RECEIVERS), help="comma-separated")
    parser.add_argument("--pin", action="store_true", help="server and client on separate cores")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    names = [name for name in options.receivers.split(",") if name]
    unknown = set(names) - set(RECEIVERS)
    if unknown:
        parser.error(f"unknown receivers {sorted(unknown)}; known: {list(RECEIVERS)}")
    if "smtp-sink" in names and not SMTP_SINK.exists():
        print(postfix_tool_left_out(SMTP_SINK))
        names.remove("smtp-sink")
    repeat = options.repeat or (2 if options.quick else 5)
    content_size, data = stuffed_message(options.size_mib * MIB)
    runs = run(names, data, repeat, pinned=options.pin)
    results = summarise(runs, content_size)
    report(results, content_size, repeat)
    write_json(options.json, {
        "benchmark": "S3 one big message", "content_octets": content_size,
        "repeat": repeat, "pinned": options.pin, "receivers": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
