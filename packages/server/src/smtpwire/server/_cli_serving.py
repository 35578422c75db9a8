"""The command line's server at run time: which event loop serves, the listening
socket and the connections it accepts, the switch to ``nobody``, and running
until a signal (or whoever owns the loop) stops it, then draining: the sessions
finish what they are doing, none starts a new transaction (the drain, its
sessions and the signals: ``_shutdown.py``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import mailbox
import os
import socket
import ssl
import sys
import warnings
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from ._cli_options import SHUTDOWN_GRACE_DEFAULT, program_name, version
from ._serving import Refuser, TooBusy, admit, over_connection_limit
from ._shutdown import CliSMTP, Drain, Stopping, shut_down
from .proxy_protocol import AF, V2_CMD, ProxyData
from .session import MISSING
from .smtp import SMTP

if sys.platform != "win32":
    import pwd

# CliSMTP, Drain and Stopping are _shutdown.py's: main.py and the tests import them
# from here too.
__all__ = [
    "SHUTDOWN_GRACE",
    "CliSMTP",
    "Connections",
    "Drain",
    "ProxiedCliSMTP",
    "ServingLoop",
    "Stopping",
    "bind",
    "check_maildir_for_workers",
    "check_maildir_writable",
    "close",
    "current_loop",
    "describe_address",
    "drop_privileges",
    "hand_over_maildir",
    "hand_over_store",
    "is_uvloop",
    "original_client",
    "serve",
    "startup_line",
]

log = logging.getLogger("mail.log")

#: How long shutdown waits for open sessions to finish the command at hand (a
#: message being received, its delivery) before cutting them off: the default
#: of --shutdown-grace (see _shutdown.py).
SHUTDOWN_GRACE = SHUTDOWN_GRACE_DEFAULT


# -- the event loop ----------------------------------------------------------------------


def current_loop() -> asyncio.AbstractEventLoop | None:
    """The open loop ``asyncio.get_event_loop()`` would give, without making one."""
    loop: object
    if sys.version_info >= (3, 12):
        with warnings.catch_warnings():
            # 3.12 and 3.13 warn before they would make a loop, 3.14 refuses to make
            # one: with the warning an error, none is made either way.
            warnings.simplefilter("error", DeprecationWarning)
            try:
                loop = asyncio.get_event_loop()
            except (DeprecationWarning, RuntimeError):
                return None
    else:
        # 3.10 and 3.11 make one silently in the main thread, so look in the
        # policy's own slot for it (these versions no longer change).
        loop = getattr(getattr(asyncio.get_event_loop_policy(), "_local", None), "_loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
        return loop
    return None


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.partition(".")[0] == "uvloop"


class ServingLoop:
    """The loop the server runs on: the caller's current one, as with aiosmtpd
    (whose tests set a loop, schedule its stop and call ``main()``), unless
    ``--loop`` asks for another kind.  Otherwise one is made with
    ``loop_factory`` and made current; that one is closed at the end, like
    :func:`asyncio.run`'s, and the caller's current loop (if any) put back.
    The caller's own loop is left open and current."""

    def __init__(self, choice: str, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.previous = current_loop()
        previous_is_uvloop = self.previous is not None and is_uvloop(self.previous)
        fits = choice == "auto" or previous_is_uvloop == (choice == "uvloop")
        if self.previous is not None and fits:
            self.loop, self.owned = self.previous, False
        else:
            self.loop, self.owned = loop_factory(), True
            asyncio.set_event_loop(self.loop)

    def finish(self) -> None:
        if not self.owned:
            return
        loop = self.loop
        try:
            # What is left (handler coroutines of cut connections), then asyncio.run()'s steps.
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(self.previous)
            loop.close()


# -- privileges ------------------------------------------------------------------------------


def drop_privileges(parser: argparse.ArgumentParser, handler: Any) -> str | None:
    """Become ``nobody`` when running as root; the user name switched to, if any.

    Supplementary groups and the group go first: aiosmtpd changed only the user
    and kept group root.  Any failure is one line naming ``-n``, aiosmtpd's text.
    """
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
        hand_over_maildir(handler, nobody.pw_uid, nobody.pw_gid)
        hand_over_store(handler, nobody.pw_uid, nobody.pw_gid)
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    except (KeyError, OSError):
        parser.exit(1, 'Cannot setuid "nobody"; try running with -n option.\n')
    check_maildir_writable(parser, handler, "nobody")
    return "nobody"


def hand_over_maildir(handler: Any, uid: int, gid: int) -> None:
    """Give a Mailbox handler's Maildir to the user the server switches to.

    The handler is built before the switch (aiosmtpd builds it while parsing),
    so a Maildir it created belongs to root and ``nobody`` could not deliver
    into it.  Only directories root owns change hands: a Maildir that belongs to
    some other user is left alone.
    """
    mail_dir = _maildir_of(handler)
    if mail_dir is None:
        return
    top = Path(mail_dir)
    for directory in (top, top / "tmp", top / "new", top / "cur"):
        if directory.stat().st_uid == os.geteuid():
            os.chown(directory, uid, gid)


def check_maildir_writable(parser: argparse.ArgumentParser, handler: Any, user: str) -> None:
    """Refuse, in one line, a Mailbox handler's Maildir that the user the server
    has just switched to cannot deliver into.

    The handler checked its Maildir when it was made, but as root, who may write
    anywhere; only directories root owns are handed over, so a Maildir of another
    user, or one inside a directory ``nobody`` cannot enter, passed that check and
    then failed every message.  Asked again now, as that user (``os.access``
    follows the real ids, which the switch changed).
    """
    folder = _unwritable_maildir_folder(handler, effective_ids=False)
    if folder is not None:
        _refuse_maildir(parser, folder, user)


def check_maildir_for_workers(parser: argparse.ArgumentParser, handler: Any) -> None:
    """:func:`check_maildir_writable` for ``--workers``, in the supervisor, which
    stays root while each worker switches to ``nobody``: checked once, before any
    worker starts, rather than by every worker, each restarted until the
    supervisor gives up.  The Maildir is handed over as a worker would, then
    asked about with nobody's effective ids, root's put back at once."""
    if sys.platform == "win32" or os.geteuid() != 0 or _maildir_of(handler) is None:
        return
    try:
        nobody = pwd.getpwnam("nobody")
        hand_over_maildir(handler, nobody.pw_uid, nobody.pw_gid)
    except (KeyError, OSError):
        return  # each worker says so, naming -n
    groups, gid = os.getgroups(), os.getegid()
    try:
        os.setgroups([])
        os.setegid(nobody.pw_gid)
        os.seteuid(nobody.pw_uid)
        folder = _unwritable_maildir_folder(handler, effective_ids=True)
    finally:
        os.seteuid(0)
        os.setegid(gid)
        os.setgroups(groups)
    if folder is not None:
        _refuse_maildir(parser, folder, "nobody")


def _unwritable_maildir_folder(handler: Any, *, effective_ids: bool) -> Path | None:
    """The first Maildir folder a delivery writes to (tmp, new; cur is the
    readers') that the current user cannot write; None if both are writable,
    or for a handler that is not a Mailbox."""
    mail_dir = _maildir_of(handler)
    if mail_dir is None:
        return None
    for name in ("tmp", "new"):
        folder = Path(mail_dir) / name
        if not os.access(folder, os.W_OK | os.X_OK, effective_ids=effective_ids):
            return folder
    return None


def _refuse_maildir(parser: argparse.ArgumentParser, folder: Path, user: str) -> None:
    parser.exit(
        1,
        f"{parser.prog}: error: user {user} cannot write the Maildir: '{folder}' "
        f"(started as root, the server runs as {user}: give the Maildir to "
        f"{user}, or run with -n to stay root)\n",
    )


def _maildir_of(handler: Any) -> Any:
    """A Mailbox handler's Maildir directory (None for any other handler)."""
    mail_dir = getattr(handler, "mail_dir", None)
    if mail_dir is None or not isinstance(getattr(handler, "mailbox", None), mailbox.Maildir):
        return None
    return mail_dir


def hand_over_store(handler: Any, uid: int, gid: int) -> None:
    """Give the web inbox's SQLite file (``--store``) to the user the server
    switches to, for the same reason as a Maildir: it was opened as root.  Its
    WAL files go too, or nobody could write the next transaction."""
    store = getattr(getattr(handler, "inbox", handler), "store", None)
    path = getattr(store, "path", None)
    if not isinstance(path, Path):
        return
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists() and file.stat().st_uid == os.geteuid():
            os.chown(file, uid, gid)


# -- sessions behind a proxy ------------------------------------------------------------------


class ProxiedCliSMTP(CliSMTP):
    """``--proxy-protocol``: a valid PROXY header is accepted (the operator put
    the proxy there) unless the handler has its own ``handle_PROXY`` that says
    no, and the session's ``peer`` becomes the original client's address, so
    that what handlers record (``X-Peer``) names the client, not the proxy.
    ``session.proxy_data`` keeps the whole header."""

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        status = await super()._call_handler_hook(command, *args)
        if command != "PROXY":
            return status
        if status is MISSING:
            status = True
        if status:
            self.session.peer = original_client(args[0], self.session.peer)
        return status


def original_client(proxy_data: ProxyData, peer: Any) -> Any:
    """The client's address as the proxy saw it, shaped like a peer name; the
    connection's own peer for a proxy's health check (LOCAL) or an unknown family."""
    address, port = proxy_data.src_addr, proxy_data.src_port
    if proxy_data.command == V2_CMD.LOCAL or address is None or port is None:
        return peer
    if proxy_data.family == AF.INET:
        return (str(address), port)
    if proxy_data.family == AF.INET6:
        return (str(address), port, 0, 0)
    return peer


# -- listening and connections -----------------------------------------------------------


class Connections:
    """The server's protocol factory: one SMTP per connection, remembered
    (weakly) so that shutdown can close the connections still open.

    The SMTP factory is set only after the socket is bound and privileges are
    dropped.
    """

    def __init__(
        self, max_connections: int | None = None, *, implicit_tls: ssl.SSLContext | None = None
    ) -> None:
        self.factory: Callable[[], SMTP] | None = None
        self.open: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self.max_connections = max_connections
        # SMTPS (--smtpscert): each session does its handshake itself, as the
        # Controller's do, so a PROXY header may come before it (HAProxy passing
        # TLS through) and a failed handshake frees its place at once.
        self.implicit_tls = implicit_tls
        self.drain = Drain()
        # --web: the inbox and its web server, stopped by close().
        self.inbox: Any = None
        self.web: Any = None

    def __call__(self) -> asyncio.BaseProtocol:
        if over_connection_limit(self.open, self.max_connections):
            # A client expecting TLS could not read a plaintext 421: just close.
            return Refuser() if self.implicit_tls is not None else TooBusy()
        if self.factory is None:  # pragma: no cover - the server only starts serving once set
            raise RuntimeError("the SMTP factory is not set")
        try:
            protocol = self.factory()
        except Exception:
            # asyncio reports a failing protocol factory only in debug mode; without
            # this the client would just see the connection closed.
            log.exception("Cannot serve a new connection")
            raise
        if self.implicit_tls is not None:
            protocol._implicit_tls = self.implicit_tls
        admit(self.open, protocol, tls_listener=False)
        return protocol

    def transports(self) -> list[asyncio.BaseTransport]:
        found = (getattr(protocol, "transport", None) for protocol in list(self.open))
        return [transport for transport in found if transport is not None]


def describe_address(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def startup_line(
    server: asyncio.AbstractServer,
    options: argparse.Namespace,
    loop: asyncio.AbstractEventLoop,
    user: str | None,
    release: str | None = None,
) -> str:
    """The line that says the server is up.  ``release``: the version, looked up
    by the caller while it could still read the installation (before switching
    to nobody); looked up here if not given."""
    sockets: Sequence[socket.socket] = getattr(server, "sockets", ())
    where = ", ".join(describe_address(sock.getsockname()) for sock in sockets)
    details = [f"handler {options.classpath}"]
    if options.ssl_context is not None:
        details.append("SMTPS")
    if options.tls_context is not None:
        details.append("STARTTLS required" if options.requiretls else "STARTTLS offered")
    if is_uvloop(loop):
        details.append("uvloop")
    if user is not None:
        details.append(f"running as {user}")
    web = getattr(options, "web_inbox", None)
    if web is not None:
        details.append(f"web inbox {web.url}/")
    program = f"{program_name()} {version() if release is None else release}"
    return f"{program} listening on {where} ({'; '.join(details)}); Ctrl-C to stop"


def bind(
    loop: asyncio.AbstractEventLoop,
    parser: argparse.ArgumentParser,
    options: argparse.Namespace,
    connections: Connections,
) -> asyncio.AbstractServer:
    try:
        server = loop.run_until_complete(
            loop.create_server(
                connections,
                options.host,
                options.port,
                start_serving=False,  # TLS, if any, is the sessions' (Connections)
            )
        )
    except OSError as error:
        where = describe_address((options.host, options.port))
        parser.exit(1, f"{parser.prog}: error: cannot listen on {where}: {error}\n")
    if getattr(options, "inbox", None) is not None:
        _start_web_inbox(loop, parser, options, connections, server)
    return server


def _start_web_inbox(
    loop: asyncio.AbstractEventLoop,
    parser: argparse.ArgumentParser,
    options: argparse.Namespace,
    connections: Connections,
    server: asyncio.AbstractServer,
) -> None:
    """``--web``: its HTTP side listens in the same loop, bound now like SMTP's."""
    from .inbox import _cli as web_inbox  # noqa: PLC0415 - only with --web

    try:
        options.web_inbox = web_inbox.start_web(loop, parser, options)
    except SystemExit:
        server.close()
        raise
    connections.inbox, connections.web = options.inbox, options.web_inbox
    connections.drain.observer = options.inbox.observer


def serve(
    loop: asyncio.AbstractEventLoop,
    server: asyncio.AbstractServer,
    line: str,
    announce: Callable[[str], None] | None = None,
    stopping: Stopping | None = None,
) -> None:
    """Serve until ``loop`` stops: on SIGINT or SIGTERM, once the shutdown they
    begin is over (``stopping``), or when any callback stops it or raises
    ``KeyboardInterrupt`` (as aiosmtpd's ``main()`` does).  The startup line goes
    to stderr, or to ``announce`` (a worker tells its supervisor).

    Without ``stopping``, a signal just stops the loop, and the handlers are
    removed on return; with it, they stay (the caller removes them), so that a
    second signal while the caller drains is heard."""
    temporary = stopping is None
    if stopping is None:
        stopping = Stopping(loop)
    stopping.install()
    try:
        loop.run_until_complete(server.start_serving())
        # Said only once the loop runs: whoever waits for this line may signal us at
        # once, and uvloop drops a signal that arrives between two runs of its loop.
        loop.call_soon(_announce, line, announce)
        stopping.serving = True
        if stopping.signalled and stopping.task is None:
            stopping.begin()  # a signal came while the server started to serve
        if stopping.task is None or not stopping.task.done():
            with suppress(KeyboardInterrupt):
                loop.run_forever()
    finally:
        stopping.serving = False
        if temporary:
            stopping.remove()


def _announce(line: str, announce: Callable[[str], None] | None) -> None:
    if announce is None:
        print(line, file=sys.stderr, flush=True)
    else:
        announce(line)


async def close(
    server: asyncio.AbstractServer, connections: Connections, grace: float = SHUTDOWN_GRACE
) -> None:
    """Stop gracefully: see :mod:`smtpwire.server._shutdown`."""
    await shut_down(server, connections, grace)
    if connections.web is not None:
        await connections.web.stop()
    if connections.inbox is not None:
        # Closing waits for the store's thread to finish its last write.
        await asyncio.get_running_loop().run_in_executor(None, connections.inbox.close)
