"""Where a message's content goes while it is received: kept whole for
``handle_DATA`` (:class:`Accumulated`), or handed to ``handle_DATA_STREAM`` as it
arrives (:class:`Streamed`)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .streaming import BodyStream, MessageAborted

__all__ = ["Accumulated", "MessageContent", "Streamed"]

log = logging.getLogger("mail.log")

# Content is handed on from the connection this many octets at a time: large
# batches for a message kept whole, small ones for a handler streaming it.
_WHOLE_BATCH = 1024 * 1024
_STREAM_BATCH = 64 * 1024


class Accumulated:
    """The whole message in one growing buffer: ``value()`` is its ``bytes``
    without a further copy, so the peak stays near the message's size."""

    wake_at = _WHOLE_BATCH

    def __init__(self) -> None:
        self._buffer = io.BytesIO()

    async def write(self, data: bytes) -> None:
        self._buffer.write(data)

    def append(self, data: bytes) -> None:
        """``write`` for a caller that is not a coroutine (the read callback)."""
        self._buffer.write(data)

    def value(self) -> bytes:
        value = self._buffer.getvalue()
        self._buffer = io.BytesIO()
        return value

    def abort(self, reason: str) -> None:
        self._buffer = io.BytesIO()

    async def settled(self) -> None:
        return None


class Streamed:
    """The message handed to the handler's ``handle_DATA_STREAM`` as it arrives;
    the hook runs as its own task from the first chunk on."""

    wake_at = _STREAM_BATCH

    def __init__(self, run_hook: Callable[[BodyStream], Awaitable[Any]]) -> None:
        self.stream = BodyStream()
        self._task = asyncio.get_running_loop().create_task(self._run(run_hook))
        self._task.add_done_callback(_log_hook_failure)

    async def _run(self, run_hook: Callable[[BodyStream], Awaitable[Any]]) -> Any:
        try:
            return await run_hook(self.stream)
        finally:
            self.stream.consumer_done()

    async def write(self, data: bytes) -> None:
        await self.stream.put(data)

    async def finish(self) -> Any:
        """All of the message is in: the hook's reply (its exception, if it failed)."""
        self.stream.end()
        return await self._task

    def abort(self, reason: str) -> None:
        self.stream.abort(reason)

    async def settled(self) -> None:
        """Wait for the hook to have returned (after an abort: to have cleaned up)."""
        await asyncio.wait({self._task})


MessageContent = Accumulated | Streamed


def _log_hook_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, MessageAborted):
        log.error("handle_DATA_STREAM failed", exc_info=error)
