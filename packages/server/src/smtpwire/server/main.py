"""The command line, ``smtpwire-server`` or ``python -m smtpwire.server``.

The options are aiosmtpd's, so existing command lines keep working.  Where
aiosmtpd's CLI hurt its users, this one differs:

- ``-s`` defaults to the SMTP class's 33,554,432 bytes (aiosmtpd's CLI had no
  limit although its help promised this one); ``-s 0`` removes the limit.
- Switching to user ``nobody`` happens only when started as root, and only
  after the listening socket is bound (so a root-started server can listen on
  port 25) and the certificates and the handler are set up (a Maildir it made
  is handed to ``nobody``, and one ``nobody`` cannot write is refused at
  start-up); the groups are dropped too.  Started as anyone else, the server
  just runs as that user: ``-n`` is not needed.
- ``-l`` also accepts port 0 and ``[IPv6]:PORT``, and a bare IPv6 address such
  as ``::1`` (aiosmtpd would read ``:`` port 1); the startup line on stderr
  names the address(es) really bound.
- A bad handler class path or certificate is a usage error, not a traceback.
- SIGINT (Ctrl-C) and SIGTERM stop the server: it closes the listening socket,
  lets the transactions in progress end within ``--shutdown-grace``, tells every
  other session ``421 4.3.2`` and exits with status 0 (see ``_shutdown.py``).  A
  second signal during that drain stops it now: the sessions left get the 421
  at once, and the exit status is 0 still.

As in aiosmtpd, :func:`main` runs on the caller's current event loop (made only
if there is none) and returns once that loop is stopped, by a signal or by any
callback; :func:`parseargs` returns the handler already built, as ``handler``.

Beyond aiosmtpd's options, ``--loop`` picks the event loop: asyncio's own, or
uvloop (a drop-in loop built on libuv) when it is installed
(``smtpwire-server[uvloop]``); ``auto`` keeps a current loop the caller set.
``--workers N`` runs N server processes under a supervisor (see
:mod:`smtpwire.server._workers`), and ``--proxy-protocol SECONDS`` expects a
PROXY header (HAProxy) on each connection.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence
from functools import partial

from ._cli_env import apply_environment, current_directory_on_path
from ._cli_logging import configure_logging
from ._cli_options import (
    build_handler,
    build_parser,
    event_loop,
    import_handler_class,
    parse_listen,
    tls_context,
    version,
)
from ._cli_serving import (
    CliSMTP,
    Connections,
    ProxiedCliSMTP,
    ServingLoop,
    Stopping,
    bind,
    check_maildir_for_workers,
    close,
    drop_privileges,
    serve,
    startup_line,
)
from ._modern import RCPT_LIMIT_FLOOR
from ._workers import supervise
from ._workers_child import SupervisorChannel, WorkerSpec, bind_worker
from .auth_limits import AuthFailureLimiter

__all__ = ["main", "parseargs"]

#: The signals that stop the server (the second of them during the drain: at once).
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: A ``--workers`` worker's: SIGINT is ignored (see main()).
WORKER_SIGNALS = (signal.SIGTERM,)


def parseargs(
    args: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse and check the command line; every usage error exits with status 2.

    Adds to the namespace: ``host``, ``port``, ``handler_class``, the TLS
    contexts ``ssl_context`` (SMTPS) and ``tls_context`` (STARTTLS), read now
    because key files are often readable by root only, ``loop_name``
    (``asyncio`` or ``uvloop``, ``--loop auto`` resolved) with ``loop_factory``,
    which makes an event loop of that kind, and last, once everything else is
    known to be right, ``handler``: the handler itself, as aiosmtpd's does.
    """
    parser = build_parser()
    apply_environment(parser)  # SMTPWIRE_* variables: the options' defaults
    options = parser.parse_args(args)
    if options.size < 0:
        parser.error(f"Invalid size: {options.size}")
    if options.max_connections is not None and options.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    if options.error_limit is not None and options.error_limit < 1:
        parser.error("--error-limit must be at least 1")
    if options.rcpt_limit < RCPT_LIMIT_FLOOR:
        parser.error(f"--rcpt-limit must be at least {RCPT_LIMIT_FLOOR}")
    options.host, options.port = parse_listen(parser, options.listen)
    if options.smtpscert is not None and options.tlscert is not None:
        parser.error("--smtpscert and --tlscert cannot be used together")
    options.ssl_context = tls_context(
        parser, "--smtpscert", "--smtpskey", options.smtpscert, options.smtpskey
    )
    options.tls_context = tls_context(
        parser, "--tlscert", "--tlskey", options.tlscert, options.tlskey
    )
    options.worker_spec = (
        None if options.worker_spec is None else WorkerSpec.loads(parser, options.worker_spec)
    )
    current_directory_on_path()  # -c finds ./module.py from a console script too
    options.handler_class = import_handler_class(parser, options.classpath)
    options.loop_name, options.loop_factory = event_loop(parser, options.loop)
    options.handler = build_handler(parser, options)
    return parser, options


def _configure_logging(debug: int, log_format: str = "text") -> None:
    configure_logging(debug, log_format)


def main(args: Sequence[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, or until the event loop is stopped."""
    parser, options = parseargs(args)
    if options.worker_spec is not None and sys.platform != "win32":
        # Ctrl-C at a terminal signals the whole process group, the workers too;
        # the supervisor passes it on as SIGTERM, which a worker that had counted
        # the SIGINT would take for a second signal ("stop now") and not drain.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _configure_logging(options.debug, options.log_format)
    # Ctrl-C before the signal handlers are set, or where they cannot be (Windows).
    with contextlib.suppress(KeyboardInterrupt):
        if options.workers > 1 and options.worker_spec is None:
            if options.setuid:
                check_maildir_for_workers(parser, options.handler)
            status = supervise(parser, options, sys.argv[1:] if args is None else list(args))
            if status:
                raise SystemExit(status)
            return
        _run(parser, options)


def _run(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    # The greeting's host name, looked up once rather than with a blocking DNS
    # query per connection, and while the resolver's files and codecs are
    # certainly readable (before switching to nobody).
    hostname = socket.getfqdn()
    # For the startup line, likewise: nobody may not be able to read the
    # installation's metadata (a Python under /root), which would make it "unknown".
    release = version()
    serving = ServingLoop(options.loop, options.loop_factory)
    loop = serving.loop
    stopping: Stopping | None = None
    try:
        if options.debug >= 3:
            loop.set_debug(True)
        connections = Connections(options.max_connections, implicit_tls=options.ssl_context)
        # Bind first: a server started as root may need a port below 1024.
        spec: WorkerSpec | None = options.worker_spec
        if spec is None:
            server = bind(loop, parser, options, connections)
            channel = None
        else:
            server = bind_worker(loop, parser, options, connections, spec)
            channel = SupervisorChannel(loop, spec.channel)
        stopping = Stopping(
            loop,
            # Not main.partial, which suites patch (see below).
            lambda: close(server, connections, options.shutdown_grace),
            connections.drain,
            # A worker's orders come from its supervisor, by SIGTERM (see main()).
            WORKER_SIGNALS if spec is not None else SIGNALS,
        )
        try:
            user = drop_privileges(parser, options.handler) if options.setuid else None
            # Looked up here, as aiosmtpd's main() does: suites patch main.partial.
            connections.factory = partial(
                CliSMTP if options.proxy_protocol is None else ProxiedCliSMTP,
                options.handler,
                drain=connections.drain,
                proxy_protocol_timeout=options.proxy_protocol,
                hostname=hostname,
                data_size_limit=options.size,
                # Part of the modern set; --classic keeps aiosmtpd's -u.
                enable_SMTPUTF8=options.smtputf8 or options.modern,
                tls_context=options.tls_context,
                require_starttls=options.tls_context is not None and options.requiretls,
                modern=options.modern,
                bare_lf=options.bare_lf,
                rcpt_limit=options.rcpt_limit,
                error_limit=options.error_limit,
                # Password guessing across sessions (per worker process).
                auth_failure_limiter=AuthFailureLimiter() if options.modern else None,
            )
            line = startup_line(server, options, loop, user, release)
            serve(loop, server, line, None if channel is None else channel.announce, stopping)
        finally:
            # The graceful stop a signal began (and may be over), or begun now: the
            # loop was stopped some other way.  A signal meanwhile means "stop now".
            loop.run_until_complete(stopping.begin())
            if channel is not None:
                channel.close()
    finally:
        try:
            if stopping is not None:
                # A loop made here is closed next, and the process is about to end:
                # late signals are ignored.  The caller's own loop gets its handlers back.
                stopping.remove(ignore_late=serving.owned)
        finally:
            serving.finish()
