"""``--workers N``: N server processes on the same listening address, and the
process that supervises them.

How the workers are made: each is a fresh ``python -m smtpwire.server`` (the same
interpreter), given the user's command line plus ``--worker-spec``, by
:class:`subprocess.Popen`.  Not ``multiprocessing``: its "fork" start method
would copy a process whose state (an event loop, threads, locks) is not meant to
be copied, and "spawn" or "forkserver" would have to pickle the parsed options,
which hold an SSL context and the handler, neither picklable; a worker would
have to rebuild them from the command line anyway.  Re-running the command
line does exactly that, so a worker is the one-process server in every respect
(parsing, the handler built by its ``from_cli``, TLS contexts, binding before
switching to ``nobody``), and the supervisor needs no event loop at all: it
waits with a selector on a signal wake-up pipe and on one socket pair per
worker (the worker's startup line comes up it; its closing tells a worker
that the supervisor is gone).

The listening sockets: on Linux each worker binds its own with ``SO_REUSEPORT``
and the kernel spreads the connections over them (no herd of workers woken for
each connection, and one accept queue each).  The supervisor binds the address
first, without listening: port 0 is resolved once for all workers, and the port
stays reserved while a worker is restarted.  Elsewhere (where ``SO_REUSEPORT``
does not balance, or is missing) the supervisor listens and the workers inherit
its sockets.  The supervisor stays the user that started it (root, for a port
below 1024): the workers it restarts bind as that user, then switch to nobody.

Stopping: the supervisor passes SIGTERM or SIGINT on to every worker as SIGTERM,
and each drains as one server does; a second signal is passed on too, and the
workers stop now.  A worker ignores SIGINT: Ctrl-C at a terminal reaches the
whole process group, and a worker that counted it would take the supervisor's
SIGTERM for a second signal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType

from ._cli_serving import SHUTDOWN_GRACE, describe_address
from ._workers_child import BACKLOG, WORKER_ENV, WorkerSpec, reuseport_socket

#: The first restart of a worker waits this long, each further one twice as long
#: as the one before (a worker failing at once must not spin), up to the maximum.
RESTART_DELAY = 0.1
RESTART_DELAY_MAX = 5.0
#: A worker that has served this long counts as healthy: its back-off starts over.
HEALTHY_AFTER = 10.0
#: More unexpected exits than this within the window is a crash loop: give up.
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0


def stop_timeout(grace: float) -> float:
    """How long the workers get to drain and exit after SIGTERM before being killed:
    past their own ``--shutdown-grace``, with room for the last replies."""
    return 2 * grace + 5.0


#: The environment variable that forces inherited sockets (the non-Linux way) on
#: Linux too, so that the tests cover that path.
SOCKETS_ENV = "SMTPWIRE_WORKER_SOCKETS"


def reuseport_available() -> bool:
    """``SO_REUSEPORT`` that balances connections: Linux's (BSD's and macOS's lets
    several sockets bind, but sends the connections to one of them)."""
    return (
        sys.platform.startswith("linux")
        and hasattr(socket, "SO_REUSEPORT")
        and os.environ.get(SOCKETS_ENV) != "inherit"
    )


@dataclass
class Listeners:
    """The supervisor's sockets: bound only (reuseport) or listening (inherited)."""

    sockets: list[socket.socket]
    reuseport: bool

    def spec(self, slot: int, channel: int) -> WorkerSpec:
        if self.reuseport:
            addresses = tuple((sock.family, sock.getsockname()) for sock in self.sockets)
            return WorkerSpec(slot, channel, addresses=addresses)
        return WorkerSpec(slot, channel, fds=tuple(sock.fileno() for sock in self.sockets))

    def fds_to_pass(self) -> tuple[int, ...]:
        return () if self.reuseport else tuple(sock.fileno() for sock in self.sockets)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def open_listeners(host: str, port: int, *, reuseport: bool, attempts: int = 10) -> Listeners:
    """Bind every address ``host`` resolves to (as asyncio's create_server does),
    all on one port: with port 0, the first one's, tried again if another
    address has it taken."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    targets = list(dict.fromkeys((info[0], info[4]) for info in infos))
    for attempt in range(attempts):
        sockets: list[socket.socket] = []
        chosen = port
        try:
            for family, resolved in targets:
                address = (resolved[0], chosen, *resolved[2:])
                if reuseport:
                    sockets.append(reuseport_socket(family, address))
                else:
                    sockets.append(socket.socket(family, socket.SOCK_STREAM))
                    _bind_to_listen(sockets[-1], family, address)
                chosen = chosen or sockets[-1].getsockname()[1]
        except OSError:
            for sock in sockets:
                sock.close()
            if port == 0 and len(targets) > 1 and attempt + 1 < attempts:
                continue  # the port picked for the first address is taken on another
            raise
        return Listeners(sockets, reuseport)
    raise AssertionError("unreachable")  # pragma: no cover


def _bind_to_listen(sock: socket.socket, family: int, address: tuple[object, ...]) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(address)
    sock.listen(BACKLOG)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
    return f"status {returncode}"


@dataclass
class Worker:
    slot: int
    process: subprocess.Popen[bytes] | None = None
    channel: socket.socket | None = None
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0  # exits in a row, each before it was healthy
    restart_at: float | None = None
    received: bytes = b""
    restarts: int = 0


@dataclass
class Supervisor:
    parser: argparse.ArgumentParser
    argv: Sequence[str]
    count: int
    listeners: Listeners
    workers: list[Worker] = field(default_factory=list)
    exits: deque[float] = field(default_factory=deque)
    stop_signal: int | None = None
    stopping_since: float | None = None
    #: A signal during the stop: passed on to the workers, which stop now.
    now_signal: int | None = None
    stopped_now: bool = False
    status: int = 0
    announced: bool = False
    stop_after: float = stop_timeout(SHUTDOWN_GRACE)

    def __post_init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.wake_read, self.wake_write = socket.socketpair()
        for sock in (self.wake_read, self.wake_write):
            sock.setblocking(False)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        self.workers = [Worker(slot) for slot in range(1, self.count + 1)]

    # -- running ------------------------------------------------------------------------

    def run(self) -> int:
        with self._signals():
            try:
                for worker in self.workers:
                    self._start(worker)
                while not self._finished():
                    self._wait()
                    self._reap()
                    if self.stop_signal is not None and self.stopping_since is None:
                        self._stop_all()
                    if self.now_signal is not None and not self.stopped_now:
                        self._stop_now(self.now_signal)
                    self._restart_due()
            finally:
                self._kill_all()
                self.listeners.close()
                self.selector.close()
                self.wake_read.close()
                self.wake_write.close()
        return self.status

    def _finished(self) -> bool:
        if self.stopping_since is None:
            return False
        if all(worker.process is None for worker in self.workers):
            return True
        if time.monotonic() - self.stopping_since > self.stop_after:
            self._say(f"workers still running {self.stop_after:g} s after SIGTERM; killing them")
            self.status = 1
            return True
        return False

    def _wait(self) -> None:
        now = time.monotonic()
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self.stopping_since is not None:
            due.append(self.stopping_since + self.stop_after)
        # The wake-up pipe reports signals and SIGCHLD; the bound only guards
        # against a lost wake-up, it is not how anything is awaited.
        timeout = min([5.0, *(max(at - now, 0.0) for at in due)])
        for key, _ in self.selector.select(timeout):
            if key.fileobj is self.wake_read:
                with contextlib.suppress(BlockingIOError):
                    while self.wake_read.recv(512):
                        pass
            else:
                self._read_channel(key.data)

    # -- signals ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            if self.stop_signal is None and self.stopping_since is None:
                self.stop_signal = signum
            elif self.now_signal is None:
                self.now_signal = signum  # a second one, or one during a stop of our own

        def on_child(signum: int, frame: FrameType | None) -> None:
            pass  # the wake-up pipe has woken the loop, which reaps

        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, on_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, on_stop),
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, on_child),
        }
        old_wakeup = signal.set_wakeup_fd(self.wake_write.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- workers ------------------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            spec = self.listeners.spec(worker.slot, theirs.fileno())
            command = [sys.executable, "-m", "smtpwire.server", f"--worker-spec={spec.dumps()}"]
            worker.process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
                [*command, *self.argv],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *self.listeners.fds_to_pass()),
                env={**os.environ, WORKER_ENV: str(worker.slot)},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        worker.channel, worker.ready, worker.received = ours, False, b""
        worker.started_at, worker.restart_at = time.monotonic(), None
        self.selector.register(ours, selectors.EVENT_READ, worker)

    def _read_channel(self, worker: Worker) -> None:
        channel = worker.channel
        assert channel is not None  # noqa: S101 - registered only while open
        try:
            data = channel.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_channel(worker)  # the worker is ending; _reap will see it
            return
        worker.received += data
        if b"\n" in worker.received and not worker.ready:
            line = worker.received.partition(b"\n")[0].decode("utf-8", "replace")
            worker.ready = True
            self._on_ready(worker, line)

    def _on_ready(self, worker: Worker, line: str) -> None:
        if self.stopping_since is not None:
            return
        if worker.restarts:
            pid = worker.process.pid if worker.process else "?"
            self._say(f"worker {worker.slot} restarted as pid {pid}")
        elif not self.announced and all(w.ready for w in self.workers):
            self.announced = True
            print(self._startup_line(line), file=sys.stderr, flush=True)

    def _startup_line(self, line: str) -> str:
        """A worker's startup line with the workers added to its details."""
        pids = ", ".join(str(w.process.pid) for w in self.workers if w.process is not None)
        how = "SO_REUSEPORT" if self.listeners.reuseport else "inherited socket"
        head, _, tail = line.rpartition(")")
        if not head:  # pragma: no cover - the worker's line always has its details
            where = ", ".join(describe_address(s.getsockname()) for s in self.listeners.sockets)
            head, tail = f"{self.parser.prog} listening on {where} (", "; Ctrl-C to stop"
        return f"{head}; {self.count} workers, pids {pids}; {how}){tail}"

    def _close_channel(self, worker: Worker) -> None:
        if worker.channel is not None:
            self.selector.unregister(worker.channel)
            worker.channel.close()
            worker.channel = None

    def _reap(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is None:
                continue
            self._close_channel(worker)
            worker.process = None
            if self.stopping_since is not None:
                continue
            self._exited_unexpectedly(worker, process, now)

    def _exited_unexpectedly(
        self, worker: Worker, process: subprocess.Popen[bytes], now: float
    ) -> None:
        how = describe_exit(process.returncode)
        self.exits.append(now)
        while self.exits and now - self.exits[0] > CRASH_WINDOW:
            self.exits.popleft()
        if len(self.exits) > CRASH_LIMIT:
            self._say(
                f"error: workers keep exiting ({len(self.exits)} exits within "
                f"{CRASH_WINDOW:g} s, the last: worker {worker.slot}, pid {process.pid}, "
                f"{how}); giving up"
            )
            self.status = 1
            self._stop_all()
            return
        healthy = worker.ready and now - worker.started_at >= HEALTHY_AFTER
        worker.failures = 0 if healthy else worker.failures + 1
        delay = min(RESTART_DELAY * 2 ** max(worker.failures - 1, 0), RESTART_DELAY_MAX)
        worker.restart_at = now + delay
        self._say(
            f"worker {worker.slot} (pid {process.pid}) exited with {how}; "
            f"restarting it in {delay:g} s"
        )

    def _restart_due(self) -> None:
        if self.stopping_since is not None:
            return
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None and worker.restart_at <= now:
                worker.restarts += 1
                self._start(worker)

    def _stop_all(self) -> None:
        """Every worker stops accepting, drains its sessions and exits."""
        self.stopping_since = time.monotonic()
        for worker in self.workers:
            worker.restart_at = None
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)

    def _stop_now(self, signum: int) -> None:
        """A second signal: passed on, so that every worker stops now (its drain cut
        short, the sessions left told 421), as one server does."""
        self.stopped_now = True
        self._say(f"second signal ({signal.Signals(signum).name}): stopping the workers now")
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                if worker.process.poll() is None:
                    worker.process.kill()
                worker.process.wait()
                worker.process = None
            self._close_channel(worker)

    def _say(self, text: str) -> None:
        print(f"{self.parser.prog}: {text}", file=sys.stderr, flush=True)


def supervise(
    parser: argparse.ArgumentParser, options: argparse.Namespace, argv: Sequence[str]
) -> int:
    """Run ``options.workers`` workers until SIGTERM or SIGINT (status 0), or until
    they cannot be kept running (status 1).  Each signal is passed on to the
    workers as SIGTERM: the first lets them drain, a second stops them now."""
    if sys.platform == "win32":  # pragma: no cover - no inheritable sockets by fd there
        parser.error("--workers greater than 1 is not supported on Windows")
    try:
        listeners = open_listeners(options.host, options.port, reuseport=reuseport_available())
    except OSError as error:
        where = describe_address((options.host, options.port))
        parser.exit(1, f"{parser.prog}: error: cannot listen on {where}: {error}\n")
    grace = getattr(options, "shutdown_grace", SHUTDOWN_GRACE)
    supervisor = Supervisor(parser, argv, options.workers, listeners)
    supervisor.stop_after = stop_timeout(grace)
    return supervisor.run()
