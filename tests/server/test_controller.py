"""smtpwire.server.controller: servers started and stopped for real, spoken to over
real sockets with smtplib or raw sockets."""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import smtplib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from smtpwire.server._serving import CLOSE_TIMEOUT
from smtpwire.server.controller import (
    DEFAULT_READY_TIMEOUT,
    Controller,
    UnixSocketController,
    UnixSocketUnthreadedController,
    UnthreadedController,
    get_localhost,
)
from smtpwire.server.session import Envelope, Session
from smtpwire.server.smtp import SMTP
from support.loops import asyncio_only

# Upper bound on any single wait in these tests; never a synchronisation delay.
WAIT = 10.0


class Sink:
    """A handler with no hooks: every command gets the server's default reply."""


class Recorder:
    """Keeps the content of every message delivered, and answers NOOP with the
    identity of the SMTP instance serving the connection."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        self.contents.append(envelope.original_content)
        return "250 OK"

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: Any
    ) -> str:
        return f"250 {id(server)}"


def controller_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("smtpwire-controller")]


@pytest.fixture(autouse=True)
def _no_server_thread_left_behind() -> Iterator[None]:
    yield
    leftovers = controller_threads()
    for thread in leftovers:
        thread.join(WAIT)
    assert not [thread for thread in leftovers if thread.is_alive()]


@pytest.fixture(autouse=True)
def _no_timeout_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTPWIRE_CONTROLLER_TIMEOUT", raising=False)
    monkeypatch.delenv("AIOSMTPD_CONTROLLER_TIMEOUT", raising=False)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def running(recorder: Recorder) -> Iterator[Controller]:
    controller = Controller(recorder, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def send_one(controller: Controller, body: str = "Subject: hi\r\n\r\nHello\r\n") -> None:
    with smtplib.SMTP(controller.hostname, controller.port, timeout=WAIT) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], body) == {}


def assert_refused(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.settimeout(WAIT)
        with pytest.raises(ConnectionRefusedError):
            probe.connect((host, port))


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server still sends; returns once it closes the connection."""
    sock.settimeout(WAIT)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def raw_client(controller: Controller) -> socket.socket:
    sock = socket.create_connection((controller.hostname, controller.port), timeout=WAIT)
    assert sock.recv(1024).startswith(b"220 ")
    return sock


def exchange(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return sock.recv(4096)


# -- start and stop -------------------------------------------------------------------


def test_start_serves_mail_and_stop_releases_everything(recorder: Recorder) -> None:
    controller = Controller(recorder, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        assert len(controller_threads()) == 1
        server = controller.server
        assert server is not None
        assert server.is_serving()
        send_one(controller)
    finally:
        controller.stop()
    assert recorder.contents == [b"Subject: hi\r\n\r\nHello\r\n"]
    assert controller_threads() == []
    assert controller.loop.is_closed()
    assert not server.is_serving()
    assert controller.server is None
    assert controller.smtpd is None
    assert_refused("127.0.0.1", controller.port)


def test_start_stop_start_stop_on_one_controller(recorder: Recorder) -> None:
    controller = Controller(recorder, hostname="127.0.0.1", port=0)
    loops = []
    for attempt in range(2):
        controller.start()
        try:
            loops.append(controller.loop)
            send_one(controller, f"Subject: {attempt}\r\n\r\nx\r\n")
        finally:
            controller.stop()
        assert_refused("127.0.0.1", controller.port)
    assert [content.split(b"\r\n")[0] for content in recorder.contents] == [
        b"Subject: 0",
        b"Subject: 1",
    ]
    assert loops[0] is not loops[1]
    assert all(loop.is_closed() for loop in loops)


def test_start_twice_without_stop_is_refused(running: Controller) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        running.start()
    send_one(running)


def test_port_zero_reports_the_bound_port(running: Controller) -> None:
    assert running.server is not None
    bound = {sock.getsockname()[1] for sock in running.server.sockets}
    assert running.port != 0
    assert bound == {running.port}
    with socket.create_connection(("127.0.0.1", running.port), timeout=WAIT) as sock:
        assert sock.recv(1024).startswith(b"220 ")


@asyncio_only("uvloop resolves names in libuv, which the patched socket.getaddrinfo cannot reach")
def test_port_zero_on_a_name_with_several_addresses_uses_one_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With port 0, asyncio gives each address of the name its own free port."""
    if get_localhost() != "::1":
        pytest.skip("needs IPv6 on the loopback interface")
    resolve = socket.getaddrinfo

    def both_loopbacks(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "loopbacks.test":
            return resolve(host, port, *args, **kwargs)
        return [
            *resolve("127.0.0.1", port, *args, **kwargs),
            *resolve("::1", port, *args, **kwargs),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", both_loopbacks)
    controller = Controller(Sink(), hostname="loopbacks.test", port=0)
    controller.start()
    try:
        assert controller.server is not None
        bound = {sock.getsockname()[:2] for sock in controller.server.sockets}
        assert bound == {("127.0.0.1", controller.port), ("::1", controller.port)}
        for address in ("127.0.0.1", "::1"):
            with smtplib.SMTP(address, controller.port, timeout=WAIT) as client:
                assert client.noop()[0] == 250
    finally:
        controller.stop()


def test_stop_without_start() -> None:
    controller = Controller(Sink(), hostname="127.0.0.1", port=0)
    with pytest.raises(AssertionError, match="SMTP daemon not running"):
        controller.stop()
    controller.stop(no_assert=True)


def test_stop_twice_asserts_the_second_time(running: Controller) -> None:
    running.stop()
    with pytest.raises(AssertionError, match="SMTP daemon not running"):
        running.stop()
    running.start()  # so the fixture's stop() has a server to stop


def test_a_given_loop_is_used_and_closed_by_stop() -> None:
    loop = asyncio.new_event_loop()
    try:
        controller = Controller(Sink(), hostname="127.0.0.1", port=0, loop=loop)
        controller.start()
        try:
            assert controller.loop is loop
            assert controller.server is not None
            assert controller.server.get_loop() is loop
        finally:
            controller.stop()
        assert loop.is_closed()
        with pytest.raises(RuntimeError, match="closed"):
            controller.start()
        assert controller_threads() == []
    finally:
        loop.close()


# -- failures in start() ------------------------------------------------------------------


def test_port_in_use_raises_oserror_and_start_can_be_retried() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    try:
        with pytest.raises(OSError, match="in use") as raised:
            controller.start()
        assert raised.value.errno == errno.EADDRINUSE
        assert controller_threads() == []
        assert controller.server is None
    finally:
        blocker.close()
    controller.start()
    try:
        assert controller.port == port
        send_one(controller)
    finally:
        controller.stop()


def test_stop_after_a_failed_start_is_harmless() -> None:
    """aiosmtpd documents ``try: start() ... finally: stop()``."""
    controller = Controller(Sink(), hostname="127.0.0.1", port=0, no_such_option=True)
    try:
        with pytest.raises(TypeError):
            controller.start()
    finally:
        controller.stop()
    with pytest.raises(AssertionError):
        controller.stop()


class BadEhloHook:
    async def handle_EHLO(self, server: SMTP, session: Session) -> str:
        return "250 never"


@pytest.mark.parametrize(
    ("handler", "options", "error", "message"),
    [
        (BadEhloHook(), {}, RuntimeError, "Unsupported EHLO Hook"),
        (Sink(), {"no_such_option": 1}, TypeError, "no_such_option"),
        (Sink(), {"command_call_limit": "many"}, TypeError, "command_call_limit"),
        (Sink(), {"proxy_protocol_timeout": -1}, ValueError, "proxy_protocol_timeout"),
    ],
)
def test_errors_from_the_smtp_constructor_come_out_of_start(
    handler: object, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    controller = Controller(handler, hostname="127.0.0.1", port=0, **options)
    with pytest.raises(error, match=message):
        controller.start()
    assert controller_threads() == []
    assert controller.loop.is_closed()


class NoneFactory(Controller):
    def factory(self) -> SMTP:
        return None  # type: ignore[return-value]


def test_factory_returning_none_is_an_error() -> None:
    controller = NoneFactory(Sink(), hostname="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match=r"factory\(\) returned None"):
        controller.start()
    assert controller_threads() == []


class GatedFactory(Controller):
    """factory() blocks until the test opens the gate: a server slow to get ready."""

    def __init__(self, gate: threading.Event, **kwargs: Any) -> None:
        super().__init__(Sink(), hostname="127.0.0.1", port=0, **kwargs)
        self.gate = gate

    def factory(self) -> SMTP:
        assert self.gate.wait(WAIT)
        return super().factory()


def test_not_ready_within_ready_timeout_raises_timeout_error() -> None:
    gate = threading.Event()
    controller = GatedFactory(gate, ready_timeout=0.1)
    with pytest.raises(TimeoutError, match="ready_timeout"):
        controller.start()
    assert controller.server is None
    gate.set()
    # The abandoned thread notices once factory() returns, and cleans up itself.
    for thread in controller_threads():
        thread.join(WAIT)
    assert controller_threads() == []
    # What the abandoned run opened is not passed off as this controller's server.
    assert controller.server is None
    assert controller.smtpd is None
    controller.start()
    try:
        send_one(controller)
    finally:
        controller.stop()


def test_ready_timeout_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Controller(Sink()).ready_timeout == DEFAULT_READY_TIMEOUT == 5.0
    assert Controller(Sink(), ready_timeout=2).ready_timeout == 2.0
    monkeypatch.setenv("AIOSMTPD_CONTROLLER_TIMEOUT", "3.5")
    assert Controller(Sink(), ready_timeout=2).ready_timeout == 3.5
    monkeypatch.setenv("SMTPWIRE_CONTROLLER_TIMEOUT", "7")
    assert Controller(Sink(), ready_timeout=2).ready_timeout == 7.0
    assert UnixSocketController(Sink(), "unused.sock", ready_timeout=2).ready_timeout == 7.0
    monkeypatch.setenv("SMTPWIRE_CONTROLLER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SMTPWIRE_CONTROLLER_TIMEOUT='soon'"):
        Controller(Sink())


# -- factory() ---------------------------------------------------------------------------


class PingSMTP(SMTP):
    async def smtp_PING(self, arg: str | None) -> None:
        await self.push("250 PONG")


class PingController(Controller):
    def factory(self) -> SMTP:
        return PingSMTP(self.handler, **self.SMTP_kwargs)


def test_overridden_factory_serves_the_subclass() -> None:
    controller = PingController(Sink(), hostname="127.0.0.1", port=0)
    controller.start()
    try:
        with smtplib.SMTP(controller.hostname, controller.port, timeout=WAIT) as client:
            assert client.docmd("PING") == (250, b"PONG")
            assert isinstance(controller.smtpd, PingSMTP)
    finally:
        controller.stop()


def test_plain_controller_does_not_know_the_subclass_command(running: Controller) -> None:
    with smtplib.SMTP(running.hostname, running.port, timeout=WAIT) as client:
        code, _ = client.docmd("PING")
        assert code == 500


class FlakyFactory(Controller):
    """factory() fails once, for the first client (after start()'s own call)."""

    def __init__(self) -> None:
        super().__init__(Sink(), hostname="127.0.0.1", port=0)
        self.calls = 0

    def factory(self) -> SMTP:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("no SMTP for you")
        return super().factory()


def test_factory_failing_for_one_connection_closes_only_that_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller = FlakyFactory()
    controller.start()
    try:
        with (
            caplog.at_level(logging.ERROR, logger="mail.log"),
            socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT) as sock,
        ):
            assert read_until_closed(sock) == b""
        assert any("no SMTP for you" in str(r.exc_info) for r in caplog.records)
        send_one(controller)
    finally:
        controller.stop()


def test_smtpd_is_the_instance_serving_the_latest_connection(running: Controller) -> None:
    serving = []
    for _ in range(2):
        client = smtplib.SMTP(running.hostname, running.port, timeout=WAIT)
        try:
            code, identity = client.noop()
            assert code == 250
            serving.append(int(identity))
            assert id(running.smtpd) == serving[-1]
        finally:
            client.quit()
    assert serving[0] != serving[1]


# -- what the SMTP instances are given ----------------------------------------------------------


def ehlo_keywords(controller: Controller) -> list[bytes]:
    with smtplib.SMTP(controller.hostname, controller.port, timeout=WAIT) as client:
        code, text = client.ehlo("client.example")
        assert code == 250
        return text.split(b"\n")


def test_smtputf8_is_enabled_by_default_on_controllers(running: Controller) -> None:
    assert running.SMTP_kwargs["enable_SMTPUTF8"] is True
    assert b"SMTPUTF8" in ehlo_keywords(running)


def test_smtputf8_can_be_disabled() -> None:
    controller = Controller(Sink(), hostname="127.0.0.1", port=0, enable_SMTPUTF8=False)
    controller.start()
    try:
        assert b"SMTPUTF8" not in ehlo_keywords(controller)
    finally:
        controller.stop()


def test_server_hostname_names_the_server_not_the_bind_address() -> None:
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=0, server_hostname="mx.example", ident="Test 1"
    )
    controller.start()
    try:
        with socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT) as sock:
            assert sock.recv(1024) == b"220 mx.example Test 1\r\n"
        assert ehlo_keywords(controller)[0] == b"mx.example"
    finally:
        controller.stop()


def test_server_kwargs_is_deprecated_and_explicit_keywords_win() -> None:
    with pytest.warns(DeprecationWarning, match="server_kwargs") as warned:
        controller = Controller(
            Sink(), timeout=200, server_kwargs={"timeout": 400, "data_size_limit": 10}
        )
    assert warned[0].filename == __file__
    assert controller.SMTP_kwargs == {
        "timeout": 200,
        "data_size_limit": 10,
        "enable_SMTPUTF8": True,
    }


def test_hostname_none_listens_on_the_loopback_address() -> None:
    controller = Controller(Sink(), port=0)
    assert controller.hostname == get_localhost()
    assert controller.hostname in ("::1", "127.0.0.1")
    controller.start()
    try:
        assert controller.server is not None
        assert {sock.getsockname()[0] for sock in controller.server.sockets} == {
            controller.hostname
        }
        with smtplib.SMTP(controller.hostname, controller.port, timeout=WAIT) as client:
            assert client.noop()[0] == 250
    finally:
        controller.stop()


def test_get_localhost_follows_what_the_host_can_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        expected = "::1"
    except OSError:
        expected = "127.0.0.1"
    assert get_localhost() == expected
    monkeypatch.setattr(socket, "has_ipv6", False)
    assert get_localhost() == "127.0.0.1"


# -- stop() with clients connected ----------------------------------------------------------------


def test_stop_closes_idle_and_mid_data_connections_promptly(recorder: Recorder) -> None:
    controller = Controller(recorder, hostname="127.0.0.1", port=0)
    controller.start()
    idle = mid_data = None
    try:
        idle = raw_client(controller)
        assert exchange(idle, b"EHLO idle.example").startswith(b"250-")
        idle_smtpd = controller.smtpd
        mid_data = raw_client(controller)
        for line in (b"HELO busy.example", b"MAIL FROM:<a@x>", b"RCPT TO:<b@y>"):
            assert exchange(mid_data, line).startswith(b"250")
        assert exchange(mid_data, b"DATA").startswith(b"354")
        mid_data.sendall(b"Subject: never finished\r\n\r\nhalf a bo")
        busy_smtpd = controller.smtpd
        began = time.monotonic()
    finally:
        controller.stop()
    elapsed = time.monotonic() - began
    try:
        assert idle is not None
        assert mid_data is not None
        assert read_until_closed(idle) == b""
        assert read_until_closed(mid_data) == b""
    finally:
        for sock in (idle, mid_data):
            if sock is not None:
                sock.close()
    # The fallbacks (a task ignoring cancellation, a server not letting go) wait
    # CLOSE_TIMEOUT each; a clean stop needs none of them.
    assert elapsed < CLOSE_TIMEOUT
    for smtpd in (idle_smtpd, busy_smtpd):
        assert smtpd is not None
        assert smtpd.transport is None
        assert smtpd._handler_coroutine is not None
        assert smtpd._handler_coroutine.done()
    assert recorder.contents == []


def test_stop_with_an_smtplib_client_connected(running: Controller) -> None:
    client = smtplib.SMTP(running.hostname, running.port, timeout=WAIT)
    try:
        assert client.ehlo()[0] == 250
        running.stop()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    finally:
        client.close()
        running.start()  # for the fixture's stop()


# -- implicit TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    authority = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return server_context, client_context


def test_ssl_context_serves_implicit_tls(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext], recorder: Recorder
) -> None:
    server_context, client_context = tls_contexts
    controller = Controller(recorder, hostname="127.0.0.1", port=0, ssl_context=server_context)
    controller.start()
    try:
        with smtplib.SMTP_SSL(
            "127.0.0.1", controller.port, context=client_context, timeout=WAIT
        ) as client:
            assert client.sendmail("a@x", ["b@y"], "Subject: tls\r\n\r\nsecret\r\n") == {}
            assert isinstance(client.sock, ssl.SSLSocket)
        # A client left connected over TLS does not hold stop() up.
        lingering = smtplib.SMTP_SSL(
            "127.0.0.1", controller.port, context=client_context, timeout=WAIT
        )
        began = time.monotonic()
    finally:
        controller.stop()
    try:
        assert time.monotonic() - began < CLOSE_TIMEOUT
        with pytest.raises((smtplib.SMTPServerDisconnected, ssl.SSLError, ConnectionError)):
            lingering.noop()
    finally:
        lingering.close()
    assert recorder.contents == [b"Subject: tls\r\n\r\nsecret\r\n"]


def test_ssl_context_refuses_a_plaintext_client(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    controller = Controller(Sink(), hostname="127.0.0.1", port=0, ssl_context=tls_contexts[0])
    controller.start()
    try:
        with socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT) as sock:
            sock.sendall(b"EHLO plain.example\r\n")
            assert b"220" not in read_until_closed(sock)
    finally:
        controller.stop()


def test_stop_with_a_client_that_never_starts_tls(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    controller = Controller(Sink(), hostname="127.0.0.1", port=0, ssl_context=tls_contexts[0])
    controller.start()
    try:
        silent = socket.create_connection(("127.0.0.1", controller.port), timeout=WAIT)
        began = time.monotonic()
    finally:
        controller.stop()
    with silent:
        assert time.monotonic() - began < CLOSE_TIMEOUT
        assert read_until_closed(silent) == b""


# -- Unix sockets -------------------------------------------------------------------------------


class UnixSMTP(smtplib.SMTP):
    """smtplib over a Unix socket: ``host`` is the socket's path."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(host)
        return sock


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # Not tmp_path: AF_UNIX paths are limited to about 100 bytes, and pytest's
    # temporary directories can be longer than that.
    directory = Path(tempfile.mkdtemp(prefix="smtpwire-"))
    try:
        yield directory / "smtp.sock"
    finally:
        shutil.rmtree(directory)


def test_unix_socket_controller_delivers_and_removes_its_socket(
    socket_path: Path, recorder: Recorder
) -> None:
    controller = UnixSocketController(recorder, unix_socket=socket_path)
    assert controller.unix_socket == str(socket_path)
    for attempt in range(2):
        controller.start()
        try:
            assert socket_path.is_socket()
            with UnixSMTP(str(socket_path), timeout=WAIT) as client:
                assert client.ehlo()[0] == 250
                client.sendmail("a@x", ["b@y"], f"Subject: unix {attempt}\r\n\r\nhi\r\n")
        finally:
            controller.stop()
        assert not socket_path.exists()
    assert recorder.contents == [
        b"Subject: unix 0\r\n\r\nhi\r\n",
        b"Subject: unix 1\r\n\r\nhi\r\n",
    ]


def test_unix_socket_raw_conversation(socket_path: Path) -> None:
    controller = UnixSocketController(Sink(), str(socket_path), server_hostname="unix.example")
    controller.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WAIT)
            sock.connect(str(socket_path))
            assert sock.recv(1024).startswith(b"220 unix.example ")
            assert exchange(sock, b"HELO example.org") == b"250 unix.example\r\n"
            assert exchange(sock, b"QUIT") == b"221 Bye\r\n"
            assert read_until_closed(sock) == b""
    finally:
        controller.stop()


# -- unthreaded controllers --------------------------------------------------------------------


async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[bytes]:
    """Greeting, EHLO and QUIT; the reply lines received."""
    lines = [await reader.readline()]
    writer.write(b"EHLO client.example\r\n")
    while not (line := await reader.readline()).startswith(b"250 "):
        lines.append(line)
    lines.append(line)
    writer.write(b"QUIT\r\n")
    lines.append(await reader.readline())
    writer.close()
    await writer.wait_closed()
    return lines


def test_unthreaded_controller_in_a_loop_the_test_runs() -> None:
    loop = asyncio.new_event_loop()
    try:
        controller = UnthreadedController(Sink(), hostname="127.0.0.1", port=0, loop=loop)
        controller.begin()
        assert controller_threads() == []
        assert not controller.ended.is_set()

        async def talk() -> tuple[list[bytes], asyncio.StreamReader, asyncio.StreamWriter]:
            lines = await converse(*await asyncio.open_connection("127.0.0.1", controller.port))
            reader, writer = await asyncio.open_connection("127.0.0.1", controller.port)
            await reader.readline()
            return lines, reader, writer

        lines, reader, writer = loop.run_until_complete(asyncio.wait_for(talk(), WAIT))
        assert lines[0].startswith(b"220 ")
        assert b"250-SMTPUTF8\r\n" in lines
        assert lines[-1] == b"221 Bye\r\n"

        controller.end()  # the loop is not running: end() runs finalize() to completion
        assert controller.ended.is_set()
        assert controller.server is None
        assert loop.run_until_complete(asyncio.wait_for(reader.read(), WAIT)) == b""
        writer.close()
        loop.run_until_complete(writer.wait_closed())
        assert_refused("127.0.0.1", controller.port)
    finally:
        loop.close()


def test_unthreaded_controller_with_its_loop_in_another_thread() -> None:
    """The pattern aiosmtpd documents: end() through call_soon_threadsafe, then wait."""
    loop = asyncio.new_event_loop()
    controller = UnthreadedController(Sink(), hostname="127.0.0.1", port=0, loop=loop)
    controller.begin()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        with smtplib.SMTP(controller.hostname, controller.port, timeout=WAIT) as client:
            assert client.helo("example.com")[0] == 250
        loop.call_soon_threadsafe(controller.end)
        assert controller.ended.wait(WAIT)
        assert_refused("127.0.0.1", controller.port)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(WAIT)
        loop.close()


async def test_unthreaded_controller_in_a_running_loop() -> None:
    controller = UnthreadedController(
        Sink(), hostname="127.0.0.1", port=0, loop=asyncio.get_running_loop()
    )
    with pytest.raises(RuntimeError, match="own event loop"):
        controller.begin()
    await asyncio.to_thread(controller.begin)  # another thread may begin() while it runs
    try:
        lines = await converse(*await asyncio.open_connection("127.0.0.1", controller.port))
        assert lines[-1] == b"221 Bye\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", controller.port)
        assert (await reader.readline()).startswith(b"220 ")
    finally:
        await controller.finalize()
    assert controller.ended.is_set()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_unthreaded_end_inside_the_running_loop_schedules_finalize() -> None:
    controller = UnthreadedController(
        Sink(), hostname="127.0.0.1", port=0, loop=asyncio.get_running_loop()
    )
    await asyncio.to_thread(controller.begin)
    controller.end()
    assert await asyncio.to_thread(controller.ended.wait, WAIT)
    assert_refused("127.0.0.1", controller.port)


def test_unix_socket_unthreaded_controller(socket_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        controller = UnixSocketUnthreadedController(Sink(), socket_path, loop=loop)
        controller.begin()

        async def talk() -> list[bytes]:
            return await converse(*await asyncio.open_unix_connection(str(socket_path)))

        lines = loop.run_until_complete(asyncio.wait_for(talk(), WAIT))
        assert lines[-1] == b"221 Bye\r\n"
        controller.end()
        assert controller.ended.is_set()
        assert not socket_path.exists()
    finally:
        loop.close()


def test_cancel_tasks_stops_the_loop_and_cancels_its_tasks() -> None:
    loop = asyncio.new_event_loop()
    try:
        controller = UnthreadedController(Sink(), hostname="127.0.0.1", port=0, loop=loop)
        controller.begin()
        forever = loop.create_task(asyncio.sleep(3600))
        loop.call_soon(controller.cancel_tasks)
        loop.run_forever()  # returns because cancel_tasks() stopped the loop
        loop.run_until_complete(asyncio.wait([forever], timeout=WAIT))
        assert forever.cancelled()
        controller.end()
        assert controller.ended.is_set()
    finally:
        loop.close()
