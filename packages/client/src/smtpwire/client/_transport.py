"""Opening the connection: TCP, Unix socket or a given socket, with or without TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from .errors import SMTPConnectError, SMTPConnectTimeoutError
from .protocol import SMTPProtocol
from .typing import SocketPathType

__all__ = ["ConnectionTarget", "build_tls_context", "open_connection"]


@dataclass
class ConnectionTarget:
    hostname: str
    port: int | None
    socket_path: SocketPathType | None
    sock: socket.socket | None
    source_address: tuple[str, int] | None


def build_tls_context(
    *,
    validate_certs: bool,
    cert_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
) -> ssl.SSLContext:
    """The context used when the caller gives none (reads files: call off the loop)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_bundle:
        context.load_verify_locations(cert_bundle)
    if client_cert:
        context.load_cert_chain(client_cert, keyfile=client_key)
    return context


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    target: ConnectionTarget,
    tls_context: ssl.SSLContext | None,
    timeout: float | None,
) -> tuple[asyncio.Transport, SMTPProtocol]:
    def factory() -> SMTPProtocol:
        return SMTPProtocol(loop)

    server_hostname = target.hostname if tls_context is not None else None
    handshake_timeout = timeout if tls_context is not None else None
    try:
        if target.sock is not None:
            connecting = loop.create_connection(
                factory, sock=target.sock, ssl=tls_context, server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
            )  # fmt: skip
        elif target.socket_path is not None:
            connecting = loop.create_unix_connection(
                factory, path=os.fsdecode(target.socket_path), ssl=tls_context,
                server_hostname=server_hostname, ssl_handshake_timeout=handshake_timeout,
            )  # fmt: skip
        else:
            connecting = loop.create_connection(
                factory, target.hostname, target.port or 0, local_addr=target.source_address,
                ssl=tls_context, server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
            )  # fmt: skip
        transport, protocol = await _within(connecting, timeout)
    except asyncio.TimeoutError as error:
        raise SMTPConnectTimeoutError(
            f"Timed out connecting to {target.hostname} on port {target.port}"
        ) from error
    except OSError as error:
        raise SMTPConnectError(
            f"Error connecting to {target.hostname} on port {target.port}: {error}"
        ) from error
    return transport, protocol


async def _within(
    coroutine: Coroutine[Any, Any, tuple[asyncio.Transport, SMTPProtocol]], timeout: float | None
) -> tuple[asyncio.Transport, SMTPProtocol]:
    """``wait_for`` without its flaw on Python 3.10/3.11, where a cancellation that
    arrives as the connection completes is swallowed."""
    task = asyncio.ensure_future(coroutine)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            transport, _protocol = await task
            transport.abort()
        raise
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise asyncio.TimeoutError
    return task.result()
