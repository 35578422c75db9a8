"""The command line's side of the web inbox: ``--web``, ``--store``,
``--max-messages`` and ``--web-auth`` checked, the inbox built (as the handler,
or beside the one ``-c`` names), and the web server started in the SMTP
server's event loop."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
from typing import Any, Final

from ._database import StoreError
from ._inbox import Inbox, StoringHandler

WEB_HOST: Final = "127.0.0.1"
WEB_PORT: Final = 8026
WEB_DEFAULT: Final = f"{WEB_HOST}:{WEB_PORT}"
INBOX_CLASSPATH: Final = "smtpwire.server.inbox.Inbox"
AUTH_VARIABLE: Final = "SMTPWIRE_WEB_AUTH"


def wanted(options: argparse.Namespace) -> bool:
    """Whether any of the inbox's options was given."""
    return any(
        getattr(options, name, None) is not None
        for name in ("web", "store", "max_messages", "web_auth")
    )


def check_options(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    """Check the inbox's options; set ``web_host``, ``web_port`` and ``web_auth``."""
    if options.web is None:
        parser.error("--store, --max-messages and --web-auth need --web")
    if options.workers > 1:
        parser.error("--web needs a single process: each worker would keep an inbox of its own")
    if options.max_messages is not None and options.max_messages < 1:
        parser.error("--max-messages must be at least 1")
    try:
        import aiohttp  # noqa: F401, PLC0415 - only to know it is there
    except ImportError:
        parser.exit(
            2,
            f"{parser.prog}: error: --web: aiohttp is not installed "
            "(pip install 'smtpwire-server[web]')\n",
        )
    options.web_host, options.web_port = _address(parser, options.web)
    credentials = options.web_auth or os.environ.get(AUTH_VARIABLE) or None
    options.web_auth = None
    if credentials is not None:
        user, colon, password = credentials.partition(":")
        if not user or not colon or not password:
            parser.error(f"--web-auth (or {AUTH_VARIABLE}) must be USER:PASSWORD")
        options.web_auth = (user, password)


def _address(parser: argparse.ArgumentParser, value: str) -> tuple[str, int]:
    # Imported here: _cli_options imports this module while it builds the handler.
    from smtpwire.server._cli_options import DEFAULT_PORT, parse_listen  # noqa: PLC0415

    host, port = parse_listen(parser, value)
    # parse_listen fills in SMTP's port; the web inbox's own default is another.
    if port == DEFAULT_PORT and not value.endswith(str(DEFAULT_PORT)):
        port = WEB_PORT
    if host == "localhost" and value.startswith(":"):
        host = WEB_HOST
    return host, port


def build_handler(
    parser: argparse.ArgumentParser, options: argparse.Namespace, handler: Any | None
) -> Any:
    """The inbox (``options.inbox``), and the handler the server gets: the inbox
    itself, or ``handler`` (from ``-c``) with the inbox storing what it accepts."""
    try:
        inbox = Inbox(options.store, max_messages=options.max_messages)
    except (OSError, sqlite3.Error, StoreError) as error:
        parser.exit(1, f"{parser.prog}: error: cannot open the store {options.store}: {error}\n")
    options.inbox = inbox
    if handler is None:
        options.classpath = INBOX_CLASSPATH
        return inbox
    return StoringHandler(inbox, handler)


def start_web(
    loop: asyncio.AbstractEventLoop, parser: argparse.ArgumentParser, options: argparse.Namespace
) -> Any:
    """The web inbox, listening (before the switch to ``nobody``, like SMTP)."""
    from ._web import WebInbox  # noqa: PLC0415 - aiohttp is loaded only to serve

    web = WebInbox(options.inbox.store, options.web_host, options.web_port, auth=options.web_auth)
    try:
        loop.run_until_complete(web.start())
    except OSError as error:
        options.inbox.close()
        where = f"[{options.web_host}]" if ":" in options.web_host else options.web_host
        parser.exit(
            1,
            f"{parser.prog}: error: --web: cannot listen on {where}:{options.web_port}: {error}\n",
        )
    return web
