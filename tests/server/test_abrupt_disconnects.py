"""1,000 abrupt disconnects (mid-command, mid-DATA, mid-TLS-handshake) leave no leaked
task, file descriptor, timer or partial message.

Every disconnect is a TCP reset (``SO_LINGER`` 0, then ``close``), made at a known point
of the session: before and after the greeting, inside a command line, after MAIL and
RCPT, inside a DATA or BDAT message, inside a STARTTLS handshake and inside an implicit
TLS handshake.  They run 20 at a time against a real :class:`Controller` on loopback.
Once the server has settled (polled with a deadline), it must be exactly as before:
the same open file descriptors, no task and no live timer of its own, no connection it
still considers open, no message delivered, no ``handle_exception`` call, nothing logged
at WARNING or above, and a normal session afterwards delivers one whole message.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import trustme

from smtpwire.server.controller import Controller
from smtpwire.server.smtp import SMTP
from support.server import WAIT, RawClient, Recorder

CONCURRENCY = 20
SETTLE = 10.0  # seconds: bound on waiting for the server to finish with its connections
GRACE = 1.0  # seconds: see settled()
POLL = 0.02

SENDER = "sender@example.com"
RECIPIENT = "rcpt@example.com"


# --- the server under test ---------------------------------------------------------------


class Keeper:
    """Keeps every delivered message, and every error the server reported to the
    handler: an abrupt disconnect is the client's doing and must cause neither."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.exceptions: list[Exception] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content)
        return "250 OK"

    async def handle_exception(self, error: Exception) -> str:
        self.exceptions.append(error)
        return f"500 Error: ({error.__class__.__name__}) {error}"


class KeepingController(Controller):
    """Holds on to every SMTP instance it makes, so the test can ask each one whether
    it has finished (the controller's own set is weak: what it holds depends on when
    the garbage collector last ran)."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **kwargs)
        self.made: list[SMTP] = []

    def factory(self) -> SMTP:
        smtpd = super().factory()
        self.made.append(smtpd)
        return smtpd


Served = TypeVar("Served", bound=Controller)


@contextmanager
def running(controller: Served) -> Iterator[Served]:
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


# --- measuring what a server holds --------------------------------------------------------


def open_fds() -> set[tuple[int, str]]:
    """This process's open descriptors with what each refers to (``socket:[inode]``
    and the like), so a descriptor number reused for a new socket still counts as new."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except FileNotFoundError:  # the directory's own descriptor, closed by now
            continue
    return found


@dataclass
class LoopState:
    tasks: set[asyncio.Task[Any]]
    timers: list[asyncio.TimerHandle]
    made: int


def loop_state(controller: KeepingController) -> LoopState:
    """The server loop's tasks and live timers, read inside that loop."""

    async def read() -> LoopState:
        loop = asyncio.get_running_loop()
        tasks = asyncio.all_tasks(loop) - {asyncio.current_task()}
        # A private list, but the only place a forgotten call_later shows: a timer
        # left behind keeps its connection's protocol (and all it refers to) alive.
        scheduled = getattr(loop, "_scheduled", [])
        timers = [handle for handle in scheduled if not handle.cancelled()]
        return LoopState(tasks, timers, len(controller.made))

    return asyncio.run_coroutine_threadsafe(read(), controller.loop).result(WAIT)


def unfinished(smtpd: SMTP) -> bool:
    """A connection the server was never told had ended: ``transport`` (public in
    aiosmtpd too) is set by ``connection_made`` and cleared by ``connection_lost``."""
    return smtpd.transport is not None


@dataclass
class Baseline:
    fds: set[tuple[int, str]]
    state: LoopState


@dataclass
class Leftovers:
    fds: set[tuple[int, str]]
    tasks: list[str]
    timers: list[str]
    connections: int

    def __bool__(self) -> bool:
        return bool(self.fds or self.tasks or self.timers or self.connections)


def baseline(controller: KeepingController) -> Baseline:
    gc.collect()  # so that nothing left by an earlier test is closed half-way through
    return Baseline(open_fds(), loop_state(controller))


def leftovers(controller: KeepingController, before: Baseline) -> Leftovers:
    state = loop_state(controller)
    since = controller.made[before.state.made : state.made]
    return Leftovers(
        fds=open_fds() - before.fds,
        tasks=[repr(task) for task in state.tasks - before.state.tasks],
        timers=[repr(timer) for timer in state.timers if timer not in before.state.timers],
        connections=sum(unfinished(smtpd) for smtpd in since),
    )


def settled(controller: KeepingController, before: Baseline) -> Leftovers:
    """Poll (bounded) until the server holds nothing beyond ``before``; otherwise
    what it still holds.  Sockets and tasks go first; the rest follows from
    ``connection_lost`` within a loop iteration or two, so once those two are back to
    the baseline a short grace is enough -- a leak then shows in ``GRACE``, not in
    ``SETTLE``."""
    now = time.monotonic()
    deadline = now + SETTLE
    grace_ends = deadline
    while True:
        left = leftovers(controller, before)
        if not left or now >= min(deadline, grace_ends):
            return left
        if not left.fds and not left.tasks:
            grace_ends = min(grace_ends, now + GRACE)
        time.sleep(POLL)  # polling with a deadline, not synchronisation
        now = time.monotonic()


def summary(errors: list[Exception]) -> dict[str, int]:
    """How many of each error (with its cause), for a readable assertion."""
    counts: dict[str, int] = {}
    for error in errors:
        key = f"{error!r} from {error.__cause__!r}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def problems(records: list[logging.LogRecord]) -> list[str]:
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    return [
        f"{record.name} {record.levelname}: {record.getMessage()}"
        for record in records
        if record.levelno >= logging.WARNING
    ]


# --- the client side ---------------------------------------------------------------------


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN: the abrupt end of a crashed or killed peer."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight of a real TLS handshake, to be sent in part."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # a handshake record
    return hello


@dataclass(frozen=True)
class Client:
    port: int
    context: ssl.SSLContext
    hello: bytes

    def connect(self, *, implicit_tls: bool = False) -> RawClient:
        client = RawClient(self.port)
        if implicit_tls:
            client.sock = self.context.wrap_socket(client.sock, server_hostname="localhost")
        return client

    def starttls(self, client: RawClient) -> None:
        assert client.command("STARTTLS").code == 220
        client.sock = self.context.wrap_socket(client.sock, server_hostname="localhost")
        assert client.command("EHLO client.example").code == 250


def greet(client: RawClient) -> None:
    assert client.reply().code == 220
    assert client.command("EHLO client.example").code == 250


def open_transaction(client: RawClient) -> None:
    assert client.command(f"MAIL FROM:<{SENDER}>").code == 250
    assert client.command(f"RCPT TO:<{RECIPIENT}>").code == 250


# Where a message is cut: never after its last octet.  "\r\n.\r" is one octet short
# of the DATA terminator.
DATA_TAILS = [b"", b"\r\n", b"\r\n.", b"\r\n.\r", b"partial line without an end"]
COMMAND_PREFIX = f"MAIL FROM:<{SENDER}> SIZE=1000".encode()


def body(index: int) -> bytes:
    lines = b"".join(b"line %d of a message that never ends\r\n" % n for n in range(index % 7))
    return b"Subject: cut off\r\n\r\n" + lines + DATA_TAILS[index % len(DATA_TAILS)]


def send_partial_data(client: RawClient, index: int) -> None:
    open_transaction(client)
    assert client.command("DATA").code == 354
    client.send(body(index))


def send_partial_bdat(client: RawClient, index: int) -> None:
    open_transaction(client)
    content = body(index) + b"\r\n" + b"x" * (index % 50)
    if index % 2:
        # One whole chunk taken, then the LAST chunk one octet short.
        client.send(b"BDAT 5\r\nfirst")
        assert client.reply().code == 250
        client.send(b"BDAT %d LAST\r\n" % len(content) + content[:-1])
    else:
        cut = index % len(content)
        client.send(b"BDAT %d LAST\r\n" % len(content) + content[:cut])


def send_partial_message(client: RawClient, index: int) -> None:
    if index % 2:
        send_partial_bdat(client, index // 2)
    else:
        send_partial_data(client, index // 2)


def hello_cut(hello: bytes, index: int) -> int:
    """Nothing, one octet, the record header, one octet more, half, all but one, all."""
    return [0, 1, 5, 6, len(hello) // 2, len(hello) - 1, len(hello)][index % 7]


def send_partial_handshake(client: Client, sock: socket.socket, index: int) -> None:
    cut = hello_cut(client.hello, index)
    sock.sendall(client.hello[:cut])
    if cut == len(client.hello):
        # The whole ClientHello: wait for the server's answer, so the reset comes
        # while the server waits for the client's Finished.
        assert sock.recv(1)


# --- the phases -----------------------------------------------------------------------------


def before_greeting(client: Client, index: int) -> None:
    with socket.create_connection(("127.0.0.1", client.port), timeout=WAIT) as sock:
        reset(sock)


def after_greeting(client: Client, index: int) -> None:
    with client.connect() as raw:
        assert raw.reply().code == 220
        reset(raw.sock)


def mid_command_line(client: Client, index: int) -> None:
    with client.connect() as raw:
        greet(raw)
        raw.send(COMMAND_PREFIX[: 1 + index % len(COMMAND_PREFIX)])  # no CRLF
        reset(raw.sock)


def after_mail_and_rcpt(client: Client, index: int) -> None:
    with client.connect() as raw:
        greet(raw)
        open_transaction(raw)
        if index % 2:
            # Commands sent, their replies never read.
            raw.send(b"RCPT TO:<second@example.com>\r\nNOOP\r\n")
        reset(raw.sock)


def mid_data(client: Client, index: int) -> None:
    with client.connect() as raw:
        if index % 4 == 0:
            # Everything in one write without waiting for a reply: the server's
            # replies meet a connection that is already reset.
            raw.send(
                b"EHLO client.example\r\n"
                + f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode()
                + body(index)
            )
        else:
            greet(raw)
            send_partial_data(raw, index)
        reset(raw.sock)


def mid_bdat(client: Client, index: int) -> None:
    with client.connect() as raw:
        greet(raw)
        send_partial_bdat(raw, index)
        reset(raw.sock)


def mid_starttls_handshake(client: Client, index: int) -> None:
    with client.connect() as raw:
        greet(raw)
        assert raw.command("STARTTLS").code == 220
        send_partial_handshake(client, raw.sock, index)
        reset(raw.sock)


def mid_message_over_starttls(client: Client, index: int) -> None:
    with client.connect() as raw:
        greet(raw)
        client.starttls(raw)
        send_partial_message(raw, index)
        reset(raw.sock)


def mid_implicit_tls_handshake(client: Client, index: int) -> None:
    with socket.create_connection(("127.0.0.1", client.port), timeout=WAIT) as sock:
        send_partial_handshake(client, sock, index)
        reset(sock)


def mid_message_over_implicit_tls(client: Client, index: int) -> None:
    with client.connect(implicit_tls=True) as raw:
        greet(raw)
        send_partial_message(raw, index)
        reset(raw.sock)


Phase = Callable[[Client, int], None]

VARIANTS: dict[str, list[tuple[Phase, int]]] = {
    "plain": [
        (before_greeting, 100),
        (after_greeting, 100),
        (mid_command_line, 100),
        (after_mail_and_rcpt, 100),
        (mid_data, 100),
        (mid_bdat, 100),
    ],
    "starttls": [(mid_starttls_handshake, 120), (mid_message_over_starttls, 80)],
    "implicit-tls": [(mid_implicit_tls_handshake, 120), (mid_message_over_implicit_tls, 80)],
}
assert sum(count for phases in VARIANTS.values() for _, count in phases) == 1000


def disconnect_abruptly(client: Client, phases: list[tuple[Phase, int]]) -> None:
    """Every phase's disconnects, ``CONCURRENCY`` at a time, interleaved."""
    runs = [(phase, index) for phase, count in phases for index in range(count)]
    runs.sort(key=lambda run: run[1])  # the phases side by side, not one after another
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(phase, client, index) for phase, index in runs]
        for future in futures:
            future.result(timeout=4 * WAIT)  # a client-side failure fails the test


def deliver_one(client: Client, variant: str, content: bytes) -> None:
    with client.connect(implicit_tls=variant == "implicit-tls") as raw:
        greet(raw)
        if variant == "starttls":
            client.starttls(raw)
        open_transaction(raw)
        assert raw.command("DATA").code == 354
        assert raw.command(content + b"\r\n.").code == 250
        assert raw.command("QUIT").code == 221


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    certificate_authority.configure_trust(context)
    return context


def server_for(variant: str, handler: Any, context: ssl.SSLContext) -> KeepingController:
    tls: dict[str, Any] = {
        "plain": {},
        "starttls": {"tls_context": context},
        "implicit-tls": {"ssl_context": context},
    }[variant]
    return KeepingController(handler, chunking=True, **tls)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_abrupt_disconnects_leave_nothing_behind(
    variant: str,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Keeper()
    with running(server_for(variant, handler, server_context)) as server:
        client = Client(server.port, client_context, client_hello(client_context))
        before = baseline(server)

        disconnect_abruptly(client, VARIANTS[variant])

        left = settled(server, before)
        found = {
            "messages delivered": len(handler.messages),
            "handle_exception calls": summary(handler.exceptions),
            "file descriptors leaked": sorted(left.fds),
            "tasks left": left.tasks[:3],
            "timers left": (len(left.timers), left.timers[:2]),
            "connections never finished": left.connections,
            "logged": problems(caplog.records)[:3],
        }
        assert found == {
            "messages delivered": 0,
            "handle_exception calls": {},
            "file descriptors leaked": [],
            "tasks left": [],
            "timers left": (0, []),
            "connections never finished": 0,
            "logged": [],
        }

        # The server still works, and what it delivers is whole.
        content = b"Subject: whole\r\n\r\nThe one message that arrived entire."
        deliver_one(client, variant, content)
        assert handler.messages == [content + b"\r\n"]
        assert not settled(server, before)
    assert handler.exceptions == []
    assert problems(caplog.records) == []


def test_a_reset_during_the_starttls_handshake_is_not_logged_as_an_error(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without a handle_exception hook the server reports errors to the log itself.
    recorder = Recorder()
    with running(KeepingController(recorder, tls_context=server_context)) as server:
        client = Client(server.port, client_context, client_hello(client_context))
        before = baseline(server)
        disconnect_abruptly(client, [(mid_starttls_handshake, 20)])
        settled(server, before)
        assert problems(caplog.records) == []
    assert recorder.messages == []


def live(server: Controller) -> list[Any]:
    """The sessions the server still counts as open (its socket closes a loop
    iteration or two before the session hears of it)."""
    return [session for session in list(server._connections) if not session._closing]


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Python 3.10: the listener does the TLS handshake (see Controller._tls_in_session)",
)
def test_aborted_tls_handshakes_do_not_use_up_max_connections(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # A plain Controller (nothing in the test keeps the SMTP instances) counting the
    # sessions it makes.  The collector is held off, as it is between two of its runs
    # on a real server, so that the result does not depend on when it happens to run.
    class Counting(Controller):
        made = 0

        def factory(self) -> SMTP:
            Counting.made += 1
            return super().factory()

    server = Counting(
        Recorder(), hostname="127.0.0.1", port=0, ssl_context=server_context, max_connections=5
    )
    hello = client_hello(client_context)
    collecting = gc.isenabled()
    gc.disable()
    try:
        with running(server):
            client = Client(server.port, client_context, hello)
            made = Counting.made
            for index in range(10):  # twice the limit, one after the other
                # The start of a ClientHello, then a reset: the handshake fails.
                with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
                    sock.sendall(hello[: 1 + index])
                    reset(sock)
                # Polled, bounded: the server has made that session and it has ended.
                deadline = time.monotonic() + SETTLE
                while time.monotonic() < deadline and (
                    Counting.made < made + index + 1 or live(server)
                ):
                    time.sleep(POLL)
                assert Counting.made == made + index + 1, "a session was refused"
                assert not live(server)
            with client.connect(implicit_tls=True) as raw:
                reply = raw.reply()
                assert reply.code == 220, f"refused: {reply.code} {reply.message}"
                assert raw.command("QUIT").code == 221
    finally:
        if collecting:
            gc.enable()
