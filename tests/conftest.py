"""Shared test configuration.

``async def`` tests run on a fresh event loop each (no pytest-asyncio needed): the
hook below wraps them in ``asyncio.run`` with a time limit, so a hung test fails
instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any

import pytest
from hypothesis import settings

# Property tests: no per-example deadline (shared CI machines stall at random), and in
# CI a fixed seed, so a run there is reproducible; locally every run explores anew.
settings.register_profile("smtpwire", deadline=None)
settings.register_profile("smtpwire-ci", deadline=None, derandomize=True, database=None)
settings.load_profile("smtpwire-ci" if os.environ.get("CI") else "smtpwire")

# pytester: the plugin's tests and the testing guide's examples run pytest on user code.
pytest_plugins = ["pytester"]

ASYNC_TEST_TIMEOUT = 60.0
DRAIN_ITERATIONS = 10


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
        # Closing an asyncio transport finishes in callbacks a loop iteration or two
        # later (two hops for TLS); asyncio.run drops callbacks still queued when it
        # closes the loop, which would leave a socket to be reported by the garbage
        # collector during some later test.  A few bounded iterations let them run.
        for _ in range(DRAIN_ITERATIONS):
            await asyncio.sleep(0)

    asyncio.run(run())
    return True


PLUGIN = "smtpwire.server.testing.pytest_plugin"


def pytest_configure(config: pytest.Config) -> None:
    # Installed, smtpwire-server registers its pytest plugin through an entry point;
    # run from the source tree (PYTHONPATH), it is registered here instead.
    import importlib

    module = importlib.import_module(PLUGIN)
    if not config.pluginmanager.is_registered(module):
        config.pluginmanager.register(module, "smtpwire")
