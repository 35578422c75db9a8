"""A worker's side of ``--workers``: the listening sockets its supervisor
(:mod:`smtpwire.server._workers`) described, served as one server, and the
channel to the supervisor (the startup line goes up it; its end means the
supervisor is gone, and the worker stops).

The supervisor passes ``--worker-spec`` (JSON) ahead of the user's own
arguments: ``slot`` (1..N, also in the environment as ``SMTPWIRE_WORKER``),
``channel`` (an inherited file descriptor), and either ``addresses`` (Linux:
the socket addresses to bind again with ``SO_REUSEPORT``) or ``fds`` (elsewhere:
listening sockets inherited from the supervisor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mail.log")

#: listen() backlog, asyncio's own default for create_server.
BACKLOG = 100

#: The environment variable naming the worker's slot (1..N), for handlers and logs.
WORKER_ENV = "SMTPWIRE_WORKER"


@dataclass(frozen=True)
class WorkerSpec:
    slot: int
    channel: int
    addresses: tuple[tuple[int, tuple[Any, ...]], ...] = ()  # (family, sockaddr)
    fds: tuple[int, ...] = ()

    def dumps(self) -> str:
        return json.dumps(
            {
                "slot": self.slot,
                "channel": self.channel,
                "addresses": [[family, list(address)] for family, address in self.addresses],
                "fds": list(self.fds),
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, parser: argparse.ArgumentParser, text: str) -> WorkerSpec:
        try:
            raw = json.loads(text)
            return cls(
                slot=int(raw["slot"]),
                channel=int(raw["channel"]),
                addresses=tuple(
                    (int(family), tuple(address)) for family, address in raw["addresses"]
                ),
                fds=tuple(int(fd) for fd in raw["fds"]),
            )
        except (ValueError, KeyError, TypeError):
            parser.error(f"invalid --worker-spec: {text!r} (an option for --workers' own use)")


def reuseport_socket(family: int, address: Sequence[Any]) -> socket.socket:
    """A socket bound to ``address`` that shares it with the other workers (and
    the supervisor's reservation): Linux spreads new connections over the
    listening ones, each worker with its own accept queue."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As asyncio's create_server: rebinding while old connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(tuple(address))
    except BaseException:
        sock.close()
        raise
    return sock


def listening_sockets(spec: WorkerSpec) -> list[socket.socket]:
    if spec.fds:
        return [socket.socket(fileno=fd) for fd in spec.fds]
    sockets: list[socket.socket] = []
    try:
        for family, address in spec.addresses:
            sock = reuseport_socket(family, address)
            sockets.append(sock)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ServerGroup(asyncio.AbstractServer):
    """Several asyncio servers (one per listening socket: ``create_server(sock=)``
    takes one) that the command line's code handles as one, like the server
    ``create_server(host, port)`` makes for a name with several addresses."""

    def __init__(self, servers: Sequence[asyncio.AbstractServer]) -> None:
        self._servers = list(servers)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(sock for server in self._servers for sock in getattr(server, "sockets", ()))

    def close(self) -> None:
        for server in self._servers:
            server.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._servers[0].get_loop()

    def is_serving(self) -> bool:
        return any(server.is_serving() for server in self._servers)

    async def start_serving(self) -> None:
        for server in self._servers:
            await server.start_serving()

    async def serve_forever(self) -> None:  # pragma: no cover - the CLI runs the loop itself
        await asyncio.gather(*(server.serve_forever() for server in self._servers))

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()


def bind_worker(
    loop: asyncio.AbstractEventLoop,
    parser: argparse.ArgumentParser,
    options: argparse.Namespace,
    factory: Callable[[], asyncio.BaseProtocol],
    spec: WorkerSpec,
) -> ServerGroup:
    try:
        sockets = listening_sockets(spec)
    except OSError as error:
        parser.exit(1, f"{parser.prog}: error: worker {spec.slot} cannot listen: {error}\n")
    servers = [
        loop.run_until_complete(loop.create_server(factory, sock=sock, start_serving=False))
        for sock in sockets
    ]
    return ServerGroup(servers)


class SupervisorChannel:
    """The worker's end of its socket pair with the supervisor.  The supervisor
    never writes to it: readable means its end was closed, i.e. the supervisor
    has gone (even killed with SIGKILL, when it could forward no signal), and
    then the worker stops as on SIGTERM rather than serve on unsupervised."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._readable)

    def announce(self, line: str) -> None:
        try:
            # A line of a few hundred octets into an empty socket buffer: never blocks.
            self.sock.send(line.encode("utf-8", "replace") + b"\n")
        except OSError:
            self._gone()

    def _readable(self) -> None:
        try:
            data = self.sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._gone()

    def _gone(self) -> None:
        log.warning("The supervisor has gone; shutting down")
        self.close()
        self.loop.stop()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
