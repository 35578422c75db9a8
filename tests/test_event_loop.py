"""The suite runs on the event loop SMTPWIRE_TEST_LOOP names (``nox -s tests_uvloop``
sets it to uvloop): this fails if the switch in conftest.py stops reaching the
loops the tests make, instead of letting a uvloop run quietly test asyncio."""

from __future__ import annotations

import asyncio

from smtpwire.server.controller import Controller
from smtpwire.server.handlers import Sink
from support.loops import TEST_LOOP

EXPECTED_MODULE = {"asyncio": "asyncio.", "uvloop": "uvloop"}[TEST_LOOP]


def is_expected(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith(EXPECTED_MODULE)


async def test_async_tests_run_on_the_chosen_loop() -> None:
    assert is_expected(asyncio.get_running_loop())


def test_loops_made_in_threads_are_the_chosen_kind() -> None:
    controller = Controller(Sink(), hostname="127.0.0.1", port=0)
    controller.start()
    try:
        assert is_expected(controller.loop)
    finally:
        controller.stop()
