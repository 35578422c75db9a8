"""The conftest hook runs coroutine tests on a fresh loop each."""

from __future__ import annotations

import asyncio

import pytest

_loops: list[asyncio.AbstractEventLoop] = []


@pytest.mark.parametrize("run", [1, 2])
async def test_each_async_test_gets_a_fresh_running_loop(run: int) -> None:
    loop = asyncio.get_running_loop()
    assert all(loop is not earlier for earlier in _loops)
    _loops.append(loop)
    await asyncio.sleep(0)
    assert run in (1, 2)


async def test_async_failures_are_reported() -> None:
    with pytest.raises(ZeroDivisionError):
        await asyncio.sleep(0)
        _ = 1 / 0
