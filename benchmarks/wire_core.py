"""S5: the wire core alone, beside the anchors' equivalents in the same run.

- DATA decoder (server): 50 MiB of ordinary mail text fed in 64 KiB chunks.
- DATA encoder (client): the same text, chunked and as one message; the anchors
  are stdlib smtplib's helpers and aiosmtplib 5's encoding steps (aiosmtplib must
  be installed: pip install aiosmtplib).
- Reply parser (client): EHLO/MAIL/RCPT/DATA replies fed in 4 KiB chunks.

Rates are MB/s (10**6 octets per second of input) or replies/s: the median of
``--repeat`` runs with min and max.  Run by ``nox -s bench``, which also writes
the results as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import smtplib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _servers import require_anchor
from smtpwire.common import DataDecoder, DataEncoder, ReplyParser, encode_data

CHUNK = 64 * 1024
WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "SMTP", "message",
    "header", "body", "line", "text", "mail", "relay", "server", "client", "envelope",
    "recipient", "sender", "delivery", "status", "notification",
)  # fmt: skip
REPLIES = (
    b"250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250 HELP\r\n"
    + b"250 2.1.0 OK\r\n" * 3
    + b"354 End data with <CR><LF>.<CR><LF>\r\n"
)
REPLIES_PER_ROUND = 5


def ordinary_text(size: int, *, seed: int = 1, dot_rate: float = 0.01) -> bytes:
    """Mail-like text of at least ``size`` octets: CRLF lines of 0-76 characters,
    ``dot_rate`` of them starting with a dot."""
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(0, 12)))[:76]
        if rng.random() < dot_rate:
            line = "." + line
        lines.append(line)
        total += len(line) + 2
    return ("\r\n".join(lines) + "\r\n").encode()


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def timed(run: Callable[[], object], repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def report(label: str, amount: float, unit: str, seconds: list[float]) -> dict[str, Any]:
    rates = [amount / s for s in seconds]
    median = statistics.median(rates)
    scale = 1e6 if unit == "MB/s" else 1
    print(
        f"{label:<50} {median / scale:10.1f} {unit}  "
        f"(min {min(rates) / scale:.1f}, max {max(rates) / scale:.1f})"
    )
    return {"scenario": label, "unit": unit, "median": median / scale,
            "min": min(rates) / scale, "max": max(rates) / scale}  # fmt: skip


def anchor_encoders() -> list[tuple[str, Callable[[bytes], bytes]]]:
    """Whole-message DATA encoding as the anchors do it."""

    def smtplib_encode(message: bytes) -> bytes:
        # smtplib.SMTP.data() with bytes: _quote_periods, a final CRLF, "." CRLF
        # (it normalises line endings only for str messages).
        quoted: bytes = smtplib._quote_periods(message)  # type: ignore[attr-defined]
        return quoted + (b".\r\n" if quoted.endswith(b"\r\n") else b"\r\n.\r\n")

    anchors = [("smtplib", smtplib_encode)]
    try:
        from aiosmtplib import protocol  # noqa: PLC0415 -- optional, benchmark-only
    except ImportError:
        return anchors

    def aiosmtplib_encode(message: bytes) -> bytes:
        # aiosmtplib 5 SMTPProtocol.execute_data_command(): normalise, quote, ".".
        normalized = protocol.normalize_message_line_endings(message)
        return bytes(protocol.PERIOD_REGEX.sub(b"..", normalized)) + b".\r\n"

    anchors.append(("aiosmtplib", aiosmtplib_encode))
    return anchors


def split_replies(wire: bytes) -> list[bytes]:
    """One complete reply per item, as a lock-step client receives them."""
    replies, start = [], 0
    for end in range(len(wire)):
        if wire[end] == 0x0A and wire[end - 3 : end - 2] != b"-" and end + 1 > start:
            line_start = wire.rfind(b"\n", 0, end) + 1
            if wire[line_start + 3 : line_start + 4] != b"-":
                replies.append(wire[start : end + 1])
                start = end + 1
    return replies


def anchor_reply_parser() -> Callable[[list[bytes]], int] | None:
    """aiosmtplib 5's reply parsing (its protocol's buffer parser), one reply per call."""
    try:
        from aiosmtplib import protocol  # noqa: PLC0415 -- optional, benchmark-only
    except ImportError:
        return None
    parse = getattr(protocol.SMTPProtocol, "_read_response_from_buffer", None)
    if parse is None:
        return None

    class Holder:
        _buffer = bytearray()

    def run(replies: list[bytes]) -> int:
        holder = Holder()
        holder._buffer = bytearray()
        count = 0
        for reply in replies:
            holder._buffer.extend(reply)
            count += parse(holder) is not None
        return count

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    require_anchor("aiosmtplib", "aiosmtplib")

    content = ordinary_text(args.size_mib * 1024 * 1024)
    wire = encode_data(content)
    content_chunks, wire_chunks = chunks(content), chunks(wire)

    def decode() -> None:
        decoder = DataDecoder(max_size=len(content))
        total = sum(len(decoder.feed(chunk)) for chunk in wire_chunks)
        assert decoder.done
        assert decoder.violation is None
        assert total == len(content)

    dotless = ordinary_text(args.size_mib * 1024 * 1024, dot_rate=0.0)
    dotless_chunks = chunks(encode_data(dotless))

    def decode_dotless() -> None:
        decoder = DataDecoder(max_size=len(dotless))
        total = sum(len(decoder.feed(chunk)) for chunk in dotless_chunks)
        assert decoder.done
        assert total == len(dotless)

    def encode_chunked() -> None:
        encoder = DataEncoder()
        total = sum(len(encoder.feed(chunk)) for chunk in content_chunks)
        assert total + len(encoder.finish()) == len(wire)

    def encode_whole() -> None:
        assert encode_data(content) == wire

    reply_wire = chunks(REPLIES * 20_000, 4096)

    def parse_replies() -> None:
        reply_parser = ReplyParser()
        count = sum(len(reply_parser.feed(chunk)) for chunk in reply_wire)
        assert count == 20_000 * REPLIES_PER_ROUND

    print(
        f"Python {platform.python_version()} on {platform.machine()}: {args.size_mib} MiB of "
        f"ordinary text, 64 KiB chunks, median of {args.repeat} runs"
    )
    size = args.size_mib
    results = [
        report(f"DATA decoder ({size} MiB, 64 KiB chunks)", len(wire), "MB/s",
               timed(decode, args.repeat)),
        report("  the same without any line starting with a dot", len(dotless), "MB/s",
               timed(decode_dotless, args.repeat)),
        report(f"DATA encoder ({size} MiB, 64 KiB chunks)", len(content), "MB/s",
               timed(encode_chunked, args.repeat)),
    ]  # fmt: skip
    whole = report(f"DATA encoder ({size} MiB in one call)", len(content), "MB/s",
                   timed(encode_whole, args.repeat))  # fmt: skip
    results.append(whole)
    for name, anchor in anchor_encoders():
        assert anchor(content) == wire, f"{name} encodes differently"
        result = report(f"  {name}, same message", len(content), "MB/s",
                        timed(lambda a=anchor: a(content), args.repeat))  # type: ignore[misc]  # fmt: skip
        result["smtpwire_ratio"] = whole["median"] / result["median"]
        print(f"  {'smtpwire / ' + name:<48} {result['smtpwire_ratio']:10.2f}x")
        results.append(result)
    lockstep = split_replies(REPLIES) * 20_000
    assert len(lockstep) == 20_000 * REPLIES_PER_ROUND

    def parse_lockstep() -> None:
        reply_parser = ReplyParser()
        assert sum(len(reply_parser.feed(reply)) for reply in lockstep) == len(lockstep)

    ours = report("reply parser, one reply per feed", len(lockstep), "replies/s",
                  timed(parse_lockstep, args.repeat))  # fmt: skip
    results.append(ours)
    anchor = anchor_reply_parser()
    if anchor is not None:
        assert anchor(lockstep) == len(lockstep)
        result = report("  aiosmtplib, same replies", len(lockstep), "replies/s",
                        timed(lambda: anchor(lockstep), args.repeat))  # fmt: skip
        result["smtpwire_ratio"] = ours["median"] / result["median"]
        print(f"  {'smtpwire / aiosmtplib':<48} {result['smtpwire_ratio']:10.2f}x")
        results.append(result)
    results.append(
        report("reply parser (4 KiB chunks)", 20_000 * REPLIES_PER_ROUND, "replies/s",
               timed(parse_replies, args.repeat))
    )  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"python": platform.python_version(), "machine": platform.machine(),
                    "size_mib": size, "repeat": args.repeat, "results": results}  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
