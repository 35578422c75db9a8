"""lazr.smtptest's idiom, apart from how the server runs: received mail lands in a
queue that a test drains by iterating, or waits on.  :class:`QueueReader` is
mixed into :class:`smtpwire.server.controller.QueueController`, which owns the
constructor (lazr's ``QueueController(host, port)``)."""

from __future__ import annotations

import email.message
import queue
from collections.abc import Iterator

from ._serving import MessageQueue
from .handlers import Queue


class _QueueHandler(Queue):
    # Tests read message["X-Peer"]; a client's own copy must not be what they find.
    replace_envelope_headers = True


class QueueReader:
    """The reading side: ``queue``, iteration, ``reset()`` and ``wait_for()``."""

    queue: queue.Queue[email.message.Message]
    _messages: MessageQueue

    def _queue_handler(self) -> Queue:
        """The handler that fills :attr:`queue`; the constructor passes it on."""
        self._messages = MessageQueue()
        self.queue = self._messages
        return _QueueHandler(self._messages)

    def __iter__(self) -> Iterator[email.message.Message]:
        """Yield and remove the messages received so far, oldest first.  It never
        waits, so a test can also assert that nothing (more) was sent."""
        while True:
            try:
                yield self.queue.get_nowait()
            except queue.Empty:
                return

    def reset(self) -> None:
        """Forget what arrived so far, for a test that only cares about what its own
        step sends."""
        for _ in self:
            pass

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[email.message.Message]:
        """Remove and return the first ``count`` messages once they have all arrived:
        the mail an application sends may land after its call returns.

        :raises TimeoutError: if fewer arrived within ``timeout`` seconds (those stay queued).
        """
        if count < 0:
            raise ValueError("count must not be negative")
        return self._messages.take(count, timeout)
