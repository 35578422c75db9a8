"""aiosmtpd 1.4.6's controller texts, word for word: migrated suites match on the
deprecation warning and the two start-up time-outs.  Servers are started and
stopped for real on port 0 of 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import smtplib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from smtpwire.server.controller import Controller
from smtpwire.server.smtp import SMTP

WAIT = 10.0  # the bound on every wait; never a synchronisation delay

SERVER_KWARGS = (
    "server_kwargs will be removed in version 2.0. Just specify the keyword arguments "
    "to forward to SMTP as kwargs to this __init__ method."
)
NOT_LISTENING = (
    "SMTP server failed to start within allotted time. This might happen if the "
    "system is too busy. Try increasing the `ready_timeout` parameter."
)
NOT_RESPONDING = (
    "SMTP server started, but not responding within allotted time. This might happen "
    "if the system is too busy. Try increasing the `ready_timeout` parameter."
)


class Sink:
    """No hooks: every command gets the server's default reply."""


def controller_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("smtpwire-controller")]


@pytest.fixture(autouse=True)
def _no_server_thread_left_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SMTPWIRE_CONTROLLER_TIMEOUT", raising=False)
    monkeypatch.delenv("AIOSMTPD_CONTROLLER_TIMEOUT", raising=False)
    yield
    for thread in controller_threads():
        thread.join(WAIT)
    assert controller_threads() == []


def test_server_kwargs_warning_is_aiosmtpds() -> None:
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(SERVER_KWARGS)}$"):
        controller = Controller(Sink(), server_kwargs={"data_size_limit": 10})
    assert controller.SMTP_kwargs["data_size_limit"] == 10


class SlowListener(Controller):
    """The first start() never gets its listener up (the awaited future is only
    ever cancelled, by the time-out); later starts listen normally."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Sink(), hostname="127.0.0.1", port=0, **kwargs)
        self.hang = True

    async def _create_server(self) -> asyncio.Server:
        if self.hang:
            self.hang = False
            await asyncio.get_running_loop().create_future()
        return await super()._create_server()


def test_listener_not_up_in_time_is_aiosmtpds_first_timeout() -> None:
    controller = SlowListener(ready_timeout=0.2)
    with pytest.raises(TimeoutError, match=f"^{re.escape(NOT_LISTENING)}$"):
        controller.start()
    assert controller.server is None
    controller.stop()  # a no-op after a failed start, as before
    # Nothing is left half-started: the next start() serves.
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as client:
            assert client.noop() == (250, b"OK")
    finally:
        controller.stop()


class LateFactory(Controller):
    """factory() blocks until the test opens the gate: the listener is up, but the
    server is not ready to serve."""

    def __init__(self, gate: threading.Event, **kwargs: Any) -> None:
        super().__init__(Sink(), hostname="127.0.0.1", port=0, **kwargs)
        self.gate = gate

    def factory(self) -> SMTP:
        assert self.gate.wait(WAIT)
        return super().factory()


def test_factory_late_is_aiosmtpds_second_timeout() -> None:
    gate = threading.Event()
    controller = LateFactory(gate, ready_timeout=0.2)
    try:
        with pytest.raises(TimeoutError, match=f"^{re.escape(NOT_RESPONDING)}$"):
            controller.start()
    finally:
        gate.set()
    assert controller.server is None
    assert controller.smtpd is None
