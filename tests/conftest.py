"""Shared test configuration.

``async def`` tests run on a fresh event loop each (no pytest-asyncio needed): the
hook below wraps them in ``asyncio.run`` with a time limit, so a hung test fails
instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

ASYNC_TEST_TIMEOUT = 60.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    parameters = inspect.signature(function).parameters
    arguments: dict[str, Any] = {
        name: value for name, value in pyfuncitem.funcargs.items() if name in parameters
    }

    async def run() -> None:
        await asyncio.wait_for(function(**arguments), ASYNC_TEST_TIMEOUT)

    asyncio.run(run())
    return True
