"""smtpwire's own endpoints, under ``/api/smtpwire``: what mailpit has no field
for (the SMTP session that delivered a message), waiting for mail without
polling, live updates, and an HTML body the UI can show in a sandbox."""

from __future__ import annotations

import json
import time
from typing import Final

from aiohttp import web

from ._api import error, not_found, store_of
from ._events import CLOSED, Listener


class Streams:
    """The event streams and waits open on one web server, ended when it stops."""

    def __init__(self) -> None:
        self.listeners: set[Listener] = set()


STREAMS: Final = web.AppKey("streams", Streams)
#: The HTML body is shown in a sandboxed iframe: no script, no requests out of it.
HTML_POLICY: Final = "sandbox; default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"
#: A comment line on an idle event stream, so that a gone client is noticed.
KEEPALIVE_SECONDS: Final = 15.0
MAX_WAIT_SECONDS: Final = 300.0
DEFAULT_WAIT_SECONDS: Final = 10.0


def listen(request: web.Request) -> Listener:
    """A listener that the web server ends when it stops."""
    listener = store_of(request).events.subscribe()
    request.app[STREAMS].listeners.add(listener)
    return listener


def forget(request: web.Request, listener: Listener) -> None:
    listener.close()
    request.app[STREAMS].listeners.discard(listener)


def end_streams(app: web.Application) -> None:
    for listener in list(app[STREAMS].listeners):
        listener.queue.put_nowait(CLOSED)


async def session(request: web.Request) -> web.Response:
    store = store_of(request)
    message_id = await store.resolve(request.match_info["id"])
    found = None if message_id is None else await store.column(message_id, "session")
    return not_found() if found is None else web.json_response(found)


async def html_body(request: web.Request) -> web.Response:
    store = store_of(request)
    message_id = await store.resolve(request.match_info["id"])
    detail = None if message_id is None else await store.detail(message_id, mark_read=False)
    if detail is None:
        return not_found()
    if not detail.get("HTML"):
        return error(404, "the message has no HTML part")
    return web.Response(
        text=detail["HTML"],
        content_type="text/html",
        headers={"Content-Security-Policy": HTML_POLICY},
    )


async def info(request: web.Request) -> web.Response:
    store = store_of(request)
    _, _, _, total, unread = await store.listing(0, 0)
    size = await store.run(lambda db: db.size_in_bytes())
    return web.json_response(
        {
            "Messages": total,
            "Unread": unread,
            "Database": "memory" if store.path is None else str(store.path),
            "DatabaseSize": size,
        }
    )


async def wait(request: web.Request) -> web.Response:
    """Answer once ``count`` messages (sent to ``to``, if given) are stored, or
    408 after ``timeout`` seconds."""
    count_text = request.query.get("count", "1")
    timeout_text = request.query.get("timeout", str(DEFAULT_WAIT_SECONDS))
    to = request.query.get("to") or None
    try:
        count, timeout = int(count_text), float(timeout_text)
    except ValueError:
        return error(400, "count must be a whole number and timeout a number of seconds")
    if count < 1 or not 0 <= timeout <= MAX_WAIT_SECONDS:
        return error(400, f"count must be at least 1 and timeout 0 to {MAX_WAIT_SECONDS:g} s")
    store = store_of(request)
    deadline = time.monotonic() + timeout
    # Listen first, then count: a message stored in between is not missed.
    listener = listen(request)
    try:
        while True:
            found = await store.count(to)
            remaining = deadline - time.monotonic()
            if found >= count:
                return web.json_response({"count": found})
            if remaining <= 0:
                break
            event = await listener.next(remaining)
            if event is CLOSED:
                break
    finally:
        forget(request, listener)
    return web.json_response(
        {"Error": f"{found} of {count} message(s) arrived within {timeout:g} s", "count": found},
        status=408,
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``new`` (a message summary), ``deleted`` (``{"IDs": [...]}``,
    ``null`` for all), ``read`` and ``unread`` (``{"IDs": [...]}``)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
        }
    )
    listener = listen(request)
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        while True:
            event = await listener.next(KEEPALIVE_SECONDS)
            if event is CLOSED:
                break
            if event is None:
                text = ": keepalive\n\n"
            else:
                text = f"event: {event.name}\ndata: {json.dumps(event.data)}\n\n"
            await response.write(text.encode())
    except ConnectionResetError:
        pass  # the client went away
    finally:
        forget(request, listener)
    return response


def add_routes(app: web.Application) -> None:
    app[STREAMS] = Streams()
    app.router.add_get("/api/smtpwire/message/{id}/session", session)
    app.router.add_get("/api/smtpwire/message/{id}/html", html_body)
    app.router.add_get("/api/smtpwire/info", info)
    app.router.add_get("/api/smtpwire/wait", wait)
    app.router.add_get("/api/smtpwire/events", events)
