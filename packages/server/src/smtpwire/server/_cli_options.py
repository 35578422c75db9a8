"""The command line's options: the parser, and the checks and conversions of
what it parsed (the listen address, TLS contexts, the handler class, the event
loop).  :func:`smtpwire.server.main.parseargs` puts them together."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import inspect
import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._cli_env import DOCS
from ._cli_logging import LOG_FORMATS
from .smtp import DATA_SIZE_DEFAULT

PROGRAM = "smtpwire-server"
DEFAULT_HANDLER = "smtpwire.server.handlers.Debugging"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8025
#: --shutdown-grace's default (the value _cli_serving.SHUTDOWN_GRACE also has).
SHUTDOWN_GRACE_DEFAULT = 10.0

_PORT = re.compile(r"[0-9]{1,5}")

#: ``--loop``: ``auto`` is uvloop when it can be imported, else asyncio's own.
LOOPS = ("auto", "asyncio", "uvloop")


def program_name() -> str:
    # ``python -m smtpwire.server`` runs __main__.py; name the command instead.
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return PROGRAM if not name or name.startswith("__main__") else name


def version() -> str:
    try:
        return importlib.metadata.version("smtpwire-server")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name(), description="An RFC 5321 SMTP server with extensions."
    )
    parser.add_argument("-v", "--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument(
        "-n",
        "--nosetuid",
        dest="setuid",
        default=True,
        action="store_false",
        help=(
            "Stay the user that started the server.  Without it, a server started "
            "as root switches to user 'nobody' once its socket is bound and its "
            "certificates and handler are set up (a Mailbox's Maildir is handed to "
            "nobody, and one nobody cannot write is refused at start-up); a server "
            "started as any other user never switches, so the flag only matters for "
            "root."
        ),
    )
    parser.add_argument(
        "-c",
        "--class",
        dest="classpath",
        metavar="CLASSPATH",
        default=DEFAULT_HANDLER,
        action=_ClassPath,
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
        help=(
            "Enable the SMTPUTF8 extension (RFC 6531).  Part of the modern set, the "
            "default: only --classic needs it."
        ),
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
            "address in brackets to give a port ([::1]:8025), or leave the port "
            "after its last colon (::0:8025).  Port 0 picks a free port, which the "
            "startup line on stderr reports."
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
            "ENHANCEDSTATUSCODES, LIMITS and SMTPUTF8, and answers a failing handler "
            f"451 without the error's text (see {DOCS}server.md)."
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
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help=(
            "Server processes sharing the listening socket (auto: one per CPU; "
            "default 1).  A supervising process restarts a worker that dies and "
            "stops them all on SIGTERM or SIGINT.  Each worker has its own handler: "
            f"see {DOCS}server.md#scaling-workers-and-haproxy"
        ),
    )
    parser.add_argument(
        "--proxy-protocol",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=(
            "Expect a PROXY protocol header (v1 or v2, e.g. HAProxy's send-proxy-v2) "
            "within SECONDS before the greeting; the client's address it carries "
            "becomes the session's peer (X-Peer).  Off by default: only for a server "
            "that nothing but the proxy can reach."
        ),
    )
    parser.add_argument(
        "--shutdown-grace",
        type=_seconds,
        default=SHUTDOWN_GRACE_DEFAULT,
        metavar="SECONDS",
        help=(
            "On SIGTERM or SIGINT: stop accepting, let the transactions in progress "
            f"finish for up to SECONDS (default {SHUTDOWN_GRACE_DEFAULT:g}), then answer "
            "the sessions left '421 4.3.2' and close them.  A message is stored whole "
            "or refused, never half."
        ),
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help=(
            "How log lines on stderr look: text (the default) or json, one object "
            f"per line (see {DOCS}server.md#logging)."
        ),
    )
    web = parser.add_argument_group(
        "web inbox", f"Keep every message and show it over HTTP (see {DOCS}inbox.md)."
    )
    web.add_argument(
        "--web",
        metavar="[HOST][:PORT]",
        nargs="?",
        const="127.0.0.1:8026",
        default=None,
        help=(
            "Serve the web inbox and its API (mailpit's v1) on HOST:PORT, default "
            "127.0.0.1:8026, in the same process.  The handler then stores every "
            "message (with -c, the given handler decides and what it accepts is "
            "stored too).  Needs aiohttp: pip install 'smtpwire-server[web]'."
        ),
    )
    web.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help="Keep the messages in this SQLite file (made if absent); default: in memory.",
    )
    web.add_argument(
        "--max-messages",
        type=int,
        default=None,
        metavar="N",
        help="Keep at most N messages: the oldest are deleted as new ones arrive.",
    )
    web.add_argument(
        "--web-auth",
        metavar="USER:PASSWORD",
        default=None,
        help=(
            "Ask for this user and password (HTTP basic auth); default: the "
            "SMTPWIRE_WEB_AUTH variable, else none.  Bound beyond loopback without "
            "it, the server warns on stderr."
        ),
    )
    # Internal: how a worker started by --workers finds its sockets and its supervisor.
    parser.add_argument("--worker-spec", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "classargs",
        metavar="CLASSARGS",
        nargs="*",
        default=(),
        help="Arguments for the handler class's from_cli().",
    )
    return parser


class _ClassPath(argparse.Action):
    """``-c``: also notes that it was given, so that ``--web`` keeps the handler
    named rather than replacing the default with the inbox."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace.classpath = values
        namespace.classpath_given = True


def _workers(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("there must be at least 1 worker")
    return count


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop maker, or None where uvloop cannot be imported (it is an
    optional extra, and there is none for Windows)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def event_loop(
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


def parse_listen(parser: argparse.ArgumentParser, value: str | None) -> tuple[str, int]:
    """``[HOST][:PORT]``, split at the last colon as aiosmtpd does (``::0:25`` is
    ``::0`` port 25), or ``[IPv6]:PORT``.  Where that split leaves no usable host
    (``::1``, ``fe80::1``), the whole value is an IPv6 address on the default
    port: aiosmtpd would try to listen on host ``:`` or ``fe80:`` and fail."""
    if not value:
        return DEFAULT_HOST, DEFAULT_PORT
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end >= 0 else "?"
        if end < 0 or (rest and not rest.startswith(":")):
            parser.error(f"Invalid listen address: {value}")
        host, port_text = value[1:end], rest[1:]
    elif ":" not in value:
        host, port_text = value, ""
    else:
        host, _, port_text = value.rpartition(":")
        if ":" in host and not _is_ipv6(host):
            host, port_text = value, ""
    if not port_text:
        return host or DEFAULT_HOST, DEFAULT_PORT
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        parser.error(f"Invalid port number: {port_text}")
    return host or DEFAULT_HOST, int(port_text)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def tls_context(
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


def import_handler_class(parser: argparse.ArgumentParser, classpath: str) -> Any:
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
    if inspect.isabstract(handler_class):
        # Message, AsyncMessage: bases to subclass (calling one is a TypeError).
        missing = ", ".join(sorted(getattr(handler_class, "__abstractmethods__", ())))
        parser.error(
            f"Cannot use handler class {classpath}: it is abstract "
            f"(subclass it and implement {missing})"
        )
    return handler_class


def build_handler(parser: argparse.ArgumentParser, options: argparse.Namespace) -> Any:
    """The handler, made while parsing as aiosmtpd does (``parseargs()`` returns it
    as ``handler``), so still as the user who started the server: whatever it
    opens (a Maildir) is opened before any switch to ``nobody``.

    A ``TypeError`` from ``from_cli()`` propagates, as in aiosmtpd.
    """
    if not any(getattr(options, name, None) is not None for name in _INBOX_OPTIONS):
        return _build_named_handler(parser, options)
    # Imported only for --web and its kin: a plain server never loads the inbox.
    from .inbox import _cli as web_inbox  # noqa: PLC0415

    web_inbox.check_options(parser, options)
    if not getattr(options, "classpath_given", False):
        return web_inbox.build_handler(parser, options, None)
    return web_inbox.build_handler(parser, options, _build_named_handler(parser, options))


_INBOX_OPTIONS = ("web", "store", "max_messages", "web_auth")


def _build_named_handler(parser: argparse.ArgumentParser, options: argparse.Namespace) -> Any:
    handler_class = options.handler_class
    from_cli = getattr(handler_class, "from_cli", None)
    if from_cli is None and options.classargs:
        # aiosmtpd 1.4.6's text exactly (suites match on it): it names the module.
        module = options.classpath.rpartition(".")[0]
        parser.error(f"Handler class {module} takes no arguments")
    try:
        return handler_class() if from_cli is None else from_cli(parser, *options.classargs)
    except OSError as error:  # e.g. a Maildir that cannot be created
        parser.exit(1, f"{parser.prog}: error: cannot create the handler: {error}\n")
