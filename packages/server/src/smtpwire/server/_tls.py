"""TLS over a plain asyncio transport, driven by the server itself with ``ssl.MemoryBIO``.

Why not ``loop.start_tls``: asyncio's SSL transport (``sslproto.py``, and uvloop's copy)
silently drops every write once it has read the peer's close_notify or a TCP EOF.  Real
MTAs (Exim) send ``MAIL, RCPT, BDAT n LAST, QUIT``, close_notify and a TCP half-close in
one flight, and only then read the replies, which TLS 1.3 and OpenSSL allow until we send
our own close_notify.  So this module does TLS with the public ``SSLContext.wrap_bio`` (as
trio and anyio do) over any plain transport, selector or uvloop, taken over with
``set_protocol``.  The peer's close_notify or EOF only calls ``eof_received`` (its answer
is ignored): the write side stays open until the application calls ``close()``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any, cast

__all__ = ["TLSTransport", "start_tls"]

_READ_SIZE = 65536  # one SSLObject.read (a TLS record holds at most 16 KiB)
_READ_BUDGET = 262144  # decrypted bytes joined into one data_received call


async def start_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    *,
    server_side: bool = True,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = 60.0,
    initial_data: bytes = b"",
) -> TLSTransport:
    """Upgrade *transport* (plain, owned by *protocol*) to TLS, as ``loop.start_tls``.

    *protocol*'s ``connection_made`` is not called again.  Raises ``ssl.SSLError`` for a
    failed handshake, ``asyncio.TimeoutError`` after *ssl_handshake_timeout* seconds and
    ``ConnectionResetError`` if the peer goes away; in each case the plain transport is
    aborted and *protocol* hears nothing.  Bytes that follow the peer's Finished message
    are delivered after this returns (from a loop callback), never before.

    *initial_data*: TLS bytes the plain transport already delivered to *protocol*.  On
    uvloop and Python 3.10, ``pause_reading()`` in ``connection_made`` is ignored, so a
    ClientHello can arrive before an implicit-TLS task gets here; pass it on.
    """
    if transport.is_closing():
        raise ConnectionResetError("the connection closed before the TLS handshake")
    waiter: asyncio.Future[None] = loop.create_future()
    tls = TLSTransport(loop, transport, protocol, context, server_side, server_hostname, waiter)
    transport.set_protocol(_PlainProtocol(tls))
    timer = None
    if ssl_handshake_timeout is not None:
        timeout = asyncio.TimeoutError("TLS handshake timed out")
        timer = loop.call_later(ssl_handshake_timeout, tls._fail_handshake, timeout)
    try:
        if not server_side:
            tls._do_handshake()  # the ClientHello
        if initial_data:
            tls._feed(initial_data)  # before anything read from now on
        if not (transport.is_reading() or transport.is_closing()):
            transport.resume_reading()  # paused so that nothing was read before this
        await waiter
    except BaseException as exc:
        tls._fail_handshake(exc)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    # The caller is back: what arrived after the handshake goes to the protocol now.
    loop.call_soon(tls._start_app)
    return tls


class _PlainProtocol(asyncio.Protocol):
    """The plain transport's protocol: raw bytes and events go to the TLSTransport."""

    __slots__ = ("_tls",)

    def __init__(self, tls: TLSTransport) -> None:
        self._tls = tls

    def data_received(self, data: bytes) -> None:
        self._tls._feed(data)

    def eof_received(self) -> bool:
        self._tls._plain_eof()
        return True  # keep the socket open: the replies still have to go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._tls._plain_lost(exc)

    def pause_writing(self) -> None:
        self._tls._plain_writing(paused=True)

    def resume_writing(self) -> None:
        self._tls._plain_writing(paused=False)


class TLSTransport(asyncio.Transport):
    """The application's side of a TLS connection made by :func:`start_tls`.

    ``eof_received`` comes once, for the peer's close_notify or a TCP EOF, after all the
    data before it; writing goes on until ``close()``, which sends our close_notify and
    closes the socket without waiting for the peer's.  ``pause_reading`` stops decrypting
    too, so nothing (not even the end) is delivered until ``resume_reading``."""

    __slots__ = (
        "_app_ready", "_app_write_paused", "_backlog", "_closing",
        "_eof_delivered", "_failed", "_fatal_exc", "_incoming", "_info", "_loop", "_lost",
        "_lost_delivered", "_lost_exc", "_outgoing", "_peer_eof", "_plain", "_plain_write_paused",
        "_protocol", "_reading_paused", "_scheduled", "_sslobj", "_tls_eof", "_waiter",
    )  # fmt: skip

    def __init__(  # noqa: PLR0917 - private: start_tls makes it
        self,
        loop: asyncio.AbstractEventLoop,
        plain: asyncio.Transport,
        protocol: asyncio.Protocol,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None,
        waiter: asyncio.Future[None],
    ) -> None:
        super().__init__()
        self._loop, self._plain, self._protocol = loop, plain, protocol
        self._incoming = ssl.MemoryBIO()  # raw bytes from the peer, to decrypt
        self._outgoing = ssl.MemoryBIO()  # encrypted bytes for the plain transport
        self._sslobj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._info: dict[str, Any] = {"sslcontext": context, "ssl_object": self._sslobj}
        self._waiter: asyncio.Future[None] | None = waiter  # set while handshaking
        self._failed = False  # the handshake failed: start_tls raised, the app hears nothing
        self._app_ready = False  # start_tls has returned: events go to the protocol
        self._reading_paused = self._scheduled = self._closing = False
        self._peer_eof = False  # the plain transport saw the TCP EOF
        self._tls_eof = False  # the peer's close_notify was read
        self._eof_delivered = self._lost = self._lost_delivered = False
        self._lost_exc: Exception | None = None
        self._fatal_exc: Exception | None = None
        self._plain_write_paused = self._app_write_paused = False
        self._backlog = bytearray()  # plaintext SSLObject.write refused (renegotiation)

    # -- the handshake (called by start_tls) --------------------------------------------------

    def _do_handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # the alert, if the transport still takes it before the abort
            self._fail_handshake(exc)
            return
        self._flush()  # our last flight (and TLS 1.3 session tickets)
        sslobj = self._sslobj
        self._info.update(
            peercert=sslobj.getpeercert(), cipher=sslobj.cipher(), compression=sslobj.compression()
        )
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail_handshake(self, exc: BaseException) -> None:
        """End a handshake that did not succeed (or whose caller gave up): abort."""
        if self._app_ready or self._failed:
            return
        self._failed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._plain.abort()

    def _start_app(self) -> None:
        """After start_tls returned: deliver what came after the handshake."""
        if self._failed:  # start_tls was cancelled after the handshake succeeded
            return
        self._app_ready = True
        if self._plain_write_paused:
            self._plain_writing(paused=True)
        self._run_incoming()
        if self._lost:
            self._deliver_lost()

    # -- events from the plain transport ------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._failed or self._tls_eof or self._closing:
            return  # nothing more will be read
        self._incoming.write(data)
        if self._waiter is not None:
            self._do_handshake()
        elif self._app_ready:
            self._process_incoming()

    def _plain_eof(self) -> None:
        if self._waiter is not None:
            self._fail_handshake(ConnectionResetError("the peer closed during the TLS handshake"))
            return
        self._peer_eof = True
        if self._app_ready:
            self._process_incoming()

    def _plain_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None:
            error = ConnectionResetError("the connection was lost during the TLS handshake")
            error.__cause__ = exc
            self._fail_handshake(error)
        if self._failed or self._lost:
            return
        self._lost = True
        self._closing = True
        self._lost_exc = exc if exc is not None else self._fatal_exc
        if self._app_ready:
            self._deliver_lost()

    def _deliver_lost(self) -> None:
        if not self._lost_delivered:
            self._lost_delivered = True
            self._protocol.connection_lost(self._lost_exc)

    def _plain_writing(self, *, paused: bool) -> None:
        """The plain transport's flow control, passed on once the protocol is ours to call."""
        self._plain_write_paused = paused
        if self._app_ready and paused != self._app_write_paused:
            self._app_write_paused = paused
            if paused:
                self._protocol.pause_writing()
            else:
                self._protocol.resume_writing()

    # -- reading ------------------------------------------------------------------------------

    def _process_incoming(self) -> None:
        """Decrypt and deliver what the incoming BIO holds, then the peer's close_notify or
        TCP EOF as ``eof_received``: never while reading is paused, never before the data."""
        sslobj = self._sslobj
        while not (self._reading_paused or self._closing or self._eof_delivered):
            chunks: list[bytes] = []
            size = 0
            while not self._tls_eof and size < _READ_BUDGET:
                try:
                    chunk = sslobj.read(_READ_SIZE)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    self._tls_eof = True
                    break
                except ssl.SSLError as exc:
                    self._fatal(exc)
                    return
                if not chunk:  # close_notify, before we sent ours
                    self._tls_eof = True
                    break
                chunks.append(chunk)
                size += len(chunk)
            # Reading may have made OpenSSL answer (key update, renegotiation) or let a
            # write it had refused go through.
            self._write_backlog()
            self._flush()
            if chunks:
                self._protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                continue
            if self._tls_eof or self._peer_eof:
                self._eof_delivered = True
                self._protocol.eof_received()  # the answer does not matter: close() ends it
            return

    def _run_incoming(self) -> None:
        """_process_incoming from a loop callback: report what the protocol raises."""
        self._scheduled = False
        try:
            self._process_incoming()
        except Exception as exc:  # as the plain transport does for its data_received
            message = "Fatal error: protocol.data_received() call failed."
            context = {"message": message, "exception": exc, "transport": self}
            self._loop.call_exception_handler({**context, "protocol": self._protocol})
            self._fatal(exc)

    def is_reading(self) -> bool:
        return not (self._reading_paused or self._closing)

    def pause_reading(self) -> None:
        """Stop reading: the plain transport too, and nothing buffered is decrypted."""
        if self._reading_paused or self._closing:
            return
        self._reading_paused = True
        if not self._peer_eof and not self._plain.is_closing():
            self._plain.pause_reading()

    def resume_reading(self) -> None:
        """Read again; what is buffered is delivered from a loop callback, not from here."""
        if not self._reading_paused or self._closing:
            return
        self._reading_paused = False
        if not self._peer_eof and not self._plain.is_closing():
            self._plain.resume_reading()
        if not self._scheduled and self._app_ready:
            self._scheduled = True
            self._loop.call_soon(self._run_incoming)

    # -- writing ------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if not data or self._closing:
            return  # as by asyncio's transports, a write after close() is dropped
        if self._backlog:
            self._backlog += data
        else:
            self._encrypt(data)
        self._flush()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt into the outgoing BIO.  What OpenSSL refuses until it has read more (a
        TLS 1.2 renegotiation in progress) waits in the backlog, retried after each read."""
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[self._sslobj.write(view) :]
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self._backlog += view
        except ssl.SSLError as exc:
            self._fatal(exc)

    def _write_backlog(self) -> None:
        if self._backlog:
            data, self._backlog = self._backlog, bytearray()
            self._encrypt(data)

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and not self._lost:
            self._plain.write(data)

    def get_write_buffer_size(self) -> int:
        return self._plain.get_write_buffer_size() + len(self._backlog)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._plain.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._plain.get_write_buffer_limits()

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close: use close()")

    def can_write_eof(self) -> bool:
        return False

    # -- closing ------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send our close_notify after what was written, then close the plain transport
        (which flushes its buffer first).  The peer's close_notify is not waited for."""
        if self._closing:
            return
        self._closing = True
        self._write_backlog()  # lost if a renegotiation is still under way
        try:
            self._sslobj.unwrap()
        except ssl.SSLWantReadError:
            pass  # our close_notify is queued; the peer's would come later
        except ssl.SSLError:
            pass  # the TLS session is broken: the socket closes all the same
        self._flush()
        self._plain.close()

    def abort(self) -> None:
        self._closing = True
        self._plain.abort()

    def _fatal(self, exc: Exception) -> None:
        """A TLS error (or a protocol failure): abort; connection_lost will carry exc."""
        self._fatal_exc = exc
        self.abort()

    # -- the rest of the Transport interface --------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._info:
            return self._info[name]
        return self._plain.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast("asyncio.Protocol", protocol)

    def get_protocol(self) -> asyncio.Protocol:
        return self._protocol
