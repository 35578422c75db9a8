"""The receiving server of the server-side benchmarks (S1, S3, S4), run in a
process of its own so that its CPU time and memory can be read from /proc.

smtpwire.server and aiosmtpd are served the same way: a plain asyncio server on
127.0.0.1 (port 0 unless ``--port``) whose protocol factory builds the library's
``SMTP`` with the chosen handler; no controller thread, no logging set up.  The
greeting's host name is fixed, so that neither library looks the machine's name
up.  Once listening it prints ``READY <port>`` and serves until SIGTERM or
SIGINT.  ``--loop uvloop`` serves on uvloop's event loop (``uvloop.run``)
instead of asyncio's own.

Handlers (``--handler``):

- ``sink``: the library's own ``handlers.Sink``, which drops every message
  (it has no hooks at all);
- ``data``: the smallest real handler, ``async def handle_DATA`` returning
  ``"250 OK"``, as users write them (the same class for both libraries);
- ``keep``: a classic ``handle_DATA`` that keeps the last message's content and
  hashes it (SHA-256);
- ``stream``: smtpwire's ``handle_DATA_STREAM`` hook hashing the chunks as they
  arrive, keeping none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from _servers import raise_open_files_limit

HOSTNAME = "bench.example.org"


class ReturnOK:
    """The smallest handler users write: one DATA hook that accepts the message."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


class KeepAndHash:
    """handle_DATA as most handlers are written: the whole message at once."""

    def __init__(self) -> None:
        self.kept: bytes = b""
        self.digest = ""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.kept = envelope.original_content or envelope.content
        self.digest = hashlib.sha256(self.kept).hexdigest()
        return "250 OK"


class StreamAndHash:
    """handle_DATA_STREAM: hashes the body chunk by chunk, keeping none of it."""

    def __init__(self) -> None:
        self.digest = ""

    async def handle_DATA_STREAM(
        self, server: Any, session: Any, envelope: Any, body: AsyncIterator[bytes]
    ) -> str:
        digest = hashlib.sha256()
        async for chunk in body:
            digest.update(chunk)
        self.digest = digest.hexdigest()
        return "250 OK"


def build_handler(implementation: str, handler: str) -> object:
    if handler == "data":
        return ReturnOK()
    if handler == "keep":
        return KeepAndHash()
    if handler == "stream":
        if implementation != "smtpwire":
            raise SystemExit("--handler stream needs smtpwire (aiosmtpd has no such hook)")
        return StreamAndHash()
    if implementation == "smtpwire":
        from smtpwire.server.handlers import Sink  # noqa: PLC0415 -- only the one served

        return Sink()
    from aiosmtpd.handlers import Sink as AiosmtpdSink  # noqa: PLC0415

    return AiosmtpdSink()


def protocol_factory(implementation: str, handler: object, size_limit: int) -> Callable[[], Any]:
    server_class: type[Any]
    if implementation == "smtpwire":
        from smtpwire.server.smtp import SMTP  # noqa: PLC0415 -- only the one served

        server_class = SMTP
    else:
        from aiosmtpd.smtp import SMTP as AiosmtpdSMTP  # noqa: PLC0415

        server_class = AiosmtpdSMTP

    def build() -> Any:
        return server_class(handler, hostname=HOSTNAME, data_size_limit=size_limit)

    return build


async def serve(options: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    handler = build_handler(options.implementation, options.handler)
    factory = protocol_factory(options.implementation, handler, options.data_size_limit)
    server = await loop.create_server(factory, "127.0.0.1", options.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--implementation", choices=["smtpwire", "aiosmtpd"], required=True)
    parser.add_argument("--handler", choices=["sink", "data", "keep", "stream"], default="sink")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-size-limit", type=int, default=32 * 1024 * 1024, help="0: no limit")
    options = parser.parse_args()
    raise_open_files_limit()
    if options.loop == "uvloop":
        import uvloop  # noqa: PLC0415 -- an optional benchmark dependency

        uvloop.run(serve(options))
    else:
        asyncio.run(serve(options))


if __name__ == "__main__":
    main()
