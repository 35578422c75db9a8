"""A live web inbox for the tests: an SMTP server storing into an
:class:`~smtpwire.server.inbox.Inbox` and its web server, both on 127.0.0.1 port 0,
in a thread of their own, so sync clients (smtplib, urllib, curl, the mailpit
client) and async ones (aiohttp, smtpwire.client) reach it alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the web inbox needs aiohttp")

from smtpwire.server.inbox import Inbox
from smtpwire.server.smtp import SMTP

START_TIMEOUT = 15.0


class LiveInbox:
    def __init__(
        self,
        store: Path | None = None,
        *,
        max_messages: int | None = None,
        auth: tuple[str, str] | None = None,
        data_size_limit: int = 64 * 1024 * 1024,
    ) -> None:
        self._store = store
        self._max_messages = max_messages
        self._auth = auth
        self._data_size_limit = data_size_limit
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-inbox", daemon=True)
        self.inbox: Inbox
        self.smtp_port = 0
        self.url = ""

    @property
    def smtp_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.smtp_port

    def start(self) -> LiveInbox:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("the live inbox did not start")
        if self._failure is not None:
            raise self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT)
        assert not self._thread.is_alive(), "the live inbox did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to start()
            self._failure = error
            self._ready.set()

    def _session(self) -> SMTP:
        return SMTP(
            self.inbox,
            observer=self.inbox.observer,
            hostname="inbox.test",
            enable_SMTPUTF8=True,
            data_size_limit=self._data_size_limit,
        )

    async def _main(self) -> None:
        self.inbox = Inbox(self._store, max_messages=self._max_messages)
        try:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(self._session, "127.0.0.1", 0)
            self.smtp_port = server.sockets[0].getsockname()[1]
            try:
                async with self.inbox.serve_web("127.0.0.1", 0, auth=self._auth) as web:
                    self.url = web.url
                    self._loop, self._stop = loop, asyncio.Event()
                    self._ready.set()
                    await self._stop.wait()
            finally:
                server.close()
                await server.wait_closed()
        finally:
            self.inbox.close()


@pytest.fixture
def live_inbox_factory() -> Iterator[Callable[..., LiveInbox]]:
    started: list[LiveInbox] = []

    def start(*args: Any, **kwargs: Any) -> LiveInbox:
        live = LiveInbox(*args, **kwargs).start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture
def live_inbox(live_inbox_factory: Callable[..., LiveInbox]) -> LiveInbox:
    return live_inbox_factory()
