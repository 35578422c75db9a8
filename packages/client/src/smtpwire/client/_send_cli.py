"""``smtpwire-send`` (also ``python -m smtpwire.client send``): a scriptable,
non-interactive sender for people who use swaks, on smtpwire.client.

This module is the entry point only: options in ``_send_options``, the message
in ``_send_message``, one send in ``_send_session``, ``--count`` in
``_send_load``, exit statuses in ``_send_errors``.  Every failure ends here as
one line on stderr and a documented exit status, never a traceback: the
program's users are scripts that branch on the status.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from ._send_errors import ExitStatus, SendFailure
from ._send_load import send_many
from ._send_options import SendOptions, UsageError, parse, wants_quiet
from ._send_output import PROG, Output
from ._send_session import send_one

__all__ = ["ExitStatus", "main", "run"]

_T = TypeVar("_T")


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The console script: ``smtpwire-send --server HOST --from A --to B ...``."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        options = parse(arguments, prog)
    except UsageError as error:
        # Shown even with -q: a command line that cannot run is the caller's bug.
        print(f"{PROG}: usage error: {error} (see --help)", file=sys.stderr)
        return ExitStatus.USAGE
    except KeyboardInterrupt:  # at the password prompt
        return _interrupted(Output(-1 if wants_quiet(arguments) else 0))
    return run(options, Output(options.verbosity))


def run(options: SendOptions, output: Output) -> int:
    if options.transport.insecure:
        output.warning("--insecure: the server's certificate is not checked")
    try:
        if options.count == 1:
            return asyncio.run(_interruptible(send_one(options, output)))
        return asyncio.run(_interruptible(send_many(options, output)))
    except SendFailure as failure:
        output.error(failure.text)
        return failure.status
    except KeyboardInterrupt:
        return _interrupted(output)
    except Exception as error:  # the promise: one line, never a traceback
        output.error(f"unexpected error: {type(error).__name__}: {error}")
        return ExitStatus.ERROR


async def _interruptible(main: Coroutine[Any, Any, _T]) -> _T:
    """``main``, which Ctrl-C cancels (so that its ``finally`` clauses run, e.g.
    --count's summary) and then ends as KeyboardInterrupt; a second Ctrl-C stops
    at once.  Python 3.11's asyncio.run does the same, but 3.10's raises
    KeyboardInterrupt wherever the program happens to be: inside one of the
    pool's tasks, which then died with a traceback."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted or task is None:
            raise KeyboardInterrupt
        interrupted = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
        return await main
    try:
        return await main
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _interrupted(output: Output) -> int:
    output.error("interrupted")
    return 130  # the shell's status for SIGINT


if __name__ == "__main__":
    sys.exit(main())
