"""``smtpwire-send``'s command line: the argument parser and the checked options.

Everything a user can get wrong is found here, before any connection is opened,
so that a typo costs exit status 2 and one line, never a half-run session.
Files named on the command line (body, raw data, attachments, certificates) are
read or checked here too, for the same reason.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from .email import parse_address

__all__ = ["PASSWORD_VARIABLE", "Content", "SendOptions", "Transport", "UsageError", "parse"]

PASSWORD_VARIABLE: Final = "SMTPWIRE_PASSWORD"  # noqa: S105 - a variable name, not a secret
MECHANISMS: Final = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2")
AUTO: Final = "AUTO"  # --auth without a mechanism: the best one both sides know
DEFAULT_SUBJECT: Final = "smtpwire-send test"
DEFAULT_TIMEOUT: Final = 30.0

TLSMode = Literal["auto", "starttls", "tls", "none"]


class UsageError(Exception):
    """A command line that cannot be run; exit status 2."""


@dataclass(frozen=True)
class Transport:
    host: str
    port: int
    tls: TLSMode
    cacert: str | None
    insecure: bool
    client_cert: str | None
    client_key: str | None
    ehlo: str | None
    lmtp: bool
    pipelining: bool | None  # None: when offered; True: required; False: never
    bdat: bool
    smtputf8: bool
    timeout: float


@dataclass(frozen=True)
class Credentials:
    mechanism: str  # one of MECHANISMS, or AUTO
    user: str
    password: str


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes


@dataclass(frozen=True)
class Content:
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    headers: tuple[tuple[str, str], ...]
    body: str | None = None
    html: str | None = None
    raw: bytes | None = None  # --data / -: sent as given
    attachments: tuple[Attachment, ...] = field(default=())

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


@dataclass(frozen=True)
class SendOptions:
    transport: Transport
    content: Content
    credentials: Credentials | None
    count: int
    concurrency: int
    verbosity: int  # -1 quiet, 0 normal, 1 transcript, 2 transcript with message data


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised rather than exiting: the caller
    prints it (or not, with -q) and owns the exit status."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser(prog: str = "smtpwire-send") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Send one message (or --count of them) through an SMTP or LMTP server.",
        epilog="Exit status: 0 every recipient accepted, 1 other error, 2 usage, "
        "3 connection or TLS, 4 authentication, 5 recipient refused, "
        "6 message refused, 7 server lacks a required extension.",
    )
    _add_message_arguments(parser)
    _add_transport_arguments(parser)
    _add_run_arguments(parser)
    return parser


def _add_message_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("message")
    group.add_argument(
        "--from", dest="sender", required=True, metavar="ADDRESS",
        help="the envelope sender (MAIL FROM), also the From header ('': MAIL FROM:<>)",
    )  # fmt: skip
    for name, shown in (("--to", "in To"), ("--cc", "in Cc"), ("--bcc", "in no header")):
        group.add_argument(
            name, action="append", default=[], metavar="ADDRESS",
            help=f"a recipient, {shown} (repeatable; 'a@x,b@y' gives two)",
        )  # fmt: skip
    group.add_argument("--subject", default=DEFAULT_SUBJECT, help=f"default: {DEFAULT_SUBJECT!r}")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--body", metavar="TEXT", help="the body text")
    source.add_argument("--body-file", metavar="FILE", help="the body text ('-': stdin)")
    source.add_argument("--data", metavar="FILE", help="a whole raw message ('-': stdin)")
    group.add_argument("stdin", nargs="?", choices=["-"], help="same as --data -")
    group.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="an extra header, replacing a generated one of that name (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--attach", action="append", default=[], metavar="FILE",
        help="attach a file, its type guessed from its name (repeatable)",
    )  # fmt: skip
    group.add_argument("--html", metavar="FILE", help="an HTML alternative of the body")


def _add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server", default="localhost", metavar="HOST[:PORT]",
        help="default: localhost; the port: 25, 465 with --tls, 24 with --lmtp",
    )  # fmt: skip
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--starttls", dest="tls", action="store_const", const="starttls",
        help="require STARTTLS (default: use it when the server offers it)",
    )  # fmt: skip
    tls.add_argument(
        "--tls", dest="tls", action="store_const", const="tls",
        help="TLS from the first octet (implicit TLS, port 465)",
    )  # fmt: skip
    tls.add_argument(
        "--no-tls", dest="tls", action="store_const", const="none",
        help="never TLS, even when the server offers STARTTLS",
    )  # fmt: skip
    group.add_argument(
        "--cacert", metavar="FILE", help="trust the CAs in FILE (PEM) instead of the system's"
    )
    group.add_argument(
        "--insecure", action="store_true",
        help="do not check the server's certificate or name (warned about)",
    )  # fmt: skip
    group.add_argument("--client-cert", metavar="FILE", help="a client certificate (PEM)")
    group.add_argument(
        "--client-key", metavar="FILE", help="its private key, unless in --client-cert's file"
    )
    group.add_argument(
        "--auth", nargs="?", const=AUTO, type=str.upper, metavar="MECHANISM",
        help=f"authenticate: {', '.join(MECHANISMS)}; alone, or implied by --user: "
        "the best mechanism both sides know",
    )  # fmt: skip
    group.add_argument("--user", help="the user name to authenticate as")
    group.add_argument(
        "--password",
        help=f"default: ${PASSWORD_VARIABLE}, else asked for on a terminal (never echoed)",
    )
    group.add_argument(
        "--ehlo", metavar="NAME", help="the name to greet with (default: this host's FQDN)"
    )
    group.add_argument(
        "--lmtp", action="store_true", help="speak LMTP (LHLO, one reply per recipient)"
    )
    group.add_argument(
        "--pipelining", action=argparse.BooleanOptionalAction, default=None,
        help="require PIPELINING / never pipeline (default: when the server offers it)",
    )  # fmt: skip
    group.add_argument(
        "--bdat", action="store_true", help="send the message with BDAT (requires CHUNKING)"
    )
    group.add_argument(
        "--smtputf8", action="store_true",
        help="require SMTPUTF8 (default: asked for when an address is not ASCII)",
    )  # fmt: skip
    group.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"for the connection and each reply (default: {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument(
        "--count", type=int, default=1, help="send the message COUNT times (load generation)"
    )
    group.add_argument(
        "--concurrency", type=int, default=1,
        help="over at most this many connections at once (a pool)",
    )  # fmt: skip
    loudness = group.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="print the SMTP transcript, secrets masked (-vv: the message data too)",
    )  # fmt: skip
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing; the exit status tells"
    )


def wants_quiet(argv: Sequence[str]) -> bool:
    """Whether -q was asked for, known even when the rest does not parse."""
    return any(argument in ("-q", "--quiet") for argument in argv)


def parse(argv: Sequence[str], prog: str = "smtpwire-send") -> SendOptions:
    arguments = build_parser(prog).parse_args(list(argv))
    transport = _transport(arguments)
    content = _content(arguments)
    count, concurrency = _load(arguments)
    return SendOptions(
        transport=transport,
        content=content,
        credentials=_credentials(arguments),
        count=count,
        concurrency=concurrency,
        verbosity=-1 if arguments.quiet else min(arguments.verbose, 2),
    )


# --- the connection ------------------------------------------------------------------------


def split_server(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address
    (more than one colon and no brackets: all of it is the host)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise UsageError(f"--server {text!r}: expected [IPV6]:PORT")
        return host, _port(text, rest[1:]) if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not host:
            raise UsageError(f"--server {text!r}: no host")
        return host, _port(text, port)
    if not text:
        raise UsageError("--server: no host")
    return text, None


def _port(server: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"--server {server!r}: the port must be a number from 1 to 65535")
    return int(text)


def _transport(arguments: argparse.Namespace) -> Transport:
    host, port = split_server(arguments.server)
    tls: TLSMode = arguments.tls or "auto"
    if port is None:
        # The well-known ports, as swaks picks them.
        port = 24 if arguments.lmtp else 465 if tls == "tls" else 25
    if arguments.client_key and not arguments.client_cert:
        raise UsageError("--client-key needs --client-cert")
    for option, path in (
        ("--cacert", arguments.cacert),
        ("--client-cert", arguments.client_cert),
        ("--client-key", arguments.client_key),
    ):
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"{option} {path}: no such file")
    if tls == "none" and (arguments.cacert or arguments.insecure or arguments.client_cert):
        raise UsageError("--no-tls cannot be combined with certificate options")
    if not arguments.timeout > 0:
        raise UsageError("--timeout must be positive")
    return Transport(
        host=host, port=port, tls=tls, cacert=arguments.cacert, insecure=arguments.insecure,
        client_cert=arguments.client_cert, client_key=arguments.client_key,
        ehlo=arguments.ehlo, lmtp=arguments.lmtp, pipelining=arguments.pipelining,
        bdat=arguments.bdat, smtputf8=arguments.smtputf8, timeout=arguments.timeout,
    )  # fmt: skip


def _load(arguments: argparse.Namespace) -> tuple[int, int]:
    count, concurrency = arguments.count, arguments.concurrency
    if count < 1 or concurrency < 1:
        raise UsageError("--count and --concurrency must be at least 1")
    return count, min(concurrency, count)


# --- credentials ----------------------------------------------------------------------------


def _credentials(arguments: argparse.Namespace) -> Credentials | None:
    mechanism: str | None = arguments.auth
    if mechanism is None and arguments.user is None:
        if arguments.password is not None:
            raise UsageError("--password needs --user")
        return None
    mechanism = mechanism or AUTO
    if mechanism != AUTO and mechanism not in MECHANISMS:
        raise UsageError(f"--auth {mechanism}: expected one of {', '.join(MECHANISMS)}")
    if arguments.user is None:
        raise UsageError("--auth needs --user")
    return Credentials(mechanism, arguments.user, _password(arguments.password))


def _password(given: str | None) -> str:
    """The password from --password, else the environment, else a prompt that
    does not echo; a script without any of them fails rather than hang."""
    if given is not None:
        return given
    from_environment = os.environ.get(PASSWORD_VARIABLE)
    if from_environment is not None:
        return from_environment
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass("Password: ")
    raise UsageError(f"no password: give --password, set {PASSWORD_VARIABLE} or run on a terminal")


# --- the message ----------------------------------------------------------------------------


def _addresses(option: str, values: Sequence[str]) -> tuple[str, ...]:
    """Each value checked as one address; a plain ``a@x,b@y`` list is split as
    swaks splits it (not when quotes or angle brackets may hold a comma)."""
    found: list[str] = []
    for value in values:
        parts = [value] if any(c in value for c in '"<') else value.split(",")
        for part in (part.strip() for part in parts):
            try:
                parse_address(part)
            except ValueError as error:
                raise UsageError(f"{option}: {error}") from None
            if part:
                found.append(part)
    return tuple(found)


def _content(arguments: argparse.Namespace) -> Content:
    sender = _addresses("--from", [arguments.sender])
    to = _addresses("--to", arguments.to)
    cc = _addresses("--cc", arguments.cc)
    bcc = _addresses("--bcc", arguments.bcc)
    if not (to or cc or bcc):
        raise UsageError("no recipient: give --to, --cc or --bcc")
    raw = _raw_message(arguments)
    if raw is not None and (arguments.attach or arguments.html):
        raise UsageError("--attach and --html build a message: not with --data")
    return Content(
        sender=sender[0] if sender else "",
        to=to, cc=cc, bcc=bcc,
        subject=arguments.subject,
        headers=tuple(_header(text) for text in arguments.header),
        body=_body(arguments),
        html=None if arguments.html is None else _read_text("--html", arguments.html),
        raw=raw,
        attachments=tuple(_attachment(path) for path in arguments.attach),
    )  # fmt: skip


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c.isspace() or not c.isprintable() for c in name):
        raise UsageError(f"--header {text!r}: expected 'Name: value'")
    if any(c in value for c in "\r\n\x00"):
        raise UsageError(f"--header {name}: the value holds a line break")
    return name, value.strip()


def _body(arguments: argparse.Namespace) -> str | None:
    if arguments.body is not None:
        return str(arguments.body)
    if arguments.body_file is not None:
        return _read_text("--body-file", arguments.body_file)
    return None


def _raw_message(arguments: argparse.Namespace) -> bytes | None:
    if arguments.stdin is not None:
        if arguments.data is not None or arguments.body is not None or arguments.body_file:
            raise UsageError("'-' (the message on stdin) is a message source of its own")
        return _read_bytes("-", "-")
    if arguments.data is not None:
        return _read_bytes("--data", arguments.data)
    return None


def _attachment(path: str) -> Attachment:
    return Attachment(Path(path).name, _read_bytes("--attach", path))


def _read_bytes(option: str, path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"{option} {path}: {error.strerror or error}") from None


def _read_text(option: str, path: str) -> str:
    data = _read_bytes(option, path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{option} {path}: not UTF-8 text") from None
