"""``quit()`` returns with the socket closed, over TLS too.

A TLS close waits for the server's close_notify; a client that returned at once
left the socket to an ``asyncio.run()`` that may close its loop first, and the
socket then surfaced later as an "unclosed transport" ResourceWarning.  A server
that never answers the close is cut off after a short grace.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import trustme

import smtpwire.client as aiosmtplib
from smtpwire.client._base import QUIT_CLOSE_GRACE

WAIT = 10.0


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@contextmanager
def tls_server(authority: trustme.CA, *, answer_close: bool) -> Iterator[int]:
    """A one-connection implicit-TLS server: greets, answers EHLO and QUIT; after
    the 221 it closes its side or (``answer_close=False``) just stops reading."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        with listener:
            listener.settimeout(WAIT)
            raw, _ = listener.accept()
        with raw, context.wrap_socket(raw, server_side=True) as conn:
            conn.settimeout(WAIT)
            conn.sendall(b"220 fake ESMTP\r\n")
            reader = conn.makefile("rb")
            for line in iter(reader.readline, b""):
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-fake\r\n250 8BITMIME\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    break
                else:
                    conn.sendall(b"500 what\r\n")
            if not answer_close:
                done.wait(WAIT)  # holding the connection, never reading the close_notify
                return
            with suppress(OSError, ssl.SSLError):
                conn.unwrap()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(WAIT)


def client_for(port: int, authority: trustme.CA) -> aiosmtplib.SMTP:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, use_tls=True, tls_context=context, timeout=WAIT
    )


@pytest.mark.parametrize("answer_close", [True, False], ids=["server-closes", "server-holds"])
async def test_quit_over_tls_returns_with_the_socket_closed(
    authority: trustme.CA, answer_close: bool
) -> None:
    with tls_server(authority, answer_close=answer_close) as port:
        client = client_for(port, authority)
        await client.connect()
        await client.ehlo()
        raw = client.get_transport_info("socket")
        assert raw.fileno() != -1
        response = await asyncio.wait_for(client.quit(), WAIT)
        assert response.code == 221
        assert raw.fileno() == -1
        assert not client.is_connected


async def test_async_with_over_tls_leaves_no_socket_open(authority: trustme.CA) -> None:
    with tls_server(authority, answer_close=True) as port:
        async with client_for(port, authority) as client:
            raw = client.get_transport_info("socket")
            await client.ehlo()
        assert raw.fileno() == -1


async def test_quit_cancelled_while_waiting_for_the_close_still_closes(
    authority: trustme.CA,
) -> None:
    with tls_server(authority, answer_close=False) as port:
        client = client_for(port, authority)
        await client.connect()
        raw = client.get_transport_info("socket")
        # Cancelled well inside the grace for a close that never comes (or, on a slow
        # machine, while waiting for the 221): either way the socket is closed.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.quit(), QUIT_CLOSE_GRACE / 4)
        assert raw.fileno() == -1
