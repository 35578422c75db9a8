"""S5: the wire core alone - DATA decoder/encoder throughput and reply parser rate.

Run by ``nox -s bench``; prints MB/s (10**6 octets per second) as the median of
several repetitions with min-max, and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from smtpwire.common import DataDecoder, DataEncoder, ReplyParser, encode_data

CHUNK = 64 * 1024
WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "SMTP", "message",
    "header", "body", "line", "text", "mail", "relay", "server", "client", "envelope",
    "recipient", "sender", "delivery", "status", "notification",
)  # fmt: skip


def ordinary_text(size: int, *, seed: int = 1) -> bytes:
    """Mail-like text: lines of 1-76 characters, CRLF endings, some leading dots."""
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < size:
        words = rng.choices(WORDS, k=rng.randint(0, 12))
        line = " ".join(words)[:76]
        if rng.random() < 0.01:
            line = "." + line
        lines.append(line)
        total += len(line) + 2
    return ("\r\n".join(lines) + "\r\n").encode()


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def measure(label: str, octets: int, run: Callable[[], object], repeat: int) -> dict[str, object]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    rates = [octets / s / 1e6 for s in seconds]
    result = {
        "scenario": label,
        "octets": octets,
        "median_mb_s": statistics.median(rates),
        "min_mb_s": min(rates),
        "max_mb_s": max(rates),
        "repeat": repeat,
    }
    median = result["median_mb_s"]
    print(f"{label:<44} {median:9.1f} MB/s  (min {min(rates):.1f}, max {max(rates):.1f})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()

    content = ordinary_text(args.size_mib * 1024 * 1024)
    wire = encode_data(content)
    content_chunks = chunks(content)
    wire_chunks = chunks(wire)

    def decode() -> None:
        decoder = DataDecoder(max_size=len(content) + 1)
        total = 0
        for chunk in wire_chunks:
            total += len(decoder.feed(chunk))
        assert decoder.done
        assert decoder.violation is None
        assert total == len(content)

    def encode() -> None:
        encoder = DataEncoder()
        total = sum(len(encoder.feed(chunk)) for chunk in content_chunks)
        total += len(encoder.finish())
        assert total == len(wire)

    def encode_whole() -> None:
        assert len(encode_data(content)) == len(wire)

    replies = (
        b"250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250 HELP\r\n"
        + b"250 2.1.0 OK\r\n" * 3
        + b"354 End data with <CR><LF>.<CR><LF>\r\n"
    ) * 20_000
    reply_count = 20_000 * 5

    def parse_replies() -> None:
        reply_parser = ReplyParser()
        count = sum(len(reply_parser.feed(chunk)) for chunk in chunks(replies, 4096))
        assert count == reply_count

    print(
        f"python {platform.python_version()} on {platform.machine()}, {args.size_mib} MiB "
        f"of ordinary text in {CHUNK // 1024} KiB chunks"
    )
    results = [
        measure(
            f"DATA decoder ({args.size_mib} MiB, 64 KiB chunks)", len(wire), decode, args.repeat
        ),
        measure(
            f"DATA encoder ({args.size_mib} MiB, 64 KiB chunks)", len(content), encode, args.repeat
        ),
        measure(
            f"DATA encoder (whole {args.size_mib} MiB message)",
            len(content),
            encode_whole,
            args.repeat,
        ),
    ]
    rates = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        parse_replies()
        rates.append(reply_count / (time.perf_counter() - start))
    print(
        f"{'reply parser (4 KiB chunks)':<44} {statistics.median(rates):9.0f} replies/s "
        f"(min {min(rates):.0f}, max {max(rates):.0f})"
    )
    results.append(
        {
            "scenario": "reply parser",
            "median_replies_s": statistics.median(rates),
            "min_replies_s": min(rates),
            "max_replies_s": max(rates),
        }
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"python": platform.python_version(), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
