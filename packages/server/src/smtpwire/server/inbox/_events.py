"""What changed in the inbox, told to whoever listens: the Server-Sent Events
stream and the wait endpoint.

Changes happen on the SMTP server's loop, listeners live on the web server's
loop, and the two may be different loops in different threads (a
:class:`~smtpwire.server.controller.Controller` thread beside a web server in
the test's loop), so each listener is reached with ``call_soon_threadsafe`` on
its own loop.  A listener that does not keep up is cut off rather than letting
its queue grow without bound.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Final

#: Events a listener may have waiting before it is cut off.
QUEUE_LIMIT: Final = 1000


@dataclass(frozen=True)
class Event:
    name: str  # "new", "deleted", "read", "unread"
    data: Any  # JSON-able


#: Put in a listener's queue when it is cut off or the inbox closes.
CLOSED: Final = Event("closed", None)


class Listener:
    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT + 1)

    def _offer(self, event: Event) -> None:
        # On the listener's own loop.
        if self.queue.qsize() >= QUEUE_LIMIT:
            self._hub.unsubscribe(self)
            event = CLOSED
        self.queue.put_nowait(event)

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when ``timeout`` passes first."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: set[Listener] = set()
        self._closed = False

    def subscribe(self) -> Listener:
        """A new listener on the running loop (closed at once if the hub is)."""
        listener = Listener(self)
        with self._lock:
            if self._closed:
                listener.queue.put_nowait(CLOSED)
            else:
                self._listeners.add(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.discard(listener)

    def publish(self, name: str, data: Any) -> None:
        self._send(Event(name, data))

    def close(self) -> None:
        """End every stream (the web server is stopping)."""
        with self._lock:
            self._closed = True
        self._send(CLOSED)
        with self._lock:
            self._listeners.clear()

    def _send(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener.loop.call_soon_threadsafe(listener._offer, event)
            except RuntimeError:  # that loop is closed: its listener is gone
                self.unsubscribe(listener)
