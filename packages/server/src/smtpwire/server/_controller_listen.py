"""Where a controller listens: the default loopback address, a TCP listener that
reports one port for all its sockets, and a Unix socket file removed only if it
is still the one this server made.

Kept apart from :mod:`smtpwire.server.controller` because none of it depends on
how a controller runs (threaded or not); the controller module re-exports the
public names (``IP6_IS``, ``get_localhost``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Final

log = logging.getLogger("mail.log")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class IP6_IS:
    """The ``bind()`` errors that tell whether this host has IPv6.

    Mutable on purpose: aiosmtpd documents adding errno values here for systems
    that report a missing IPv6 stack in an unusual way.
    """

    NO: Final[set[int]] = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}
    YES: Final[set[int]] = {errno.EADDRINUSE}


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        if error.errno in IP6_IS.YES:
            return True
        if error.errno not in IP6_IS.NO:
            log.debug("treating IPv6 as unavailable after bind error %r", error)
        return False
    return True


def get_localhost() -> str:
    """The loopback address to listen on by default: IPv6 where the host has it,
    since clients given ``localhost`` usually try ``::1`` first."""
    return "::1" if _has_ipv6() else "127.0.0.1"


def bound_port(sock: Any) -> int:
    return int(sock.getsockname()[1])


async def listen_tcp(
    factory: ProtocolFactory, host: str, port: int, tls: ssl.SSLContext | None
) -> asyncio.Server:
    """Listen on ``host``/``port``; with port 0 every socket gets the same port,
    so that the one port a controller reports reaches all of them."""
    loop = asyncio.get_running_loop()

    async def listen(port: int) -> asyncio.Server:
        return await loop.create_server(factory, host=host, port=port, ssl=tls)

    server = await listen(port)
    if len({bound_port(sock) for sock in server.sockets}) > 1:
        # Port 0 on a name with several addresses ("localhost", ""): each socket
        # got its own free port.  Listen again on one port for all of them.
        port = bound_port(server.sockets[0])
        server.close()
        await server.wait_closed()
        server = await listen(port)
    return server


class SocketFile:
    """A Unix socket file a server listens on, removed at stop: Python 3.13 does
    that itself, older versions leave the file behind (and the next bind fails)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._inode: int | None = None

    async def listen(self, factory: ProtocolFactory, tls: ssl.SSLContext | None) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(factory, path=self.path, ssl=tls)
        self._inode = os.stat(self.path).st_ino
        return server

    def remove(self) -> None:
        # Only if it is still the socket this server made: another process may
        # have bound the path since.
        inode, self._inode = self._inode, None
        with suppress(OSError):
            if inode is not None and os.stat(self.path).st_ino == inode:
                os.unlink(self.path)
