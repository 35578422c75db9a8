"""Pipelining across messages for :class:`~smtpwire.client.pool.SMTPPool`.

RFC 2920 section 3.1 lets the end of one message's content start a group: the
final ``.`` of message k, then MAIL, every RCPT and DATA of message k+1 go out in
one write, and their replies come back together.  A connection with messages
queued behind each other then costs one write and one round trip per message
instead of two.

Each caller still gets exactly what a plain :class:`~smtpwire.client.smtp.SMTP`
would have given it: a message is settled by its own replies only (a refused
MAIL of k+1 never touches k), a message whose final reply was not read is an
error (never resent: it may have been delivered), and a message whose commands
were written on a connection that then broke fails with it (nothing is sent
twice).  Messages that cannot be pipelined (see :func:`transaction_for`) go
through ``SMTP.sendmail`` on the same connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smtpwire.common.replies import SMTPReply

from ._base import Transaction
from ._payload import Payload
from .email import prepare_message
from .errors import (
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .lmtp import LMTP
from .response import SMTPResponse
from .smtp import SMTP

__all__ = ["Job", "JobQueue", "Result", "serve"]

Result = tuple[dict[str, SMTPResponse], str]
# Refusals leave the connection in step (sendmail sent RSET); anything else may not.
_REFUSALS = (SMTPResponseException, SMTPRecipientsRefused, SMTPNotSupported, ValueError)
_IN_MEMORY = (str, bytes, bytearray, memoryview)
_TAKEN = (250, 251)  # a recipient's acceptance (251: will forward)


@dataclass(eq=False, slots=True)
class Job:
    """One caller's send, waiting in the pool's queue.  ``message_headers`` marks a
    send_message: its envelope is worked out once a connection tells what the
    server supports, and the job then becomes a plain sendmail."""

    sender: str | None
    recipients: str | Sequence[str] | None
    message: Any
    mail_options: list[str] | None
    rcpt_options: list[str] | None
    message_headers: bool
    future: asyncio.Future[Result] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def succeed(self, result: Result) -> None:
        if not self.future.done():  # a caller cancelled meanwhile drops its result
            self.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def prepare(self, client: SMTP) -> None:
        """send_message's envelope, content and options, as SMTP.send_message makes
        them (after EHLO)."""
        if not self.message_headers:
            return
        sender, recipients, extra, self.message = prepare_message(
            self.message,
            sender=self.sender,
            recipients=self.recipients,
            server_supports_smtputf8=client.supports_extension("smtputf8"),
            server_supports_8bitmime=client.supports_extension("8bitmime"),
        )
        given = list(self.mail_options or ())
        # By keyword: the caller's BODY=BINARYMIME is not joined by a second BODY.
        present = {option.partition("=")[0].upper() for option in given}
        self.mail_options = [
            *given,
            *(option for option in extra if option.partition("=")[0].upper() not in present),
        ]
        self.sender, self.recipients = sender, list(recipients)
        self.message_headers = False

    def envelope(self) -> tuple[str, str | Sequence[str]]:
        if self.sender is None or self.recipients is None:  # pragma: no cover - prepared first
            raise SMTPException("the envelope is worked out by prepare()")
        return self.sender, self.recipients

    async def send_plainly(self, client: SMTP) -> Result:
        sender, recipients = self.envelope()
        return await client.sendmail(
            sender, recipients, self.message,
            mail_options=self.mail_options, rcpt_options=self.rcpt_options,
        )  # fmt: skip


class JobQueue:
    """The sends waiting for a connection, oldest first; a cancelled caller's send
    is skipped (it never reaches the wire)."""

    def __init__(self) -> None:
        self._jobs: collections.deque[Job] = collections.deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def append(self, job: Job) -> None:
        self._jobs.append(job)

    def put_back(self, job: Job) -> None:
        """A job taken for a connection that broke before writing any of it."""
        self._jobs.appendleft(job)

    def take(self) -> Job | None:
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                return job
        return None


def transaction_for(client: SMTP, job: Job) -> Transaction | None:
    """The transaction ``sendmail`` would send for ``job``, when it can be pipelined
    behind another message: an in-memory message sent with DATA on a PIPELINING
    server, no SMTPUTF8 (its checks stay in sendmail), no transaction opened by
    mail(), and not LMTP (whose replies after a message are one per recipient).
    None: send it with ``sendmail``.  Bad input raises what ``sendmail``
    raises, before anything is written."""
    if job.message_headers:
        job.prepare(client)
    options = list(job.mail_options) if job.mail_options else []
    upper = [option.upper() for option in options] if options else ()
    if (
        not isinstance(job.message, _IN_MEMORY)
        or (upper and ("BODY=BINARYMIME" in upper or "SMTPUTF8" in upper))
        or client._transaction_open
        or isinstance(client, LMTP)
        or not client.supports_extension("pipelining")
    ):
        return None
    sender, recipients = job.envelope()
    recipient_list = [recipients] if isinstance(recipients, str) else list(recipients)
    payload = Payload(job.message)
    rcpt_options = job.rcpt_options or ()
    rcpt_lines = [client._rcpt_line(rcpt, rcpt_options, "ascii") for rcpt in recipient_list]
    if client._use_bdat(payload):
        return None
    # As sendmail: SIZE (RFC 1870) when offered and not given; the size is known.
    if client.supports_extension("size") and not (
        upper and any(o.startswith("SIZE=") for o in upper)
    ):
        options.insert(0, f"SIZE={payload.size}")
    mail_line = client._mail_line(sender, options, "ascii")
    return Transaction(sender, recipient_list, mail_line, rcpt_lines, payload)


def envelope_taken(raw: list[SMTPReply]) -> bool:
    """Whether MAIL, every RCPT and DATA were all accepted: the common case,
    decided without converting replies nobody reads."""
    return (
        raw[0].code == 250
        and raw[-1].code == 354
        and len(raw) > 2  # no recipient at all counts as all refused
        and all(reply.code in _TAKEN for reply in raw[1:-1])
    )


async def judge_envelope(
    client: SMTP, transaction: Transaction, raw: list[SMTPReply]
) -> dict[str, SMTPResponse]:
    """The replies to MAIL, every RCPT and DATA, judged as ``sendmail`` judges them
    when pipelining (the same errors, the same RSET after a refusal); returns the
    refused recipients when DATA got 354 and the content is to follow."""
    if envelope_taken(raw):
        return {}
    replies = [SMTPResponse.from_reply(reply) for reply in raw]
    try:
        return await client._judge_envelope(transaction, replies, client.timeout)
    except (SMTPResponseException, SMTPRecipientsRefused):
        if client.is_connected:
            with contextlib.suppress(
                SMTPResponseException, SMTPServerDisconnected, SMTPTimeoutError
            ):
                await client.rset()
        raise


@dataclass
class _Open:
    """A message whose DATA got 354: its content leaves with the next group."""

    job: Job
    transaction: Transaction
    refused: dict[str, SMTPResponse]


class _Connection:
    def __init__(
        self, client: SMTP, queue: JobQueue, sent: int, limit: int, yielding: Callable[[], bool]
    ) -> None:
        self.client = client
        self.queue = queue
        self.sent = sent  # messages delivered on this connection
        self.limit = limit
        self.yielding = yielding
        self.open: _Open | None = None
        self.taken: list[Job] = []  # taken from the queue and not settled yet

    def _room(self) -> bool:
        return self.sent + (self.open is not None) < self.limit and not self.yielding()

    async def run(self, job: Job | None) -> None:
        client = self.client
        while True:
            if job is None and client.is_connected and self._room():
                job = self.queue.take()
            if job is None:
                if self.open is not None:
                    await self._group(None)  # the last content, alone
                return
            if self.open is None and not client.is_connected:
                self.queue.put_back(job)  # nothing of it written: a new connection takes it
                return
            self.taken.append(job)
            try:
                if self.open is None and client.is_ehlo_or_helo_needed:
                    await client._ehlo_or_helo_if_needed()
                transaction = transaction_for(client, job)
            except Exception as error:  # refused before anything of it was written
                self._settle(job, error)
                job = None
                continue
            if transaction is None:
                if self.open is not None:
                    await self._group(None)
                await self._plainly(job)
            else:
                await self._group((job, transaction))
            job = None

    def abandon(self, error: Exception | None) -> None:
        """The sends under way end with ``error`` (None: the worker was
        cancelled, and its callers with it)."""
        for job in self.taken:
            if error is None:
                job.future.cancel()
            else:
                job.fail(error)

    def _settle(self, job: Job, error: BaseException | None, result: Result | None = None) -> None:
        self.taken.remove(job)
        if error is not None:
            job.fail(error)
        elif result is not None:
            self.sent += 1
            job.succeed(result)

    async def _plainly(self, job: Job) -> None:
        try:
            result = await job.send_plainly(self.client)
        except _REFUSALS as error:
            self._settle(job, error)
        except Exception as error:
            self.client.close()  # broken halfway: the connection may be out of step
            self._settle(job, error)
        else:
            self._settle(job, None, result)

    async def _group(self, following: tuple[Job, Transaction] | None) -> None:
        """One write: the open message's content (if any), then the following
        message's MAIL, RCPTs and DATA (if any); each settled by its own replies."""
        lines: list[bytes] = []
        parts: list[int] = []
        ending = self.open
        if ending is not None:
            encoded = ending.transaction.payload.encoded
            assert encoded is not None  # noqa: S101 - an in-memory message
            lines.append(encoded)
            parts.append(1)
        if following is not None:
            transaction = following[1]
            envelope = [transaction.mail_line, *transaction.rcpt_lines, b"DATA\r\n"]
            lines += envelope
            parts.append(len(envelope))
        self.open = None
        done, error = await self.client._pool_exchange(lines, parts)
        # The message whose reply was awaited when the connection failed gets the
        # error itself; one behind it in the same write just shares the lost connection.
        first_error: BaseException | None = error
        if ending is not None:
            if done:
                final = SMTPResponse.from_reply(done.pop(0)[0])
                if final.code == 250:
                    self._settle(ending.job, None, (ending.refused, final.message))
                else:
                    self._settle(ending.job, SMTPDataError(final.code, final.message))
            else:
                assert error is not None  # noqa: S101
                self._settle(ending.job, error)
                first_error = SMTPServerDisconnected(str(error))
                first_error.__cause__ = error
        if following is None:
            return
        job, transaction = following
        if not done:
            assert first_error is not None  # noqa: S101
            self._settle(job, first_error)
            return
        if envelope_taken(done[0]):
            self.open = _Open(job, transaction, {})  # no coroutine for the common case
            return
        try:
            refused = await judge_envelope(self.client, transaction, done[0])
        except Exception as refusal:
            self._settle(job, refusal)
            return
        self.open = _Open(job, transaction, refused)


async def serve(
    client: SMTP,
    job: Job,
    queue: JobQueue,
    sent: int,
    limit: int,
    *,
    yielding: Callable[[], bool] = lambda: False,
) -> int:
    """Send ``job``, then queued jobs after it while the connection lasts, has room
    (``limit`` messages delivered) and ``yielding()`` is false; returns the count
    delivered so far."""
    connection = _Connection(client, queue, sent, limit, yielding)
    try:
        await connection.run(job)
    except Exception as error:  # pragma: no cover - a bug: fail its sends, not the pool
        client.close()
        connection.abandon(error)
    except BaseException:
        client.close()
        connection.abandon(None)
        raise
    return connection.sent
