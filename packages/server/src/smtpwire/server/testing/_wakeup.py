"""Waking a coroutine from the server's thread, whatever framework runs it.

The inbox is filled from the test server's own thread; a coroutine waiting on it
must be woken through its own framework's thread-safe entry point: asyncio's
``call_soon_threadsafe`` (also uvloop, and anyio on asyncio) or trio's
``TrioToken.run_sync_soon`` (also anyio on trio).  The running framework is told
by sniffio, which trio and anyio depend on (without sniffio, only asyncio can be
running a coroutine that reaches here).  Neither trio nor sniffio is imported
unless it is installed and in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import Any, Protocol

__all__ = ["SUPPORTED", "Waiter", "waiter_for_running_framework"]

SUPPORTED = "asyncio (uvloop too) or trio, directly or through anyio"


class Waiter(Protocol):
    """One wait of one coroutine: ``wake`` may be called from any thread."""

    def wake(self) -> None: ...

    async def wait(self, timeout: float) -> bool:
        """Suspend until woken (True) or until ``timeout`` seconds pass (False)."""
        ...


def waiter_for_running_framework() -> Waiter:
    """A waiter for the framework running the calling coroutine."""
    name = _running_framework()
    if name == "asyncio":
        return _AsyncioWaiter()
    if name == "trio":
        return _TrioWaiter(importlib.import_module("trio"))
    raise RuntimeError(f"wait_for_async runs under {SUPPORTED}, not under {name}")


def _running_framework() -> str:
    try:
        sniffio: Any = importlib.import_module("sniffio")
    except ImportError:
        sniffio = None
    if sniffio is not None:
        try:
            return str(sniffio.current_async_library())
        except sniffio.AsyncLibraryNotFoundError:
            pass
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"wait_for_async needs a coroutine run by {SUPPORTED}; "
            "from a plain function, call wait_for"
        ) from None
    return "asyncio"


class _AsyncioWaiter:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._woken: asyncio.Future[None] = self._loop.create_future()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(_settle, self._woken)

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._woken, timeout)
        except asyncio.TimeoutError:
            return False
        return True


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TrioWaiter:
    def __init__(self, trio: Any) -> None:
        self._trio = trio
        self._token = trio.lowlevel.current_trio_token()
        self._woken = trio.Event()

    def wake(self) -> None:
        with contextlib.suppress(self._trio.RunFinishedError):  # the run is over
            self._token.run_sync_soon(self._woken.set)

    async def wait(self, timeout: float) -> bool:
        with self._trio.move_on_after(max(timeout, 0.0)):
            await self._woken.wait()
        return bool(self._woken.is_set())
