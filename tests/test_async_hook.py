"""The conftest hook runs coroutine tests on a fresh event loop each."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_loops: list[asyncio.AbstractEventLoop] = []


@pytest.mark.parametrize("run", [1, 2])
async def test_each_async_test_gets_a_fresh_running_loop(run: int) -> None:
    loop = asyncio.get_running_loop()
    assert all(loop is not earlier for earlier in _loops)
    _loops.append(loop)
    await asyncio.sleep(0)
    assert run in (1, 2)


def test_async_failures_and_fixtures_are_reported(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def number():
            return 41

        async def test_uses_fixture(number):
            assert number + 1 == 42

        async def test_fails():
            raise ZeroDivisionError
        """
    )
    # The suite's own async hook, alone: pytest-asyncio (a test dependency) stays out,
    # and so does pytest-benchmark where installed (under xdist it warns).
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "no:benchmark"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ZeroDivisionError*"])
