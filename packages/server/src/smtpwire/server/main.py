"""The command line, ``smtpwire-server`` or ``python -m smtpwire.server``.

The options are aiosmtpd's, so existing command lines keep working.  Where
aiosmtpd's CLI hurt its users, this one differs:

- ``-s`` defaults to the SMTP class's 33,554,432 bytes (aiosmtpd's CLI had no
  limit although its help promised this one); ``-s 0`` removes the limit.
- Switching to user ``nobody`` happens only when started as root, and only
  after the listening socket is bound (so a root-started server can listen on
  port 25) and the certificates are read; the groups are dropped too.  Started
  as anyone else, the server just runs as that user: ``-n`` is not needed.
- ``-l`` accepts port 0 and ``[IPv6]:PORT``; the startup line on stderr names
  the address(es) really bound.
- A bad handler class path or certificate is a usage error, not a traceback.
- SIGINT (Ctrl-C) and SIGTERM stop the server: it closes the listening socket
  and the open connections, and exits with status 0.

Beyond aiosmtpd's options, ``--loop`` picks the event loop: asyncio's own, or
uvloop (a drop-in loop built on libuv) when it is installed
(``smtpwire-server[uvloop]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import logging
import os
import re
import signal
import socket
import ssl
import sys
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ._modern import RCPT_LIMIT_FLOOR
from ._serving import TooBusy, admit, over_connection_limit
from .smtp import DATA_SIZE_DEFAULT, SMTP

if sys.platform != "win32":
    import pwd

__all__ = ["main", "parseargs"]

log = logging.getLogger("mail.log")

PROGRAM = "smtpwire-server"
DEFAULT_HANDLER = "smtpwire.server.handlers.Debugging"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8025

#: How long shutdown waits for open connections to flush their last reply
#: before cutting them off.
SHUTDOWN_GRACE = 5.0

_PORT = re.compile(r"[0-9]{1,5}")

#: ``--loop``: ``auto`` is uvloop when it can be imported, else asyncio's own.
LOOPS = ("auto", "asyncio", "uvloop")


def _program_name() -> str:
    # ``python -m smtpwire.server`` runs __main__.py; name the command instead.
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return PROGRAM if not name or name.startswith("__main__") else name


def _version() -> str:
    try:
        return importlib.metadata.version("smtpwire-server")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(), description="An RFC 5321 SMTP server with extensions."
    )
    parser.add_argument("-v", "--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "-n",
        "--nosetuid",
        dest="setuid",
        default=True,
        action="store_false",
        help=(
            "Stay the user that started the server.  Without it, a server started "
            "as root switches to user 'nobody' (after binding its socket and reading "
            "its certificates); a server started as any other user never switches, "
            "so the flag only matters for root."
        ),
    )
    parser.add_argument(
        "-c",
        "--class",
        dest="classpath",
        metavar="CLASSPATH",
        default=DEFAULT_HANDLER,
        help=(
            "The handler class, as a dotted import path (package.module.Class).  "
            "CLASSARGS go to its from_cli(parser, *args) class method when it has "
            "one; otherwise the class is called without arguments.  Default: "
            f"{DEFAULT_HANDLER}, which prints every message to stdout."
        ),
    )
    parser.add_argument(
        "-s",
        "--size",
        type=int,
        default=DATA_SIZE_DEFAULT,
        help=(
            "Largest message accepted, in bytes, advertised with the SIZE extension "
            f"(RFC 1870).  Default: {DATA_SIZE_DEFAULT:,} bytes; 0 means no limit.  "
            "(aiosmtpd's command line applied no limit by default.)"
        ),
    )
    parser.add_argument(
        "-u",
        "--smtputf8",
        default=False,
        action="store_true",
        help="Enable the SMTPUTF8 extension (RFC 6531).",
    )
    parser.add_argument(
        "-d",
        "--debug",
        default=0,
        action="count",
        help=(
            "More logging on stderr: -d shows the server's INFO messages (loggers "
            "mail.log and mail.debug), -dd its DEBUG messages, -ddd also asyncio's "
            "debug mode."
        ),
    )
    parser.add_argument(
        "-l",
        "--listen",
        metavar="[HOST][:PORT]",
        nargs="?",
        default=None,
        help=(
            f"Where to listen.  Default {DEFAULT_HOST}:{DEFAULT_PORT}; a missing HOST "
            f"is {DEFAULT_HOST}, a missing PORT is {DEFAULT_PORT}.  Write an IPv6 "
            "address in brackets to give a port ([::1]:8025).  Port 0 picks a free "
            "port, which the startup line on stderr reports."
        ),
    )
    parser.add_argument(
        "--smtpscert",
        metavar="CERTFILE",
        help="Certificate (PEM) for SMTPS, i.e. TLS from the first byte; needs --smtpskey.",
    )
    parser.add_argument(
        "--smtpskey", metavar="KEYFILE", help="Private key (PEM) for SMTPS; needs --smtpscert."
    )
    parser.add_argument(
        "--tlscert",
        metavar="CERTFILE",
        help="Certificate (PEM) for STARTTLS; needs --tlskey.",
    )
    parser.add_argument(
        "--tlskey", metavar="KEYFILE", help="Private key (PEM) for STARTTLS; needs --tlscert."
    )
    parser.add_argument(
        "--no-requiretls",
        dest="requiretls",
        default=True,
        action="store_false",
        help=(
            "With --tlscert/--tlskey, let clients send mail without STARTTLS "
            "(by default they must issue STARTTLS first)."
        ),
    )
    parser.add_argument(
        "--classic",
        dest="modern",
        default=True,
        action="store_false",
        help=(
            "Offer only aiosmtpd's extensions, with its reply texts. Without it the "
            "server also offers PIPELINING, CHUNKING, BINARYMIME, DSN, "
            "ENHANCEDSTATUSCODES and LIMITS (see docs/server.md)."
        ),
    )
    parser.add_argument(
        "--bare-lf",
        choices=("keep", "reject", "normalize"),
        default="keep",
        help=(
            "A bare LF or CR in a command or a message: keep it (aiosmtpd's way, the "
            "default), reject it (Postfix's smtpd_forbid_bare_newline), or read it as "
            "a line ending. Only CRLF.CRLF ever ends a message."
        ),
    )
    parser.add_argument(
        "--rcpt-limit",
        type=int,
        default=1000,
        metavar="N",
        help="Recipients per message; more get 452 (at least 100, default 1000).",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="Sessions at once; one more is answered 421 and closed (default: no limit).",
    )
    parser.add_argument(
        "--error-limit",
        type=int,
        default=None,
        metavar="N",
        help=(
            "Error replies per session before 421 and close (default: 20, or none with --classic)."
        ),
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help=(
            "The event loop: asyncio (the standard library's), uvloop (built on "
            "libuv; pip install 'smtpwire-server[uvloop]'), or auto, the default: "
            "uvloop when it is installed, else asyncio."
        ),
    )
    parser.add_argument(
        "classargs",
        metavar="CLASSARGS",
        nargs="*",
        default=(),
        help="Arguments for the handler class's from_cli().",
    )
    return parser


def parseargs(
    args: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse and check the command line; every usage error exits with status 2.

    Adds to the namespace: ``host``, ``port``, ``handler_class``, the TLS
    contexts ``ssl_context`` (SMTPS) and ``tls_context`` (STARTTLS), read now
    because key files are often readable by root only, and ``loop_name``
    (``asyncio`` or ``uvloop``, ``--loop auto`` resolved) with ``loop_factory``,
    which makes the server's event loop.
    """
    parser = _parser()
    options = parser.parse_args(args)
    if options.size < 0:
        parser.error(f"Invalid size: {options.size}")
    if options.max_connections is not None and options.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    if options.error_limit is not None and options.error_limit < 1:
        parser.error("--error-limit must be at least 1")
    if options.rcpt_limit < RCPT_LIMIT_FLOOR:
        parser.error(f"--rcpt-limit must be at least {RCPT_LIMIT_FLOOR}")
    options.host, options.port = _parse_listen(parser, options.listen)
    if options.smtpscert is not None and options.tlscert is not None:
        parser.error("--smtpscert and --tlscert cannot be used together")
    options.ssl_context = _tls_context(
        parser, "--smtpscert", "--smtpskey", options.smtpscert, options.smtpskey
    )
    options.tls_context = _tls_context(
        parser, "--tlscert", "--tlskey", options.tlscert, options.tlskey
    )
    options.handler_class = _import_handler_class(parser, options.classpath)
    options.loop_name, options.loop_factory = _event_loop(parser, options.loop)
    return parser, options


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop maker, or None where uvloop cannot be imported (it is an
    optional extra, and there is none for Windows)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _event_loop(
    parser: argparse.ArgumentParser, choice: str
) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """``--loop``, resolved: the loop's name and the function that makes one."""
    if choice == "asyncio":
        return "asyncio", asyncio.new_event_loop
    factory = _uvloop_factory()
    if factory is not None:
        return "uvloop", factory
    if choice == "uvloop":
        # One line, not the usage: the command line is right, the machine lacks uvloop.
        parser.exit(
            2,
            f"{parser.prog}: error: --loop uvloop: uvloop is not installed "
            "(pip install 'smtpwire-server[uvloop]')\n",
        )
    return "asyncio", asyncio.new_event_loop


def _parse_listen(parser: argparse.ArgumentParser, value: str | None) -> tuple[str, int]:
    if not value:
        return DEFAULT_HOST, DEFAULT_PORT
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end >= 0 else "?"
        if end < 0 or (rest and not rest.startswith(":")):
            parser.error(f"Invalid listen address: {value}")
        host, port_text = value[1:end], rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    # More than one colon and no brackets: a bare IPv6 address, default port.
    if not port_text:
        return host or DEFAULT_HOST, DEFAULT_PORT
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        parser.error(f"Invalid port number: {port_text}")
    return host or DEFAULT_HOST, int(port_text)


def _tls_context(
    parser: argparse.ArgumentParser,
    cert_option: str,
    key_option: str,
    certfile: str | None,
    keyfile: str | None,
) -> ssl.SSLContext | None:
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        parser.error(f"{cert_option} and {key_option} must be specified together")
    if not Path(certfile).exists():
        parser.error(f"Cert file {certfile} not found")
    if not Path(keyfile).exists():
        parser.error(f"Key file {keyfile} not found")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        parser.error(f"Cannot load certificate {certfile} with key {keyfile}: {error}")
    return context


def _import_handler_class(parser: argparse.ArgumentParser, classpath: str) -> Any:
    module_name, _, class_name = classpath.rpartition(".")
    if not module_name or not class_name:
        parser.error(f"Invalid handler class path: {classpath} (expected package.module.Class)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        parser.error(f"Cannot import handler class {classpath}: {error}")
    handler_class = getattr(module, class_name, None)
    if not callable(handler_class):
        parser.error(f"Cannot import handler class {classpath}: no class {class_name} there")
    return handler_class


def _build_handler(parser: argparse.ArgumentParser, options: argparse.Namespace) -> Any:
    handler_class = options.handler_class
    from_cli = getattr(handler_class, "from_cli", None)
    if from_cli is None and options.classargs:
        parser.error(f"Handler class {options.classpath} takes no arguments")
    try:
        return handler_class() if from_cli is None else from_cli(parser, *options.classargs)
    except OSError as error:  # e.g. a Maildir the serving user may not create
        parser.exit(1, f"{parser.prog}: error: cannot create the handler: {error}\n")


def _drop_privileges(parser: argparse.ArgumentParser) -> str | None:
    """Become ``nobody`` when running as root; the user name switched to, if any.

    Supplementary groups and the group go first: aiosmtpd changed only the user
    and kept group root.
    """
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    except (KeyError, OSError):
        parser.exit(1, 'Cannot setuid "nobody"; try running with -n option.\n')
    return "nobody"


def _configure_logging(debug: int) -> None:
    logging.basicConfig(
        format="%(asctime)s %(name)s %(levelname)s %(message)s", level=logging.WARNING
    )
    if debug:
        level = logging.INFO if debug == 1 else logging.DEBUG
        logging.getLogger("mail.log").setLevel(level)
        logging.getLogger("mail.debug").setLevel(level)
    if debug >= 3:
        logging.getLogger("asyncio").setLevel(logging.DEBUG)


class _Connections:
    """The server's protocol factory: one SMTP per connection, remembered
    (weakly) so that shutdown can close the connections still open.

    The SMTP factory is set only after the socket is bound and privileges are
    dropped, because the handler is built then.
    """

    def __init__(self, max_connections: int | None = None, *, tls_listener: bool = False) -> None:
        self.factory: Callable[[], SMTP] | None = None
        self.open: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self.max_connections = max_connections
        self.tls_listener = tls_listener

    def __call__(self) -> asyncio.BaseProtocol:
        if over_connection_limit(self.open, self.max_connections):
            return TooBusy()
        if self.factory is None:  # pragma: no cover - the server only starts serving once set
            raise RuntimeError("the SMTP factory is not set")
        try:
            protocol = self.factory()
        except Exception:
            # asyncio reports a failing protocol factory only in debug mode; without
            # this the client would just see the connection closed.
            log.exception("Cannot serve a new connection")
            raise
        admit(self.open, protocol, tls_listener=self.tls_listener)
        return protocol

    def transports(self) -> list[asyncio.BaseTransport]:
        found = (getattr(protocol, "transport", None) for protocol in list(self.open))
        return [transport for transport in found if transport is not None]


def _describe_address(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _startup_line(
    server: asyncio.AbstractServer, options: argparse.Namespace, user: str | None
) -> str:
    sockets: Sequence[socket.socket] = getattr(server, "sockets", ())
    where = ", ".join(_describe_address(sock.getsockname()) for sock in sockets)
    details = [f"handler {options.classpath}"]
    if options.ssl_context is not None:
        details.append("SMTPS")
    if options.tls_context is not None:
        details.append("STARTTLS required" if options.requiretls else "STARTTLS offered")
    if options.loop_name != "asyncio":
        details.append(options.loop_name)
    if user is not None:
        details.append(f"running as {user}")
    program = f"{_program_name()} {_version()}"
    return f"{program} listening on {where} ({'; '.join(details)}); Ctrl-C to stop"


async def _serve_until_signalled(server: asyncio.AbstractServer, startup_line: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows: Ctrl-C raises
            continue
        installed.append(signum)
    try:
        await server.start_serving()
        # Only now: whoever waits for this line may signal us at once.
        print(startup_line, file=sys.stderr, flush=True)
        await stop.wait()
        log.info("Signal received, shutting down")
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _close(server: asyncio.AbstractServer, connections: _Connections) -> None:
    server.close()
    for transport in connections.transports():
        transport.close()
    try:
        await asyncio.wait_for(server.wait_closed(), SHUTDOWN_GRACE)
    except asyncio.TimeoutError:
        log.warning("Connections still open after %s s, cutting them off", SHUTDOWN_GRACE)
    for transport in connections.transports():
        # Looked up, not isinstance(asyncio.WriteTransport): uvloop's transports
        # have the methods without deriving from asyncio's classes.
        abort = getattr(transport, "abort", None)
        if abort is not None and not transport.is_closing():
            abort()


def _bind(
    loop: asyncio.AbstractEventLoop,
    parser: argparse.ArgumentParser,
    options: argparse.Namespace,
    connections: _Connections,
) -> asyncio.AbstractServer:
    try:
        return loop.run_until_complete(
            loop.create_server(
                connections,
                options.host,
                options.port,
                ssl=options.ssl_context,
                start_serving=False,
            )
        )
    except OSError as error:
        where = _describe_address((options.host, options.port))
        parser.exit(1, f"{parser.prog}: error: cannot listen on {where}: {error}\n")


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left (handler coroutines of cut connections), then close
    the loop the way :func:`asyncio.run` does."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def main(args: Sequence[str] | None = None) -> None:
    """Run the server until SIGINT or SIGTERM."""
    parser, options = parseargs(args)
    _configure_logging(options.debug)
    # Ctrl-C before the signal handlers are set, or where they cannot be (Windows).
    with contextlib.suppress(KeyboardInterrupt):
        _run(parser, options)


def _run(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    # The greeting's host name, looked up once rather than with a blocking DNS
    # query per connection, and while the resolver's files and codecs are
    # certainly readable (before switching to nobody).
    hostname = socket.getfqdn()
    loop = options.loop_factory()
    # Current, not only running: handlers written for aiosmtpd may look the loop
    # up with asyncio.get_event_loop() while being built.
    asyncio.set_event_loop(loop)
    loop.set_debug(options.debug >= 3)
    connections = _Connections(
        options.max_connections, tls_listener=options.ssl_context is not None
    )
    try:
        # Bind first: a server started as root may need a port below 1024.
        server = _bind(loop, parser, options, connections)
        try:
            user = _drop_privileges(parser) if options.setuid else None
            # Built as the user that will serve, so that what the handler creates
            # (a Maildir) belongs to that user.
            handler = _build_handler(parser, options)
            connections.factory = partial(
                SMTP,
                handler,
                hostname=hostname,
                data_size_limit=options.size,
                enable_SMTPUTF8=options.smtputf8,
                tls_context=options.tls_context,
                require_starttls=options.tls_context is not None and options.requiretls,
                modern=options.modern,
                bare_lf=options.bare_lf,
                rcpt_limit=options.rcpt_limit,
                error_limit=options.error_limit,
            )
            loop.run_until_complete(
                _serve_until_signalled(server, _startup_line(server, options, user))
            )
        finally:
            loop.run_until_complete(_close(server, connections))
    finally:
        _finish(loop)
