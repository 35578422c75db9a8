"""mailpit's API v1, the parts a test or a mail client reads: the same paths,
methods, JSON field names and status codes, so mailpit's clients work against
this inbox unchanged.  Errors are JSON (``{"Error": "…"}``) where mailpit sends
plain text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from ._search import SearchError
from ._store import MessageStore

STORE: Final = web.AppKey("store", MessageStore)
DEFAULT_LIMIT: Final = 50
#: The largest ``start`` or ``limit``: a signed 64-bit integer, SQLite's INTEGER
#: (and the Go ``int`` that mailpit reads them into).
MAX_PAGE_VALUE: Final = 2**63 - 1
#: Sent with everything that carries message content: a browser that opens it
#: directly runs no script of the message and loads nothing.
SANDBOX: Final = "sandbox; default-src 'none'"

# Content types mailpit never serves as themselves (a browser would render them).
_RENDERED: Final = frozenset(
    {
        "text/html",
        "text/xml",
        "application/xhtml+xml",
        "image/svg+xml",
        "application/xml",
        "text/xsl",
    }
)


def error(status: int, text: str) -> web.Response:
    return web.json_response({"Error": text}, status=status)


def not_found() -> web.Response:
    return error(404, "message not found")


def store_of(request: web.Request) -> MessageStore:
    return request.app[STORE]


def page(request: web.Request) -> tuple[int, int] | web.Response:
    """``start`` and ``limit`` from the query (mailpit's defaults: 0 and 50).

    Only ASCII digits are a number here (``str.isdigit`` also takes ``²`` or
    ``٣``), and a value beyond :data:`MAX_PAGE_VALUE` is refused: SQLite could not
    take it.  Both answer 400, as any malformed value does."""
    values = []
    for name, default in (("start", 0), ("limit", DEFAULT_LIMIT)):
        text = request.query.get(name, "")
        if text == "":
            values.append(default)
            continue
        if not (text.isascii() and text.isdigit()):
            return error(400, f"{name} must be a whole number, not {text[:40]!r}")
        digits = text.lstrip("0") or "0"  # int() refuses strings of over 4300 digits
        if len(digits) > len(str(MAX_PAGE_VALUE)) or int(digits) > MAX_PAGE_VALUE:
            return error(400, f"{name} must be at most {MAX_PAGE_VALUE}")
        values.append(int(digits))
    return values[0], values[1]


async def resolve(request: web.Request) -> str | None:
    return await store_of(request).resolve(request.match_info["id"])


def listing_json(
    start: int, found: tuple[list[dict[str, Any]], int, int, int, int]
) -> dict[str, Any]:
    messages, matched, matched_unread, total, unread = found
    return {
        "total": total,
        "unread": unread,
        "count": len(messages),
        "messages_count": matched,
        "messages_unread": matched_unread,
        "start": start,
        "tags": [],
        "messages": messages,
    }


async def list_messages(request: web.Request) -> web.Response:
    paging = page(request)
    if isinstance(paging, web.Response):
        return paging
    start, limit = paging
    found = await store_of(request).listing(start, limit)
    return web.json_response(listing_json(start, found))


async def search(request: web.Request) -> web.Response:
    query = request.query.get("query", "").strip()
    paging = page(request)
    if isinstance(paging, web.Response):
        return paging
    start, limit = paging
    try:
        found = await store_of(request).listing(start, limit, query)
    except SearchError as problem:
        return error(400, str(problem))
    return web.json_response(listing_json(start, found))


async def delete_search(request: web.Request) -> web.Response:
    query = request.query.get("query", "").strip()
    try:
        await store_of(request).delete(query=query)
    except SearchError as problem:
        return error(400, str(problem))
    return web.Response(text="ok")


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object; or, for clients that send a form (the
    mailpit-api-client package does), its fields: ``ids``/``IDs`` repeated, and
    ``Read``/``Search``."""
    raw = await request.read()
    if not raw.strip():
        return {}
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        ids = [str(value) for key in ("ids", "IDs") for value in form.getall(key, [])]
        read = str(form.get("Read", form.get("read", "false"))).lower() in ("true", "1")
        return {"ids": ids, "read": read, "search": str(form.get("Search", ""))}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
    # Go's JSON decoding (mailpit's) matches field names case-insensitively.
    return {str(key).lower(): value for key, value in body.items()}


def _ids(body: dict[str, Any]) -> Sequence[str] | web.Response | None:
    ids = body.get("ids")
    if ids is None or ids == []:
        return None
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        return error(400, "IDs must be a list of message IDs")
    return ids


async def delete_messages(request: web.Request) -> web.Response:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    ids = _ids(body)
    if isinstance(ids, web.Response):
        return ids
    await store_of(request).delete(ids)
    return web.Response(text="ok")


async def set_read(request: web.Request) -> web.Response:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    ids = _ids(body)
    if isinstance(ids, web.Response):
        return ids
    read = body.get("read", False)
    search_text = body.get("search") or ""
    if not isinstance(read, bool) or not isinstance(search_text, str):
        return error(400, "Read must be true or false, Search a string")
    if ids is not None and search_text:
        return error(400, "You may specify either IDs or a search query, not both")
    try:
        await store_of(request).set_read(ids, read, search_text or None)
    except SearchError as problem:
        return error(400, str(problem))
    return web.Response(text="ok")


async def get_message(request: web.Request) -> web.Response:
    message_id = await resolve(request)
    found = None if message_id is None else await store_of(request).detail(message_id)
    return not_found() if found is None else web.json_response(found)


async def get_headers(request: web.Request) -> web.Response:
    message_id = await resolve(request)
    found = None if message_id is None else await store_of(request).column(message_id, "headers")
    return not_found() if found is None else web.json_response(found)


async def get_part(request: web.Request) -> web.Response:
    message_id = await resolve(request)
    part = None
    if message_id is not None:
        part = await store_of(request).part(message_id, request.match_info["part"])
    if part is None:
        return not_found()
    content_type, disposition = part.content_type, "inline"
    if content_type in _RENDERED:
        content_type, disposition = "application/octet-stream", "attachment"
    return web.Response(
        body=part.content,
        content_type=content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{quote(part.file_name)}"',
            "Content-Security-Policy": SANDBOX,
        },
    )


async def get_raw(request: web.Request) -> web.StreamResponse:
    return await _send_raw(request, request.match_info["id"])


async def view_raw(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if not name.endswith(".raw"):
        return not_found()
    return await _send_raw(request, name[: -len(".raw")])


async def _send_raw(request: web.Request, wanted: str) -> web.StreamResponse:
    """The source as received, sent slice by slice: a big message is never read
    whole into memory."""
    store = store_of(request)
    message_id = await store.resolve(wanted)
    location = None if message_id is None else await store.raw_location(message_id)
    if message_id is None or location is None:
        return not_found()
    seq, size = location
    response = web.StreamResponse(
        headers={"Content-Type": "text/plain; charset=utf-8", "Content-Security-Policy": SANDBOX}
    )
    if request.query.get("dl") == "1":
        response.headers["Content-Disposition"] = f'attachment; filename="{message_id}.eml"'
    response.content_length = size
    await response.prepare(request)
    offset = 0
    while offset < size:
        chunk = await store.raw_slice(seq, offset)
        if not chunk:  # deleted while being sent: end short, the client sees it
            break
        await response.write(chunk)
        offset += len(chunk)
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/messages", list_messages)
    app.router.add_delete("/api/v1/messages", delete_messages)
    app.router.add_put("/api/v1/messages", set_read)
    app.router.add_get("/api/v1/search", search)
    app.router.add_delete("/api/v1/search", delete_search)
    app.router.add_get("/api/v1/message/{id}", get_message)
    app.router.add_get("/api/v1/message/{id}/headers", get_headers)
    app.router.add_get("/api/v1/message/{id}/raw", get_raw)
    app.router.add_get("/api/v1/message/{id}/part/{part}", get_part)
    app.router.add_get("/view/{name}", view_raw)
