"""``--count N --concurrency K``: load generation through
:class:`~smtpwire.client.pool.SMTPPool`, K workers taking message numbers in
turn (no task per message, so memory does not grow with N), a progress bar for
a person watching and a one-line summary.

A connection or authentication failure stops the run: every further message
would fail the same way (and each could wait for the whole timeout).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ._send_errors import (
    ExitStatus,
    SendFailure,
    auth_failure,
    connect_failure,
    refused_recipients,
    send_failure,
)
from ._send_options import SendOptions
from ._send_output import Output, Progress
from ._send_session import client_factory, client_options, send_with, server_address
from .errors import SMTPAuthenticationError, SMTPConnectError, SMTPException
from .pool import SMTPPool

__all__ = ["send_many"]

_STOPPING = (ExitStatus.CONNECTION, ExitStatus.AUTHENTICATION)


@dataclass
class _Run:
    count: int
    where: str  # the server, for error lines
    output: Output
    progress: Progress | None
    next_index: int = 0
    sent: int = 0
    refused: int = 0
    failed: int = 0
    stopped: bool = False
    first: tuple[int, SendFailure] | None = None

    @property
    def done(self) -> int:
        return self.sent + self.refused + self.failed

    def take(self) -> int | None:
        if self.stopped or self.next_index >= self.count:
            return None
        self.next_index += 1
        return self.next_index - 1

    def succeeded(self) -> None:
        self.sent += 1
        self._advance()

    def record(self, index: int, failure: SendFailure) -> None:
        if failure.status in (ExitStatus.RECIPIENT_REFUSED, ExitStatus.MESSAGE_REFUSED):
            self.refused += 1
        else:
            self.failed += 1
        if failure.status in _STOPPING:
            self.stopped = True
        if self.first is None or index < self.first[0]:
            self.first = (index, failure)
        if self.output.transcript:  # -v: every failure, not only the first
            self.output.error(f"message {index + 1}: {failure.text}")
        self._advance()

    def _advance(self) -> None:
        if self.progress is not None:
            self.progress.update(self.done)


async def send_many(options: SendOptions, output: Output) -> ExitStatus:
    # No transcript: the connections' lines would interleave.
    quiet = Output(min(output.verbosity, 0), output.stdout, output.stderr)
    pool = SMTPPool(
        max_connections=options.concurrency,
        client_factory=client_factory(options.transport, quiet),
        **client_options(options.transport, options.credentials),
    )
    where = server_address(options.transport)
    run = _Run(options.count, where, output, output.progress(options.count))
    started = time.monotonic()
    try:
        async with pool:
            workers = [_worker(pool, options, run) for _ in range(options.concurrency)]
            await asyncio.gather(*workers)
    finally:
        # Also when Ctrl-C cancelled the run: what was done up to then (the sends
        # already on the wire have ended, the pool waited for them).
        if run.progress is not None:
            run.progress.finish()
        output.result(_summary(run, time.monotonic() - started))
    if run.first is None:
        return ExitStatus.OK
    index, failure = run.first
    if not output.transcript:
        output.error(f"message {index + 1}: {failure.text}")
    return failure.status


async def _worker(pool: SMTPPool, options: SendOptions, run: _Run) -> None:
    while (index := run.take()) is not None:
        try:
            refused, _reply = await send_with(pool, options)
        except (SMTPException, OSError, ValueError) as error:
            run.record(index, _classify(error, run.where))
            continue
        if refused:
            run.record(index, refused_recipients(refused))
        else:
            run.succeeded()


def _classify(error: Exception, where: str) -> SendFailure:
    """The pool connects, logs in and sends in one call: the exception's class
    says which step failed."""
    if isinstance(error, SMTPConnectError):
        return connect_failure(error, where)
    if isinstance(error, SMTPAuthenticationError):
        return auth_failure(error)
    return send_failure(error)


def _summary(run: _Run, elapsed: float) -> str:
    """Every message counted once: sent, refused, failed, never begun (skipped:
    the run stopped first) or, after Ctrl-C, unfinished (its caller was
    interrupted while it was under way: it may have been delivered)."""
    rate = run.sent / elapsed if elapsed > 0 else 0.0
    skipped = run.count - run.next_index
    unfinished = run.next_index - run.done
    tail = f", skipped {skipped}" if skipped else ""
    tail += f", unfinished {unfinished}" if unfinished else ""
    return (
        f"sent {run.sent}, refused {run.refused}, failed {run.failed}{tail} "
        f"in {elapsed:.2f} s ({rate:.1f} msg/s)"
    )
