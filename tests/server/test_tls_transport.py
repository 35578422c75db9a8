"""smtpwire.server._tls: TLS driven over MemoryBIOs, on real loopback sockets.

The point of the module is the close: a client (Exim) that sends its last commands, its
close_notify and a TCP half-close in one flight must still get every reply.  asyncio's own
SSL transport drops those replies; this one keeps writing until the application closes.
Every test runs on asyncio's selector loop and, where installed, on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import struct
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import pytest
import trustme

from smtpwire.server._tls import TLSTransport, start_tls

WAIT = 10.0  # seconds: bound on every wait
QUIET = 0.05  # seconds in which nothing may arrive (a negative check, not a synchronisation)
ROUNDS = 50
MIB = 1024 * 1024

TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3"),
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
]


@pytest.fixture(params=["asyncio", "uvloop"], autouse=True)
def loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs on both loops, whatever SMTPWIRE_TEST_LOOP chose for the suite:
    tests/conftest.py's asyncio.run makes its loop from the policy set here."""
    if request.param == "uvloop":
        policy = pytest.importorskip("uvloop").EventLoopPolicy
    else:
        policy = asyncio.DefaultEventLoopPolicy
    with warnings.catch_warnings():  # loop policies are deprecated from Python 3.14 on
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(policy())
    try:
        yield request.param
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(previous)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate shows up in peercert
    ca.configure_trust(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ca.issue_cert("client.example").configure_cert(context)
    return context


def limit_version(context: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    context.minimum_version = context.maximum_version = version
    return context


# -- the server side: a protocol upgraded by start_tls as soon as it connects -------------------


class Peer(asyncio.Protocol):
    """Upgrades its connection at once (implicit TLS) and records what the TLS transport
    delivers; subclasses react in on_upgrade / on_data / on_eof."""

    def __init__(self, context: ssl.SSLContext, timeout: float = WAIT) -> None:
        self.loop = asyncio.get_running_loop()
        self.context = context
        self.timeout = timeout
        self.plain: asyncio.Transport | None = None
        self.tls: TLSTransport | None = None
        self.task: asyncio.Task[None] | None = None
        self.upgraded: asyncio.Future[TLSTransport] = self.loop.create_future()
        self.events: list[tuple[str, Any]] = []
        self.early: list[str] = []  # events delivered before start_tls returned
        self.received = bytearray()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[Exception | None] = self.loop.create_future()
        self.lost_calls = 0
        self.pre_tls: bytearray | None = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is no asyncio.Transport subclass, but has its methods.
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "set_protocol")
        transport = cast("asyncio.Transport", transport)
        self.plain = transport
        # The ClientHello is start_tls's.  uvloop and Python 3.10 ignore this pause (they
        # start reading after connection_made): what they read first is handed over.
        transport.pause_reading()
        self.task = self.loop.create_task(self._upgrade(transport))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        assert self.pre_tls is not None
        initial, self.pre_tls = bytes(self.pre_tls), None
        try:
            tls = await start_tls(
                self.loop,
                transport,
                self,
                self.context,
                ssl_handshake_timeout=self.timeout,
                initial_data=initial,
            )
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.upgraded.set_exception(exc)
            return
        self.tls = tls
        self.upgraded.set_result(tls)
        self.on_upgrade(tls)

    def _record(self, kind: str, value: Any = None) -> None:
        if self.tls is None:
            self.early.append(kind)
        self.events.append((kind, value))

    def data_received(self, data: bytes) -> None:
        if self.pre_tls is not None:  # from the plain transport, before start_tls
            self.pre_tls += data
            return
        self._record("data", data)
        self.received += data
        self.on_data(data)

    def eof_received(self) -> bool:
        self._record("eof")
        self.eof.set_result(None)
        self.on_eof()
        return False  # ignored: the transport stays open until close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._record("lost", exc)
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)

    def on_upgrade(self, tls: TLSTransport) -> None:
        pass

    def on_data(self, data: bytes) -> None:
        pass

    def on_eof(self) -> None:
        pass

    def data_events(self) -> list[bytes]:
        return [value for kind, value in self.events if kind == "data"]

    def kinds(self) -> list[str]:
        """The event sequence, runs of data folded into one."""
        folded: list[str] = []
        for kind, _ in self.events:
            if not (kind == "data" and folded[-1:] == ["data"]):
                folded.append(kind)
        return folded


class Echo(Peer):
    def on_data(self, data: bytes) -> None:
        assert self.tls is not None
        self.tls.write(data)

    def on_eof(self) -> None:
        assert self.tls is not None
        self.tls.close()


@contextlib.asynccontextmanager
async def serving(factory: Callable[[], Peer]) -> AsyncIterator[tuple[int, list[Peer]]]:
    """A loopback listener; on the way out every connection is aborted and the server closed."""
    loop = asyncio.get_running_loop()
    peers: list[Peer] = []

    def make() -> Peer:
        peers.append(factory())
        return peers[-1]

    server = await loop.create_server(make, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()
        for peer in peers:
            if peer.task is not None:
                peer.task.cancel()
            transport = peer.tls or peer.plain
            if transport is not None:
                transport.abort()
        await asyncio.gather(*(p.task for p in peers if p.task is not None), return_exceptions=True)
        await asyncio.wait_for(server.wait_closed(), WAIT)
        for _ in range(5):  # the plain transports' connection_lost callbacks
            await asyncio.sleep(0)


async def first(future: asyncio.Future[Any]) -> Any:
    """The future's result, waited for at most WAIT seconds."""
    done, _ = await asyncio.wait({future}, timeout=WAIT)
    assert done, "timed out"
    return future.result()


async def failure(future: asyncio.Future[Any]) -> BaseException:
    done, _ = await asyncio.wait({future}, timeout=WAIT)
    assert done, "timed out"
    exc = future.exception()
    assert exc is not None
    return exc


# -- the client side: raw sockets, with the bytes of each send under the test's control ---------


class BioClient:
    """A TLS client over a blocking socket and MemoryBIOs, so the test decides which TLS
    records share a send (as Exim does: commands, close_notify, FIN in one flight)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self, then: bytes = b"") -> None:
        """Complete the handshake; *then* is encrypted into the same send as our Finished."""
        while True:
            try:
                self.sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("the server closed during the handshake") from None
                self.incoming.write(data)
        if then:
            self.sslobj.write(then)
        self.sock.sendall(self.outgoing.read())

    def encrypt(self, data: bytes) -> bytes:
        self.sslobj.write(data)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):  # ours is queued; theirs is to come
            self.sslobj.unwrap()
        return self.outgoing.read()

    def receive(self, size: int) -> bytes:
        """Exactly *size* bytes of plaintext."""
        data = bytearray()
        while len(data) < size:
            with contextlib.suppress(ssl.SSLWantReadError):
                chunk = self.sslobj.read(size - len(data))
                if not chunk:
                    raise ConnectionError("close_notify")
                data += chunk
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("EOF")
            self.incoming.write(chunk)
        return bytes(data)

    def read_to_end(self) -> tuple[bytes, bool]:
        """Read the socket to its EOF, then decrypt it all: (plaintext, close_notify seen)."""
        while chunk := self.sock.recv(65536):
            self.incoming.write(chunk)
        plaintext = bytearray()
        while True:
            try:
                chunk = self.sslobj.read(65536)
            except ssl.SSLZeroReturnError:
                return bytes(plaintext), True
            except ssl.SSLWantReadError:
                return bytes(plaintext), False
            if not chunk:
                return bytes(plaintext), True
            plaintext += chunk

    def close(self) -> None:
        self.sock.close()


def drain(sock: socket.socket) -> None:
    """Read until the server closes (an EOF or a reset): the server ended the connection."""
    with contextlib.suppress(ConnectionError):
        while sock.recv(65536):
            pass


# -- 1. handshake, echo, extra info -------------------------------------------------------------


async def test_handshake_echo_and_extra_info(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def client(port: int) -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with client_context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"hello over tls\r\n")
            echoed = b""
            while len(echoed) < 16:
                echoed += sock.recv(65536)
            sock.sendall(b"bye\r\n")
            while len(echoed) < 21:
                echoed += sock.recv(65536)
            sock.unwrap()  # our close_notify, then the server's (it closes on EOF)
            return echoed

    async with serving(lambda: Echo(server_context)) as (port, peers):
        assert await asyncio.to_thread(client, port) == b"hello over tls\r\nbye\r\n"
        peer = peers[0]
        assert await first(peer.lost) is None
        tls = peer.tls
        assert isinstance(tls, asyncio.Transport)
        assert tls.get_protocol() is peer
        assert isinstance(tls.get_extra_info("ssl_object"), ssl.SSLObject)
        assert tls.get_extra_info("sslcontext") is server_context
        assert tls.get_extra_info("peercert")["subjectAltName"] == (("DNS", "client.example"),)
        cipher = tls.get_extra_info("cipher")
        assert isinstance(cipher, tuple)
        assert cipher[1] in {"TLSv1.2", "TLSv1.3"}
        assert tls.get_extra_info("compression") is None
        assert tls.get_extra_info("peername")[0] == "127.0.0.1"
        assert tls.get_extra_info("nothing such", "fallback") == "fallback"
        assert b"".join(peer.data_events()) == b"hello over tls\r\nbye\r\n"
        assert peer.kinds() == ["data", "eof", "lost"]
        assert peer.lost_calls == 1
        assert not peer.early
        assert tls.is_closing()
        tls.close()  # idempotent
        tls.write(b"dropped")  # after close: dropped, as by asyncio's transports
        assert not tls.can_write_eof()
        with pytest.raises(NotImplementedError):
            tls.write_eof()


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.received = bytearray()
        self.got: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.received.endswith(b"\n") and not self.got.done():
            self.got.set_result(None)

    def eof_received(self) -> None:
        self.eof.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_client_side_both_ends_ours(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    loop = asyncio.get_running_loop()
    async with serving(lambda: Echo(server_context)) as (port, peers):
        plain, client = await loop.create_connection(Client, "127.0.0.1", port)
        tls = await start_tls(
            loop, plain, client, client_context, server_side=False, server_hostname="localhost"
        )
        assert tls.get_extra_info("peercert")["subjectAltName"] == (
            ("DNS", "localhost"),
            ("IP Address", "127.0.0.1"),
        )
        tls.writelines([b"ping ", bytearray(b"pong"), memoryview(b"\n")])
        await first(client.got)
        assert client.received == b"ping pong\n"
        tls.close()  # our close_notify: the server closes in turn
        assert await first(client.lost) is None
        assert await first(peers[0].lost) is None
        assert peers[0].kinds() == ["data", "eof", "lost"]


# -- 2. the half-close: replies written after the peer's close_notify and FIN -------------------


class Replier(Peer):
    """Answers each line only after the EOF, like a slow SMTP handler, then closes."""

    def on_eof(self) -> None:
        self.reply_task = self.loop.create_task(self._reply())

    async def _reply(self) -> None:
        await asyncio.sleep(0.005)  # a slow handler
        assert self.tls is not None
        for line in bytes(self.received).splitlines():
            self.tls.write(b"250 " + line + b"\r\n")
        self.tls.close()


COMMANDS = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 5 LAST\r\nQUIT\r\n"
REPLIES = b"".join(b"250 " + line + b"\r\n" for line in COMMANDS.splitlines())


@pytest.mark.parametrize("version", TLS_VERSIONS)
@pytest.mark.parametrize("burst", ["separate-sends", "one-send", "ragged-eof"])
async def test_replies_after_close_notify_and_half_close(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    burst: str,
    version: ssl.TLSVersion,
) -> None:
    limit_version(client_context, version)

    def client(port: int) -> tuple[bytes, bool]:
        bio = BioClient(port, client_context)
        try:
            bio.handshake()
            data = bio.encrypt(COMMANDS)
            if burst == "one-send":  # certainly in one read on the server
                bio.sock.sendall(data + bio.close_notify())
            elif burst == "separate-sends":
                bio.sock.sendall(data)
                bio.sock.sendall(bio.close_notify())
            else:  # no close_notify at all: a TCP FIN only
                bio.sock.sendall(data)
            bio.sock.shutdown(socket.SHUT_WR)
            return bio.read_to_end()
        finally:
            bio.close()

    async with serving(lambda: Replier(server_context)) as (port, peers):
        for round_ in range(ROUNDS):
            replies, clean = await asyncio.to_thread(client, port)
            peer = peers[round_]
            assert await first(peer.lost) is None
            assert replies == REPLIES
            assert clean  # the server's close_notify ended them
            assert bytes(peer.received) == COMMANDS
            assert peer.kinds() == ["data", "eof", "lost"]
            assert peer.lost_calls == 1


# -- 3. pause_reading holds data and the end back ----------------------------------------------


class Pauser(Peer):
    """Pauses reading in its first data_received (or right after the handshake)."""

    def __init__(self, context: ssl.SSLContext, *, at_once: bool) -> None:
        super().__init__(context)
        self.at_once = at_once

    def on_upgrade(self, tls: TLSTransport) -> None:
        if self.at_once:
            tls.pause_reading()
            assert not tls.is_reading()
        tls.write(b"ready\n")

    def on_data(self, data: bytes) -> None:
        assert self.tls is not None
        if not self.at_once and len(self.events) == 1:
            self.tls.pause_reading()


@pytest.mark.parametrize("at_once", [False, True], ids=["paused-in-data", "paused-before"])
async def test_pause_reading_holds_back_data_and_eof(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, at_once: bool
) -> None:
    def client(port: int) -> BioClient:
        bio = BioClient(port, client_context)
        bio.handshake()
        assert bio.receive(6) == b"ready\n"  # the server has paused by now
        # Two records, the close_notify and the FIN, all in one flight.
        bio.sock.sendall(bio.encrypt(b"one\r\n") + bio.encrypt(b"two\r\n") + bio.close_notify())
        bio.sock.shutdown(socket.SHUT_WR)
        return bio

    async with serving(lambda: Pauser(server_context, at_once=at_once)) as (port, peers):
        bio = await asyncio.to_thread(client, port)
        try:
            peer = peers[0]
            tls = await first(peer.upgraded)
            await asyncio.sleep(QUIET)  # the window in which nothing may be delivered
            held = [] if at_once else ["data"]
            assert peer.kinds() == held
            assert not tls.is_reading()
            tls.resume_reading()
            assert peer.kinds() == held  # delivered from a callback, not from resume_reading
            assert tls.is_reading()
            await first(peer.eof)
            assert peer.kinds() == ["data", "eof"]
            assert bytes(peer.received) == b"one\r\ntwo\r\n"
            tls.write(b"250 still writing\r\n")  # after the close_notify and the FIN
            tls.close()
            replies, clean = await asyncio.to_thread(bio.read_to_end)
            assert replies == b"250 still writing\r\n"
            assert clean
            assert await first(peer.lost) is None
        finally:
            bio.close()


# -- 4. failed handshakes: start_tls raises, the protocol hears nothing ------------------------


async def test_plaintext_garbage_fails_the_handshake(server_context: ssl.SSLContext) -> None:
    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(b"EHLO plaintext.example\r\n" * 20)
            drain(sock)

    async with serving(lambda: Peer(server_context)) as (port, peers):
        await asyncio.to_thread(client, port)
        exc = await failure(peers[0].upgraded)
        assert isinstance(exc, ssl.SSLError)
        assert peers[0].plain is not None
        assert peers[0].plain.is_closing()
    assert peers[0].events == []


async def test_silent_client_times_the_handshake_out(server_context: ssl.SSLContext) -> None:
    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            drain(sock)  # sends nothing; the server gives up and closes

    async with serving(lambda: Peer(server_context, timeout=0.2)) as (port, peers):
        await asyncio.to_thread(client, port)
        exc = await failure(peers[0].upgraded)
        assert isinstance(exc, asyncio.TimeoutError)  # not the builtin one on 3.10
    assert peers[0].events == []


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_client_gone_mid_handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, how: str
) -> None:
    def client(port: int) -> None:
        bio = BioClient(port, client_context)
        with contextlib.suppress(ssl.SSLWantReadError):
            bio.sslobj.do_handshake()
        hello = bio.outgoing.read()
        bio.sock.sendall(hello[: len(hello) // 2])  # half a ClientHello
        if how == "reset":
            bio.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bio.close()

    async with serving(lambda: Peer(server_context)) as (port, peers):
        await asyncio.to_thread(client, port)
        exc = await failure((await wait_for_peer(peers)).upgraded)
        assert isinstance(exc, ConnectionError)
    assert peers[0].events == []


async def wait_for_peer(peers: list[Peer]) -> Peer:
    """The first connection's protocol (its connection_made may still be to come)."""
    for _ in range(1000):
        if peers:
            return peers[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no connection")


# -- 5. a large transfer both ways, with flow control -------------------------------------------


class FlowEcho(Echo):
    """Echoes; when its writes back up it stops reading, as a well-behaved server does."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(context)
        self.pauses = self.resumes = 0
        self.paused = asyncio.Event()

    def on_upgrade(self, tls: TLSTransport) -> None:
        sock = tls.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        tls.set_write_buffer_limits(high=256 * 1024)
        assert tls.get_write_buffer_limits()[0] == 256 * 1024

    def pause_writing(self) -> None:
        assert self.tls is not None
        self.pauses += 1
        self.paused.set()
        assert self.tls.get_write_buffer_size() > 256 * 1024
        self.tls.pause_reading()

    def resume_writing(self) -> None:
        assert self.tls is not None
        self.resumes += 1
        self.tls.resume_reading()


async def test_large_transfer_with_flow_control(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    payload = os.urandom(4 * MIB)
    async with serving(lambda: FlowEcho(server_context)) as (port, peers):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), WAIT
        )
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=client_context, server_hostname="localhost"),
            WAIT,
        )
        peer = await wait_for_peer(peers)
        assert isinstance(peer, FlowEcho)

        async def send() -> None:
            for offset in range(0, len(payload), 65536):
                writer.write(payload[offset : offset + 65536])
                await writer.drain()

        async def receive() -> bytes:
            await peer.paused.wait()  # nothing is read until the server's writes back up
            return await reader.readexactly(len(payload))

        sending = asyncio.ensure_future(send())
        echoed = await asyncio.wait_for(receive(), WAIT * 3)
        await asyncio.wait_for(sending, WAIT)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        assert bytes(peer.received) == payload
        assert peer.pauses >= 1
        assert peer.resumes >= 1
        writer.close()
        await first(peer.lost)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


# -- 6. the first command, pipelined right behind the client's handshake ------------------------


class Greeter(Peer):
    def on_data(self, data: bytes) -> None:
        assert self.tls is not None
        if self.received.endswith(b"\r\n"):
            self.tls.write(b"250 got " + bytes(self.received))
            self.tls.close()


async def test_pipelined_first_command_wrap_socket(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def client(port: int) -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with client_context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"EHLO first\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += sock.recv(65536)
            return reply

    async with serving(lambda: Greeter(server_context)) as (port, peers):
        assert await asyncio.to_thread(client, port) == b"250 got EHLO first\r\n"
        assert await first(peers[0].lost) is None
        assert peers[0].early == []


@pytest.mark.parametrize("version", TLS_VERSIONS)
async def test_pipelined_first_command_in_the_finished_flight(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, version: ssl.TLSVersion
) -> None:
    limit_version(client_context, version)

    def client(port: int) -> bytes:
        bio = BioClient(port, client_context)
        try:
            bio.handshake(then=b"EHLO first\r\n")  # one send: our Finished and the command
            return bio.read_to_end()[0]
        finally:
            bio.close()

    async with serving(lambda: Greeter(server_context)) as (port, peers):
        for round_ in range(ROUNDS // 5):
            assert await asyncio.to_thread(client, port) == b"250 got EHLO first\r\n"
            assert await first(peers[round_].lost) is None
            assert peers[round_].early == []
            assert peers[round_].kinds() == ["data", "lost"]


# -- errors after the handshake -----------------------------------------------------------------


async def test_corrupt_record_aborts_with_the_ssl_error(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def client(port: int) -> None:
        bio = BioClient(port, client_context)
        try:
            bio.handshake()
            record = bytearray(bio.encrypt(b"QUIT\r\n"))
            record[-1] ^= 1  # its authentication tag no longer matches
            bio.sock.sendall(bytes(record))
            drain(bio.sock)
        finally:
            bio.close()

    async with serving(lambda: Peer(server_context)) as (port, peers):
        await asyncio.to_thread(client, port)
        assert isinstance(await first(peers[0].lost), ssl.SSLError)
        assert peers[0].kinds() == ["lost"]
        assert peers[0].lost_calls == 1


class Aborter(Peer):
    def on_data(self, data: bytes) -> None:
        assert self.tls is not None
        self.tls.write(b"never sent, or cut short\r\n")
        self.tls.abort()
        assert self.tls.is_closing()
        self.tls.abort()


async def test_abort_drops_the_connection(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def client(port: int) -> None:
        bio = BioClient(port, client_context)
        try:
            bio.handshake(then=b"HELO x\r\n")
            drain(bio.sock)
        finally:
            bio.close()

    async with serving(lambda: Aborter(server_context)) as (port, peers):
        await asyncio.to_thread(client, port)
        assert await first(peers[0].lost) is None
        assert peers[0].kinds() == ["data", "lost"]
        assert peers[0].lost_calls == 1
