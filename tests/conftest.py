"""Shared test configuration.

``async def`` tests run on a fresh event loop each (no pytest-asyncio needed): the
hook below wraps them in ``asyncio.run`` with a time limit, so a hung test fails
instead of stalling the run.

``SMTPWIRE_TEST_LOOP=uvloop`` runs the suite on uvloop (``nox -s tests_uvloop``):
its event loop policy is installed at configure time, so every loop the tests
and the code under test make -- ``asyncio.run``, ``asyncio.new_event_loop`` in
server threads and controllers -- is a uvloop loop.  Unset or ``asyncio``: the
standard library's loop.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import warnings
from typing import Any

import pytest
from hypothesis import settings

from support.loops import TEST_LOOP, TEST_LOOPS

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


_PREVIOUS_POLICY = pytest.StashKey[Any]()  # an event loop policy


def install_test_loop(config: pytest.Config) -> None:
    """Switch every loop made from now on to the chosen one (nothing for asyncio);
    the policy it replaces comes back at unconfigure (a pytester run in this process,
    with a copy of this file, must leave the outer run's loop as it found it)."""
    if TEST_LOOP not in TEST_LOOPS:
        raise pytest.UsageError(f"SMTPWIRE_TEST_LOOP={TEST_LOOP!r}: expected one of {TEST_LOOPS}")
    if TEST_LOOP == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError as error:
            raise pytest.UsageError(f"SMTPWIRE_TEST_LOOP=uvloop: {error}") from error
        # Event loop policies are deprecated from Python 3.14 on (uvloop's too), but
        # they are still the one switch that reaches every loop the suite makes.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            config.stash[_PREVIOUS_POLICY] = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def pytest_report_header(config: pytest.Config) -> str:
    return f"event loop: {TEST_LOOP} (SMTPWIRE_TEST_LOOP)"


def pytest_configure(config: pytest.Config) -> None:
    install_test_loop(config)
    # Installed, smtpwire-server registers its pytest plugin through an entry point;
    # run from the source tree (PYTHONPATH), it is registered here instead.
    module = importlib.import_module(PLUGIN)
    if not config.pluginmanager.is_registered(module):
        config.pluginmanager.register(module, "smtpwire")


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(_PREVIOUS_POLICY, None)
    if previous is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(previous)
